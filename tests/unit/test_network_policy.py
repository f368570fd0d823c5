"""The task NetworkPolicies: which pods they select, and when the cluster's copy has drifted."""

from __future__ import annotations

import json
from typing import Any

import pytest

from codetask_operator import api, jobs, network_policy
from codetask_operator.settings import DEFAULT_TASK_EGRESS, Settings

pytestmark = pytest.mark.unit


def pod_labels(spec: dict[str, Any]) -> dict[str, str]:
    task = api.CodeTaskSpec.model_validate(spec)
    job = jobs.build_job("t", "uid", "a", task, 1, Settings())
    labels: dict[str, str] = job["spec"]["template"]["metadata"]["labels"]
    return labels


def selects(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    selector = policy["spec"]["podSelector"]
    assert set(selector) == {"matchLabels"}, selector
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


CODE_POD = pod_labels({"language": "python", "code": "print(1)", "labels": {"team": "ml"}})
AGENT_POD = pod_labels({"prompt": "hi", "agent": {"apiKeySecretRef": {"name": "k", "key": "k"}}})


def test_each_policy_selects_its_own_kind_of_task_pod_and_allows_no_ingress() -> None:
    code, agent = network_policy.manifests("rel", "team-a", DEFAULT_TASK_EGRESS)
    assert [code["metadata"]["name"], agent["metadata"]["name"]] == [
        "rel-code-tasks",
        "rel-agent-tasks",
    ]
    assert selects(code, CODE_POD) and not selects(code, AGENT_POD)
    assert selects(agent, AGENT_POD) and not selects(agent, CODE_POD)
    assert not selects(code, {"app": "web"}), "a pod the operator did not make"
    for policy in (code, agent):
        assert policy["metadata"]["namespace"] == "team-a"
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
        assert "ingress" not in policy["spec"]
    assert code["spec"]["egress"] == DEFAULT_TASK_EGRESS["code"]
    assert agent["spec"]["egress"] == DEFAULT_TASK_EGRESS["agent"]


def test_a_mode_without_rules_gets_no_egress_at_all() -> None:
    code, agent = network_policy.manifests("rel", "ns", {"agent": []})
    assert code["spec"]["egress"] == agent["spec"]["egress"] == []
    assert code["spec"]["policyTypes"] == ["Ingress", "Egress"]


WANTED = network_policy.manifest("rel", "ns", "code", DEFAULT_TASK_EGRESS)


def edited(**spec: Any) -> dict[str, Any]:
    policy = json.loads(json.dumps(WANTED))
    policy["spec"].update(spec)
    return policy


@pytest.mark.parametrize(
    ("existing", "drifted"),
    [
        (WANTED, False),
        # As the API server returns it: fields in another order, protocol filled in.
        (edited(policyTypes=["Egress", "Ingress"]), False),
        (
            edited(egress=[{"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53}]}]),
            False,
        ),
        (edited(egress=[*DEFAULT_TASK_EGRESS["code"], {}]), True),
        (edited(ingress=[{}]), True),
        (edited(policyTypes=["Ingress"]), True),
        (edited(podSelector={"matchLabels": {"app": "none"}}), True),
        (edited(podSelector={}), True),
        ({"spec": {}}, True),
    ],
)
def test_drift_is_any_difference_but_the_api_servers_defaults(
    existing: dict[str, Any], drifted: bool
) -> None:
    assert network_policy.drifted(existing, WANTED) is drifted
