"""2. Burst throughput: N CodeTasks created at once → all N Jobs exist, in tasks per second.

16 client threads create the tasks as fast as the API server takes them (no running-task limit);
a watch on the namespace's Jobs gives the time the last Job appeared. Jobs get `parallelism: 0`, so
no pod is ever made (the bench launcher sets it; see launcher.py). The baseline is the same
burst of raw Jobs from the same 16 threads, in the same run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from bench import audit
from bench.cluster import PLURAL
from bench.harness import Context, codetask, raw_job
from bench.profile import EtcdMeter
from bench.report import Figure, Result
from bench.watch import Watcher

NAME = "burst"
THREADS = 16
TARGET_PER_SECOND = 100


def _burst(n: int, create: Callable[[int], object]) -> float:
    """Seconds for `n` creates from THREADS threads."""
    started = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(create, range(n)))
    return time.perf_counter() - started


def run(ctx: Context) -> Result:
    n = ctx.n(1000, least=50)
    ns_raw = ctx.run.namespace("burst-raw")
    ns = ctx.run.namespace(NAME)
    with ctx.operator(NAME, no_pods=True) as op:
        warm = Watcher(ctx.batch().list_namespaced_job, ns).start()
        ctx.create_task(ns, codetask("warm"))  # kopf picks up the new namespace
        warm.wait_count(1, timeout=60)
        warm.stop()

        raw_etcd = EtcdMeter()
        raw_seconds = _burst(
            n, lambda i: ctx.create_job(ns_raw, raw_job(f"raw-{i:04d}", ["true"], pods=False))
        )
        raw_etcd_requests = raw_etcd.stop()
        time.sleep(2)
        mark = ctx.audit.mark()
        jobs = Watcher(ctx.batch().list_namespaced_job, ns).start()
        with ctx.measure(op, NAME) as spent:
            started = time.perf_counter()
            created_seconds = _burst(n, lambda i: ctx.create_task(ns, codetask(f"b{i:04d}")))
            last_job = jobs.wait_count(n, timeout=max(120, n))
            seconds = last_job - started
        time.sleep(5)  # status writes and Events that trail the Jobs
        jobs.stop()
    ctx.run.delete_namespace(ns_raw)
    ctx.run.delete_namespace(ns, wait=300)

    entries = [
        e
        for e in audit.parse(ctx.audit.lines_since(mark), needle=ns)
        if e.namespace == ns and e.user == ctx.identity.user
    ]
    status_writes = sorted(e.completed for e in entries if e.resource == f"{PLURAL}/status")
    job_creates = sorted(
        e.completed for e in entries if e.verb == "create" and e.resource == "jobs"
    )
    rate, raw_rate = n / seconds, n / raw_seconds
    figures = [
        Figure(
            "burst throughput",
            round(rate, 1),
            "tasks/s",
            round(raw_rate, 1),
            f"raw Jobs/s, {THREADS} threads",
            f"≥ {TARGET_PER_SECOND}/s",
            rate >= TARGET_PER_SECOND,
        ),
    ]
    return Result(
        NAME,
        figures,
        {
            "tasks": n,
            "threads": THREADS,
            "seconds_to_last_job": round(seconds, 2),
            "seconds_to_create_tasks": round(created_seconds, 2),
            "task_create_rate_per_second": round(n / created_seconds, 1),
            "raw_seconds": round(raw_seconds, 2),
            **spent,
            "raw_burst_api_server_etcd_requests": raw_etcd_requests,
            "operator_writes": dict(audit.count_writes(entries, ctx.identity.user).most_common()),
            "seconds_first_to_last_job_create_audit": round(
                (job_creates[-1] - job_creates[0]).total_seconds(), 2
            )
            if job_creates
            else None,
            "seconds_to_last_status_write_audit": round(
                (status_writes[-1] - job_creates[0]).total_seconds(), 2
            )
            if status_writes and job_creates
            else None,
        },
        method=__doc__ or "",
    )
