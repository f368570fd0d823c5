"""`python -m bench [NAME...]`: run benchmarks, write `results/NAME.json`, print the figures."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

from bench import apicost, burst, dispatch, e2e, memory, runner
from bench.cluster import Run, api_client, apply_crd, cleanup_all, operator_identity, server_version
from bench.harness import Context
from bench.report import RESULTS, LoadSampler, Result, machine, markdown_table

BENCHMARKS: dict[str, ModuleType] = {
    m.NAME: m for m in (runner, dispatch, burst, apicost, e2e, memory)
}
"""In the order `python -m bench` runs them: the heaviest on the cluster last."""


def _measure(module: ModuleType, ctx: Context, version: str | None, tag: str) -> Result:
    sampler = LoadSampler()
    started = time.monotonic()
    result: Result = module.run(ctx)
    result.load = sampler.finish()
    result.seconds = round(time.monotonic() - started, 1)
    result.machine = machine(version)
    result.scale = ctx.scale
    result.variant = ctx.operator_env
    path = result.write(tag)
    print(
        result.show(),
        f"\n  → {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}\n",
        flush=True,
    )
    return result


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
        results = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
        order = list(BENCHMARKS)
        results.sort(key=lambda r: order.index(r["name"]) if r["name"] in order else len(order))
        print(markdown_table(results))
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
    results = []
    try:
        with operator_identity(run) as identity:
            ctx = Context(api, run, identity, logs, args.scale, args.profile, operator_env)
            for name in names:
                results.append(_measure(BENCHMARKS[name], ctx, version, args.tag))
    finally:
        run.cleanup()
    if not args.tag:
        print(
            markdown_table([json.loads((RESULTS / f"{r.name}.json").read_text()) for r in results])
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
