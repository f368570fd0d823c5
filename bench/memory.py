"""4. Memory: operator RSS with N finished CodeTasks whose Jobs and pods are still there (as after
a restart), and with 1000 unfinished ones.

Finished (10 000): what successful tasks leave within the chart's retention defaults: none older
than its TTL (a week), spread over namespaces of its keepFinishedPerNamespace each (1000: ten
namespaces), so nothing is deleted. Made by 16 client threads with six requests a task:
- the Job, built by the operator's own `jobs.build_job` (controller ownerReference to the task),
  created with `parallelism: 0` (the Job controller never makes a pod for it) and its status
  patched to finished (Complete, `succeeded: 1`); every task's Job first, then 5 s for the Job
  controller's cache to see them finished (it would delete an active pod of an unfinished one),
  then the pods;
- the pod the Job controller would have made: the template's labels (with `job-name` and
  `controller-uid`) and annotations (the code), a controller ownerReference to the Job, bound to a
  fake Node (bench/fake_node.py: no kubelet, unschedulable, tainted; the pod tolerates every
  taint), its status patched to Succeeded with container `runner` terminated (exit 0, Completed)
  and the runner's result JSON as termination message (encoded by `codetask_runner.result`);
- the CodeTask with the final status the operator writes for that Job and pod
  (`status.attempt_outcome`, `status.final_patch`);
- the Job and the pod labelled `codetask.dev/finished`, as the operator labels them once it has
  written that status (until 2026-12-05 they were not, and every restart listed them).
Then a fresh operator starts and lists them all; 1 % more tasks are created live and dispatched
(Jobs with `parallelism: 0`, no pods); 15 s to settle. Afterwards the pods are counted: one gone
(pod GC, eviction), evicted, no longer Succeeded, or one more (the Job controller's), and the
figures are not met.

Unfinished (1000): a fresh operator serving only a namespace of their own (until 2026-12-05 it
served the run's namespaces, the finished tasks' included), the tasks created at once by 16
threads, all dispatched (Pending, their Jobs without pods), then 15 s to settle.

RSS from /proc/PID/status: VmHWM (the peak) and VmRSS at the end. The baseline is the same
operator serving one empty namespace (the run's others hold the finished tasks by then).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml
from kubernetes.client.exceptions import ApiException

from bench import fake_node
from bench.cluster import GROUP, PLURAL, VERSION, core_api
from bench.harness import Context, codetask, phase
from bench.operator_process import CHART, Operator
from bench.report import Figure, Result
from bench.watch import Watcher
from codetask_operator import api, jobs, status  # type: ignore[import-not-found, unused-ignore]
from codetask_operator.settings import Settings  # type: ignore[import-not-found, unused-ignore]
from codetask_runner import capture  # type: ignore[import-not-found, unused-ignore]
from codetask_runner import result as runner_result  # type: ignore[import-not-found, unused-ignore]

NAME = "memory"
UNFINISHED = "memory-unfinished"
TARGET_MB = 150
THREADS = 16
SETTLE_SECONDS = 15
DISPATCH_TIMEOUT = 3600
DELETE_TIMEOUT = 900
JOB_CACHE_SECONDS = 5
"""Between the last Job's status patch and the first pod: time for the Job controller's cache."""
REQUESTS_PER_TASK = 7
"""Task create, Job create, Job status, pod create, pod status, task status, task label."""
CODE = """\
import json, sys

def main() -> None:
    data = {"numbers": list(range(10)), "ok": True}
    print(json.dumps(data))
    print(2 + 2)

main()
"""
STDOUT = '{"numbers": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "ok": true}\n4\n'
MERGE_PATCH = "application/merge-patch+json"
POD_SUFFIX_CHARS = "bcdfghjklmnpqrstvwxz2456789"
"""What the Job controller's random pod-name suffixes are made of (apimachinery's rand)."""
HOST_IP = "198.19.0.1"
"""The fake node's address: 198.18.0.0/15 is reserved for benchmarks, never routed here."""


def chart_keep() -> int:
    """The chart's default keepFinishedPerNamespace (0: no limit)."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    return int(values["defaults"]["keepFinishedPerNamespace"])


def _settings() -> Any:
    """The operator's settings as the local cluster's release has them (operator_process.py)."""
    return Settings(image_pull_policy="Never", pod_dns_policy="Default")


def _k8s_time(t: datetime) -> str:
    """A Kubernetes timestamp: RFC 3339, whole seconds."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _read(response: Any) -> bytes:
    """The whole body of a raw response; its connection goes back to the pool."""
    data: bytes = response.data
    response.release_conn()
    return data


def termination_message(started: datetime, finished: datetime) -> str:
    """The runner's result for CODE, as it writes it to /dev/termination-log."""
    out, err = capture.Tail(api.OUTPUT_LIMIT_DEFAULT), capture.Tail(api.OUTPUT_LIMIT_DEFAULT)
    out.feed(STDOUT.encode())
    outcome = runner_result.Outcome(
        reason=runner_result.COMPLETED,
        exit_code=0,
        signal=None,
        message="",
        started_at=started.timestamp(),
        finished_at=finished.timestamp(),
        duration=(finished - started).total_seconds(),
        stdout=out,
        stderr=err,
    )
    message: bytes = runner_result.encode_fitted(outcome)
    return message.decode()


def job_manifest(task: dict[str, Any], settings: Any) -> dict[str, Any]:
    """The Job the operator makes for the task's first attempt, with `parallelism: 0`."""
    meta = task["metadata"]
    spec = api.CodeTaskSpec.model_validate(task["spec"])
    job: dict[str, Any] = jobs.build_job(
        meta["name"], meta["uid"], meta["namespace"], spec, 1, settings
    )
    job["spec"]["parallelism"] = 0
    job["metadata"]["labels"][jobs.LABEL_FINISHED] = "true"  # as the operator leaves it
    return job


def job_status(started: datetime, ended: datetime) -> dict[str, Any]:
    """What the Job controller writes once the Job's one pod succeeded."""
    complete = {
        "type": "Complete",
        "status": "True",
        "lastProbeTime": _k8s_time(ended),
        "lastTransitionTime": _k8s_time(ended),
    }
    return {
        "startTime": _k8s_time(started),
        "completionTime": _k8s_time(ended),
        "succeeded": 1,
        "conditions": [complete],
    }


def pod_manifest(job: dict[str, Any], node: str) -> dict[str, Any]:
    """The pod the Job controller makes from the Job's template (the API server added
    `controller-uid` and `job-name` to its labels), bound to `node`, tolerating every taint, with
    the label the operator adds once its task has finished."""
    meta, template = job["metadata"], job["spec"]["template"]
    suffix = "".join(random.choices(POD_SUFFIX_CHARS, k=5))
    owner = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{meta['name']}-{suffix}",
            "generateName": f"{meta['name']}-",
            "labels": {**template["metadata"]["labels"], jobs.LABEL_FINISHED: "true"},
            "annotations": template["metadata"].get("annotations") or {},
            "ownerReferences": [owner],
        },
        "spec": {**template["spec"], "nodeName": node, "tolerations": fake_node.TOLERATE_ALL},
    }


def pod_status(
    pod: dict[str, Any], index: int, started: datetime, ended: datetime
) -> dict[str, Any]:
    """What the kubelet reports once the pod's runner exited 0 and wrote its result."""
    container = pod["spec"]["containers"][0]
    code_started = started + timedelta(seconds=0.4)
    code_ended = code_started + timedelta(seconds=0.012)
    container_id = f"containerd://{secrets.token_hex(32)}"
    pod_ip = f"198.18.{index // 256 % 256}.{index % 256}"

    def condition(type_: str, value: str, at: datetime) -> dict[str, Any]:
        reason = {"reason": "PodCompleted"} if type_ != "PodScheduled" else {}
        return {
            "type": type_,
            "status": value,
            **reason,
            "lastProbeTime": None,
            "lastTransitionTime": _k8s_time(at),
        }

    terminated = {
        "exitCode": 0,
        "reason": "Completed",
        "message": termination_message(code_started, code_ended),
        "startedAt": _k8s_time(started),
        "finishedAt": _k8s_time(ended),
        "containerID": container_id,
    }
    image = container["image"]
    return {
        "phase": "Succeeded",
        "conditions": [
            condition("Initialized", "True", started),
            condition("Ready", "False", ended),
            condition("ContainersReady", "False", ended),
            condition("PodScheduled", "True", started),
        ],
        "hostIP": HOST_IP,
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": _k8s_time(started),
        "containerStatuses": [
            {
                "name": container["name"],
                "state": {"terminated": terminated},
                "lastState": {},
                "ready": False,
                "restartCount": 0,
                "image": f"docker.io/library/{image}" if "/" not in image else image,
                "imageID": f"sha256:{hashlib.sha256(image.encode()).hexdigest()}",
                "containerID": container_id,
                "started": False,
            }
        ],
    }


def finished_status(
    task: dict[str, Any], job: dict[str, Any], pod: dict[str, Any], now: datetime
) -> dict[str, Any]:
    """What the operator has written once the task's Job and pod ended: the Pending status of its
    dispatch, then the final one its phase machine derives from that Job and pod."""
    generation = task["metadata"].get("generation")
    name = job["metadata"]["name"]
    view = status.PodView.of(pod)
    outcome = status.attempt_outcome(job, view, custom_image=False)
    if outcome is None:
        raise RuntimeError(f"the operator would not call {name} finished: {pod['status']}")
    admitted = status.set_condition(
        [],
        api.ConditionType.ADMITTED,
        api.ConditionStatus.TRUE,
        api.Reason.SCHEDULED,
        f"Job {name} created",
        status.parse_time(job["status"]["startTime"]),
        generation,
    )
    dispatched = {
        "phase": str(api.Phase.PENDING),
        "reason": str(api.Reason.SCHEDULED),
        "message": f"Job {name} created (attempt 1)",
        "attempts": 1,
        "jobName": name,
        "conditions": admitted,
        "observedGeneration": generation,
    }
    ctx = status.Context(generation, 1, api.OUTPUT_LIMIT_DEFAULT, False, now)
    final: dict[str, Any] = status.final_patch(dispatched, outcome, view, ctx)
    return {**dispatched, **final}


@dataclass(frozen=True)
class Dispatched:
    """A task and its finished Job as stored (raw JSON: 10 000 of them parsed would weigh
    hundreds of MB here), before the Job's pod exists."""

    index: int
    namespace: str
    task: dict[str, Any]
    """Its metadata: name, uid, generation."""
    job: bytes


@dataclass(frozen=True)
class Made:
    """One finished task as stored: its pod's name and each object's size in bytes (JSON)."""

    pod: str
    task_bytes: int
    job_bytes: int
    pod_bytes: int


def make_job(ctx: Context, ns: str, settings: Any, index: int) -> Dispatched:
    """A task and its Job, finished before its pod exists: the Job controller leaves a finished
    Job alone, and would delete an active pod beyond `parallelism: 0`."""
    batch = ctx.batch()
    task = ctx.create_task(ns, codetask(f"m{index:05d}", CODE))
    ended = datetime.now(UTC)
    job = json.loads(
        _read(batch.create_namespaced_job(ns, job_manifest(task, settings), _preload_content=False))
    )
    stored = _read(
        batch.patch_namespaced_job_status(
            job["metadata"]["name"],
            ns,
            {"status": job_status(ended - timedelta(seconds=1), ended)},
            _content_type=MERGE_PATCH,
            _preload_content=False,
        )
    )
    meta = {k: task["metadata"].get(k) for k in ("name", "uid", "generation")}
    return Dispatched(index, ns, {"metadata": meta}, stored)


def make_pod(ctx: Context, node: str, dispatched: Dispatched) -> Made:
    """The Job's pod, Succeeded, and the task's final status."""
    core = core_api(ctx.api)
    ns = dispatched.namespace
    job = json.loads(dispatched.job)
    started = status.parse_time(job["status"]["startTime"])
    ended = status.parse_time(job["status"]["completionTime"])
    pod = json.loads(
        _read(core.create_namespaced_pod(ns, pod_manifest(job, node), _preload_content=False))
    )
    pod["status"] = pod_status(pod, dispatched.index, started, ended)
    pod_bytes = _read(
        core.patch_namespaced_pod_status(
            pod["metadata"]["name"],
            ns,
            {"status": pod["status"]},
            _content_type=MERGE_PATCH,
            _preload_content=False,
        )
    )
    task = dispatched.task
    body = {"status": finished_status(task, job, pod, ended)}
    _read(
        ctx.custom().patch_namespaced_custom_object_status(
            GROUP, VERSION, ns, PLURAL, task["metadata"]["name"], body, _preload_content=False
        )
    )
    finished = {"metadata": {"labels": {jobs.LABEL_FINISHED: "true"}}}  # as the operator leaves it
    task_bytes = _read(
        ctx.custom().patch_namespaced_custom_object(
            GROUP,
            VERSION,
            ns,
            PLURAL,
            task["metadata"]["name"],
            finished,
            _content_type=MERGE_PATCH,
            _preload_content=False,
        )
    )
    return Made(pod["metadata"]["name"], len(task_bytes), len(dispatched.job), len(pod_bytes))


def pods_left(ctx: Context, namespaces: list[str], made: set[str]) -> dict[str, Any]:
    """Whether the finished pods stayed as they were made: none gone (pod GC, the taint
    manager's eviction, the operator's retention), deleting, evicted or changed phase, and no
    other pod (the Job controller's)."""
    pods = {}
    for ns in namespaces:
        listing = json.loads(
            _read(core_api(ctx.api).list_namespaced_pod(ns, _preload_content=False))
        )
        pods.update({p["metadata"]["name"]: p for p in listing["items"]})
    ours = [pods[name] for name in made & pods.keys()]
    others = sorted(pods.keys() - made)
    found = {
        "made": len(made),
        "gone": len(made - pods.keys()),
        "deleting": sum(1 for p in ours if p["metadata"].get("deletionTimestamp")),
        "evicted": sum(1 for p in ours if (p.get("status") or {}).get("reason") == "Evicted"),
        "not_succeeded": sum(
            1 for p in ours if (p.get("status") or {}).get("phase") != "Succeeded"
        ),
        "other_pods": len(others),
        "other_pod_names": others[:10],
    }
    found["intact"] = not any(
        found[k] for k in ("gone", "deleting", "evicted", "not_succeeded", "other_pods")
    )
    return found


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
        return self.curve[:: max(1, len(self.curve) // 60)]


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


def _memory(op: Operator, peak: _Peak, failure: str | None) -> dict[str, float]:
    """VmHWM and VmRSS now, or the highest RSS sampled when the operator failed or ended."""
    now = op.memory_mb() if failure is None else {}
    return now or {"VmHWM": peak.highest, "VmRSS": peak.highest}


def _settled(
    ctx: Context, op: Operator, peak: _Peak, tasks: Watcher, names: list[str]
) -> tuple[str | None, float, dict[str, float], list[tuple[float, float]]]:
    """Wait until `names` are dispatched, let the operator settle, and read its memory: why it
    failed (or None), when they were dispatched (monotonic), its memory, the RSS curve."""
    failure = _wait_dispatched(op, tasks, names)
    dispatched_at = time.monotonic()
    if failure is None:
        ctx.settle(SETTLE_SECONDS)
    memory = _memory(op, peak, failure)
    curve = peak.stop()
    tasks.stop()
    return failure, dispatched_at, memory, curve


def _task_watch(ctx: Context, ns: str) -> Watcher:
    return Watcher(ctx.custom().list_namespaced_custom_object, GROUP, VERSION, ns, PLURAL).start()


def _delete(ctx: Context, ns: str) -> float:
    """Delete the namespace and wait for it to be gone; the seconds that took."""
    started = time.monotonic()
    ctx.run.delete_namespace(ns, wait=DELETE_TIMEOUT)
    return round(time.monotonic() - started, 1)


def make_finished(ctx: Context, namespaces: list[str], node: str, n: int) -> dict[str, Any]:
    """N finished tasks with their Jobs and pods, in `namespaces` in equal blocks, pods bound to
    `node`."""
    settings = _settings()
    per = -(-n // len(namespaces))
    started = time.monotonic()
    with ThreadPoolExecutor(THREADS) as pool:
        finished_jobs = list(
            pool.map(lambda i: make_job(ctx, namespaces[i // per], settings, i), range(n))
        )
        jobs_seconds = time.monotonic() - started
        # The Job controller deletes an active pod beyond `parallelism: 0` of a Job its cache
        # still has unfinished: time for the cache to see the last Jobs finished.
        time.sleep(JOB_CACHE_SECONDS)
        made = list(pool.map(lambda d: make_pod(ctx, node, d), finished_jobs))
    create_seconds = time.monotonic() - started
    creating = create_seconds - JOB_CACHE_SECONDS
    return {
        "tasks": n,
        "namespaces": len(namespaces),
        "objects": 3 * n,
        "requests": REQUESTS_PER_TASK * n,
        "pods": {m.pod for m in made},
        "started": started,
        "bytes_mean": {
            "codetask": round(sum(m.task_bytes for m in made) / n),
            "job": round(sum(m.job_bytes for m in made) / n),
            "pod": round(sum(m.pod_bytes for m in made) / n),
        },
        "seconds_to_create": round(create_seconds, 1),
        "seconds_paused_for_the_job_controller": JOB_CACHE_SECONDS,
        "seconds_to_create_tasks_and_jobs": round(jobs_seconds, 1),
        "create_rate_tasks_per_second": round(n / creating, 1),
        "create_rate_requests_per_second": round(REQUESTS_PER_TASK * n / creating, 1),
    }


def measure_restart(ctx: Context, ns: str, live: int, repeat: int) -> dict[str, Any]:
    """A fresh operator listing the finished tasks, then `live` tasks more in `ns` (deleted
    afterwards, so the next repeat finds the same)."""
    starting = time.monotonic()
    names = [f"live{repeat}-{i:03d}" for i in range(live)]
    with ctx.operator(NAME, no_pods=True) as op, ctx.measure(op, NAME) as spent:
        ready = time.monotonic()
        peak = _Peak(op)
        tasks = _task_watch(ctx, ns)
        for name in names:
            ctx.create_task(ns, codetask(name, CODE))
        failure, dispatched_at, memory, curve = _settled(ctx, op, peak, tasks, names)
        dispatched = dispatched_at - ready
    for name in names:
        with contextlib.suppress(ApiException):
            ctx.custom().delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    return {
        "seconds_to_start_operator": round(ready - starting, 1),
        "live": live,
        "seconds_from_healthy_to_live_tasks_dispatched": round(dispatched, 1),
        "operator_failed": failure,
        **spent,
        "mb": memory,
        "rss_curve_mb": curve,
    }


def measure_unfinished(ctx: Context, n: int, repeat: int = 0) -> dict[str, Any]:
    """N tasks created at once against a fresh operator, all dispatched, none finishing."""
    ns = ctx.run.namespace(f"{UNFINISHED}-{repeat}")
    names = [f"u{i:04d}" for i in range(n)]
    # Not the finished tasks' namespace.
    with (
        ctx.operator(UNFINISHED, no_pods=True, serves=ns) as op,
        ctx.measure(op, UNFINISHED) as spent,
    ):
        peak = _Peak(op)
        tasks = _task_watch(ctx, ns)
        started = time.monotonic()
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(lambda name: ctx.create_task(ns, codetask(name, CODE)), names))
        create_seconds = time.monotonic() - started
        failure, dispatched_at, memory, curve = _settled(ctx, op, peak, tasks, names)
        dispatched = dispatched_at - started
    return {
        "tasks": n,
        "seconds_to_create": round(create_seconds, 1),
        "create_rate_tasks_per_second": round(n / create_seconds, 1),
        "seconds_from_first_create_to_all_dispatched": round(dispatched, 1),
        "operator_failed": failure,
        **spent,
        "mb": memory,
        "rss_curve_mb": curve,
        "seconds_to_delete_namespace": _delete(ctx, ns),
    }


def _rss_figures(
    label: str, found: dict[str, Any], idle: dict[str, float], valid: bool
) -> list[Figure]:
    return [
        Figure(
            f"operator RSS {which}, {label}",
            found["mb"][key],
            "MB",
            idle["VmRSS"],
            "idle operator RSS",
            f"≤ {TARGET_MB} MB",
            found["mb"][key] <= TARGET_MB and valid,
        )
        for which, key in (("peak", "VmHWM"), ("settled", "VmRSS"))
    ]


def _result(
    idle: dict[str, float],
    made: dict[str, Any],
    finished: dict[str, Any],
    unfinished: dict[str, Any],
    details: dict[str, Any],
) -> Result:
    n = made["tasks"]
    failed = finished["operator_failed"]
    figures = [
        *_rss_figures(
            f"{n} finished tasks with Jobs+pods",
            finished,
            idle,
            failed is None and details["pods_after"]["intact"],
        ),
        Figure(
            f"restart with {n} finished tasks: {'operator failed' if failed else 'dispatching'} "
            "after",
            finished["seconds_from_healthy_to_live_tasks_dispatched"],
            "s",
            None,
            "",
            "-",
            None,
        ),
        *_rss_figures(
            f"{unfinished['tasks']} unfinished tasks",
            unfinished,
            idle,
            unfinished["operator_failed"] is None,
        ),
    ]
    made = {k: v for k, v in made.items() if k not in ("pods", "started")}
    return Result(
        NAME,
        figures,
        {"idle_mb": idle, "made": made, "finished": finished, "unfinished": unfinished, **details},
        method=__doc__ or "",
    )


def run_repeated(ctx: Context, repeats: int) -> list[Result]:
    """`repeats` runs over one set of finished tasks (making and deleting 30 000 objects takes
    minutes): each run an idle operator, the unfinished case, and a fresh operator's restart over
    the finished tasks."""
    leftovers = fake_node.delete_leftovers(ctx.api)
    n = ctx.n(10000, least=200)
    live = max(1, n // 100)
    keep = chart_keep()
    namespaces = [ctx.run.namespace(f"{NAME}-{i}") for i in range(-(-n // keep) if keep else 1)]
    empty = ctx.run.namespace(f"{NAME}-idle")
    runs: list[tuple[dict[str, float], dict[str, Any], dict[str, Any]]] = []
    with fake_node.fake_node(ctx.api, ctx.run.id) as node:
        made = make_finished(ctx, namespaces, node, n)
        for repeat in range(repeats):
            with ctx.operator("memory-idle", no_pods=True, serves=empty) as op:
                ctx.settle(SETTLE_SECONDS)
                idle = op.memory_mb()
            unfinished = measure_unfinished(ctx, ctx.n(1000, least=50), repeat)
            runs.append((idle, measure_restart(ctx, namespaces[0], live, repeat), unfinished))
        pods = pods_left(ctx, namespaces, made["pods"])
        pods["seconds_since_first_made"] = round(time.monotonic() - made["started"], 1)
        pods["node_taints"] = fake_node.taints(ctx.api, node)
        delete_seconds = sum(_delete(ctx, ns) for ns in namespaces)
    details = {
        "fake_node": node,
        "pods_after": pods,
        "seconds_to_delete_namespace": delete_seconds,
        "leftover_fake_nodes_deleted": leftovers,
    }
    return [_result(idle, made, fin, unf, details) for idle, fin, unf in runs]


def run(ctx: Context) -> Result:
    return run_repeated(ctx, 1)[0]
