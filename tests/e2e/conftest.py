"""The operator under test: `python -m codetask_operator` against the test cluster, or installed
by the Helm chart."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from kubernetes import client

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


RELEASE_LABEL = "codetask.dev/release"
"""Label of the namespaces whose CodeTasks a test release's webhook checks."""


def chart_values(release: str, namespaces: str) -> list[str]:
    """`--set` flags for the local cluster (preloaded images, no cluster DNS). The release serves
    the namespaces matching the glob `namespaces`, and its webhook, which is cluster-wide, checks
    only those labelled `RELEASE_LABEL=release`: other sessions' tasks are not its business."""
    selector = {"matchLabels": {RELEASE_LABEL: release}}
    return [
        *("--set", "image.pullPolicy=Never"),
        *("--set", "runner.imagePullPolicy=Never"),
        *("--set", "runner.dnsPolicy=Default"),
        *("--set", f"watchNamespaces={{{namespaces}}}"),
        *("--set", "pendingGraceSeconds=5"),
        *("--set-json", f"webhook.namespaceSelector={json.dumps(selector)}"),
    ]


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    bin_dir = subprocess.run(
        [REPO / "hack/tools.sh"], check=True, capture_output=True, text=True
    ).stdout.strip()
    return subprocess.run([f"{bin_dir}/helm", *args], capture_output=True, text=True)


def kubectl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True)


@contextlib.contextmanager
def helm_release(release: str, namespace: str, values: Sequence[str]) -> Iterator[None]:
    """The chart installed as `release` in `namespace` (created); uninstalled and deleted after."""
    done = helm(
        "install",
        release,
        str(REPO / "charts/codetask-operator"),
        "-n",
        namespace,
        "--create-namespace",
        *values,
        "--wait",
        "--timeout",
        "180s",
    )
    assert done.returncode == 0, done.stderr
    try:
        yield
    finally:
        helm("uninstall", release, "-n", namespace, "--wait")
        kubectl("delete", "namespace", namespace, "--wait=false")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def namespace_operator(
    api: client.ApiClient, log_path: Path, tag: str, settings: dict[str, str]
) -> tuple[str, Operator]:
    """An operator process (started) serving a new namespace `SESSION<tag>-xxxxxx` of its own,
    with `settings` (CODETASK_* variables) over the tests' defaults; the namespace is returned
    with it. The operator uses Redis only where `settings` names it."""
    ns = f"{SESSION}{tag}-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(api).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=ns))
    )
    env = {
        **os.environ,
        **OPERATOR_ENV,
        "CODETASK_NAMESPACES": ns,
        "CODETASK_HEALTH_PORT": str(free_port()),
        "CODETASK_METRICS_PORT": str(free_port()),
    }
    env.pop("CODETASK_REDIS_URL", None)
    op = Operator([sys.executable, "-m", "codetask_operator"], {**env, **settings}, log_path)
    op.start()
    return ns, op
