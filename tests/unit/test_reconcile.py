"""The executor against a fake API server: fresh reads before verdicts, fencing between attempts,
deleted tasks staying deleted, failed writes tried again, identity by ownership.

Each test names the exactly-once issue's item it covers (#N); each failed before that change.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis import asyncio as aioredis

from codetask_operator import access, api, jobs, network_policy, status
from codetask_operator.finished_index import finished
from codetask_operator.heartbeats import Heartbeats
from codetask_operator.kube import ApiError
from codetask_operator.publication import Publisher
from codetask_operator.reconcile import Reconciler, Registry, TaskState
from codetask_operator.results_stream import ResultsStream
from codetask_operator.settings import Settings

pytestmark = pytest.mark.unit

NS, NAME, UID = "ns", "t", "0f0e5c2e-1111-4222-8333-444455556666"


def iso(seconds_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def job_body(attempt: int = 1, age: float = 30, deadline: int = 300) -> dict[str, Any]:
    name = jobs.job_name(NAME, UID, attempt)
    return {
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"job-uid-{attempt}",
            "creationTimestamp": iso(age),
            "labels": jobs.labels_for(NAME, UID, attempt),
            "ownerReferences": [{"uid": UID, "controller": True, "kind": "CodeTask"}],
        },
        "spec": {"activeDeadlineSeconds": deadline},
        "status": {"startTime": iso(age)},
    }


def pod_body(
    attempt: int = 1,
    namespace: str = NS,
    controller: str | None = None,
    phase: str = "Running",
    result: str | None = None,
    deleted: bool = False,
    ready: bool = True,
) -> dict[str, Any]:
    name = jobs.job_name(NAME, UID, attempt)
    state: dict[str, Any] = {"running": {"startedAt": iso(20)}}
    if result is not None:
        state = {"terminated": {"exitCode": 0, "startedAt": iso(20), "message": result}}
    meta: dict[str, Any] = {
        "name": f"{name}-abcde",
        "namespace": namespace,
        "creationTimestamp": iso(25),
        "labels": {**jobs.labels_for(NAME, UID, attempt), "job-name": name},
        "ownerReferences": [
            {"uid": controller or f"job-uid-{attempt}", "controller": True, "kind": "Job"}
        ],
    }
    if deleted:
        meta["deletionTimestamp"] = iso(1)
    return {
        "metadata": meta,
        "spec": {"nodeName": "node-1"},
        "status": {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": str(ready)}],
            "containerStatuses": [{"name": "runner", "state": state}],
        },
    }


def result(stdout: str) -> str:
    return json.dumps(
        {"v": 1, "reason": "Completed", "exitCode": 0, "stdout": stdout, "startedAt": iso(20)}
    )


class FakeKube:
    """The API server as the reconciler calls it: Jobs and pods stored, writes recorded, and
    failures to inject per call."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.pods: dict[str, dict[str, Any]] = {}
        self.task: dict[str, Any] | None = {"metadata": {"name": NAME, "uid": UID}}
        self.status: dict[str, Any] = {}
        self.created: list[str] = []
        self.deleted_jobs: list[str] = []
        self.deleted_tasks = 0
        self.fail: dict[str, list[Exception]] = {}
        self.on_create: Any = None
        self.policies: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []
        self.patches: list[dict[str, Any]] = []
        self.listed: set[str] = set()
        """What a fresh list of a namespace's CodeTask uids gives."""

    def _maybe_fail(self, call: str) -> None:
        if self.fail.get(call):
            raise self.fail[call].pop(0)

    async def create_job(self, namespace: str, manifest: dict[str, Any], owner: str) -> str:
        self._maybe_fail("create_job")
        if self.on_create:
            self.on_create()
        name: str = manifest["metadata"]["name"]
        self.created.append(name)
        self.calls.append(f"create job {name}")
        return name

    async def get_policy(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(f"get policy {name}")
        return self.policies.get(f"{namespace}/{name}")

    async def create_policy(self, manifest: dict[str, Any]) -> None:
        self._maybe_fail("create_policy")
        meta = manifest["metadata"]
        self.calls.append(f"create policy {meta['name']}")
        self.policies[f"{meta['namespace']}/{meta['name']}"] = manifest

    async def replace_policy_spec(self, namespace: str, name: str, spec: dict[str, Any]) -> None:
        self.calls.append(f"replace policy {name}")
        self.policies[f"{namespace}/{name}"]["spec"] = spec

    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.jobs.get(name)

    async def delete_job(self, namespace: str, name: str) -> None:
        self._maybe_fail("delete_job")
        self.deleted_jobs.append(name)
        self.jobs.pop(name, None)

    async def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        key, value = selector.split("=")
        return [
            p
            for p in self.pods.values()
            if p["metadata"]["namespace"] == namespace and p["metadata"]["labels"][key] == value
        ]

    async def failed_create(self, namespace: str, job_uid: str) -> str | None:
        return None

    async def get_task(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.task

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> Any:
        self._maybe_fail("patch_status")
        self.patches.append(patch)
        self.status = {k: v for k, v in {**self.status, **patch}.items() if v is not None}
        return {"status": self.status}

    async def post_event(self, *args: Any) -> None:
        return None

    async def delete_task(self, namespace: str, name: str, uid: str) -> None:
        self._maybe_fail("delete_task")
        self.deleted_tasks += 1
        self.calls.append(f"delete task {name}")

    async def task_uids(self, namespace: str) -> set[str]:
        self.calls.append(f"list task uids {namespace}")
        return set(self.listed)

    async def label_finished(self, namespace: str, plural: str, name: str) -> None:
        self._maybe_fail("label_finished")
        self.calls.append(f"label finished {plural}/{name}")

    async def label_task_finished(self, namespace: str, name: str, uid: str) -> None:
        self._maybe_fail("label_task_finished")
        self.calls.append(f"label finished codetasks/{name}")


def task(
    kube: FakeKube,
    settings: Settings | None = None,
    heartbeats: Heartbeats | None = None,
    **spec: Any,
) -> tuple[Reconciler, TaskState]:
    """A reconciler (with Redis when `heartbeats` is given) and a task whose attempt 1 runs, as the
    watches last showed it."""
    reconciler = Reconciler(
        kube,  # type: ignore[arg-type]
        settings or Settings(),
        Registry(),
        heartbeats=heartbeats,
    )
    name = jobs.job_name(NAME, UID, 1)
    kube.status = {
        "phase": "Running",
        "reason": "Started",
        "jobName": name,
        "attempts": 1,
        "startTime": iso(20),
    }
    state = TaskState(
        uid=UID,
        namespace=NS,
        name=NAME,
        spec={"language": "python", "code": "print(4)", **spec},
        status=dict(kube.status),
        status_known=True,
    )
    reconciler.registry.tasks[UID] = state
    return reconciler, state


def seen(state: TaskState, *bodies: dict[str, Any]) -> None:
    """What the watches delivered."""
    for body in bodies:
        slim = status.slim(body)
        if "job-name" in body["metadata"]["labels"]:
            state.pods[body["metadata"]["name"]] = slim
        else:
            state.add_job(slim)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_1_a_job_missing_from_the_cache_is_read_before_any_verdict() -> None:
    kube = FakeKube()
    job, pod = job_body(), pod_body()
    kube.jobs[job["metadata"]["name"]], kube.pods[pod["metadata"]["name"]] = job, pod
    reconciler, state = task(kube)
    seen(state, pod)
    state.job_missing_since = 0.0  # long ago: the Job watch lags or re-lists
    run(reconciler.reconcile(state))
    assert kube.deleted_jobs == [] and kube.status["phase"] == "Running"
    assert state.current_job() is not None


def test_1_a_job_gone_on_a_fresh_read_is_lost() -> None:
    kube = FakeKube()
    pod = pod_body()
    kube.pods[pod["metadata"]["name"]] = pod
    reconciler, state = task(kube, retries=0)
    seen(state, job_body(), pod)
    state.jobs.clear()  # the watch's DELETED
    state.job_missing_since = 0.0
    run(reconciler.reconcile(state))
    assert (kube.status["phase"], kube.status["reason"]) == ("Failed", "Lost")


@pytest.mark.parametrize(
    ("job_in_view", "deadline", "phase", "reason", "job_deleted"),
    [
        # The watch has not shown the Job (or its start): the API server has it past its deadline.
        ("unstarted", 6, "TimedOut", "DeadlineExceeded", False),
        (None, 6, "TimedOut", "DeadlineExceeded", False),
        # The Job is well within its deadline: someone deleted the pod.
        ("unstarted", 600, "Failed", "Terminated", True),
        ("started", 600, "Failed", "Terminated", True),
    ],
)
def test_a_deleted_pod_is_judged_from_the_job_as_it_is_now(
    job_in_view: str | None, deadline: int, phase: str, reason: str, job_deleted: bool
) -> None:
    kube = FakeKube()
    job = job_body(deadline=deadline)
    kube.jobs[job["metadata"]["name"]] = job
    reconciler, state = task(kube, timeoutSeconds=deadline)
    pod = pod_body(deleted=True)
    seen(state, pod)
    if job_in_view:
        in_view = job_body(deadline=deadline)
        if job_in_view == "unstarted":
            in_view["status"] = {}
        seen(state, in_view)
    else:
        state.job_uids[job["metadata"]["name"]] = job["metadata"]["uid"]
    run(reconciler.reconcile(state))
    assert (kube.status.get("phase"), kube.status.get("reason")) == (phase, reason)
    assert bool(kube.deleted_jobs) is job_deleted


def test_2_a_silent_heartbeat_stops_the_pod_and_the_retry_waits_until_it_stopped() -> None:
    kube = FakeKube()
    job, pod = job_body(), pod_body()
    kube.jobs[job["metadata"]["name"]], kube.pods[pod["metadata"]["name"]] = job, pod
    reconciler, state = task(kube, retries=1, backoffSeconds=1)
    seen(state, job, pod)
    state.silent_attempt = 1
    run(reconciler.reconcile(state))
    assert kube.deleted_jobs == [job["metadata"]["name"]]
    assert kube.status["reason"] == "Retrying"

    # Backoff over; the old pod still terminates (Redis cut off, the kubelet slow to kill it).
    kube.status["nextAttemptTime"] = iso(1)
    state.status = dict(kube.status)
    kube.pods[pod["metadata"]["name"]] = pod_body(deleted=True)
    run(reconciler.reconcile(state))
    assert kube.created == []
    assert (kube.status["phase"], kube.status["reason"]) == ("Pending", "Stopping")
    assert pod["metadata"]["name"] in kube.status["message"]

    kube.pods.clear()  # now it is gone
    run(reconciler.reconcile(state))
    assert kube.created == [jobs.job_name(NAME, UID, 2)]


def test_2_silence_of_an_earlier_attempt_does_not_end_the_current_one() -> None:
    kube = FakeKube()
    reconciler, state = task(kube)
    seen(state, job_body(), pod_body())
    state.silent_attempt = 0
    run(reconciler.reconcile(state))
    assert kube.deleted_jobs == [] and kube.status["phase"] == "Running"


def test_3_a_task_deleted_during_its_backoff_creates_no_job() -> None:
    async def scenario() -> FakeKube:
        kube = FakeKube()
        reconciler, state = task(kube, retries=1)
        reconciler.wake_at(state, datetime.now(UTC) + timedelta(seconds=0.05))
        reconciler.forget(UID)
        await asyncio.sleep(0.2)
        assert reconciler.registry.get(UID) is None  # late Job/pod events are ignored
        assert UID not in reconciler.registry.tasks
        return kube

    assert run(scenario()).created == []


def test_4_cancel_after_the_code_finished_keeps_its_result() -> None:
    kube = FakeKube()
    reconciler, state = task(kube, cancel=True)
    seen(state, job_body(), pod_body(phase="Succeeded", result=result("done\n")))
    run(reconciler.reconcile(state))
    assert (kube.status["phase"], kube.status["stdout"]) == ("Succeeded", "done\n")
    assert kube.deleted_jobs == []


def test_5_a_failed_job_delete_is_tried_again_before_the_attempt_ends() -> None:
    kube = FakeKube()
    reconciler, state = task(kube, cancel=True)
    seen(state, job_body(), pod_body())
    kube.fail["delete_job"] = [ApiError(500, "Internal Server Error")]
    with pytest.raises(ApiError):
        run(reconciler.reconcile(state))
    assert kube.status["phase"] == "Running"
    run(reconciler.reconcile(state))
    assert kube.deleted_jobs == [jobs.job_name(NAME, UID, 1)]
    assert kube.status["phase"] == "Cancelled"


@pytest.mark.parametrize("still_there", [True, False])
def test_6_a_404_is_confirmed_before_the_task_is_taken_for_deleted(still_there: bool) -> None:
    kube = FakeKube()
    reconciler, state = task(kube)
    seen(state, job_body(), pod_body(phase="Succeeded", result=result("4\n")))
    kube.fail["patch_status"] = [ApiError(404, "Not Found")]
    if not still_there:
        kube.task = None
    if still_there:
        with pytest.raises(ApiError):
            run(reconciler.reconcile(state))
    else:
        run(reconciler.reconcile(state))
    assert state.deleted is not still_there
    if still_there:
        run(reconciler.reconcile(state))
        assert kube.status["phase"] == "Succeeded"


def test_6_a_failed_ttl_delete_is_tried_again() -> None:
    async def scenario() -> Reconciler:
        kube = FakeKube()
        reconciler, state = task(kube, ttlSecondsAfterFinished=0)
        state.status = {"phase": "Succeeded", "completionTime": iso(5)}
        kube.fail["delete_task"] = [ApiError(503, "Service Unavailable")]
        with pytest.raises(ApiError):
            await reconciler.reconcile(state)
        return reconciler

    assert UID in run(scenario()).timers


def test_7_the_admission_lock_is_not_held_across_api_calls() -> None:
    kube = FakeKube()
    reconciler, state = task(kube, settings=Settings(max_running=1))
    state.status = kube.status = {}
    held: list[bool] = []
    kube.on_create = lambda: held.append(reconciler.admission_lock.locked())
    run(reconciler.reconcile(state))
    assert kube.created and held == [False]


def test_registry_phases_is_a_snapshot() -> None:
    registry = Registry()
    assert registry.get("a") is not None
    phases = registry.phases()
    registry.get("b")
    assert phases == [None]


@pytest.mark.parametrize(
    "forged",
    [
        pod_body(namespace="other", phase="Succeeded", result=result("forged\n")),
        pod_body(controller="someone-else", phase="Succeeded", result=result("forged\n")),
    ],
    ids=["another namespace", "not controlled by the task's Job"],
)
def test_a_pod_with_the_task_labels_but_not_owned_is_ignored(forged: dict[str, Any]) -> None:
    kube = FakeKube()
    reconciler, state = task(kube)
    seen(state, job_body(), pod_body())
    forged["metadata"]["name"] = "forged"
    forged["metadata"]["creationTimestamp"] = iso(60)  # older than the real pod
    seen(state, forged)
    run(reconciler.reconcile(state))
    assert kube.status["phase"] == "Running" and "stdout" not in kube.status


def test_a_job_not_controlled_by_the_task_is_not_its_job() -> None:
    state = TaskState(uid=UID, namespace=NS, name=NAME)
    foreign = job_body()
    foreign["metadata"]["ownerReferences"] = [{"uid": "other", "controller": True}]
    state.add_job(status.slim(foreign))
    moved = job_body()
    moved["metadata"]["namespace"] = "other"
    state.add_job(status.slim(moved))
    assert state.jobs == {}


@pytest.mark.parametrize("stamped", [True, False])
def test_a_task_with_references_starts_only_with_the_webhooks_stamp(stamped: bool) -> None:
    key = "references-key"
    kube = FakeKube()
    reconciler, state = task(
        kube,
        Settings(references_key=key),
        env=[{"name": "DB", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}],
    )
    state.status = kube.status = {}
    created = datetime.now(UTC) - timedelta(seconds=2)
    state.created = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    if stamped:
        spec = api.CodeTaskSpec.model_validate(state.spec)
        at = int(created.replace(microsecond=0).timestamp())
        refs = access.references(spec)
        state.references_stamp = access.stamp(key.encode(), NS, NAME, "", refs, at)
    run(reconciler.reconcile(state))
    if stamped:
        assert kube.created == [jobs.job_name(NAME, UID, 1)]
    else:
        assert kube.created == []
        assert (kube.status["phase"], kube.status["reason"]) == ("Failed", "InvalidSpec")
        assert kube.status["message"].startswith("spec.env[0].valueFrom.secretKeyRef: not checked")


def test_the_namespaces_network_policies_exist_before_its_first_job() -> None:
    kube = FakeKube()
    reconciler, state = task(kube)
    state.status = kube.status = {}
    run(reconciler.reconcile(state))
    assert kube.calls == [
        "get policy codetask-code-tasks",
        "create policy codetask-code-tasks",
        "get policy codetask-agent-tasks",
        "create policy codetask-agent-tasks",
        f"create job {jobs.job_name(NAME, UID, 1)}",
    ]
    job = jobs.build_job(NAME, UID, NS, api.CodeTaskSpec.model_validate(state.spec), 1, Settings())
    pod_labels = job["spec"]["template"]["metadata"]["labels"]
    code = kube.policies[f"{NS}/codetask-code-tasks"]["spec"]
    assert all(pod_labels.get(k) == v for k, v in code["podSelector"]["matchLabels"].items())
    assert code["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in code


def test_a_namespace_is_checked_again_after_a_task_there_is_deleted() -> None:
    kube = FakeKube()
    reconciler, _ = task(kube)
    reconciler.isolation.checked[NS] = reconciler.isolation.clock()
    reconciler.forget(UID)
    assert NS not in reconciler.isolation.checked


def test_a_policy_edited_by_hand_is_put_back() -> None:
    kube = FakeKube()
    reconciler, state = task(kube)
    state.status = kube.status = {}
    for policy in network_policy.manifests("codetask", NS, Settings().task_egress):
        kube.policies[f"{NS}/{policy['metadata']['name']}"] = policy
    opened = json.loads(json.dumps(kube.policies[f"{NS}/codetask-code-tasks"]))
    opened["spec"]["egress"].append({})  # allow all egress
    kube.policies[f"{NS}/codetask-code-tasks"] = opened
    run(reconciler.reconcile(state))
    assert "replace policy codetask-code-tasks" in kube.calls
    assert "replace policy codetask-agent-tasks" not in kube.calls
    assert {} not in kube.policies[f"{NS}/codetask-code-tasks"]["spec"]["egress"]


@pytest.mark.parametrize("attempt", [1, 2])
def test_no_job_starts_while_the_policies_cannot_be_written(attempt: int) -> None:
    kube = FakeKube()
    reconciler, state = task(kube, retries=1)
    if attempt == 1:
        state.status = kube.status = {}
    else:  # attempt 1 failed and its pod is gone: the retry is due
        kube.status = {
            **kube.status,
            "phase": "Pending",
            "reason": "Retrying",
            "nextAttemptTime": iso(1),
        }
        state.status = dict(kube.status)
    forbidden = json.dumps({"kind": "Status", "message": 'networkpolicies is forbidden: User "x"'})
    kube.fail["create_policy"] = [ApiError(403, "Forbidden", forbidden)]
    run(reconciler.reconcile(state))
    assert kube.created == []
    assert (kube.status["phase"], kube.status["reason"]) == ("Pending", "NotIsolated")
    assert kube.status["message"] == (
        f"attempt {attempt} waits: its NetworkPolicies in {NS} cannot be written: "
        'networkpolicies is forbidden: User "x"'
    )
    assert UID in reconciler.timers

    run(reconciler.reconcile(state))  # the RBAC is fixed; the timer fires
    assert kube.created == [jobs.job_name(NAME, UID, attempt)]
    assert (state.status["attempts"], state.status["reason"]) == (attempt, "Scheduled")


def test_without_network_policies_no_policy_is_read_or_written() -> None:
    kube = FakeKube()
    reconciler, state = task(kube, Settings(network_policy=False))
    state.status = kube.status = {}
    run(reconciler.reconcile(state))
    assert kube.calls == [f"create job {jobs.job_name(NAME, UID, 1)}"]


def started(kube: FakeKube) -> tuple[Reconciler, TaskState]:
    """A new task whose attempt 1 was just started (its Job created)."""
    reconciler, state = task(kube)
    state.status = kube.status = {}
    run(reconciler.reconcile(state))
    assert kube.created == [jobs.job_name(NAME, UID, 1)]
    return reconciler, state


def test_a_pod_that_runs_at_once_is_shown_running_without_a_pending_write_before() -> None:
    kube = FakeKube()
    reconciler, state = started(kube)
    assert kube.patches == [], "Pending is held in memory"
    assert (state.status["phase"], state.status["jobName"]) == ("Pending", kube.created[0])
    seen(state, job_body(age=1), pod_body())
    run(reconciler.reconcile(state))
    (patch,) = kube.patches
    assert (patch["phase"], patch["jobName"], patch["attempts"]) == ("Running", kube.created[0], 1)
    assert {c["type"] for c in patch["conditions"]} >= {"Admitted", "Running"}
    assert state.held == {} and state.held_until is None


def test_a_task_whose_pod_has_not_run_is_shown_pending_after_the_hold() -> None:
    kube = FakeKube()
    reconciler, state = started(kube)
    assert state.held_until is not None
    assert state.held_until - datetime.now(UTC) <= timedelta(seconds=2)
    state.held_until = datetime.now(UTC)  # due
    seen(state, job_body(age=1))
    run(reconciler.reconcile(state))
    (patch,) = kube.patches
    assert (patch["phase"], patch["reason"], patch["attempts"]) == ("Pending", "Scheduled", 1)
    assert kube.status["jobName"] == kube.created[0]


def test_a_held_status_is_kept_when_its_write_fails_and_goes_with_the_next() -> None:
    kube = FakeKube()
    reconciler, state = started(kube)
    state.held_until = datetime.now(UTC)
    kube.fail["patch_status"] = [ApiError(500, "Internal Server Error")]
    with pytest.raises(ApiError):
        run(reconciler.reconcile(state))
    assert state.held["jobName"] == kube.created[0]
    run(reconciler.reconcile(state))
    assert kube.status["jobName"] == kube.created[0] and state.held == {}


def keeping(kube: FakeKube, keep: int) -> Reconciler:
    """A reconciler that keeps `keep` finished tasks per namespace."""
    settings = Settings(keep_finished_per_namespace=keep)
    reconciler = Reconciler(kube, settings, Registry())  # type: ignore[arg-type]
    reconciler.out_of_watch.loaded = True
    return reconciler


def finished_tasks(reconciler: Reconciler, count: int, namespace: str = NS) -> list[TaskState]:
    """`count` finished tasks in the registry, t0 the oldest."""
    states = []
    for n in range(count):
        uid = f"{namespace}-uid-{n}"
        state = TaskState(uid=uid, namespace=namespace, name=f"t{n}", spec={}, final=True)
        state.status = {"phase": "Succeeded", "completionTime": f"2026-12-05T10:00:{n:02d}Z"}
        reconciler.registry.tasks[state.uid] = state
        states.append(state)
    return states


def test_the_oldest_finished_tasks_beyond_the_namespaces_keep_are_deleted_once() -> None:
    kube = FakeKube()
    reconciler = keeping(kube, 2)
    states = finished_tasks(reconciler, 5)
    finished_tasks(reconciler, 2, namespace="other")
    kube.listed = {state.uid for state in states}
    run(reconciler.prune_finished())
    assert kube.calls == [
        f"list task uids {NS}",
        "delete task t0",
        "delete task t1",
        "delete task t2",
    ]
    kube.calls.clear()
    run(reconciler.prune_finished())  # deleted: not again, and no list under the keep
    assert kube.calls == []


def test_with_tasks_not_seen_yet_only_those_a_full_view_would_delete_too_go() -> None:
    """After a restart the watch may not have shown every finished task yet. The oldest beyond
    the keep among those seen have at least `keep` newer tasks, seen or not: they go either way."""
    kube = FakeKube()
    reconciler = keeping(kube, 2)
    states = finished_tasks(reconciler, 4)
    kube.listed = {state.uid for state in states} | {"not-seen-yet"}
    run(reconciler.prune_finished())
    assert kube.calls == [f"list task uids {NS}", "delete task t0", "delete task t1"]


def test_not_before_the_tasks_out_of_the_watch_are_listed() -> None:
    kube = FakeKube()
    reconciler = keeping(kube, 2)
    reconciler.out_of_watch.loaded = False
    kube.listed = {state.uid for state in finished_tasks(reconciler, 4)}
    run(reconciler.prune_finished())
    assert kube.calls == []


def out_of_watch(reconciler: Reconciler, count: int, ttl: int | None = None) -> list[str]:
    """`count` finished tasks out of the watch, o0 the oldest (completed an hour ago and on)."""
    uids = []
    for n in range(count):
        final = {"phase": "Failed", "completionTime": iso(3600 - n)}
        spec = {} if ttl is None else {"ttlSecondsAfterFinished": ttl}
        entry = finished(NS, f"o{n}", f"out-{n}", spec, final, None)
        reconciler.out_of_watch.add(entry)
        uids.append(entry.uid)
    return uids


def test_tasks_out_of_the_watch_count_and_go_first_being_older() -> None:
    kube = FakeKube()
    reconciler = keeping(kube, 3)
    out = out_of_watch(reconciler, 3)
    states = finished_tasks(reconciler, 2)  # completed in 2026-12-05: older than an hour ago
    kube.listed = {*out, *(state.uid for state in states)}
    run(reconciler.prune_finished())
    assert kube.calls == [f"list task uids {NS}", "delete task t0", "delete task t1"]
    kube.calls.clear()
    finished_tasks(reconciler, 4, namespace="other")[0].status["completionTime"] = iso(0)
    states = finished_tasks(reconciler, 1)
    states[0].status["completionTime"] = iso(0)
    kube.listed = {*out, states[0].uid}
    run(reconciler.prune_finished())
    assert kube.calls == [f"list task uids {NS}", "delete task o0", "list task uids other"]
    assert len(reconciler.out_of_watch) == 2


def test_tasks_out_of_the_watch_deleted_by_someone_else_do_not_count() -> None:
    """A fresh list confirms the index: a user's `kubectl delete` of tasks out of the watch
    sends the operator no event, and counting them would delete tasks the keep should keep."""
    kube = FakeKube()
    reconciler = keeping(kube, 3)
    out = out_of_watch(reconciler, 4)
    kube.listed = set(out[:2])  # o2 and o3 were deleted by someone else
    run(reconciler.prune_finished())
    assert kube.calls == [f"list task uids {NS}"]
    assert len(reconciler.out_of_watch) == 2


def test_no_keep_no_pruning() -> None:
    kube = FakeKube()
    reconciler = Reconciler(kube, Settings(), Registry())  # type: ignore[arg-type]
    finished_tasks(reconciler, 50)
    run(reconciler.prune_finished())
    assert kube.calls == []


def test_a_task_whose_result_is_not_in_the_results_stream_yet_is_kept() -> None:
    kube = FakeKube()
    reconciler = keeping(kube, 1)
    stream = ResultsStream(aioredis.Redis(), "s", 10, 60)
    reconciler.publisher = Publisher(stream, kube, 60)  # type: ignore[arg-type]
    states = finished_tasks(reconciler, 3)
    reconciler.publisher.pending[states[0].uid] = (NS, states[0].name)
    kube.listed = {state.uid for state in states}
    run(reconciler.prune_finished())
    assert kube.calls == [f"list task uids {NS}", "delete task t1"]


async def settled(reconciler: Reconciler, coro: Any) -> None:
    """`coro`, then what it started in the background."""
    await coro
    while reconciler.background:
        await asyncio.gather(*reconciler.background)


def labelled(kube: FakeKube) -> list[str]:
    return [call.removeprefix("label finished ") for call in kube.calls if "label" in call]


def test_a_finished_tasks_job_and_pod_are_labelled_out_of_the_watches_once() -> None:
    kube = FakeKube()
    reconciler, state = task(kube)
    job, pod = job_body(), pod_body(phase="Succeeded", result=result("4\n"))
    seen(state, job, pod)
    run(settled(reconciler, reconciler.reconcile(state)))
    assert kube.status["phase"] == "Succeeded"
    assert labelled(kube) == [
        f"jobs/{job['metadata']['name']}",
        f"pods/{pod['metadata']['name']}",
        f"codetasks/{NAME}",  # last: the Job's and pod's events would not find it after
    ]
    seen(state, job, pod)  # events sent before the labels landed
    reconciler.retire(state, state.finished())
    run(settled(reconciler, reconciler.reconcile(state)))
    assert len(labelled(kube)) == 3


def test_the_job_the_operator_deleted_and_its_pods_are_not_labelled() -> None:
    """A cancelled task's Job is deleted: labelling it and its pods would be writes for nothing.
    The Job of an earlier attempt stays, so it is labelled."""
    kube = FakeKube()
    reconciler, state = task(kube, cancel=True)
    earlier = job_body(attempt=0)
    seen(state, earlier, job_body(), pod_body())
    run(settled(reconciler, reconciler.reconcile(state)))
    assert kube.status["phase"] == "Cancelled"
    assert labelled(kube) == [f"jobs/{earlier['metadata']['name']}", f"codetasks/{NAME}"]


@pytest.mark.parametrize(
    "meta", [{"labels": {jobs.LABEL_FINISHED: "true"}}, {"deletionTimestamp": iso(1)}]
)
def test_a_job_labelled_finished_or_being_deleted_is_left_alone(meta: dict[str, Any]) -> None:
    state = TaskState(uid=UID, namespace=NS, name=NAME)
    job = job_body()
    job["metadata"].update(meta)
    seen(state, job)
    assert state.finished() == []


@pytest.mark.parametrize(("status", "again"), [(404, False), (500, True)])
def test_a_failed_label_is_tried_again_by_the_next_event_unless_the_object_is_gone(
    status: int, again: bool
) -> None:
    kube = FakeKube()
    reconciler, state = task(kube)
    kube.fail["label_finished"] = [ApiError(status, "failed")]
    state.final = True

    async def twice() -> None:
        for _ in range(2):
            reconciler.retire(state, [("pods", "p")])
            await settled(reconciler, asyncio.sleep(0))

    run(twice())
    assert labelled(kube) == (["pods/p"] if again else [])
