"""7. Warm start: a `print(1)` CodeTask bound to a ready pod of a warm pool, create → Succeeded,
beside the same task started cold and a raw Job, in one run.

The chart is installed with its in-chart Redis (`redis.enabled=true`: warm pods get their tasks
through Redis) and otherwise its defaults. A CodeTaskPool keeps two warm pods in the run's
namespace. Each round creates, one at a time and in alternating order (ABBA), a task of the pool
(warm), the same task with a memory limit off the pool's class (which starts cold: a pod of its
own) and a raw Job of the runner image running `python3 -c 'print(1)'`; each is timed from its
create to the watch event that shows it done. Before each warm task the pool is back to two ready
pods: the refill time (from a warm task's end to the pool's next ready pod) is a figure too.
Binding (`status.bindSeconds`: the Job and pod patches) is the operator's own measure.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections import Counter
from typing import Any

from bench.cluster import GROUP, PLURAL, VERSION
from bench.harness import Context, codetask, job_succeeded, phase, raw_job
from bench.report import Figure, Result
from bench.stats import summary
from bench.watch import Watcher

NAME = "warm"
TARGET_MS = 150
READY = 2
CODE = "print(1)"
COMMAND = ["python3", "-c", CODE]
COLD_RESOURCES = {"limits": {"memory": "500Mi"}}
"""Off the pool's class (its default 512Mi): the task starts cold, in the same pool."""
TIMEOUT = 180


def _pool(ctx: Context, ns: str) -> str:
    name = f"bench-{ctx.run.id}-{uuid.uuid4().hex[:4]}"
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "CodeTaskPool",
        "metadata": {"name": name},
        "spec": {"namespaces": [ns], "warm": {"namespaces": [ns], "minReady": READY}},
    }
    ctx.custom().create_cluster_custom_object(GROUP, VERSION, "codetaskpools", body)
    return name


def _ready(ctx: Context, pool: str) -> int:
    body = ctx.custom().get_cluster_custom_object(GROUP, VERSION, "codetaskpools", pool)
    return int((body.get("status") or {}).get("ready") or 0)


def _wait_ready(ctx: Context, pool: str, count: int) -> float:
    """Seconds until the pool has `count` ready pods."""
    started = time.monotonic()
    while _ready(ctx, pool) < count:
        if time.monotonic() - started > TIMEOUT:
            raise TimeoutError(f"pool {pool}: fewer than {count} ready pods after {TIMEOUT}s")
        time.sleep(0.05)
    return time.monotonic() - started


def run(ctx: Context) -> Result:
    n = ctx.n(30, least=5)
    ns = ctx.run.namespace(NAME)
    ms: dict[str, list[float]] = {"warm": [], "cold": [], "raw": []}
    bind_ms: list[float] = []
    refill_s: list[float] = []
    dispatch: Counter[str] = Counter()
    failures: list[str] = []
    with ctx.operator(NAME, values=("--set", "redis.enabled=true")):
        pool = _pool(ctx, ns)
        tasks = Watcher(
            ctx.custom().list_namespaced_custom_object, GROUP, VERSION, ns, PLURAL
        ).start()
        jobs = Watcher(ctx.batch().list_namespaced_job, ns).start()

        def task(kind: str, name: str, **spec: Any) -> dict[str, Any]:
            sent = time.perf_counter()
            ctx.create_task(ns, codetask(name, CODE, pool=pool, **spec))
            done = tasks.first(name, phase("Succeeded", "Failed", "TimedOut"), timeout=TIMEOUT)
            ms[kind].append((done - sent) * 1000)
            got: dict[str, Any] = ctx.custom().get_namespaced_custom_object(
                GROUP, VERSION, ns, PLURAL, name
            )["status"]
            if got.get("phase") != "Succeeded" or got.get("stdout") != "1\n":
                failures.append(f"{name}: {got.get('phase')} {got.get('reason')}")
            return got

        def warm(name: str) -> None:
            _wait_ready(ctx, pool, READY)
            got = task("warm", name)
            dispatch[got.get("dispatch") or "none"] += 1
            if got.get("bindSeconds") is not None:
                bind_ms.append(got["bindSeconds"] * 1000)
            refill_s.append(_wait_ready(ctx, pool, READY))

        def cold(name: str) -> None:
            task("cold", name, resources=COLD_RESOURCES)

        def raw(name: str) -> None:
            sent = time.perf_counter()
            ctx.create_job(ns, raw_job(name, COMMAND))
            ms["raw"].append((jobs.first(name, job_succeeded, timeout=TIMEOUT) - sent) * 1000)

        _wait_ready(ctx, pool, READY)
        warm("w-first")  # images and page cache warm, the namespace's policies in place
        cold("c-first")
        raw("r-first")
        for values in (*ms.values(), bind_ms, refill_s):
            values.clear()
        dispatch.clear()
        for i in range(n):
            steps = [
                functools.partial(warm, f"w{i:03d}"),
                functools.partial(cold, f"c{i:03d}"),
                functools.partial(raw, f"r{i:03d}"),
            ]
            for step in steps if i % 2 == 0 else steps[::-1]:
                step()
        tasks.stop()
        jobs.stop()
        ctx.custom().delete_cluster_custom_object(GROUP, VERSION, "codetaskpools", pool)
    ctx.run.delete_namespace(ns, wait=120)
    w, c, r = (summary(ms[k], 0) for k in ("warm", "cold", "raw"))
    b, f = summary(bind_ms, 1), summary(refill_s, 2)
    figures = [
        Figure(
            "warm start: create → Succeeded p50",
            w["p50"],
            "ms",
            r["p50"],
            "raw Job p50",
            f"≤ {TARGET_MS} ms",
            w["p50"] <= TARGET_MS and not failures and dispatch.get("warm") == n,
        ),
        Figure("warm start p99", w["p99"], "ms", r["p99"], "raw Job p99", "-", None),
        Figure(
            "cold start (same pool): create → Succeeded p50",
            c["p50"],
            "ms",
            r["p50"],
            "raw Job p50",
            "-",
            None,
        ),
        Figure("warm binding p50", b["p50"], "ms", None, "", "-", None),
        Figure("warm binding p99", b["p99"], "ms", None, "", "-", None),
        Figure("warm pool refill p50", f["p50"], "s", None, "", "-", None),
    ]
    return Result(
        NAME,
        figures,
        {
            "runs": n,
            "warm_ms": w,
            "cold_ms": c,
            "raw_job_ms": r,
            "bind_ms": b,
            "refill_seconds": f,
            "warm_tasks_by_dispatch": dict(dispatch),  # asdict() would rebuild a Counter from pairs
            "failures": failures,
        },
        method=__doc__ or "",
    )
