"""The operator as users get it: installed by the Helm chart, running in the cluster."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import celpy
import pytest
import yaml
from kubernetes import client

from codetask_operator import access, api, jobs, webhook
from codetask_operator.settings import ENV_PREFIX, Settings
from tests.conftest import REPO, SESSION
from tests.e2e.conftest import RELEASE_LABEL, chart_values, helm, helm_release, kubectl
from tests.e2e.tasks import policies_at_first_pod, wait_for

RELEASE = f"{SESSION}-codetask-operator"
RELEASE_NS = f"{SESSION}h-system"
SAMPLES_NS = f"{SESSION}h-samples"
SAMPLES = sorted((REPO / "samples").glob("*.yaml"))
LOCAL_VALUES = chart_values(RELEASE, f"{SESSION}h-*")


@pytest.fixture(scope="module")
def release(crd: None, api_client: client.ApiClient) -> Iterator[str]:
    with helm_release(RELEASE, RELEASE_NS, LOCAL_VALUES):
        # Samples pass the release's webhook too.
        labels = {RELEASE_LABEL: RELEASE}
        core = client.CoreV1Api(api_client)
        core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=SAMPLES_NS, labels=labels))
        )
        yield RELEASE
        kubectl("delete", "namespace", SAMPLES_NS, "--wait=false")


def test_chart_lints_clean_and_renders_objects_the_api_server_accepts(kubeconfig: str) -> None:
    lint = helm("lint", "--strict", str(REPO / "charts/codetask-operator"))
    assert lint.returncode == 0, lint.stdout + lint.stderr
    # For this cluster's version, as `helm install` renders it (`helm template` alone assumes a
    # recent Kubernetes, and fields newer than 1.20 would be refused here).
    version = json.loads(kubectl("version", "-o", "json").stdout)["serverVersion"]["gitVersion"]
    rendered = helm(
        "template",
        RELEASE,
        str(REPO / "charts/codetask-operator"),
        *("-n", "default", "--kube-version", version.lstrip("v")),
        *LOCAL_VALUES,
    )
    assert rendered.returncode == 0, rendered.stderr
    kinds = {d["kind"] for d in yaml.safe_load_all(rendered.stdout) if d}
    assert kinds == {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Lease",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "Secret",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    }
    dry = kubectl("apply", "--dry-run=server", "-n", "default", "-f", "-", stdin=rendered.stdout)
    assert dry.returncode == 0, dry.stderr


def test_chart_refuses_more_than_one_replica_without_leader_election() -> None:
    chart = str(REPO / "charts/codetask-operator")
    done = helm(
        "template", "x", chart, "--set", "replicas=2", "--set", "leaderElection.enabled=false"
    )
    assert done.returncode != 0
    assert "leader election" in done.stderr
    rendered = helm("template", "x", chart, "--set", "replicas=2")
    assert rendered.returncode == 0, rendered.stderr
    deployment = next(
        d for d in yaml.safe_load_all(rendered.stdout) if d and d["kind"] == "Deployment"
    )
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"


def test_webhook_configuration_calls_the_operators_handler_through_the_service() -> None:
    rendered = helm("template", "x", str(REPO / "charts/codetask-operator"), "-n", "ops").stdout
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(rendered) if d}
    tls = docs["Secret", "x-codetask-operator-webhook-tls"]["data"]["ca.crt"]
    for kind, index, handler, operations in (
        ("ValidatingWebhookConfiguration", 0, webhook.HANDLER_ID, ["CREATE", "UPDATE"]),
        ("ValidatingWebhookConfiguration", 1, webhook.POOL_HANDLER_ID, ["CREATE", "UPDATE"]),
        ("MutatingWebhookConfiguration", 0, webhook.MUTATE_ID, ["CREATE"]),
    ):
        hook = docs[kind, "x-codetask-operator"]["webhooks"][index]
        assert hook["clientConfig"]["service"] == {
            "name": "x-codetask-operator-webhook",
            "namespace": "ops",
            "path": f"/{handler}",
            "port": 443,
        }
        assert hook["clientConfig"]["caBundle"] == tls
        assert hook["rules"][0]["operations"] == operations
        assert (hook["sideEffects"], hook["admissionReviewVersions"]) == ("None", ["v1"])


def test_the_pool_webhook_never_blocks_pools_whatever_the_task_webhooks_policy() -> None:
    chart = str(REPO / "charts/codetask-operator")
    rendered = helm("template", "x", chart, "--set", "webhook.failurePolicy=Fail").stdout
    (config,) = [
        d for d in yaml.safe_load_all(rendered) if d and d["kind"].startswith("Validating")
    ]
    policies = {hook["name"]: hook["failurePolicy"] for hook in config["webhooks"]}
    assert policies == {
        "validate.codetasks.codetask.dev": "Fail",
        "validate.codetaskpools.codetask.dev": "Ignore",
    }


def mutating_webhook(kube_version: str) -> dict[str, Any]:
    chart = str(REPO / "charts/codetask-operator")
    rendered = helm("template", "x", chart, "--kube-version", kube_version)
    assert rendered.returncode == 0, rendered.stderr
    (config,) = [
        d for d in yaml.safe_load_all(rendered.stdout) if d and d["kind"].startswith("Mutating")
    ]
    (hook,) = config["webhooks"]
    return dict(hook)


SECRET_VAR = {"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
MAP_VAR = {"name": "K", "valueFrom": {"configMapKeyRef": {"name": "m", "key": "k"}}}
AGENT = {"prompt": "hi", "apiKeySecretRef": {"name": "key", "key": "k"}}


@pytest.mark.parametrize(
    ("spec", "annotations"),
    [
        ({"language": "python", "code": "1"}, {}),
        ({"language": "python", "code": "1", "env": [{"name": "A", "value": "b"}]}, {}),
        ({"language": "python", "code": "1", "env": [{"name": "A", "value": "b"}, SECRET_VAR]}, {}),
        ({"language": "python", "code": "1", "env": [MAP_VAR]}, {}),
        ({"agent": AGENT}, {}),
        ({"agent": {**AGENT, "inputConfigMap": "in"}}, {}),
        ({"language": "python", "code": "1"}, {access.STAMP_ANNOTATION: "forged"}),
        ({"language": "python", "code": "1"}, {"other": "x"}),
    ],
)
def test_the_references_webhook_is_skipped_only_for_tasks_it_has_nothing_to_do_for(
    spec: dict[str, Any], annotations: dict[str, str]
) -> None:
    """On Kubernetes >= 1.28 the chart's matchConditions (CEL, evaluated here with cel-python)
    send the API server's call for exactly the tasks with references (access.references) or a
    stamp to drop; older versions get no matchConditions and send every create."""
    assert "matchConditions" not in mutating_webhook("1.27.0")
    (condition,) = mutating_webhook("1.30.0")["matchConditions"]
    environment = celpy.Environment()
    program = environment.program(environment.compile(condition["expression"]))
    meta: dict[str, Any] = {"name": "t", **({"annotations": annotations} if annotations else {})}
    task = {"metadata": meta, "spec": spec}
    called = bool(program.evaluate({"object": celpy.json_to_cel(task)}))
    references = access.references(api.CodeTaskSpec.model_validate(spec))
    assert called == (bool(references) or access.STAMP_ANNOTATION in annotations)


def test_cluster_role_has_no_wildcards() -> None:
    rendered = helm("template", "x", str(REPO / "charts/codetask-operator")).stdout
    role = next(d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "ClusterRole")
    for rule in role["rules"]:
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[key], rule


def operator_settings(*values: str) -> Settings:
    """The operator's settings from the chart's rendered Deployment (its literal env values), read
    as the operator reads its environment."""
    rendered = helm("template", "x", str(REPO / "charts/codetask-operator"), *values)
    assert rendered.returncode == 0, rendered.stderr
    deployment = next(
        d for d in yaml.safe_load_all(rendered.stdout) if d and d["kind"] == "Deployment"
    )
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    literal = {
        e["name"]: e["value"]
        for e in env
        if e["name"].startswith(ENV_PREFIX) and "value" in e and "$(" not in e["value"]
    }
    others = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    with mock.patch.dict(os.environ, {**others, **literal, "POD_NAMESPACE": "ops"}, clear=True):
        return Settings()


def test_caps_and_pod_label_keys_reach_the_operator_with_the_settings_defaults() -> None:
    chart = operator_settings()
    defaults = Settings.model_validate({})
    assert (chart.max_priority, chart.max_resources) == (
        defaults.max_priority,
        defaults.max_resources,
    )
    assert chart.pod_label_keys == defaults.pod_label_keys == []
    custom = operator_settings(
        *("--set", "caps.maxPriority=10", "--set", "caps.resources.memory=8Gi"),
        *("--set", "runner.podLabelKeys={team,example.com/tier}"),
    )
    assert (custom.max_priority, custom.max_memory) == (10, "8Gi")
    assert custom.pod_label_keys == ["team", "example.com/tier"]


def test_results_stream_settings_reach_the_operator_with_the_settings_defaults() -> None:
    chart, defaults = operator_settings(), Settings.model_validate({})
    assert (chart.results_stream, chart.results_max_len, chart.results_marker_ttl_seconds) == (
        defaults.results_stream,
        defaults.results_max_len,
        defaults.results_marker_ttl_seconds,
    )
    off = operator_settings("--set", "redis.results.stream=")
    assert off.results_stream == ""


def test_finished_tasks_are_bounded_by_default_and_null_keeps_them() -> None:
    chart, defaults = operator_settings(), Settings.model_validate({})
    assert (chart.default_ttl_seconds_after_finished, chart.keep_finished_per_namespace) == (
        defaults.default_ttl_seconds_after_finished,
        defaults.keep_finished_per_namespace,
    )
    assert defaults.default_ttl_seconds_after_finished and defaults.keep_finished_per_namespace
    keep = operator_settings(
        *("--set", "defaults.ttlSecondsAfterFinished=null"),
        *("--set", "defaults.keepFinishedPerNamespace=0"),
    )
    assert (keep.default_ttl_seconds_after_finished, keep.keep_finished_per_namespace) == (None, 0)
    assert (
        operator_settings(
            "--set", "defaults.ttlSecondsAfterFinished=0"
        ).default_ttl_seconds_after_finished
        == 0
    )


def expected_phase(sample: Path) -> str:
    match = re.search(r"^# expect: (\w+)", sample.read_text(), re.M)
    assert match, f"{sample.name} has no '# expect: Phase' comment"
    return match.group(1)


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.stem for s in SAMPLES])
def test_sample_ends_in_the_phase_its_comment_promises(
    release: str, api_client: client.ApiClient, sample: Path
) -> None:
    applied = kubectl("apply", "-n", SAMPLES_NS, "-f", str(sample))
    docs = [d for d in yaml.safe_load_all(sample.read_text()) if d]
    try:
        assert applied.returncode == 0, applied.stderr
        for doc in (d for d in docs if d["kind"] == "CodeTask"):
            name = doc["metadata"]["name"]
            status = wait_for(api_client, SAMPLES_NS, name, timeout=120)["status"]
            assert status["phase"] == expected_phase(sample), status
    finally:
        for doc in (d for d in docs if d["kind"] == "CodeTaskPool"):
            kubectl("delete", "codetaskpool", doc["metadata"]["name"], "--ignore-not-found")


def test_a_new_namespace_has_the_task_policies_before_its_first_pod(
    release: str, api_client: client.ApiClient
) -> None:
    """The chart's defaults isolate task pods: in a namespace nobody prepared, the policies are
    there when the first task pod appears, and were created no later than it."""
    namespace = f"{SESSION}h-fresh"
    core = client.CoreV1Api(api_client)
    core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(name=namespace, labels={RELEASE_LABEL: release})
        )
    )
    try:
        pod, listed = policies_at_first_pod(
            api_client, namespace, "first", language="python", code="print(1)"
        )
        policies = {p.metadata.name: p for p in listed}
        assert set(policies) == {f"{release}-code-tasks", f"{release}-agent-tasks"}
        for policy in policies.values():
            assert policy.metadata.creation_timestamp <= pod.metadata.creation_timestamp
            assert policy.spec.policy_types == ["Ingress", "Egress"] and not policy.spec.ingress
        code = policies[f"{release}-code-tasks"].spec
        assert code.pod_selector.match_labels == {
            jobs.LABEL_MANAGED_BY: jobs.MANAGED_BY,
            jobs.LABEL_MODE: "code",
        }
        assert [[p.port for p in rule.ports] for rule in code.egress] == [[53, 53]], "DNS only"
    finally:
        kubectl("delete", "namespace", namespace, "--wait=false")


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
    # The Deployment's pod goes by the garbage collector (background cascade), which lags behind
    # when other tests' namespaces are being deleted; its SIGTERM grace is 30 s.
    end = time.monotonic() + 120
    leftovers: list[str] = ["?"]
    while leftovers and time.monotonic() < end:
        got = kubectl(
            "get",
            "deploy,sa,svc,pods,secret,lease,role,rolebinding,clusterrole,clusterrolebinding,"
            "validatingwebhookconfiguration",
            "-A",
            "-l",
            selector,
            "-o",
            "name",
        )
        leftovers = got.stdout.split()
        time.sleep(1)
    assert leftovers == [], _pods_left(selector)
    assert kubectl("get", "crd", "codetasks.codetask.dev").returncode == 0
    assert wait_for(api_client, SAMPLES_NS, "hello-python")["status"]["phase"] == "Succeeded"


def _pods_left(selector: str) -> str:
    """What the pods still there are waiting for: the garbage collector (no deletionTimestamp)
    or their kubelet (deletionTimestamp set, containers still reported running)."""
    got = kubectl("get", "pods", "-A", "-l", selector, "-o", "json")
    if got.returncode != 0:
        return got.stderr
    lines = []
    for pod in json.loads(got.stdout)["items"]:
        meta, status = pod["metadata"], pod.get("status", {})
        states = [list(c.get("state", {})) for c in status.get("containerStatuses", [])]
        lines.append(
            f"{meta['name']}: deletionTimestamp={meta.get('deletionTimestamp')} "
            f"phase={status.get('phase')} node={pod['spec'].get('nodeName')} containers={states}"
        )
    return "\n".join(lines)
