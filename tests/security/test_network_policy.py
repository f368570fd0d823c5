"""The chart's NetworkPolicies: what they select and allow, and that they hold where enforced.

The local cluster's bridge CNI does not enforce NetworkPolicies: there the enforcement test finds
so with a control policy (deny all egress) and skips, saying why; on a cluster whose network plugin
enforces them it checks that a task cannot reach the API server.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from kubernetes import client

from codetask_operator import api, jobs
from codetask_operator.settings import Settings
from tests.conftest import REPO
from tests.e2e.conftest import helm, kubectl
from tests.e2e.tasks import codetask, create, wait_for

CHART = str(REPO / "charts/codetask-operator")
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


def policies(*values: str) -> dict[tuple[str, str], dict[str, Any]]:
    """The chart's NetworkPolicies rendered with `values`, by (namespace, name)."""
    done = helm("template", "x", CHART, "-n", "ops", *values)
    assert done.returncode == 0, done.stderr
    docs = [d for d in yaml.safe_load_all(done.stdout) if d and d["kind"] == "NetworkPolicy"]
    return {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in docs}


def pod_labels(spec: dict[str, Any]) -> dict[str, str]:
    """The labels the operator puts on the pod of a task with `spec`."""
    task = api.CodeTaskSpec.model_validate(spec)
    job = jobs.build_job("t", "uid", "a", task, 1, Settings.model_validate({}))
    labels: dict[str, str] = job["spec"]["template"]["metadata"]["labels"]
    return labels


def selects(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    selector = policy["spec"]["podSelector"]
    assert set(selector) == {"matchLabels"}, selector
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


CODE_POD = pod_labels({"language": "python", "code": "print(1)", "labels": {"team": "ml"}})
AGENT_POD = pod_labels({"prompt": "hi", "agent": {"apiKeySecretRef": {"name": "k", "key": "k"}}})


def test_task_policies_isolate_code_and_agent_pods_with_only_the_listed_egress() -> None:
    rendered = policies(
        *("--set", "watchNamespaces={a,team-*,b}", "--set", "redis.enabled=true"),
        *("--set-json", f"networkPolicy.egress=[{json.dumps(MIRROR)}]"),
    )
    assert set(rendered) == {
        ("a", "x-codetask-operator-code-tasks"),
        ("a", "x-codetask-operator-agent-tasks"),
        ("b", "x-codetask-operator-code-tasks"),
        ("b", "x-codetask-operator-agent-tasks"),
        ("ops", "x-codetask-operator-redis"),
    }, "one pair per watched namespace that is a name, not a glob; the Redis one beside it"
    code, agent = (
        rendered["a", "x-codetask-operator-code-tasks"],
        rendered["a", "x-codetask-operator-agent-tasks"],
    )
    assert selects(code, CODE_POD) and not selects(code, AGENT_POD)
    assert selects(agent, AGENT_POD) and not selects(agent, CODE_POD)
    for policy in (code, agent):
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
        assert "ingress" not in policy["spec"], "no ingress at all"
    assert code["spec"]["egress"] == [DNS, REDIS, MIRROR]
    assert agent["spec"]["egress"] == [DNS, REDIS, HTTPS]
    redis = rendered["ops", "x-codetask-operator-redis"]["spec"]
    assert redis["policyTypes"] == ["Ingress"]
    (rule,) = redis["ingress"]
    assert rule["ports"] == [{"port": 6379, "protocol": "TCP"}]
    assert [peer["podSelector"]["matchLabels"] for peer in rule["from"]] == [
        {
            "app.kubernetes.io/name": "codetask-operator",
            "app.kubernetes.io/instance": "x",
            "app.kubernetes.io/component": "operator",
        },
        {"app.kubernetes.io/managed-by": "codetask-operator"},
    ]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["--set", "watchNamespaces={a}", "--set", "networkPolicy.enabled=false"], {}),
        ([], {}),
        (["--set", "watchNamespaces={t-*}"], {}),
        (
            ["--set", "watchNamespaces={t-*}", "--set", "networkPolicy.namespaces={c}"],
            {"c": [DNS, HTTPS]},
        ),
        (["--set", "watchNamespaces={a}", "--set", "networkPolicy.allowDNS=false"], {"a": [HTTPS]}),
        (["--set", "watchNamespaces={a}", "--set", "networkPolicy.agentEgress=null"], {"a": [DNS]}),
    ],
)
def test_task_policies_follow_the_values(values: list[str], expected: dict[str, list[Any]]) -> None:
    """`expected`: namespace → the agent policy's egress (the code one has the same less HTTPS)."""
    rendered = policies(*values)
    assert {ns for ns, _ in rendered} == set(expected)
    for ns, agent_egress in expected.items():
        assert rendered[ns, "x-codetask-operator-agent-tasks"]["spec"]["egress"] == agent_egress
        code_egress = [rule for rule in agent_egress if rule is not HTTPS]
        assert rendered[ns, "x-codetask-operator-code-tasks"]["spec"]["egress"] == code_egress


def apply_policies(namespace: str) -> dict[str, dict[str, Any]]:
    """The chart's task policies for `namespace`, applied there; by name."""
    rendered = policies("--set", f"networkPolicy.namespaces={{{namespace}}}")
    text = "\n---\n".join(yaml.safe_dump(doc) for doc in rendered.values())
    done = kubectl("apply", "-f", "-", stdin=text)
    assert done.returncode == 0, done.stderr
    return {name: doc for (_, name), doc in rendered.items()}


def run_probe(api_client: client.ApiClient, namespace: str, name: str) -> str:
    create(api_client, namespace, codetask(name, language="python", code=CONNECT))
    status = wait_for(api_client, namespace, name)["status"]
    assert status["phase"] == "Succeeded", status
    stdout: str = status["stdout"].strip()
    return stdout


@pytest.mark.usefixtures("operator")
def test_the_api_server_accepts_the_task_policies_and_they_select_the_task_pod(
    api_client: client.ApiClient, namespace: str
) -> None:
    applied = apply_policies(namespace)
    run_probe(api_client, namespace, "probe")
    core = client.CoreV1Api(api_client)
    for name, policy in applied.items():
        selector = ",".join(
            f"{k}={v}" for k, v in policy["spec"]["podSelector"]["matchLabels"].items()
        )
        pods = core.list_namespaced_pod(namespace, label_selector=selector).items
        wanted = ["probe"] if name.endswith("-code-tasks") else []
        assert [p.metadata.labels[jobs.LABEL_TASK] for p in pods] == wanted, name


@pytest.mark.usefixtures("operator")
def test_a_task_cannot_reach_the_api_server_where_the_policies_are_enforced(
    api_client: client.ApiClient, namespace: str
) -> None:
    apply_policies(namespace)
    outcome = run_probe(api_client, namespace, "probe")
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
    assert outcome.startswith("blocked:"), "the chart's policy let a code task reach the API server"
