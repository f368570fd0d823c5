"""Bench-only switches for the operator under test (environment), none in the operator's code:

- BENCH_NO_PODS=1: Jobs get `parallelism: 0`, so the Job controller never creates a pod; the
  dispatch, burst and memory benchmarks measure the operator and the API server, not the node.
- BENCH_PATCHES=a,b,...: proposed changes, measured before anyone makes them in the operator:
  `no-index` (no kopf indexes), `hold-pending` (no status write while the pod is pending: its
  name and node ride with the Running or final write), `final-events` (no Normal Events for
  Scheduled/Started), `warning-events` (Warning Events only), `no-trust-env` (the API client skips
  the netrc and proxy look-ups aiohttp runs in a thread per request), `slim-final` (a finished
  task's state keeps only phase, reason, completionTime, jobName, attempts and its TTL),
  `kopf:SECTION.FIELD=VALUE`
  (a kopf setting, e.g. `kopf:queueing.worker_limit=100`).
- BENCH_TRACEMALLOC=PATH: trace allocations; SIGUSR2 writes the largest live ones to PATH.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import kopf

from codetask_operator import __main__ as operator_main  # type: ignore[import-not-found, unused-ignore]
from codetask_operator import (  # type: ignore[import-not-found, unused-ignore]
    api,
    handlers,  # noqa: F401  (registers the handlers: `no-index` removes the indexes among them)
    jobs,
    status,
)
from codetask_operator import reconcile as rec  # type: ignore[import-not-found, unused-ignore]

QUIET_EVENTS = frozenset({str(api.Reason.SCHEDULED), str(api.Reason.STARTED)})


def _without_pods(build: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    def build_job(*args: Any, **kwargs: Any) -> dict[str, Any]:
        manifest = build(*args, **kwargs)
        manifest["spec"]["parallelism"] = 0
        return manifest

    return build_job


def _hold_pending() -> None:
    running_patch = status.running_patch

    def held_while_pending(current: Any, pod: Any, ctx: Any) -> dict[str, Any]:
        patch = running_patch(current, pod, ctx)
        return patch if patch.get("phase") == str(api.Phase.RUNNING) else {}

    status.running_patch = held_while_pending


def _fewer_events(quiet: Callable[[str, str], bool]) -> None:
    post_event = rec.Reconciler.post_event

    def post_some(self: Any, state: Any, type_: str, reason: str, message: str) -> None:
        if not quiet(type_, reason):
            post_event(self, state, type_, reason, message)

    rec.Reconciler.post_event = post_some


def _no_trust_env() -> None:
    from kubernetes_asyncio.client import rest

    init = rest.RESTClientObject.__init__

    def without_env(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self.pool_manager._trust_env = False

    rest.RESTClientObject.__init__ = without_env  # type: ignore[method-assign]


def _kopf_setting(assignment: str) -> None:
    path, _, raw = assignment.partition("=")
    section, field = path.split(".")
    value: Any = None if raw == "None" else float(raw) if "." in raw else int(raw)

    @kopf.on.startup(id=f"bench-{path}")
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        setattr(getattr(settings, section), field, value)


FINAL_KEEP = ("phase", "reason", "completionTime", "jobName", "attempts")


def _slim_final() -> None:
    reconcile = rec.Reconciler.reconcile

    async def then_trim(self: Any, state: Any) -> None:
        await reconcile(self, state)
        if state.final:
            state.status = {k: state.status[k] for k in FINAL_KEEP if k in state.status}
            ttl = (state.spec or {}).get("ttlSecondsAfterFinished")
            state.spec = {} if ttl is None else {"ttlSecondsAfterFinished": ttl}

    rec.Reconciler.reconcile = then_trim


def _patch(name: str) -> None:
    if name == "no-index":  # the handlers module registered them on import
        kopf.get_default_registry()._indexing._handlers.clear()
    elif name == "hold-pending":
        _hold_pending()
    elif name == "final-events":
        _fewer_events(lambda type_, reason: type_ == "Normal" and reason in QUIET_EVENTS)
    elif name == "warning-events":
        _fewer_events(lambda type_, _: type_ == "Normal")
    elif name == "no-trust-env":
        _no_trust_env()
    elif name == "slim-final":
        _slim_final()
    elif name.startswith("kopf:"):
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
