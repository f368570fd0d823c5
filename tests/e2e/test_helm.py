"""The operator as users get it: installed by the Helm chart, running in the cluster."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from tests.conftest import REPO, SESSION
from tests.e2e.tasks import wait_for

RELEASE = f"{SESSION}-codetask-operator"
RELEASE_NS = f"{SESSION}h-system"
SAMPLES_NS = f"{SESSION}h-samples"
SAMPLES = sorted((REPO / "samples").glob("*.yaml"))
LOCAL_VALUES = [
    "--set",
    "image.pullPolicy=Never",
    "--set",
    "runner.imagePullPolicy=Never",
    "--set",
    "runner.dnsPolicy=Default",
    "--set",
    f"watchNamespaces={{{SESSION}h-*}}",
    "--set",
    "pendingGraceSeconds=5",
]


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    bin_dir = subprocess.run(
        [REPO / "hack/tools.sh"], check=True, capture_output=True, text=True
    ).stdout.strip()
    return subprocess.run([f"{bin_dir}/helm", *args], capture_output=True, text=True)


def kubectl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True)


@pytest.fixture(scope="module")
def release(crd: None, api_client: client.ApiClient) -> Iterator[str]:
    done = helm(
        "install",
        RELEASE,
        str(REPO / "charts/codetask-operator"),
        "-n",
        RELEASE_NS,
        "--create-namespace",
        *LOCAL_VALUES,
        "--wait",
        "--timeout",
        "180s",
    )
    assert done.returncode == 0, done.stderr
    core = client.CoreV1Api(api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=SAMPLES_NS)))
    yield RELEASE
    helm("uninstall", RELEASE, "-n", RELEASE_NS, "--wait")
    for ns in (SAMPLES_NS, RELEASE_NS):
        kubectl("delete", "namespace", ns, "--wait=false")


def test_chart_lints_clean_and_renders_objects_the_api_server_accepts(kubeconfig: str) -> None:
    lint = helm("lint", "--strict", str(REPO / "charts/codetask-operator"))
    assert lint.returncode == 0, lint.stdout + lint.stderr
    rendered = helm(
        "template", RELEASE, str(REPO / "charts/codetask-operator"), "-n", "default", *LOCAL_VALUES
    )
    assert rendered.returncode == 0, rendered.stderr
    kinds = {d["kind"] for d in yaml.safe_load_all(rendered.stdout) if d}
    assert kinds == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service"}
    dry = kubectl("apply", "--dry-run=server", "-n", "default", "-f", "-", stdin=rendered.stdout)
    assert dry.returncode == 0, dry.stderr


def test_chart_refuses_more_than_one_replica() -> None:
    done = helm("template", "x", str(REPO / "charts/codetask-operator"), "--set", "replicas=2")
    assert done.returncode != 0
    assert "leader election" in done.stderr


def test_cluster_role_has_no_wildcards() -> None:
    rendered = helm("template", "x", str(REPO / "charts/codetask-operator")).stdout
    role = next(d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "ClusterRole")
    for rule in role["rules"]:
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[key], rule


def expected_phase(sample: Path) -> str:
    match = re.search(r"^# expect: (\w+)", sample.read_text(), re.M)
    assert match, f"{sample.name} has no '# expect: Phase' comment"
    return match.group(1)


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.stem for s in SAMPLES])
def test_sample_ends_in_the_phase_its_comment_promises(
    release: str, api_client: client.ApiClient, sample: Path
) -> None:
    applied = kubectl("apply", "-n", SAMPLES_NS, "-f", str(sample))
    assert applied.returncode == 0, applied.stderr
    docs = [d for d in yaml.safe_load_all(sample.read_text()) if d and d["kind"] == "CodeTask"]
    for doc in docs:
        status = wait_for(api_client, SAMPLES_NS, doc["metadata"]["name"], timeout=120)["status"]
        assert status["phase"] == expected_phase(sample), status


def test_operator_runs_from_the_release_and_uninstall_leaves_only_crd_and_tasks(
    release: str, api_client: client.ApiClient
) -> None:
    apps = client.AppsV1Api(api_client)
    deployment = apps.read_namespaced_deployment(release, RELEASE_NS)
    assert deployment.status.ready_replicas == 1
    kubectl("apply", "-n", SAMPLES_NS, "-f", str(REPO / "samples/hello-python.yaml"))
    assert wait_for(api_client, SAMPLES_NS, "hello-python")["status"]["stdout"] == "4\n"

    done = helm("uninstall", release, "-n", RELEASE_NS, "--wait")
    assert done.returncode == 0, done.stderr
    selector = f"app.kubernetes.io/instance={release}"
    end = time.monotonic() + 60
    leftovers: list[str] = ["?"]
    while leftovers and time.monotonic() < end:
        got = kubectl(
            "get",
            "deploy,sa,svc,pods,clusterrole,clusterrolebinding",
            "-A",
            "-l",
            selector,
            "-o",
            "name",
        )
        leftovers = got.stdout.split()
        time.sleep(1)
    assert leftovers == []
    assert kubectl("get", "crd", "codetasks.codetask.dev").returncode == 0
    assert wait_for(api_client, SAMPLES_NS, "hello-python")["status"]["phase"] == "Succeeded"
