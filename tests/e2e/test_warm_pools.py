"""Warm pods on the real cluster: a pool keeps ready pods, a task that fits is bound to one and its
result comes back through Redis, the pool refills, a task that does not fit (or finds no ready pod)
starts cold, and a ready pod deleted is replaced."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from kubernetes import client

from tests.e2e.conftest import kubectl, namespace_operator
from tests.e2e.tasks import Operator, codetask, create, wait_for

COUNT = (
    "import os, redis\n"
    "redis.Redis.from_url(os.environ['WARM_REDIS']).incr('warm:%s' % os.environ['CODETASK_NAME'])\n"
)


@pytest.fixture
def warm_namespace(
    api_client: client.ApiClient, crd: None, redis_url: str, tmp_path: Path
) -> Iterator[tuple[str, Operator]]:
    """A namespace and an operator with Redis serving it."""
    settings = {"CODETASK_REDIS_URL": redis_url, "CODETASK_SWEEP_INTERVAL_SECONDS": "1"}
    ns, op = namespace_operator(api_client, tmp_path / "op.log", "w", settings)
    yield ns, op
    op.stop(signal.SIGTERM)
    client.CoreV1Api(api_client).delete_namespace(ns)


def pool_status(api_client: client.ApiClient, name: str) -> dict[str, Any]:
    custom = client.CustomObjectsApi(api_client)
    body = custom.get_cluster_custom_object("codetask.dev", "v1alpha1", "codetaskpools", name)
    return dict(body.get("status") or {})


def wait_ready(api_client: client.ApiClient, name: str, ready: int, timeout: float = 90) -> None:
    end = time.monotonic() + timeout
    while (found := pool_status(api_client, name)).get("ready") != ready:
        assert time.monotonic() < end, f"pool {name}: {found}"
        time.sleep(0.2)


def ready_pool(api_client: client.ApiClient, pool: Callable[..., str], ns: str, ready: int) -> str:
    """A pool keeping `ready` warm pods in `ns`, once they are ready."""
    name = pool(namespaces=[ns], warm={"namespaces": [ns], "minReady": ready})
    wait_ready(api_client, name, ready)
    return name


def warm_pods(api_client: client.ApiClient, ns: str, pool: str) -> list[client.V1Pod]:
    pods = client.CoreV1Api(api_client).list_namespaced_pod(
        ns, label_selector=f"codetask.dev/warm={pool}"
    )
    return list(pods.items)


def finished(api_client: client.ApiClient, ns: str, name: str) -> dict[str, Any]:
    return dict(wait_for(api_client, ns, name, timeout=120)["status"])


def until(check: Callable[[], bool], timeout: float) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end
        time.sleep(0.2)


def test_a_task_that_fits_runs_in_a_warm_pod_once_and_the_pool_refills(
    api_client: client.ApiClient,
    warm_namespace: tuple[str, Operator],
    pool: Callable[..., str],
    redis_url: str,
) -> None:
    ns, _ = warm_namespace
    name = ready_pool(api_client, pool, ns, 2)
    counter = redis.Redis.from_url(redis_url)
    env = [{"name": "WARM_REDIS", "value": redis_url}]
    sent = time.monotonic()
    create(
        api_client,
        ns,
        codetask("w", language="python", code=COUNT + "print(1)", pool=name, env=env),
    )
    status = finished(api_client, ns, "w")
    print(
        f"warm: apply → final in {time.monotonic() - sent:.3f}s, bind {status.get('bindSeconds')}s"
    )
    assert (status["phase"], status["stdout"], status["exitCode"]) == ("Succeeded", "1\n", 0)
    assert status["dispatch"] == "warm" and status["bindSeconds"] >= 0
    assert status["jobName"].startswith("warm-") and status["podName"].startswith(status["jobName"])
    assert int(counter.get("warm:w") or 0) == 1
    wait_ready(api_client, name, 2)  # refilled
    time.sleep(3)
    assert int(counter.get("warm:w") or 0) == 1  # its pod ran it once, and is done


def test_a_task_that_does_not_fit_or_finds_no_ready_pod_starts_cold(
    api_client: client.ApiClient, warm_namespace: tuple[str, Operator], pool: Callable[..., str]
) -> None:
    ns, _ = warm_namespace
    name = ready_pool(api_client, pool, ns, 1)
    big = {"limits": {"memory": "300Mi"}}
    create(
        api_client,
        ns,
        codetask("big", language="python", code="print(2)", pool=name, resources=big),
    )
    status = finished(api_client, ns, "big")
    assert (status["phase"], status["stdout"], status["dispatch"]) == ("Succeeded", "2\n", "cold")
    # Two at once: one takes the ready pod, the other starts cold; both run.
    for task in ("a", "b"):
        create(
            api_client, ns, codetask(task, language="python", code=f"print('{task}')", pool=name)
        )
    got = {task: finished(api_client, ns, task) for task in ("a", "b")}
    assert {s["stdout"] for s in got.values()} == {"a\n", "b\n"}
    assert sorted(s["dispatch"] for s in got.values()) in (["cold", "warm"], ["warm", "warm"])


def test_an_empty_pool_starts_its_tasks_cold_and_scaling_it_makes_ready_pods(
    api_client: client.ApiClient, warm_namespace: tuple[str, Operator], pool: Callable[..., str]
) -> None:
    ns, _ = warm_namespace
    name = pool(namespaces=[ns], warm={"namespaces": [ns], "minReady": 0})
    create(api_client, ns, codetask("e", language="python", code="print(4)", pool=name))
    status = finished(api_client, ns, "e")
    assert (status["phase"], status["stdout"], status["dispatch"]) == ("Succeeded", "4\n", "cold")
    admitted = next(c for c in status["conditions"] if c["type"] == "Admitted")
    assert "started cold: no warm pod was ready" in admitted["message"]
    done = kubectl("scale", "ctp", name, "--replicas=2")  # the scale subresource, as an HPA would
    assert done.returncode == 0, done.stderr
    wait_ready(api_client, name, 2)
    assert len(warm_pods(api_client, ns, name)) == 2


def test_a_deleted_ready_pod_is_replaced(
    api_client: client.ApiClient, warm_namespace: tuple[str, Operator], pool: Callable[..., str]
) -> None:
    ns, _ = warm_namespace
    name = ready_pool(api_client, pool, ns, 1)
    (victim,) = warm_pods(api_client, ns, name)
    client.CoreV1Api(api_client).delete_namespaced_pod(victim.metadata.name, ns)
    until(
        lambda: any(
            p.metadata.name != victim.metadata.name and p.status.phase == "Running"
            for p in warm_pods(api_client, ns, name)
        ),
        timeout=90,
    )
    wait_ready(api_client, name, 1)
    create(api_client, ns, codetask("after", language="python", code="print(3)", pool=name))
    status = finished(api_client, ns, "after")
    assert (status["phase"], status["stdout"]) == ("Succeeded", "3\n")


@pytest.mark.parametrize("delay", [0.0, 0.03, 0.08, 0.15])
def test_an_operator_killed_while_binding_runs_the_code_once(
    api_client: client.ApiClient,
    warm_namespace: tuple[str, Operator],
    pool: Callable[..., str],
    redis_url: str,
    delay: float,
) -> None:
    ns, op = warm_namespace
    name = ready_pool(api_client, pool, ns, 1)
    counter = redis.Redis.from_url(redis_url)
    env = [{"name": "WARM_REDIS", "value": redis_url}]
    code = COUNT + "print('once')"
    task = f"k{int(delay * 1000)}"
    create(api_client, ns, codetask(task, language="python", code=code, pool=name, env=env))
    time.sleep(delay)
    op.restart()  # SIGKILL, somewhere between seeing the task and writing its result
    status = finished(api_client, ns, task)
    assert (status["phase"], status["stdout"]) == ("Succeeded", "once\n"), status
    time.sleep(3)
    assert int(counter.get(f"warm:{task}") or 0) == 1, status
