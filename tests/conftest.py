"""Test tiers and the shared cluster fixtures.

Tests marked `integration` or `e2e` run against a real cluster: the one `$KUBECONFIG` points at,
or the one `hack/cluster/cluster.sh up` brings up (local from Debian packages, or kind).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
K8S_BIN = Path(os.environ.get("CODETASK_CACHE", Path.home() / ".cache/codetask")) / "k8s-1.20.2"
if K8S_BIN.is_dir():
    # The kubectl built with the local cluster matches its API server; the machine's may not.
    os.environ["PATH"] = f"{K8S_BIN}{os.pathsep}{os.environ['PATH']}"
CLUSTER_TIERS = ("integration", "e2e")
SESSION = f"t{uuid.uuid4().hex[:6]}"
"""Prefix of this session's namespaces: its operator serves only those (`SESSION-*`)."""


TIER_OF_DIR = {"unit": "unit", "integration": "integration", "e2e": "e2e", "security": "e2e"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = TIER_OF_DIR.get(item.path.relative_to(REPO / "tests").parts[0])
        if tier:
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session")
def kubeconfig() -> str:
    """A kubeconfig for a reachable cluster, bringing one up (and loading images) if needed."""
    subprocess.run([REPO / "hack/cluster/cluster.sh", "up"], check=True)
    subprocess.run([REPO / "hack/cluster/cluster.sh", "images"], check=True)
    path = str(REPO / ".cluster/kubeconfig")
    os.environ["KUBECONFIG"] = path
    return path


@pytest.fixture(scope="session")
def api_client(kubeconfig: str) -> Iterator[object]:
    from kubernetes import config

    c = config.new_client_from_config(config_file=kubeconfig)
    yield c
    c.close()


@pytest.fixture
def namespace(api_client: object) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards."""
    from kubernetes import client

    core = client.CoreV1Api(api_client)
    name = f"{SESSION}-{uuid.uuid4().hex[:8]}"
    core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(name=name, labels={"codetask.dev/test": "true"})
        )
    )
    yield name
    core.delete_namespace(name, propagation_policy="Background")
