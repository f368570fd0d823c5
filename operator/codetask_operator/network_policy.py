"""Pure: the NetworkPolicies the operator keeps in every namespace it runs tasks in.

Two per namespace, one for code task pods and one for agent task pods (told apart by the
`codetask.dev/mode` label): no ingress at all, egress only by the rules the operator is given (the
chart's `networkPolicy` values). They select only pods the operator made, and they exist before the
namespace's first Job: a task pod is never, even briefly, on an open network.
"""

from collections.abc import Mapping
from typing import Any, Final

from codetask_operator import jobs
from codetask_operator.settings import Mode

MODES: Final[tuple[Mode, ...]] = ("code", "agent")


def name(prefix: str, mode: str) -> str:
    """`<prefix>-<mode>-tasks`: the chart names them after its release."""
    return f"{prefix}-{mode}-tasks"


def manifest(
    prefix: str, namespace: str, mode: Mode, egress: Mapping[Mode, list[dict[str, Any]]]
) -> dict[str, Any]:
    """The policy for `mode` task pods of `namespace`."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": name(prefix, mode),
            "namespace": namespace,
            "labels": {jobs.LABEL_MANAGED_BY: jobs.MANAGED_BY},
        },
        "spec": {
            "podSelector": {
                "matchLabels": {jobs.LABEL_MANAGED_BY: jobs.MANAGED_BY, jobs.LABEL_MODE: mode}
            },
            "policyTypes": ["Ingress", "Egress"],
            "egress": list(egress.get(mode) or []),
        },
    }


def manifests(
    prefix: str, namespace: str, egress: Mapping[Mode, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Both policies of `namespace`."""
    return [manifest(prefix, namespace, mode, egress) for mode in MODES]


def drifted(existing: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Whether the policy in the cluster differs from what it should be (edited by hand, or the
    chart's egress changed). The API server fills no defaults into these fields but `protocol`."""
    return _normal(existing.get("spec") or {}) != _normal(wanted["spec"])


def _normal(spec: Mapping[str, Any]) -> dict[str, Any]:
    """`spec` with each port's protocol made explicit (TCP is the API server's default)."""
    egress = [
        {**rule, "ports": [{"protocol": "TCP", **port} for port in rule["ports"]]}
        if rule.get("ports")
        else dict(rule)
        for rule in spec.get("egress") or []
    ]
    return {
        "podSelector": spec.get("podSelector") or {},
        "policyTypes": sorted(spec.get("policyTypes") or []),
        "ingress": spec.get("ingress") or [],
        "egress": egress,
    }
