"""The chart's RBAC, applied to the real API server and probed with `kubectl auth can-i --as`."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
import yaml

from tests.conftest import REPO

ALLOWED = [
    ("list", "codetasks.codetask.dev", ""),
    ("watch", "codetasks.codetask.dev", ""),
    ("patch", "codetasks.codetask.dev", "status"),
    ("delete", "codetasks.codetask.dev", ""),
    # The `codetask.dev/finished` label that takes a finished task out of the operator's watch
    # (RBAC cannot narrow a patch to labels; the admission webhook refuses spec changes to anyone).
    ("patch", "codetasks.codetask.dev", ""),
    ("create", "jobs.batch", ""),
    ("delete", "jobs.batch", ""),
    ("watch", "pods", ""),
    ("create", "events", ""),
    ("list", "events", ""),
    ("watch", "customresourcedefinitions.apiextensions.k8s.io", ""),
    ("create", "subjectaccessreviews.authorization.k8s.io", ""),
    ("get", "codetaskpools.codetask.dev", ""),
    ("list", "codetaskpools.codetask.dev", ""),
    ("watch", "codetaskpools.codetask.dev", ""),
]
CLUSTER_WIDE = {
    "customresourcedefinitions.apiextensions.k8s.io",
    "subjectaccessreviews.authorization.k8s.io",
    "codetaskpools.codetask.dev",
}
"""Granted by the ClusterRole however the namespaces are served (kopf reads the CRD; the webhook
asks about a creator's access)."""
DENIED = [
    ("get", "secrets", ""),
    ("list", "secrets", ""),
    ("create", "pods", ""),
    ("create", "pods", "exec"),
    ("get", "pods", "log"),
    ("delete", "pods", ""),
    ("update", "codetasks.codetask.dev", ""),
    ("create", "clusterroles.rbac.authorization.k8s.io", ""),
    ("create", "rolebindings.rbac.authorization.k8s.io", ""),
    ("update", "jobs.batch", ""),
    ("get", "nodes", ""),
    ("create", "customresourcedefinitions.apiextensions.k8s.io", ""),
    # Pools are the cluster admins': the operator only reads them.
    ("create", "codetaskpools.codetask.dev", ""),
    ("patch", "codetaskpools.codetask.dev", ""),
    ("*", "*", ""),
]


def kubectl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True)


def rendered_rbac(release: str, namespace: str, *values: str) -> str:
    """The chart's ServiceAccount and RBAC objects (no Deployment), rendered with `values`."""
    helm = subprocess.run([REPO / "hack/tools.sh"], check=True, capture_output=True, text=True)
    rendered = subprocess.run(
        [
            f"{helm.stdout.strip()}/helm",
            "template",
            release,
            str(REPO / "charts/codetask-operator"),
            "-n",
            namespace,
            *values,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    kinds = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
    rbac = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] in kinds]
    return yaml.safe_dump_all(rbac)


@pytest.fixture(params=["cluster-wide", "namespaced"])
def service_account(request: pytest.FixtureRequest, crd: None, namespace: str) -> Iterator[str]:
    """The chart's ServiceAccount and RBAC in a test namespace: cluster-wide (watchNamespaces
    empty), or with watchNamespaces naming the test namespace (Roles there). The CRDs are
    installed first: `kubectl auth can-i` resolves `codetasks.codetask.dev` by discovery."""
    release = f"{namespace}-codetask-operator"
    values = ("--set", f"watchNamespaces={{{namespace}}}") if request.param == "namespaced" else ()
    manifest = rendered_rbac(release, namespace, *values)
    done = kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest)
    assert done.returncode == 0, done.stderr
    yield f"system:serviceaccount:{namespace}:{release}"
    kubectl("delete", "-n", namespace, "-f", "-", stdin=manifest)


def can_i(who: str, verb: str, resource: str, sub: str, namespace: str) -> bool:
    args = ["auth", "can-i", verb, resource, f"--as={who}", "-n", namespace]
    if sub:
        args.append(f"--subresource={sub}")
    return kubectl(*args).stdout.strip() == "yes"


def test_operator_service_account_can_do_what_it_needs(
    service_account: str, namespace: str
) -> None:
    missing = [a for a in ALLOWED if not can_i(service_account, *a, namespace=namespace)]
    assert missing == []


def test_operator_service_account_cannot_read_secrets_exec_or_make_pods(
    service_account: str, namespace: str
) -> None:
    granted = [d for d in DENIED if can_i(service_account, *d, namespace=namespace)]
    assert granted == []


def test_with_named_namespaces_the_operator_can_act_only_in_them(
    kubeconfig: str, namespace: str
) -> None:
    release = f"{namespace}-codetask-operator"
    manifest = rendered_rbac(release, namespace, "--set", f"watchNamespaces={{{namespace}}}")
    assert "kind: ClusterRole\n" in manifest and "kind: Role\n" in manifest
    done = kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest)
    assert done.returncode == 0, done.stderr
    who = f"system:serviceaccount:{namespace}:{release}"
    try:
        namespaced = [a for a in ALLOWED if a[1] not in CLUSTER_WIDE]
        elsewhere = [a for a in namespaced if can_i(who, *a, namespace="default")]
        assert elsewhere == []
        assert can_i(who, "watch", "customresourcedefinitions.apiextensions.k8s.io", "", "default")
    finally:
        kubectl("delete", "-n", namespace, "-f", "-", stdin=manifest)


def test_network_policies_the_operator_may_create_and_correct_only_its_own(
    service_account: str, namespace: str
) -> None:
    policies = "networkpolicies.networking.k8s.io"
    release = service_account.rsplit(":", 1)[1]
    own = [f"{policies}/{release}-code-tasks", f"{policies}/{release}-agent-tasks"]
    wanted = [("create", policies)] + [(verb, p) for p in own for verb in ("get", "patch")]
    refused = [
        *((verb, policies) for verb in ("list", "watch", "delete", "deletecollection")),
        *((verb, f"{policies}/allow-web") for verb in ("get", "patch", "update", "delete")),
        *((verb, p) for p in own for verb in ("update", "delete")),
    ]
    assert [w for w in wanted if not can_i(service_account, *w, "", namespace)] == []
    assert [r for r in refused if can_i(service_account, *r, "", namespace)] == []


def test_without_network_policies_the_operator_has_no_rights_on_them() -> None:
    manifest = rendered_rbac("x", "ops", "--set", "networkPolicy.enabled=false")
    assert "networkpolicies" not in manifest
