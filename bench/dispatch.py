"""1. Dispatch latency: CodeTask created → its Job exists, beside a raw Job create round trip.

One task at a time (each waits for the previous one's Pending status), interleaved with raw
`create_namespaced_job` calls in the same namespace. Jobs get `parallelism: 0` (no pods).

The figure comes from the audit log: the API server's completion time of the CodeTask's create to
that of its Job's create — same clock, microseconds. The client-visible time (create sent → the Job
seen in a watch, which adds the CodeTask's own create round trip) is given beside it.
"""

from __future__ import annotations

import time
from typing import Any

from bench import audit
from bench.cluster import GROUP, PLURAL, VERSION
from bench.harness import Context, codetask, phase, raw_job
from bench.report import Figure, Result
from bench.stats import summary
from bench.watch import Watcher
from codetask_operator.jobs import LABEL_TASK  # type: ignore[import-not-found, unused-ignore]

NAME = "dispatch"
WARMUP = 5


def _task_of(job: dict[str, Any]) -> str:
    return str((job["metadata"].get("labels") or {}).get(LABEL_TASK) or job["metadata"]["name"])


def _ms(seconds: float) -> float:
    return seconds * 1000


def run(ctx: Context) -> Result:
    n = ctx.n(200, least=20)
    ns = ctx.run.namespace(NAME)
    raw: list[float] = []
    visible: list[float] = []
    with ctx.operator(NAME, no_pods=True) as op:
        jobs = Watcher(ctx.batch().list_namespaced_job, ns, key=_task_of).start()
        tasks = Watcher(
            ctx.custom().list_namespaced_custom_object, GROUP, VERSION, ns, PLURAL
        ).start()

        def one(name: str) -> float:
            sent = time.perf_counter()
            ctx.create_task(ns, codetask(name))
            seen = jobs.first(name, timeout=60)
            tasks.first(name, phase("Pending"), timeout=60)
            return seen - sent

        for i in range(WARMUP):  # kopf picks up the new namespace
            one(f"warm-{i}")
        mark = ctx.audit.mark()
        cpu = op.cpu_seconds()
        for i in range(n):
            sent = time.perf_counter()
            ctx.create_job(ns, raw_job(f"raw-{i:04d}", ["true"], pods=False))
            raw.append(_ms(time.perf_counter() - sent))
            visible.append(_ms(one(f"d{i:04d}")))
        cpu = op.cpu_seconds() - cpu
        jobs.stop()
        tasks.stop()
    ctx.run.delete_namespace(ns, wait=120)

    entries = [e for e in audit.parse(ctx.audit.lines_since(mark), needle=ns) if e.namespace == ns]
    task_done = {e.name: e for e in entries if e.verb == "create" and e.resource == PLURAL}
    job_done = {
        e.name.rsplit("-", 2)[0]: e
        for e in entries
        if e.verb == "create" and e.resource == "jobs" and e.user == ctx.identity.user
    }
    raw_server = [
        _ms((e.completed - e.received).total_seconds())
        for e in entries
        if e.verb == "create" and e.resource == "jobs" and e.name.startswith("raw-")
    ]
    pairs = [(task_done[t], job_done[t]) for t in task_done if t in job_done]
    dispatch = [_ms((j.completed - t.completed).total_seconds()) for t, j in pairs]
    # Commit lies between the create's receipt and its completion: completion is the close bound
    # (the event can even reach the operator first), receipt the far one.
    from_received = [_ms((j.completed - t.received).total_seconds()) for t, j in pairs]
    reaction = [_ms((j.received - t.completed).total_seconds()) for t, j in pairs]
    op_create = [_ms((j.completed - j.received).total_seconds()) for _, j in pairs]
    d, r = summary(dispatch), summary(raw)
    figures = [
        Figure(
            "dispatch p50",
            d["p50"],
            "ms",
            r["p50"],
            "raw Job create p50",
            "≤ 1.5x raw",
            d["p50"] <= 1.5 * r["p50"],
        ),
        Figure("dispatch p95", d["p95"], "ms", r["p95"], "raw Job create p95", "-", None),
        Figure(
            "dispatch p99",
            d["p99"],
            "ms",
            r["p99"],
            "raw Job create p99",
            "≤ 100 ms",
            d["p99"] <= 100,
        ),
        Figure(
            "dispatch p50, client-visible",
            summary(visible)["p50"],
            "ms",
            r["p50"],
            "raw Job create p50",
            "-",
            None,
        ),
    ]
    return Result(
        NAME,
        figures,
        {
            "tasks": n,
            "matched_in_audit_log": len(pairs),
            "dispatch_ms": d,
            "dispatch_from_codetask_request_received_ms": summary(from_received),
            "raw_job_create_round_trip_ms": r,
            "raw_job_create_server_ms": summary(raw_server) if raw_server else None,
            "client_visible_ms": summary(visible),
            "operator_reaction_ms": summary(reaction),
            "operator_job_create_server_ms": summary(op_create),
            "operator_cpu_seconds_per_task": round(cpu / n, 4),
        },
        method=__doc__ or "",
    )
