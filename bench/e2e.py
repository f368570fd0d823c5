"""5. End to end: a `print(2+2)` CodeTask, create → Succeeded, beside a raw Job doing the same.

The raw Job runs the runner image with `python3 -c 'print(2+2)'` as its command: create →
`status.succeeded`. Both are created with the same client and timed to the watch event that shows
them done, one at a time, alternating which goes first (ABBA) so drift in the machine's load hits
both alike. Pods really run on the node.

Afterwards one more task prints past the output limit on stdout and stderr, and the bytes each
finished task keeps in etcd are read from etcd itself (bench/etcd.py): the CodeTask, its Job and
pod (until the task is deleted), and their events (an hour), beside a raw Job's.
"""

from __future__ import annotations

import contextlib
import functools
import time
from datetime import datetime
from typing import Any

from bench import audit, etcd
from bench.cluster import GROUP, PLURAL, VERSION
from bench.harness import Context, codetask, job_succeeded, phase, raw_job
from bench.report import Figure, Result
from bench.stats import percentile, summary
from bench.watch import Watcher

NAME = "e2e"
TARGET_RATIO = 1.3
COMMAND = ["python3", "-c", "print(2+2)"]
FULL = "import sys\nsys.stdout.write('o' * 40000)\nsys.stderr.write('e' * 40000)\n"
"""Past the default output limit (16 KiB) on both streams."""


STAGES = (
    "created → Job created",
    "Job created → pod bound",
    "pod bound → kubelet's last status write",
    "kubelet's last status write → done",
)


def timeline(entries: list[audit.Entry], task: str | None, job: str) -> dict[str, float]:
    """Milliseconds of each stage of one run, from the API server's audit entries.

    `done` is the last status write of the CodeTask (operator), or of the raw Job (controller).
    """

    def at(verb: str, resource: str, name: str, last: bool = False) -> datetime | None:
        times = [
            e.completed for e in entries if (e.verb, e.resource, e.name) == (verb, resource, name)
        ]
        return (max if last else min)(times) if times else None

    # The Job controller creates pods by generateName: their audit entries have no name yet, so
    # the pod is known from its binding (the scheduler's) on.
    pod = next(
        (
            e.name
            for e in entries
            if e.verb == "create" and e.resource == "pods/binding" and e.name.startswith(f"{job}-")
        ),
        "",
    )
    points = [
        at("create", PLURAL, task) if task else at("create", "jobs", job),
        at("create", "jobs", job),
        at("create", "pods/binding", pod),
        at("patch", "pods/status", pod, last=True),
        at("patch", f"{PLURAL}/status", task, last=True)
        if task
        else at("update", "jobs/status", job, last=True),
    ]
    return {
        stage: (b - a).total_seconds() * 1000
        for stage, a, b in zip(STAGES, points, points[1:], strict=False)
        if a is not None and b is not None
    }


INSIDE = (
    "pod bound → code started (runner's clock)",
    "code started → code ended",
    "code ended → kubelet's last status write",
)


def kubelet_writes(entries: list[audit.Entry], job: str) -> int:
    """How many status writes the kubelet made for the Job's pod.

    Two: the exit was seen by the sync right after the container started. Three: the container was
    still running then, and its exit waited for the next PLEG relist (every second in 1.20).
    """
    pod = next(
        (e.name for e in entries if e.resource == "pods/binding" and e.name.startswith(f"{job}-")),
        "",
    )
    return sum(1 for e in entries if e.resource == "pods/status" and e.name == pod)


def inside(
    entries: list[audit.Entry], job: str, start: str | None, end: str | None
) -> dict[str, float]:
    """The kubelet stage of a CodeTask split at the code's start and end (the runner reports
    both with microseconds; same machine, same clock)."""
    pod = next(
        (e.name for e in entries if e.resource == "pods/binding" and e.name.startswith(f"{job}-")),
        "",
    )
    bound = [e.completed for e in entries if e.resource == "pods/binding" and e.name == pod]
    last = [e.completed for e in entries if e.resource == "pods/status" and e.name == pod]
    if not (bound and last and start and end):
        return {}
    points = [min(bound), _time(start), _time(end), max(last)]
    return {
        s: (b - a).total_seconds() * 1000
        for s, a, b in zip(INSIDE, points, points[1:], strict=False)
    }


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _late(entries: list[audit.Entry], jobs: list[str]) -> str:
    late = sum(1 for job in jobs if kubelet_writes(entries, job) >= 3)
    return f"{late} of {len(jobs)}"


def _kept(stored: dict[str, dict[str, int]], runs: list[list[str]]) -> dict[str, int]:
    """Median etcd bytes of one run's objects (`runs`: each run's object names), by kind, with
    `objects` the kept ones (all but events) together."""
    weights = [etcd.weight(stored, names) for names in runs]
    for w in weights:
        w["objects"] = sum(b for kind, b in w.items() if kind != "events")
    return {kind: round(percentile([w[kind] for w in weights], 50)) for kind in weights[0]}


def _medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {
        stage: round(percentile(values, 50))
        for stage in (*STAGES, *INSIDE)
        if (values := [r[stage] for r in runs if stage in r])
    }


def run(ctx: Context) -> Result:
    n = ctx.n(30, least=5)
    ns = ctx.run.namespace(NAME)
    task_ms: list[float] = []
    raw_ms: list[float] = []
    stages: dict[str, list[float]] = {"Pending": [], "Running": [], "Succeeded": []}
    failures: list[str] = []
    job_of: dict[str, str] = {}
    code_times: dict[str, tuple[str | None, str | None]] = {}
    with ctx.operator(NAME):
        tasks = Watcher(
            ctx.custom().list_namespaced_custom_object, GROUP, VERSION, ns, PLURAL
        ).start()
        jobs = Watcher(ctx.batch().list_namespaced_job, ns).start()

        def task(name: str) -> None:
            sent = time.perf_counter()
            ctx.create_task(ns, codetask(name))
            done = tasks.first(name, phase("Succeeded", "Failed", "TimedOut"), timeout=180)
            for stage, times in stages.items():
                with contextlib.suppress(TimeoutError):  # a phase the watch never showed
                    times.append((tasks.first(name, phase(stage), timeout=0) - sent) * 1000)
            obj: dict[str, Any] = ctx.custom().get_namespaced_custom_object(
                GROUP, VERSION, ns, PLURAL, name
            )
            if obj["status"]["phase"] != "Succeeded":
                failures.append(f"{name}: {obj['status'].get('reason')}")
            task_ms.append((done - sent) * 1000)
            job_of[name] = obj["status"].get("jobName") or ""
            code_times[name] = (obj["status"].get("startTime"), obj["status"].get("completionTime"))

        def untimed(name: str, code: str) -> None:
            ctx.create_task(ns, codetask(name, code))
            tasks.first(name, phase("Succeeded", "Failed", "TimedOut"), timeout=180)
            obj = ctx.custom().get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
            if obj["status"]["phase"] != "Succeeded":
                failures.append(f"{name}: {obj['status'].get('reason')}")
            job_of[name] = obj["status"].get("jobName") or ""

        def raw(name: str) -> None:
            sent = time.perf_counter()
            ctx.create_job(ns, raw_job(name, COMMAND))
            raw_ms.append((jobs.first(name, job_succeeded, timeout=180) - sent) * 1000)

        task("warm")  # kopf picks up the namespace; image and page cache are warm
        raw("raw-warm")
        task_ms.clear()
        raw_ms.clear()
        for times in stages.values():
            times.clear()
        mark = ctx.audit.mark()
        for i in range(n):
            pair = [functools.partial(task, f"e{i:03d}"), functools.partial(raw, f"raw-{i:03d}")]
            for step in pair if i % 4 in (0, 3) else pair[::-1]:
                step()
        untimed("full-output", FULL)
        tasks.stop()
        jobs.stop()
        stored = etcd.namespace_sizes(ns, f"{GROUP}/{PLURAL}")
    ctx.run.delete_namespace(ns, wait=120)
    kept = _kept(stored, [[t, job_of[t]] for t in job_of if t.startswith("e")])
    raw_kept = _kept(stored, [[f"raw-{i:03d}"] for i in range(n)])
    full = _kept(stored, [["full-output", job_of["full-output"]]])

    entries = [e for e in audit.parse(ctx.audit.lines_since(mark), needle=ns) if e.namespace == ns]
    task_stages = [
        {**timeline(entries, t, job_of[t]), **inside(entries, job_of[t], *code_times[t])}
        for t in job_of
        if t.startswith("e")
    ]
    raw_stages = [timeline(entries, None, f"raw-{i:03d}") for i in range(n)]
    t, r = summary(task_ms, 0), summary(raw_ms, 0)
    figures = [
        Figure(
            "end to end p50",
            t["p50"],
            "ms",
            r["p50"],
            "raw Job p50",
            f"≤ {TARGET_RATIO}x raw",
            t["p50"] <= TARGET_RATIO * r["p50"] and not failures,
        ),
        Figure("end to end p95", t["p95"], "ms", r["p95"], "raw Job p95", "-", None),
        *(
            Figure(name, value, "B", baseline, baseline_name, "-", None)
            for name, value, baseline, baseline_name in (
                (
                    "etcd bytes per finished task (task, Job, pod)",
                    kept["objects"],
                    raw_kept["objects"],
                    "raw Job + pod",
                ),
                (
                    "etcd bytes per finished task, output past the limit",
                    full["objects"],
                    raw_kept["objects"],
                    "raw Job + pod",
                ),
                (
                    "etcd bytes of events per task (kept an hour)",
                    kept["events"],
                    raw_kept["events"],
                    "raw Job's",
                ),
            )
        ),
    ]
    return Result(
        NAME,
        figures,
        {
            "runs": n,
            "codetask_ms": t,
            "raw_job_ms": r,
            "codetask_phase_seen_ms": {k: summary(v, 0) for k, v in stages.items() if v},
            "stages_p50_ms_from_audit_log": {
                "codetask": _medians(task_stages),
                "raw_job": _medians(raw_stages),
            },
            "pods_whose_exit_waited_for_the_next_pleg_relist": {
                "codetask": _late(entries, [job_of[t] for t in job_of if t.startswith("e")]),
                "raw_job": _late(entries, [f"raw-{i:03d}" for i in range(n)]),
            },
            "etcd_bytes_median": {"codetask": kept, "raw_job": raw_kept, "full_output": full},
            "failures": failures,
        },
        method=__doc__ or "",
    )
