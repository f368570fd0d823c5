"""Two replicas with leader election: exactly one acts; the other takes over when it is killed."""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.conftest import SESSION
from tests.e2e.conftest import OPERATOR_ENV, free_port
from tests.e2e.tasks import Operator, codetask, create, jobs_of, wait_for

LEASE = "codetask-operator"
LEASE_SECONDS = 10


@pytest.fixture
def leader_ns(crd: None, api_client: client.ApiClient) -> Iterator[str]:
    """A namespace the session's own operator does not serve (it serves `SESSION-*`)."""
    core = client.CoreV1Api(api_client)
    name = f"{SESSION}l-{uuid.uuid4().hex[:8]}"
    meta = client.V1ObjectMeta(name=name, labels={"codetask.dev/test": "true"})
    core.create_namespace(client.V1Namespace(metadata=meta))
    yield name
    core.delete_namespace(name, propagation_policy="Background")


def replica(name: str, namespace: str, log_dir: Path) -> Operator:
    env = {
        **os.environ,
        **OPERATOR_ENV,
        "CODETASK_NAMESPACES": namespace,
        "CODETASK_HEALTH_PORT": str(free_port()),
        "CODETASK_METRICS_PORT": str(free_port()),
        "CODETASK_LEADER_ELECTION": "true",
        "CODETASK_LEASE_NAME": LEASE,
        "CODETASK_LEASE_NAMESPACE": namespace,
        "CODETASK_LEASE_DURATION_SECONDS": str(LEASE_SECONDS),
        "CODETASK_RENEW_PERIOD_SECONDS": "2",
        "CODETASK_POD_NAME": name,
    }
    cmd = [sys.executable, "-m", "codetask_operator"]
    return Operator(cmd=cmd, env=env, log_path=log_dir / f"{name}.log")


def holder(api_client: client.ApiClient, namespace: str) -> str:
    lease = client.CoordinationV1Api(api_client).read_namespaced_lease(LEASE, namespace)
    return str(lease.spec.holder_identity)


def wait_for_holder(api_client: client.ApiClient, namespace: str, prefix: str) -> float:
    """Seconds until a replica named `prefix` holds the Lease."""
    start = time.monotonic()
    while time.monotonic() - start < 60:
        try:
            if holder(api_client, namespace).startswith(f"{prefix}-"):
                return time.monotonic() - start
        except client.ApiException as exc:
            assert exc.status == 404, exc
        time.sleep(0.1)
    raise AssertionError(f"{prefix} did not get the Lease within 60 s")


def acted_before_leading(log: str) -> bool:
    """Whether a task transition is logged before the Lease was acquired."""
    before = log.split("acquired lease", 1)[0]
    return '"task":' in before


def test_only_the_leader_acts_and_the_standby_takes_over_a_killed_leader_within_15_seconds(
    api_client: client.ApiClient, leader_ns: str, tmp_path: Path
) -> None:
    first, second = replica("op-a", leader_ns, tmp_path), replica("op-b", leader_ns, tmp_path)
    first.start()
    wait_for_holder(api_client, leader_ns, "op-a")
    second.start()  # returns once its /healthz answers: a standby is healthy
    try:
        # Still running when the standby takes over: it finishes them from their pods' events.
        for i in range(5):
            code = f"import time\ntime.sleep({LEASE_SECONDS + 4 + i})\nprint({i} * 2)\n"
            create(api_client, leader_ns, codetask(f"t{i}", language="python", code=code))
        wait_for(api_client, leader_ns, "t0", {"Running"}, timeout=60)
        assert holder(api_client, leader_ns).startswith("op-a-")
        assert "acquired lease" not in second.log()

        first.stop(signal.SIGKILL)
        took = wait_for_holder(api_client, leader_ns, "op-b")
        print(f"takeover after SIGKILL: {took:.1f} s (lease {LEASE_SECONDS} s)")
        assert took <= 15

        for i in range(5):
            status = wait_for(api_client, leader_ns, f"t{i}", timeout=90)["status"]
            assert (status["phase"], status["stdout"]) == ("Succeeded", f"{i * 2}\n"), status
            assert status["attempts"] == 1
        names = sorted(j.metadata.name for j in jobs_of(api_client, leader_ns))
        assert len(names) == 5 and len(set(names)) == 5, names
        assert not acted_before_leading(second.log())
    finally:
        first.stop(signal.SIGKILL)
        second.stop(signal.SIGTERM)
