"""Warm pods: their Jobs, which tasks fit them, what a bound pod receives, binding, and how many
a pool keeps."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from codetask_operator import api, jobs, pools, redis_access, warm
from codetask_operator.kube import ApiError
from codetask_operator.settings import Settings
from codetask_operator.warm_pool import WarmPools
from tests.local_redis import RedisServer

pytestmark = pytest.mark.unit

SETTINGS = Settings(pod_label_keys=["team"])
NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
REDIS = jobs.RedisAccess("redis://codetask-task-u-1:pw@redis:6379/0", "codetask:ns:t:u:1")


def pool(**warm_spec: Any) -> pools.Pool:
    spec = {
        "namespaces": ["team-*"],
        "nodeSelector": {"disk": "ssd"},
        "runtimeClassName": "runc",
        "resources": {"limits": {"memory": "256Mi"}},
        "warm": {"namespaces": ["team-a"], **warm_spec},
    }
    parsed = pools.parse("fast", spec, uid="pool-uid")
    assert parsed.spec is not None, parsed.invalid
    return parsed


def task(**spec: Any) -> api.CodeTaskSpec:
    return api.CodeTaskSpec.model_validate({"language": "python", "code": "print(1)", **spec})


def test_a_warm_job_has_the_cold_lockdown_the_pools_placement_and_only_its_inbox() -> None:
    job = warm.build_job(pool(), "team-a", SETTINGS, "0123456789abcdef", "redis://warm-url")
    cold = jobs.build_job("t", "u", "team-a", task(), 1, SETTINGS, REDIS, pool())
    pod, cold_pod = job["spec"]["template"]["spec"], cold["spec"]["template"]["spec"]
    same = ("securityContext", "automountServiceAccountToken", "enableServiceLinks")
    assert {k: pod[k] for k in same} == {k: cold_pod[k] for k in same}
    assert (pod["nodeSelector"], pod["runtimeClassName"]) == ({"disk": "ssd"}, "runc")
    container, cold_container = pod["containers"][0], cold_pod["containers"][0]
    assert container["securityContext"] == cold_container["securityContext"]
    assert container["resources"] == cold_container["resources"]
    env = {v["name"]: v.get("value") for v in container["env"]}
    assert env["CODETASK_WARM_INBOX"] == "codetask:warm:0123456789abcdef:inbox"
    assert env["REDIS_URL"] == "redis://warm-url"
    assert not {"CODETASK_NAME", "CODETASK_CODE_FILE", "CODETASK_LANGUAGE"} & env.keys()
    assert job["metadata"]["ownerReferences"] == [
        {
            "apiVersion": api.API_VERSION,
            "kind": "CodeTaskPool",
            "name": "fast",
            "uid": "pool-uid",
            "controller": True,
        }
    ]
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels[warm.LABEL_WARM] == "fast" and labels[jobs.LABEL_MODE] == "code"
    assert jobs.LABEL_TASK_UID not in labels  # no task's until bound
    assert job["spec"]["activeDeadlineSeconds"] == 3600 + 60
    assert len(job["metadata"]["name"]) <= jobs.JOB_NAME_MAX


def test_a_warm_pods_redis_user_may_only_wait_on_its_own_inbox() -> None:
    rules = warm.acl_rules("abc", "secret")
    assert rules[:3] == ["reset", "on", ">secret"]
    assert "~codetask:warm:abc:*" in rules and "-@all" in rules
    assert sorted(r for r in rules if r.startswith("+")) == ["+blpop", "+ping", "+select"]
    assert warm.password(b"k", "ns", "abc") != warm.password(b"k", "other", "abc")


@pytest.mark.parametrize(
    ("spec", "the_pool", "why"),
    [
        ({}, pool(), None),
        ({"stdin": "x", "args": ["a"], "env": [{"name": "A", "value": "1"}]}, pool(), None),
        ({}, None, "it runs in no pool"),
        ({}, pools.parse("cold", {"namespaces": ["*"]}), "its pool keeps no warm pods"),
        (
            {"env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]},
            pool(),
            "spec.env from Secrets or ConfigMaps needs a pod of its own",
        ),
        ({"labels": {"team": "x"}}, pool(), "pod labels need a pod of its own"),
        ({"labels": {"other": "x"}}, pool(), None),
        ({"resources": {"limits": {"memory": "128Mi"}}}, pool(), "differ from the pool's class"),
        ({"resources": {"limits": {"memory": "256Mi"}}}, pool(), None),
        (
            {"language": None, "code": None, "image": "codetask-x", "command": ["true"]},
            pool(),
            "custom-image tasks start cold",
        ),
    ],
)
def test_which_tasks_start_warm(
    spec: dict[str, Any], the_pool: pools.Pool | None, why: str | None
) -> None:
    reason = warm.cold_reason(task(**spec), the_pool, SETTINGS)
    assert (reason is None) if why is None else (reason is not None and why in reason), reason


def test_the_payload_is_the_cold_pods_environment_less_the_pods_own() -> None:
    spec = task(stdin="in", args=["x"], env=[{"name": "A", "value": "1"}], timeoutSeconds=9)
    got = warm.payload("t", "team-a", spec, 2, SETTINGS, REDIS)
    assert (got["code"], got["stdin"]) == ("print(1)", "in")
    env = got["env"]
    assert env["CODETASK_NAME"] == "t" and env["CODETASK_ATTEMPT"] == "2"
    assert env["CODETASK_TIMEOUT_SECONDS"] == "9" and env["A"] == "1"
    assert env["REDIS_URL"] == REDIS.url and env["CODETASK_REDIS_PREFIX"] == REDIS.prefix
    assert not warm.OWN_ENV & env.keys()


def test_binding_takes_the_job_for_the_task_with_a_precondition_and_a_deadline_from_now() -> None:
    job = {
        "metadata": {"resourceVersion": "42", "creationTimestamp": "2026-12-05T11:50:00Z"},
        "status": {"startTime": "2026-12-05T11:59:30Z"},
    }
    patch = warm.bind_patch(job, "t", "uid-1", 1, 60, NOW)
    assert patch["metadata"]["resourceVersion"] == "42"
    assert patch["metadata"]["labels"] == jobs.labels_for("t", "uid-1", 1)
    assert patch["metadata"]["ownerReferences"] == [jobs.owner_reference("t", "uid-1")]
    assert patch["spec"]["activeDeadlineSeconds"] == 30 + 60 + warm.DEADLINE_MARGIN


def pod(name: str, age: float = 10, **state: bool) -> warm.WarmPod:
    created = NOW - timedelta(seconds=age)
    return warm.WarmPod("team-a", name, "fast", name, created, f"{name}-pod", **state)


@pytest.mark.parametrize(
    ("pods", "make", "delete", "ready"),
    [
        ([], 2, [], []),
        ([pod("a", running=True)], 1, [], ["a"]),
        ([pod("a", running=True), pod("b")], 0, [], ["a"]),
        ([pod("a", running=True, bound=True)], 2, [], []),
        ([pod("a", ended=True)], 2, ["a"], []),
        ([pod("a", ended=True, bound=True)], 2, [], []),
        ([pod("a", running=True, deleting=True)], 2, [], []),
        ([pod("a", age=4000, running=True), pod("b", running=True)], 1, ["a"], ["b"]),
        ([pod("b", age=5, running=True), pod("a", age=9, running=True)], 0, [], ["a", "b"]),
        # Scaled down (or more than the target after a restart): the newest go, not running first.
        (
            [pod("a", age=9, running=True), pod("b", age=7, running=True), pod("c", age=1)],
            0,
            ["c"],
            ["a", "b"],
        ),
        (
            [pod(n, age=10 - i, running=True) for i, n in enumerate("abcd")],
            0,
            ["d", "c"],
            ["a", "b"],
        ),
    ],
)
def test_a_pool_keeps_min_ready_waiting_pods_and_recycles_idle_and_ended_ones(
    pods: list[warm.WarmPod], make: int, delete: list[str], ready: list[str]
) -> None:
    spec = pool(minReady=2).spec
    assert spec is not None and spec.warm is not None
    assert warm.plan(pods, spec.warm, NOW) == (make, delete)
    assert [p.job for p in warm.ready(pods, spec.warm, NOW)] == ready


def test_max_caps_the_waiting_pods_however_min_ready_is_scaled() -> None:
    spec = pool(minReady=50, max=3).spec
    assert spec is not None and spec.warm is not None
    assert warm.plan([pod("a")], spec.warm, NOW) == (2, [])


def test_warm_pods_only_where_the_pool_may_be_used() -> None:
    bad = pools.parse("p", {"namespaces": ["team-*"], "warm": {"namespaces": ["ops"]}})
    assert bad.spec is None
    assert bad.invalid == "spec.warm.namespaces[0]: the pool may not be used in ops"


def test_no_task_or_warm_pod_can_put_a_task_into_another_warm_pods_inbox(
    server: RedisServer,
) -> None:
    """Against a real redis-server: an inbox is the operator's to fill and its pod's to empty."""
    for token in ("mine", "other"):
        rules = warm.acl_rules(token, f"pw-{token}")
        server.client.execute_command("ACL", "SETUSER", warm.user(token), *rules)
    attempt = redis_access.prefix("ns", "t", "uid", 1)
    server.client.execute_command(
        "ACL", "SETUSER", "attempt", *redis_access.acl_rules(attempt, "pw-attempt")
    )
    server.client.rpush(warm.inbox("mine"), "task")
    own = as_user(server, warm.user("mine"), "pw-mine")
    assert own.blpop([warm.inbox("mine")], timeout=1) == (warm.inbox("mine").encode(), b"task")
    with pytest.raises(redis.exceptions.NoPermissionError):
        own.blpop([warm.inbox("other")], timeout=1)
    with pytest.raises(redis.exceptions.NoPermissionError):
        own.rpush(warm.inbox("mine"), "forged")
    task = as_user(server, "attempt", "pw-attempt")
    task.rpush(f"{attempt}:done", 1)  # its own notice, allowed
    for key in (warm.inbox("mine"), warm.inbox("other")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            task.rpush(key, "forged")
    assert server.client.llen(warm.inbox("other")) == 0


def as_user(server: RedisServer, user: str, password: str) -> redis.Redis:
    host = server.url.rsplit("@", 1)[-1].split("/")[0]
    return redis.Redis.from_url(f"redis://{user}:{password}@{host}/0")


def test_only_jobs_the_pool_made_are_its_warm_pods() -> None:
    keeper = WarmPools(None, SETTINGS, None, None, None)  # type: ignore[arg-type]  # no I/O here

    def job(name: str, owner: str) -> dict[str, Any]:
        ref = {"apiVersion": "v1", "kind": "X", "name": "o", "uid": owner, "controller": True}
        labels = {warm.LABEL_WARM: "fast", warm.LABEL_TOKEN: name}
        meta = {"name": name, "namespace": "team-a", "labels": labels, "ownerReferences": [ref]}
        return {"metadata": {**meta, "resourceVersion": "1", "creationTimestamp": iso(NOW)}}

    keeper.observe_job(False, job("real", "pool-uid"))
    keeper.observe_job(False, job("forged", "someone-else"))
    assert [p.job for p in keeper.view(pool(), "team-a")] == ["real"]


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


class BindingKube:
    """The calls a binding makes; pod label patches fail with the given statuses first."""

    def __init__(self, label_failures: list[int]) -> None:
        self.label_failures = label_failures
        self.calls: list[str] = []

    async def patch_job(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.calls.append(f"bind {name}")

    async def patch_pod_labels(self, namespace: str, name: str, labels: dict[str, str]) -> None:
        self.calls.append(f"label {name}")
        if self.label_failures:
            raise ApiError(self.label_failures.pop(0), "failed")

    async def delete_job(self, namespace: str, name: str) -> None:
        self.calls.append(f"delete {name}")


@pytest.mark.parametrize(
    ("failures", "calls"),
    [
        ([500], ["bind w1", "label w1-pod", "label w1-pod"]),
        ([404], ["bind w1", "label w1-pod", "delete w1", "bind w2", "label w2-pod"]),
        (
            [500, 500, 500],
            ["bind w1", *["label w1-pod"] * 3, "delete w1", "bind w2", "label w2-pod"],
        ),
    ],
)
def test_a_bound_pod_that_cannot_get_the_tasks_labels_is_not_used(
    failures: list[int], calls: list[str]
) -> None:
    """The task's watch and fencing know its pod by its labels: a pod left without them (after
    tries) would run the code unseen, so its Job is deleted and the next ready pod is bound."""
    kube = BindingKube(failures)
    keeper = WarmPools(kube, SETTINGS, None, None, None)  # type: ignore[arg-type]
    made = datetime.now(UTC) - timedelta(seconds=5)
    for name in ("w1", "w2"):
        ref = {"apiVersion": "v1", "kind": "X", "name": "o", "uid": "pool-uid", "controller": True}
        labels = {warm.LABEL_WARM: "fast", warm.LABEL_TOKEN: name}
        meta = {"name": name, "namespace": "team-a", "labels": labels, "ownerReferences": [ref]}
        made = made + timedelta(seconds=1)  # w1 waited longest: tried first
        keeper.observe_job(
            False, {"metadata": {**meta, "resourceVersion": "1", "creationTimestamp": iso(made)}}
        )
        pod_meta = {"name": f"{name}-pod", "namespace": "team-a", "labels": {"job-name": name}}
        running = {"containerStatuses": [{"state": {"running": {}}}]}
        pod = {"metadata": pod_meta, "spec": {"nodeName": "n"}, "status": running}
        keeper.observe_pod(False, pod)
    bound = asyncio.run(keeper.bind(pool(minReady=2), "team-a", "t", "uid-1", 1, 60))
    assert kube.calls == calls
    assert bound is not None and bound.pod == calls[-1].removeprefix("label ")


class DeletingKube:
    def __init__(self, status: int | None) -> None:
        self.status = status
        self.calls: list[tuple[str, str | None]] = []

    async def delete_job(self, namespace: str, name: str, resource_version: str | None) -> None:
        self.calls.append((name, resource_version))
        if self.status is not None:
            raise ApiError(self.status, "failed")


@pytest.mark.parametrize(("status", "deleting"), [(None, True), (409, False)])
def test_a_waiting_pod_is_deleted_only_as_last_seen(status: int | None, deleting: bool) -> None:
    """A binding may take a pod the keeper still sees waiting (the watch lags the bind patch):
    the keeper deletes with the resourceVersion it saw, so a bound pod is never deleted, and it
    never deletes a pod a binding is patching."""
    kube = DeletingKube(status)
    keeper = WarmPools(kube, SETTINGS, None, None, None)  # type: ignore[arg-type]
    meta = {"name": "w1", "namespace": "team-a", "resourceVersion": "7", "labels": {}}
    keeper.observe_job(False, {"metadata": meta})
    keeper.claiming.add(("team-a", "w1"))
    asyncio.run(keeper._delete_waiting("team-a", "w1"))
    assert kube.calls == []
    keeper.claiming.clear()
    asyncio.run(keeper._delete_waiting("team-a", "w1"))
    assert kube.calls == [("w1", "7")]
    marked = "deletionTimestamp" in keeper.jobs[("team-a", "w1")]["metadata"]
    assert marked is deleting
