"""The operator under test: `python -m codetask_operator` against the test cluster."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SESSION
from tests.e2e.tasks import Operator

REPO = Path(__file__).resolve().parents[2]

OPERATOR_ENV = {
    "CODETASK_IMAGE_PULL_POLICY": "Never",
    "CODETASK_POD_DNS_POLICY": "Default",
    "CODETASK_ALLOWED_IMAGES": "codetask-*",
    "CODETASK_LOG_FORMAT": "json",
    "CODETASK_PENDING_GRACE_SECONDS": "5",
    "CODETASK_NAMESPACES": f"{SESSION}-*",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def crd(kubeconfig: str) -> None:
    subprocess.run(["kubectl", "apply", "-f", str(REPO / "crds")], check=True, capture_output=True)
    subprocess.run(
        ["kubectl", "wait", "--for=condition=Established", "crd/codetasks.codetask.dev"],
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="session")
def operator(crd: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """The operator, running as a process; tests may kill and restart it."""
    log_dir = tmp_path_factory.mktemp("operator")
    ports = {"CODETASK_HEALTH_PORT": str(free_port()), "CODETASK_METRICS_PORT": str(free_port())}
    op = Operator(
        cmd=[sys.executable, "-m", "codetask_operator"],
        env={**os.environ, **OPERATOR_ENV, **ports},
        log_path=log_dir / "operator.log",
    )
    op.start()
    yield op
    op.stop(signal.SIGTERM)
    time.sleep(0.1)
