"""1. Dispatch latency, client-visible: create sent → the Job seen in a watch, four ways.

Each of N iterations does four steps, in a rotating order (raw, operator, bare, floor; operator,
bare, floor, raw; ...), from the same client and timed the same way: `time.perf_counter()`
before the POST (response read to the end) → the arrival of the Job's first watch event on a watch
of its namespace's Jobs (one per namespace, started beforehand).
- raw: a Job POST (`raw_job`) in a namespace nobody serves;
- operator: a CodeTask POST in the operator's namespace → its Job (the task's Pending status is
  held 2 s for a Running that never comes here, so it is written during later steps, as under a
  stream of tasks);
- bare kopf: a CodeTask POST in bare kopf's namespace (bare.py) → its Job; then it waits for kopf's
  annotation patch (its only write besides the Job);
- floor: a CodeTask POST in a namespace nobody serves, then at once the Job POST the client makes
  itself: what any controller that creates the Job after the task exists needs at the least (it
  leaves out the task's watch event reaching the controller, and everything the controller does).
All Jobs have `parallelism: 0` (no pods). Five warm-up iterations first. The audit log's
server-side times (CodeTask POST completed → its Job's POST completed, on the API server's clock)
are in the details, not the figures.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench import audit
from bench.bare import bare_operator, handled
from bench.cluster import PLURAL
from bench.harness import Context, raw_job, task_of
from bench.report import Figure, Result
from bench.stats import summary
from bench.watch import Watcher

NAME = "dispatch"
WARMUP = 5
WAYS = ("raw", "operator", "bare kopf", "floor")


def _ms(seconds: float) -> float:
    return seconds * 1000


def order(i: int) -> tuple[str, ...]:
    """The ways in iteration `i`'s order: ABCD, BCDA, CDAB, DABC, ABCD, ..."""
    k = i % len(WAYS)
    return WAYS[k:] + WAYS[:k]


def _server_side(
    entries: list[audit.Entry], ns: str, name_of_job: Callable[[str], str]
) -> dict[str, Any]:
    """From the audit log: task POST completed → its Job's POST completed (and → received)."""
    tasks = {
        e.name: e
        for e in entries
        if e.namespace == ns and e.verb == "create" and e.resource == PLURAL
    }
    jobs = {
        name_of_job(e.name): e
        for e in entries
        if e.namespace == ns and e.verb == "create" and e.resource == "jobs"
    }
    pairs = [(tasks[t], jobs[t]) for t in tasks if t in jobs]
    if not pairs:
        return {"matched": 0}
    return {
        "matched": len(pairs),
        "task_created_to_job_created_ms": summary(
            [_ms((j.completed - t.completed).total_seconds()) for t, j in pairs]
        ),
        "task_received_to_job_created_ms": summary(
            [_ms((j.completed - t.received).total_seconds()) for t, j in pairs]
        ),
        "reaction_ms": summary([_ms((j.received - t.completed).total_seconds()) for t, j in pairs]),
        "job_create_server_ms": summary(
            [_ms((j.completed - j.received).total_seconds()) for _, j in pairs]
        ),
    }


def run(ctx: Context) -> Result:
    n = ctx.n(200, least=20)
    ns = ctx.run.namespace(NAME)
    ns_raw = ctx.run.namespace(f"{NAME}-raw", served=False)
    ns_bare = ctx.run.namespace(f"{NAME}-bare", served=False)
    ns_floor = ctx.run.namespace(f"{NAME}-floor", served=False)
    visible: dict[str, list[float]] = {way: [] for way in WAYS}
    with ctx.operator(NAME, no_pods=True) as op, bare_operator(ctx, ns_bare) as bare:
        jobs = {
            s: Watcher(ctx.batch().list_namespaced_job, s, key=task_of).start()
            for s in (ns, ns_raw, ns_bare, ns_floor)
        }
        tasks = {s: Watcher(*ctx.task_watch_call(), s, PLURAL).start() for s in (ns, ns_bare)}

        def raw(name: str) -> float:
            sent = time.perf_counter()
            ctx.create_job(ns_raw, raw_job(name, ["true"], pods=False))
            return jobs[ns_raw].first(name, timeout=60) - sent

        def operator(name: str) -> float:
            sent = time.perf_counter()
            ctx.post_task(ns, name)
            return jobs[ns].first(name, timeout=60) - sent

        def bare_kopf(name: str) -> float:
            sent = time.perf_counter()
            ctx.post_task(ns_bare, name)
            seen = jobs[ns_bare].first(name, timeout=60)
            tasks[ns_bare].first(name, handled, timeout=60)
            return seen - sent

        def floor(name: str) -> float:
            sent = time.perf_counter()
            ctx.post_task(ns_floor, name)
            ctx.create_job(ns_floor, raw_job(name, ["true"], pods=False))
            return jobs[ns_floor].first(name, timeout=60) - sent

        step = {"raw": raw, "operator": operator, "bare kopf": bare_kopf, "floor": floor}
        for i in range(WARMUP):  # kopf picks up the new namespace; connections open
            for way in order(i):
                step[way](f"w{i}{way[0]}")
        mark = ctx.audit.mark()
        cpu = op.cpu_seconds(), bare.cpu_seconds()
        started = time.monotonic()
        for i in range(n):
            for way in order(i):
                visible[way].append(_ms(step[way](f"{way[0]}{i:04d}")))
        seconds = time.monotonic() - started
        op_cpu = op.cpu_seconds() - cpu[0]
        bare_after = bare.cpu_seconds()
        bare_cpu = bare_after - cpu[1] if bare_after is not None and cpu[1] is not None else None
        for watcher in [*jobs.values(), *tasks.values()]:
            watcher.stop()
    for s in (ns, ns_raw, ns_bare, ns_floor):
        ctx.run.delete_namespace(s)
    for s in (ns, ns_bare):
        ctx.run.delete_namespace(s, wait=120)

    entries = list(audit.parse(ctx.audit.lines_since(mark), needle=f"bench-{ctx.run.id}"))
    raw_server = [
        _ms((e.completed - e.received).total_seconds())
        for e in entries
        if e.namespace == ns_raw and e.verb == "create" and e.resource == "jobs"
    ]
    d, r, b, f = (summary(visible[way]) for way in ("operator", "raw", "bare kopf", "floor"))
    figures = [
        Figure(
            "dispatch p50",
            d["p50"],
            "ms",
            r["p50"],
            "raw Job create → seen, p50",
            "≤ 1.5x raw",
            d["p50"] <= 1.5 * r["p50"],
        ),
        Figure("dispatch p95", d["p95"], "ms", r["p95"], "raw Job create → seen, p95", "-", None),
        Figure(
            "dispatch p99",
            d["p99"],
            "ms",
            r["p99"],
            "raw Job create → seen, p99",
            "≤ 100 ms",
            d["p99"] <= 100,
        ),
        Figure("dispatch p50 vs bare kopf", d["p50"], "ms", b["p50"], "bare kopf p50", "-", None),
        Figure(
            "bare kopf dispatch p50",
            b["p50"],
            "ms",
            r["p50"],
            "raw Job create → seen, p50",
            "-",
            None,
        ),
        Figure(
            "dispatch floor p50",
            f["p50"],
            "ms",
            r["p50"],
            "raw Job create → seen, p50",
            "-",
            None,
        ),
    ]
    return Result(
        NAME,
        figures,
        {
            "iterations": n,
            "order": "rotating: raw, operator, bare kopf, floor; operator, bare kopf, floor, ...",
            "seconds_measuring": round(seconds, 1),
            "client_visible_ms": {"operator": d, "raw": r, "bare kopf": b, "floor": f},
            "server_side_audit_log": {
                "operator": _server_side(entries, ns, lambda job: job.rsplit("-", 2)[0]),
                "bare kopf": _server_side(entries, ns_bare, lambda job: job),
                "raw_job_create_server_ms": summary(raw_server) if raw_server else None,
            },
            "operator_writes": dict(
                audit.count_writes((e for e in entries if e.namespace == ns), ctx.identity.user)
            ),
            "bare_kopf_writes": dict(
                audit.count_writes((e for e in entries if e.namespace == ns_bare), bare.user)
            ),
            "bare_kopf_pid": bare.pid,
            "cpu_seconds_per_task": {
                "operator": round(op_cpu / n, 4),
                "bare kopf": round(bare_cpu / n, 4) if bare_cpu is not None else None,
            },
        },
        method=__doc__ or "",
    )
