"""Test tiers and the shared cluster fixtures.

Tests marked `integration` or `e2e` run against a real cluster: the one `$KUBECONFIG` points at,
or the one `hack/cluster/cluster.sh up` brings up (local from Debian packages, or kind).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.e2e.tasks import Operator

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


# The fixtures below are defined here, once, for every directory: a fixture imported into another
# conftest is a second definition with its own instance — a second operator process serving the
# same namespaces, racing the first (CI saw one task's attempt recorded twice).
_session_operators: list[Operator] = []


@pytest.fixture(scope="session")
def crd(kubeconfig: str) -> None:
    """The CRDs from crds/ (CodeTask, CodeTaskPool), applied and Established."""
    subprocess.run(["kubectl", "apply", "-f", str(REPO / "crds")], check=True, capture_output=True)
    subprocess.run(
        [
            "kubectl",
            "wait",
            "--for=condition=Established",
            "crd/codetasks.codetask.dev",
            "crd/codetaskpools.codetask.dev",
        ],
        check=True,
        capture_output=True,
    )


SECOND_NODE_LABEL = "codetask.dev/second-node"
"""Label and NoSchedule taint of the local cluster's node 2 (hack/cluster/node2.sh): only pods that
tolerate it run there."""
SECOND_NODE_TOLERATION = {"key": SECOND_NODE_LABEL, "operator": "Exists", "effect": "NoSchedule"}


@pytest.fixture
def second_node(api_client: object) -> str:
    """The name of the cluster's second node (Ready); the test is skipped, saying so, where the
    cluster has one node only."""
    from kubernetes import client

    nodes = client.CoreV1Api(api_client).list_node(label_selector=f"{SECOND_NODE_LABEL}=true")
    ready = [
        n.metadata.name
        for n in nodes.items
        if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
    ]
    if not ready:
        pytest.skip(f"no Ready node labelled {SECOND_NODE_LABEL}=true: `make cluster NODES=2`")
    return str(ready[0])


@pytest.fixture
def pool(crd: None, api_client: object) -> Iterator[Callable[..., str]]:
    """Makes cluster-scoped CodeTaskPools with unique names; deletes them afterwards."""
    from kubernetes import client

    made: list[str] = []
    custom = client.CustomObjectsApi(api_client)

    def make(**spec: Any) -> str:
        name = f"e2e-{uuid.uuid4().hex[:8]}"
        body = {"apiVersion": "codetask.dev/v1alpha1", "kind": "CodeTaskPool"}
        custom.create_cluster_custom_object(
            "codetask.dev",
            "v1alpha1",
            "codetaskpools",
            {**body, "metadata": {"name": name}, "spec": spec},
        )
        made.append(name)
        return name

    yield make
    for name in made:
        custom.delete_cluster_custom_object("codetask.dev", "v1alpha1", "codetaskpools", name)


@pytest.fixture(scope="session")
def operator(crd: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """The session's operator, running as a process and serving the session's namespaces
    (`SESSION-*`); tests may kill and restart it."""
    from tests.e2e.conftest import OPERATOR_ENV, free_port
    from tests.e2e.tasks import Operator

    assert not _session_operators, "a second definition of the `operator` fixture ran"
    log_dir = tmp_path_factory.mktemp("operator")
    ports = {"CODETASK_HEALTH_PORT": str(free_port()), "CODETASK_METRICS_PORT": str(free_port())}
    op = Operator(
        cmd=[sys.executable, "-m", "codetask_operator"],
        env={**os.environ, **OPERATOR_ENV, **ports},
        log_path=log_dir / "operator.log",
    )
    op.start()
    _session_operators.append(op)
    yield op
    op.stop(signal.SIGTERM)
    time.sleep(0.1)


@pytest.fixture(scope="module")
def redis_url(api_client: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server on the node's address, where task pods can reach it, with a password (task
    pods get Redis users of their own only from a Redis whose default user needs one)."""
    import redis
    from kubernetes import client

    from tests.e2e.conftest import free_port

    node = client.CoreV1Api(api_client).list_node().items[0]
    host = next(a.address for a in node.status.addresses if a.type == "InternalIP")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    password = uuid.uuid4().hex
    options = ("--save", "", "--appendonly", "no", "--requirepass", password, "--dir", workdir)
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", f"{host} 127.0.0.1", *map(str, options)],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://:{password}@{host}:{port}/0"
    end = time.monotonic() + 10
    while True:
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < end, "redis-server did not start"
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait()


HEARTBEAT_TTL = 4
"""The `redis_operator`'s heartbeat TTL (seconds)."""


@pytest.fixture(scope="module")
def redis_operator(
    crd: None,
    redis_url: str,
    api_client: object,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """An operator with Redis heartbeats (interval 1 s, TTL 4 s), serving a namespace of its own
    (one per test module)."""
    from kubernetes import client

    from tests.e2e.conftest import namespace_operator

    settings = {
        "CODETASK_REDIS_URL": redis_url,
        "CODETASK_HEARTBEAT_INTERVAL_SECONDS": "1",
        "CODETASK_HEARTBEAT_TTL_SECONDS": str(HEARTBEAT_TTL),
        "CODETASK_SWEEP_INTERVAL_SECONDS": "1",
    }
    log = tmp_path_factory.mktemp("redis-operator") / "operator.log"
    ns, op = namespace_operator(api_client, log, "r", settings)
    yield ns
    op.stop()
    client.CoreV1Api(api_client).delete_namespace(ns)
