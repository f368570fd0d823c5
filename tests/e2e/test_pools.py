"""CodeTaskPools on the real cluster: a task runs where and with what its pool says, and a task
that may not use a pool does not run. (The webhook's refusals at apply time: test_webhook.py.)"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.conftest import SECOND_NODE_LABEL, SECOND_NODE_TOLERATION
from tests.e2e.tasks import codetask, create, get, pods_of, wait_for

pytestmark = pytest.mark.usefixtures("operator")

NODE_LABEL = "kubernetes.io/hostname"
RUNTIME_CLASS = "codetask-e2e-runc"


def wait_for_reason(
    api_client: client.ApiClient, ns: str, name: str, reason: str, timeout: float = 60
) -> dict[str, Any]:
    """The task's status once its reason is `reason`."""
    end = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < end:
        status = get(api_client, ns, name).get("status") or {}
        if status.get("reason") == reason:
            return status
        time.sleep(0.2)
    raise AssertionError(f"{ns}/{name} never had reason {reason} in {timeout}s: {status}")


@pytest.fixture
def runtime_class(api_client: client.ApiClient) -> str:
    """A RuntimeClass for the node's own runc handler (kept: other runs use it too)."""
    node = client.NodeV1Api(api_client)
    body = client.V1RuntimeClass(metadata=client.V1ObjectMeta(name=RUNTIME_CLASS), handler="runc")
    try:
        node.create_runtime_class(body)
    except ApiException as exc:
        if exc.status != 409:
            raise
    return RUNTIME_CLASS


def the_node(api_client: client.ApiClient) -> str:
    nodes = client.CoreV1Api(api_client).list_node().items
    return str(nodes[0].metadata.labels[NODE_LABEL])


def test_a_pool_task_runs_with_the_pools_runtime_class_placement_and_class(
    api_client: client.ApiClient, namespace: str, pool: Callable[..., str], runtime_class: str
) -> None:
    node = the_node(api_client)
    name = pool(
        namespaces=[namespace],
        runtimeClassName=runtime_class,
        nodeSelector={NODE_LABEL: node},
        tolerations=[{"key": "codetask.dev/e2e", "operator": "Exists", "effect": "NoSchedule"}],
        resources={"requests": {"memory": "96Mi"}, "limits": {"memory": "160Mi"}},
    )
    create(api_client, namespace, codetask("t", language="python", code="print(6 * 7)", pool=name))
    status = wait_for(api_client, namespace, "t")["status"]
    assert (status["phase"], status["stdout"], status["pool"]) == ("Succeeded", "42\n", name)
    [pod] = pods_of(api_client, namespace)
    assert pod.spec.runtime_class_name == runtime_class
    assert pod.spec.node_selector == {NODE_LABEL: node}
    assert any(t.key == "codetask.dev/e2e" for t in pod.spec.tolerations)
    resources = pod.spec.containers[0].resources
    assert (resources.requests["memory"], resources.limits["memory"]) == ("96Mi", "160Mi")
    assert pod.metadata.labels["codetask.dev/pool"] == name


def test_a_pool_no_node_matches_leaves_its_task_unschedulable_with_the_schedulers_message(
    api_client: client.ApiClient, namespace: str, pool: Callable[..., str]
) -> None:
    name = pool(namespaces=[namespace], nodeSelector={"codetask.dev/e2e-no-such": "node"})
    create(api_client, namespace, codetask("t", language="python", code="print(1)", pool=name))
    status = wait_for_reason(api_client, namespace, "t", "Unschedulable")
    assert status["phase"] == "Pending", status
    # 1.20: "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity."; newer versions
    # say "node affinity/selector".
    assert "nodes are available" in status["message"], status
    assert "didn't match Pod's node affinity" in status["message"], status


def test_the_namespaces_default_pool_runs_a_task_that_names_none(
    api_client: client.ApiClient, namespace: str, pool: Callable[..., str]
) -> None:
    name = pool(namespaces=["no-such-namespace"], defaultFor=[namespace])
    create(api_client, namespace, codetask("t", language="python", code="print(1)"))
    status = wait_for(api_client, namespace, "t")["status"]
    assert (status["phase"], status["pool"]) == ("Succeeded", name), status


def test_a_pool_the_namespace_may_not_use_fails_the_task_naming_spec_pool(
    api_client: client.ApiClient, namespace: str, pool: Callable[..., str]
) -> None:
    """Without the webhook (the session operator has none) the operator refuses it at start."""
    name = pool(namespaces=["someone-else-*"])
    create(api_client, namespace, codetask("t", language="python", code="print(1)", pool=name))
    status = wait_for(api_client, namespace, "t")["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "InvalidSpec"), status
    assert f"spec.pool: CodeTaskPool {name!r} may not be used in namespace" in status["message"]
    assert pods_of(api_client, namespace) == []


def test_a_pool_that_tolerates_the_second_nodes_taint_runs_there_and_other_tasks_do_not(
    api_client: client.ApiClient, namespace: str, pool: Callable[..., str], second_node: str
) -> None:
    name = pool(
        namespaces=[namespace],
        nodeSelector={SECOND_NODE_LABEL: "true"},
        tolerations=[SECOND_NODE_TOLERATION],
    )
    create(api_client, namespace, codetask("in-pool", language="sh", code="echo pooled", pool=name))
    create(api_client, namespace, codetask("plain", language="sh", code="echo plain"))
    pooled = wait_for(api_client, namespace, "in-pool")["status"]
    plain = wait_for(api_client, namespace, "plain")["status"]
    assert (pooled["phase"], pooled["stdout"], pooled["nodeName"]) == (
        "Succeeded",
        "pooled\n",
        second_node,
    ), pooled
    assert plain["phase"] == "Succeeded" and plain["nodeName"] != second_node, plain
