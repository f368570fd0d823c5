"""Task pods' NetworkPolicies: what the chart tells the operator, what the operator puts in a
namespace before its first pod, and that they hold where enforced.

The local cluster's bridge CNI does not enforce NetworkPolicies: there the enforcement test finds
so with a control policy (deny all egress) and skips, saying why; on a cluster whose network plugin
enforces them it checks that a task cannot reach the API server.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from kubernetes import client

from codetask_operator import jobs, network_policy
from tests.conftest import SESSION
from tests.e2e.conftest import kubectl
from tests.e2e.tasks import codetask, create, policies_at_first_pod, wait_for
from tests.e2e.test_helm import operator_settings

DNS = {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
HTTPS = {"ports": [{"port": 443, "protocol": "TCP"}]}
MIRROR = {
    "to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}],
    "ports": [{"port": 8080, "protocol": "TCP"}],
}
REDIS = {
    "to": [
        {
            "namespaceSelector": {},
            "podSelector": {
                "matchLabels": {
                    "app.kubernetes.io/component": "redis",
                    "app.kubernetes.io/instance": "x",
                    "app.kubernetes.io/name": "codetask-operator",
                }
            },
        }
    ],
    "ports": [{"port": 6379, "protocol": "TCP"}],
}
CONNECT = r"""
import os, socket
host, port = os.environ["KUBERNETES_SERVICE_HOST"], int(os.environ["KUBERNETES_SERVICE_PORT"])
try:
    socket.create_connection((host, port), timeout=3).close()
    print("reached")
except OSError as exc:
    print("blocked:", exc)
"""


def test_the_chart_gives_the_operator_its_egress_values() -> None:
    settings = operator_settings(
        "--set", "redis.enabled=true", "--set-json", f"networkPolicy.egress=[{json.dumps(MIRROR)}]"
    )
    assert settings.network_policy is True
    assert settings.network_policy_name == "x-codetask-operator"
    assert settings.task_egress == {"code": [DNS, REDIS, MIRROR], "agent": [DNS, REDIS, HTTPS]}


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], {"code": [DNS], "agent": [DNS, HTTPS]}),
        (["--set", "networkPolicy.allowDNS=false"], {"code": [], "agent": [HTTPS]}),
        (["--set", "networkPolicy.agentEgress=null"], {"code": [DNS], "agent": [DNS]}),
    ],
)
def test_task_egress_follows_the_values(values: list[str], expected: dict[str, Any]) -> None:
    assert operator_settings(*values).task_egress == expected


def test_with_network_policies_off_the_operator_keeps_none() -> None:
    assert operator_settings("--set", "networkPolicy.enabled=false").network_policy is False


def run_probe(api_client: client.ApiClient, namespace: str, name: str) -> str:
    create(api_client, namespace, codetask(name, language="python", code=CONNECT))
    status = wait_for(api_client, namespace, name)["status"]
    assert status["phase"] == "Succeeded", status
    stdout: str = status["stdout"].strip()
    return stdout


@pytest.mark.usefixtures("operator")
def test_the_operators_policies_select_the_task_pod_and_nothing_else(
    api_client: client.ApiClient, namespace: str
) -> None:
    core, networking = client.CoreV1Api(api_client), client.NetworkingV1Api(api_client)
    core.create_namespaced_pod(
        namespace,
        client.V1Pod(
            metadata=client.V1ObjectMeta(name="web", labels={"app": "web"}),
            spec=client.V1PodSpec(
                restart_policy="Never",
                automount_service_account_token=False,
                containers=[
                    client.V1Container(
                        name="c", image="codetask-runner:dev", command=["python3", "-c", "pass"]
                    )
                ],
            ),
        ),
    )
    run_probe(api_client, namespace, "probe")
    listed = networking.list_namespaced_network_policy(namespace).items
    policies = {p.metadata.name: p for p in listed}
    assert set(policies) == {"codetask-code-tasks", "codetask-agent-tasks"}
    for name, policy in policies.items():
        selector = ",".join(f"{k}={v}" for k, v in policy.spec.pod_selector.match_labels.items())
        pods = core.list_namespaced_pod(namespace, label_selector=selector).items
        wanted = ["probe"] if name == "codetask-code-tasks" else []
        assert [p.metadata.labels.get(jobs.LABEL_TASK) for p in pods] == wanted, name
        assert policy.spec.policy_types == ["Ingress", "Egress"] and not policy.spec.ingress


@pytest.mark.usefixtures("operator")
@pytest.mark.timeout(240)
def test_a_namespace_deleted_and_created_anew_gets_its_policies_again(
    api_client: client.ApiClient,
) -> None:
    """A namespace served by glob, deleted and created anew within the operator's 60 s recheck: its
    policies are back before the first pod of the new namespace. Fails when the old namespace's
    check is taken for the new one (here the tasks' DELETED events make the operator forget it;
    namespace events do too, for when those never come: test_namespace_discovery.py)."""
    core = client.CoreV1Api(api_client)
    name = f"{SESSION}-reborn"
    meta = client.V1ObjectMeta(name=name, labels={"codetask.dev/test": "true"})
    spec = {"language": "python", "code": "print(1)"}
    try:
        core.create_namespace(client.V1Namespace(metadata=meta))
        _, listed = policies_at_first_pod(api_client, name, "first", **spec)
        assert len(listed) == 2
        core.delete_namespace(name)
        deleted = time.monotonic()
        while time.monotonic() - deleted < 45:
            try:
                core.read_namespace(name)
            except client.ApiException as exc:
                assert exc.status == 404
                break
            time.sleep(0.2)
        else:
            pytest.skip("the namespace took over 45 s to go: past the operator's recheck")
        core.create_namespace(client.V1Namespace(metadata=meta))
        pod, listed = policies_at_first_pod(api_client, name, "second", **spec)
        assert sorted(p.metadata.name for p in listed) == [
            "codetask-agent-tasks",
            "codetask-code-tasks",
        ], f"first pod of the new namespace at {pod.metadata.creation_timestamp}"
    finally:
        kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


@pytest.mark.usefixtures("operator")
def test_a_task_cannot_reach_the_api_server_where_the_policies_are_enforced(
    api_client: client.ApiClient, namespace: str
) -> None:
    outcome = run_probe(api_client, namespace, "probe")
    names = [network_policy.name("codetask", mode) for mode in network_policy.MODES]
    got = kubectl("get", "networkpolicy", "-n", namespace, *names, "-o", "name")
    assert got.returncode == 0, got.stderr
    if outcome == "reached":
        deny_all = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "deny-all-egress", "namespace": namespace},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"]},
        }
        done = kubectl("apply", "-f", "-", stdin=json.dumps(deny_all))
        assert done.returncode == 0, done.stderr
        if run_probe(api_client, namespace, "control") == "reached":
            pytest.skip(
                "this cluster's network plugin does not enforce NetworkPolicies (a pod under a "
                "deny-all-egress policy reached the API server): the local cluster's bridge CNI"
            )
    assert outcome.startswith("blocked:"), "the operator's policy let a code task reach the API"
