"""4. Memory: operator RSS with N CodeTasks present, most of them finished.

99 % of the tasks are created with a final status written at once: create, then a status PATCH
with what the operator writes for a `print(2+2)` that succeeded (built by its own
`status.final_patch`). Then a fresh operator starts and lists them all, as after a restart, and
the last 1 % are created live and dispatched (Jobs with `parallelism: 0`). RSS comes from
/proc/PID/status: VmHWM (the peak) and VmRSS once things settled. The baseline is the same
operator serving an empty namespace.

Finished tasks here have no Jobs or pods left; real ones keep theirs unless a TTL deletes them,
and the operator watches those too.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.cluster import GROUP, PLURAL, VERSION
from bench.harness import Context, codetask, drain, phase
from bench.operator_process import Operator
from bench.report import Figure, Result
from bench.watch import Watcher
from codetask_operator import api, status  # type: ignore[import-not-found, unused-ignore]
from codetask_operator.jobs import job_name  # type: ignore[import-not-found, unused-ignore]

NAME = "memory"
TARGET_MB = 150
THREADS = 16
SETTLE_SECONDS = 15
DISPATCH_TIMEOUT = 3600
CODE = """\
import json, sys

def main() -> None:
    data = {"numbers": list(range(10)), "ok": True}
    print(json.dumps(data))
    print(2 + 2)

main()
"""


def finished_status(name: str, uid: str) -> dict[str, Any]:
    """What the operator writes for a task whose one attempt succeeded."""
    now = datetime.now(UTC)
    started = now - timedelta(seconds=1)
    pod = status.PodView.of(
        {
            "metadata": {"name": f"{job_name(name, uid, 1)}-abcde"},
            "spec": {"nodeName": "codetask-node"},
            "status": {
                "containerStatuses": [
                    {
                        "state": {
                            "terminated": {
                                "exitCode": 0,
                                "startedAt": status.iso(started),
                                "finishedAt": status.iso(now),
                            }
                        }
                    }
                ]
            },
        }
    )
    result = status.RunnerResult(
        "Completed",
        0,
        "",
        '{"numbers": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "ok": true}\n4\n',
        "",
        False,
        False,
        status.iso(started),
        status.iso(now),
        0.012,
    )
    outcome = status.Outcome(
        api.Phase.SUCCEEDED, api.Reason.COMPLETED, "the code exited 0", 0, result
    )
    ctx = status.Context(1, 1, api.OUTPUT_LIMIT_DEFAULT, False, False, now)
    admitted = status.set_condition(
        [],
        api.ConditionType.ADMITTED,
        api.ConditionStatus.TRUE,
        api.Reason.SCHEDULED,
        f"Job {job_name(name, uid, 1)} created",
        started,
        1,
    )
    base = {"attempts": 1, "jobName": job_name(name, uid, 1), "conditions": admitted}
    return {**base, **status.final_patch(base, outcome, pod, ctx)}


class _Peak:
    """Samples the operator's RSS every 0.5 s (VmHWM says the same; this also gives the curve)."""

    def __init__(self, op: Operator) -> None:
        self.op = op
        self.curve: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            rss = self.op.memory_mb().get("VmRSS")
            if rss is None:  # the process has exited
                return
            self.curve.append((round(time.monotonic() - self._t0, 1), rss))

    @property
    def highest(self) -> float:
        return max((rss for _, rss in self.curve), default=0.0)

    def stop(self) -> list[tuple[float, float]]:
        self._stop.set()
        self._thread.join()
        return self.curve


def _wait_dispatched(op: Operator, tasks: Watcher, names: list[str]) -> str | None:
    """None once every task is Pending; else why not (the operator exited, or an hour passed)."""
    end = time.monotonic() + DISPATCH_TIMEOUT
    for name in names:
        while True:
            if (code := op.exit_code()) is not None:
                return f"the operator exited ({code}): {op.last_error()}"
            try:
                tasks.first(name, phase("Pending"), timeout=2)
                break
            except TimeoutError:
                if time.monotonic() > end:
                    return f"{name} not dispatched within {DISPATCH_TIMEOUT}s"
    return None


def run(ctx: Context) -> Result:
    n = ctx.n(10000, least=200)
    live = max(1, n // 100)
    ns = ctx.run.namespace(NAME)
    with ctx.operator("memory-idle", no_pods=True) as op:
        time.sleep(SETTLE_SECONDS)
        idle = op.memory_mb()

    def create_finished(i: int) -> int:
        name = f"m{i:05d}"
        created = ctx.create_task(ns, codetask(name, CODE))
        body = {"status": finished_status(name, created["metadata"]["uid"])}
        drain(
            ctx.custom().patch_namespaced_custom_object_status(
                GROUP, VERSION, ns, PLURAL, name, body, _preload_content=False
            )
        )
        return len(json.dumps(created)) + len(json.dumps(body))

    started = time.monotonic()
    with ThreadPoolExecutor(THREADS) as pool:
        sizes = list(pool.map(create_finished, range(n - live)))
    create_seconds = time.monotonic() - started

    with ctx.operator(NAME, no_pods=True) as op, ctx.measure(op, NAME) as spent:
        peak = _Peak(op)
        ready = time.monotonic()
        tasks = Watcher(
            ctx.custom().list_namespaced_custom_object, GROUP, VERSION, ns, PLURAL
        ).start()
        for i in range(live):
            ctx.create_task(ns, codetask(f"live{i:03d}", CODE))
        failure = _wait_dispatched(op, tasks, [f"live{i:03d}" for i in range(live)])
        dispatched = time.monotonic() - ready
        if failure is None:
            time.sleep(SETTLE_SECONDS)
        settled = op.memory_mb()
        curve = peak.stop()
        tasks.stop()
    if failure is not None:  # what it reached before it failed
        settled = {"VmHWM": peak.highest, "VmRSS": peak.highest}
    started = time.monotonic()
    ctx.run.delete_namespace(ns, wait=600)
    delete_seconds = time.monotonic() - started

    figures = [
        Figure(
            f"operator RSS peak, {n} tasks",
            settled["VmHWM"],
            "MB",
            idle["VmRSS"],
            "idle operator RSS",
            f"≤ {TARGET_MB} MB",
            settled["VmHWM"] <= TARGET_MB and failure is None,
        ),
        Figure(
            f"operator RSS settled, {n} tasks",
            settled["VmRSS"],
            "MB",
            idle["VmRSS"],
            "idle operator RSS",
            f"≤ {TARGET_MB} MB",
            settled["VmRSS"] <= TARGET_MB and failure is None,
        ),
        Figure(
            f"restart with {n} tasks: {'operator failed' if failure else 'dispatching'} after",
            round(dispatched, 1),
            "s",
            None,
            "",
            "-",
            None,
        ),
    ]
    return Result(
        NAME,
        figures,
        {
            "tasks": n,
            "finished": n - live,
            "live": live,
            "task_json_bytes_mean": round(sum(sizes) / len(sizes)),
            "seconds_to_create_finished_tasks": round(create_seconds, 1),
            "create_rate_per_second": round((n - live) / create_seconds, 1),
            "seconds_from_healthy_to_live_tasks_dispatched": round(dispatched, 1),
            "operator_failed": failure,
            **spent,
            "idle_mb": idle,
            "settled_mb": settled,
            "rss_curve_mb": curve[:: max(1, len(curve) // 60)],
            "seconds_to_delete_namespace": round(delete_seconds, 1),
        },
        method=__doc__ or "",
    )
