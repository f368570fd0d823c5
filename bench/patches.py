"""Bench-only switches for the operator under test (environment), none in the operator's code:

- BENCH_NO_PODS=1: Jobs get `parallelism: 0`, so the Job controller never creates a pod; the
  dispatch, burst and memory benchmarks measure the operator and the API server, not the node.
- BENCH_PATCHES=a,b,...: proposed changes, measured before anyone makes them in the operator:
  `kopf:SECTION.FIELD=VALUE` (a kopf setting, e.g. `kopf:queueing.worker_limit=100`). Earlier
  entries (no-index, hold-pending, warning-events, no-trust-env, slim-final) were measured here and
  are now the operator's own behaviour (see README.md).
- BENCH_TRACEMALLOC=PATH: trace allocations; SIGUSR2 writes the largest live ones to PATH.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import kopf

from codetask_operator import __main__ as operator_main  # type: ignore[import-not-found, unused-ignore]
from codetask_operator import handlers, jobs  # type: ignore[import-not-found, unused-ignore]


def _without_pods(build: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    def build_job(*args: Any, **kwargs: Any) -> dict[str, Any]:
        manifest = build(*args, **kwargs)
        manifest["spec"]["parallelism"] = 0
        return manifest

    return build_job


def _kopf_setting(assignment: str) -> None:
    path, _, raw = assignment.partition("=")
    section, field = path.split(".")
    value: Any = None if raw == "None" else float(raw) if "." in raw else int(raw)

    @kopf.on.startup(id=f"bench-{path}", registry=handlers.HANDLERS)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        setattr(getattr(settings, section), field, value)


def _patch(name: str) -> None:
    if name.startswith("kopf:"):
        _kopf_setting(name.removeprefix("kopf:"))
    else:
        raise SystemExit(f"unknown BENCH_PATCHES entry {name!r}")


def _trace_memory(path: str) -> None:
    import signal
    import tracemalloc

    tracemalloc.start(int(os.environ.get("BENCH_TRACEMALLOC_FRAMES", "8")))

    def dump(*_: Any) -> None:
        snapshot = tracemalloc.take_snapshot()
        lines = [f"traced: {tracemalloc.get_traced_memory()[0] / 1e6:.1f} MB"]
        lines += [str(s) for s in snapshot.statistics("lineno")[:40]]
        for stat in snapshot.statistics("traceback")[:8]:
            lines += ["", f"{stat.size / 1e6:.1f} MB in {stat.count} blocks"]
            lines += stat.traceback.format()
        with open(path, "w") as file:
            file.write("\n".join(lines) + "\n")

    signal.signal(signal.SIGUSR2, dump)


def run() -> int:
    """Apply the switches of the environment, then run the operator's own `main`."""
    if trace := os.environ.get("BENCH_TRACEMALLOC"):
        _trace_memory(trace)
    if os.environ.get("BENCH_NO_PODS") == "1":
        jobs.build_job = _without_pods(jobs.build_job)
    for patch in filter(None, os.environ.get("BENCH_PATCHES", "").split(",")):
        _patch(patch.strip())
    code: int = operator_main.main()
    return code
