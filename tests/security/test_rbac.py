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
    ("create", "jobs.batch", ""),
    ("delete", "jobs.batch", ""),
    ("watch", "pods", ""),
    ("create", "events", ""),
    ("list", "events", ""),
    ("watch", "customresourcedefinitions.apiextensions.k8s.io", ""),
]
DENIED = [
    ("get", "secrets", ""),
    ("list", "secrets", ""),
    ("create", "pods", ""),
    ("create", "pods", "exec"),
    ("get", "pods", "log"),
    ("delete", "pods", ""),
    ("update", "codetasks.codetask.dev", ""),
    ("patch", "codetasks.codetask.dev", ""),
    ("create", "clusterroles.rbac.authorization.k8s.io", ""),
    ("create", "rolebindings.rbac.authorization.k8s.io", ""),
    ("update", "jobs.batch", ""),
    ("get", "nodes", ""),
    ("create", "customresourcedefinitions.apiextensions.k8s.io", ""),
    ("*", "*", ""),
]


def kubectl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True)


@pytest.fixture
def service_account(kubeconfig: str, namespace: str) -> Iterator[str]:
    """The chart's ServiceAccount, ClusterRole and binding (no Deployment) in a test namespace."""
    helm = subprocess.run([REPO / "hack/tools.sh"], check=True, capture_output=True, text=True)
    release = f"{namespace}-codetask-operator"
    rendered = subprocess.run(
        [
            f"{helm.stdout.strip()}/helm",
            "template",
            release,
            str(REPO / "charts/codetask-operator"),
            "-n",
            namespace,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rbac = [
        d
        for d in yaml.safe_load_all(rendered)
        if d and d["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")
    ]
    manifest = yaml.safe_dump_all(rbac)
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
