"""2. Burst throughput: N creates at once → all N Jobs seen, per second, three ways and a ceiling.

Bursts of N from the same 16 client threads, each timed the same way: `time.perf_counter()`
before the first create is sent → the arrival of the last of the N Jobs on a watch of its
namespace's Jobs (started beforehand); rate = N / that. In this order, each 5 s after the last
(the status writes and annotation patches that trail a burst settle before the next one):
- raw: N Job POSTs (`raw_job`) in a namespace nobody serves;
- operator: N CodeTasks in the operator's namespace (no running-task limit);
- bare kopf: N CodeTasks in bare kopf's namespace (bare.py);
- ceiling: N CodeTasks in a namespace nobody serves (no webhook, no Jobs), timed to the last
  create's answer: no controller of CodeTasks can start them faster than they can be created.
All Jobs have `parallelism: 0` (no pods). CPU seconds of the API server, etcd, controller manager,
the operator and bare kopf (its pod's process on this host), and the client are read from /proc
from the first create to 5 s after the last Job.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from bench import audit, profile
from bench.bare import bare_operator
from bench.cluster import PLURAL
from bench.harness import Context, raw_job, task_of
from bench.profile import CpuMeter, EtcdMeter
from bench.report import Figure, Result
from bench.watch import Watcher

NAME = "burst"
THREADS = 16
TARGET_RATIO = 0.35
SETTLE = 5.0


def _burst(
    ctx: Context,
    n: int,
    ns: str,
    prefix: str,
    create: Callable[[str], object],
    pids: dict[str, int | None],
    jobs_follow: bool = True,
) -> dict[str, Any]:
    """N creates named `prefix0000`... from THREADS threads; seconds to the last Job seen (or, if
    no Jobs follow, to the last create's answer). CPU seconds and etcd requests until SETTLE
    seconds after it (the writes that trail the Jobs)."""
    names = [f"{prefix}{i:04d}" for i in range(n)]
    jobs = Watcher(ctx.batch().list_namespaced_job, ns, key=task_of).start()
    etcd, cpu = EtcdMeter(), CpuMeter(pids)
    started = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(create, names))
    created = time.perf_counter() - started
    seconds = created
    if jobs_follow:
        deadline = time.monotonic() + max(120, n)
        last = max(
            jobs.first(name, timeout=max(0.1, deadline - time.monotonic())) for name in names
        )
        seconds = last - started
    jobs.stop()
    time.sleep(SETTLE)
    return {
        "seconds_to_last_job": round(seconds, 2),
        "per_second": round(n / seconds, 1),
        "seconds_to_create": round(created, 2),
        "create_rate_per_second": round(n / created, 1),
        "cpu_seconds": cpu.stop(),
        "api_server_etcd_requests": etcd.stop(),
    }


def run(ctx: Context) -> Result:
    n = ctx.n(1000, least=50)
    ns = ctx.run.namespace(NAME)
    ns_raw = ctx.run.namespace(f"{NAME}-raw", served=False)
    ns_bare = ctx.run.namespace(f"{NAME}-bare", served=False)
    ns_ceiling = ctx.run.namespace(f"{NAME}-ceiling", served=False)
    with ctx.operator(NAME, no_pods=True) as op, bare_operator(ctx, ns_bare) as bare:
        warm = Watcher(ctx.batch().list_namespaced_job, ns, key=task_of).start()
        ctx.post_task(ns, "warm")  # kopf picks up the new namespace
        warm.first("warm", timeout=60)
        warm.stop()
        time.sleep(SETTLE)
        pids = {"operator": op.pid, "bare kopf": bare.pid}
        mark = ctx.audit.mark()
        raw = _burst(
            ctx,
            n,
            ns_raw,
            "r",
            lambda name: ctx.create_job(ns_raw, raw_job(name, ["true"], pods=False)),
            pids,
        )
        with profile.record(op.pid, ctx.logs / f"{NAME}.folded", ctx.profile) as samples:
            ours = _burst(ctx, n, ns, "o", partial(ctx.post_task, ns), pids)
        kopf = _burst(ctx, n, ns_bare, "b", partial(ctx.post_task, ns_bare), pids)
        ceiling = _burst(
            ctx, n, ns_ceiling, "c", partial(ctx.post_task, ns_ceiling), pids, jobs_follow=False
        )
    for s in (ns, ns_raw, ns_bare, ns_ceiling):
        ctx.run.delete_namespace(s)
    for s in (ns, ns_bare):
        ctx.run.delete_namespace(s, wait=300)

    entries = list(audit.parse(ctx.audit.lines_since(mark), needle=f"bench-{ctx.run.id}"))
    mine = [e for e in entries if e.namespace == ns and e.user == ctx.identity.user]
    status_writes = sorted(e.completed for e in mine if e.resource == f"{PLURAL}/status")
    job_creates = sorted(e.completed for e in mine if e.verb == "create" and e.resource == "jobs")
    rate, raw_rate, bare_rate = ours["per_second"], raw["per_second"], kopf["per_second"]
    ceiling_rate = ceiling["per_second"]
    figures = [
        Figure(
            "burst throughput",
            rate,
            "tasks/s",
            raw_rate,
            f"raw Jobs/s, {THREADS} threads",
            f"≥ {TARGET_RATIO}x raw",
            rate >= TARGET_RATIO * raw_rate,
        ),
        Figure(
            "burst throughput vs bare kopf",
            rate,
            "tasks/s",
            bare_rate,
            f"bare kopf tasks/s, {THREADS} threads",
            "-",
            None,
        ),
        Figure(
            "bare kopf burst throughput",
            bare_rate,
            "tasks/s",
            raw_rate,
            f"raw Jobs/s, {THREADS} threads",
            "-",
            None,
        ),
        Figure(
            "burst ceiling (CodeTask creates alone)",
            ceiling_rate,
            "tasks/s",
            raw_rate,
            f"raw Jobs/s, {THREADS} threads",
            "-",
            None,
        ),
    ]
    return Result(
        NAME,
        figures,
        {
            "tasks": n,
            "threads": THREADS,
            "order": "raw, operator, bare kopf, ceiling",
            "bare_kopf_pid": bare.pid,
            "raw": raw,
            "operator": {**ours, **({"profile": samples} if samples else {})},
            "bare kopf": kopf,
            "ceiling": ceiling,
            "operator_writes": dict(audit.count_writes(mine, ctx.identity.user).most_common()),
            "bare_kopf_writes": dict(
                audit.count_writes(
                    (e for e in entries if e.namespace == ns_bare), bare.user
                ).most_common()
            ),
            "operator_seconds_first_to_last_job_create_audit": round(
                (job_creates[-1] - job_creates[0]).total_seconds(), 2
            )
            if job_creates
            else None,
            "operator_seconds_to_last_status_write_audit": round(
                (status_writes[-1] - job_creates[0]).total_seconds(), 2
            )
            if status_writes and job_creates
            else None,
        },
        method=__doc__ or "",
    )
