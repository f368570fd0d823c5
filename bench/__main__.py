"""`python -m bench [NAME...]`: run benchmarks, write `results/NAME.json`, print the figures."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

from bench import apicost, burst, dispatch, e2e, memory, plot, runner, warm
from bench.cluster import Identity, Run, api_client, apply_crd, cleanup_all, server_version
from bench.harness import Context
from bench.operator_process import operator_user
from bench.report import RESULTS, LoadSampler, Result, combine, machine, markdown_table

BENCHMARKS: dict[str, ModuleType] = {
    m.NAME: m for m in (runner, dispatch, burst, apicost, e2e, warm, memory)
}
"""In the order `python -m bench` runs them: the heaviest on the cluster last."""


def _measure(
    module: ModuleType, ctx: Context, version: str | None, repeats: int = 0
) -> list[Result]:
    """One run of the benchmark; or, with `repeats`, that many from its own `run_repeated`
    (memory: its runs share one set of objects that takes minutes to make)."""
    sampler = LoadSampler()
    started = time.monotonic()
    results: list[Result] = module.run_repeated(ctx, repeats) if repeats else [module.run(ctx)]
    load = sampler.finish()
    for result in results:
        result.load = load
        result.seconds = round((time.monotonic() - started) / len(results), 1)
        result.machine = machine(version)
        result.scale = ctx.scale
        result.variant = ctx.operator_env
        print(result.show(), "\n", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply every sample count (e.g. 0.1 while developing)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the operator with py-spy while dispatch, burst and memory run",
    )
    parser.add_argument(
        "--patches", default="", help="proposed operator changes to measure (see bench/launcher.py)"
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra operator environment, e.g. MALLOC_ARENA_MAX=2",
    )
    parser.add_argument(
        "--tag",
        default="",
        help="write results/variants/NAME.TAG.json (needed with --patches/--env)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="run the whole list this many times, one benchmark after another (default 3); "
        "each figure is the median of the runs, every run kept",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help="directory to write NAME.json and the plot into (default bench/results)",
    )
    parser.add_argument("--table", action="store_true", help="print the table of results/ and exit")
    parser.add_argument(
        "--cleanup",
        action="store_true",
        help="delete what earlier (interrupted) runs left in the cluster and exit",
    )
    args = parser.parse_args(argv)
    if unknown := [n for n in args.names if n not in BENCHMARKS]:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    if args.table:
        print(markdown_table(_recorded(args.results)))
        return 0
    operator_env = dict(item.split("=", 1) for item in args.env)
    if args.patches:
        operator_env["BENCH_PATCHES"] = args.patches
    if operator_env and not args.tag:
        parser.error(
            "a variant run (--patches, --env) needs --tag: results/ holds the operator as is"
        )
    api = api_client()
    if args.cleanup:
        print("\n".join(cleanup_all(api)) or "nothing to delete")
        return 0
    names = args.names or list(BENCHMARKS)
    version = server_version(api)
    apply_crd()
    run = Run(api)
    logs = Path(tempfile.mkdtemp(prefix=f"codetask-bench-{run.id}-"))
    print(f"run {run.id}: namespaces {run.glob}, operator logs in {logs}\n", flush=True)
    runs: dict[str, list[Result]] = {name: [] for name in names}
    try:
        run.namespace("system")
        identity = Identity(operator_user(run))
        ctx = Context(api, run, identity, logs, args.scale, args.profile, operator_env)
        for repeat in range(args.repeat):
            print(f"--- run {repeat + 1} of {args.repeat}", flush=True)
            for name in names:
                module = BENCHMARKS[name]
                if not hasattr(module, "run_repeated"):
                    runs[name] += _measure(module, ctx, version)
                elif repeat == 0:
                    runs[name] += _measure(module, ctx, version, args.repeat)
    finally:
        run.cleanup()
    for measured in filter(None, runs.values()):
        print(f"→ {combine(measured).write(args.results, args.tag)}")
    if not args.tag:
        recorded = _recorded(args.results)
        print(markdown_table(recorded))
        print(f"→ {plot.write(recorded, args.results / plot.FILE)}")
    return 0


def _recorded(folder: Path) -> list[dict[str, object]]:
    """The results in `folder`, in the order the benchmarks run."""
    results = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    order = list(BENCHMARKS)
    results.sort(key=lambda r: order.index(r["name"]) if r["name"] in order else len(order))
    return results


if __name__ == "__main__":
    sys.exit(main())
