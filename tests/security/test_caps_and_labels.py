"""A task author cannot reach past the chart's caps or into other workloads' selectors: priority
and resources above the caps are refused by the installed webhook and again by the operator, and a
`spec.labels` key the chart does not allow never reaches the pod, so a Service selecting it does not
route to the task."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from tests.conftest import SESSION
from tests.e2e.tasks import FINAL, Operator, codetask, create, get, jobs_of, wait_for
from tests.e2e.test_webhook import DENIED, apply, checked_namespace

SLEEPER = {"language": "python", "code": "import time\ntime.sleep(120)\n"}
OVER_CAPS: list[tuple[str, dict[str, Any], str]] = [
    ("priority", {"priority": 1000}, "spec.priority: 1000 is above the highest allowed (100)"),
    (
        "memory-limit",
        {"resources": {"limits": {"memory": "8Gi"}}},
        "spec.resources.limits.memory: 8Gi is above the cap 2Gi",
    ),
    (
        "cpu-request",
        {"resources": {"requests": {"cpu": "8"}}},
        "spec.resources.requests.cpu: 8 is above the cap 4",
    ),
    (
        "disk-limit",
        {"resources": {"limits": {"ephemeral-storage": "10Gi"}}},
        "spec.resources.limits.ephemeral-storage: 10Gi is above the cap 4Gi",
    ),
]


@pytest.fixture(scope="module")
def tasks_ns(crd: None, api_client: client.ApiClient) -> Iterator[str]:
    """Served by a release with the chart's default caps that lets the `team` label reach pods."""
    with checked_namespace(api_client, f"{SESSION}k", "--set", "runner.podLabelKeys={team}") as ns:
        yield ns


@pytest.mark.parametrize(("case", "spec", "message"), OVER_CAPS, ids=[c[0] for c in OVER_CAPS])
def test_webhook_refuses_priority_and_resources_above_the_caps_naming_the_field(
    tasks_ns: str, case: str, spec: dict[str, Any], message: str
) -> None:
    code, stderr = apply(tasks_ns, f"over-{case}", **SLEEPER, **spec)
    assert code != 0
    assert DENIED + message in stderr, stderr


def test_webhook_accepts_amounts_at_the_caps_and_refuses_raising_priority_above(
    tasks_ns: str,
) -> None:
    at_caps = {"limits": {"cpu": "4", "memory": "2Gi", "ephemeral-storage": "4Gi"}}
    code, stderr = apply(
        tasks_ns, "at-caps", "--dry-run=server", **SLEEPER, priority=100, resources=at_caps
    )
    assert code == 0, stderr
    quick = {"language": "sh", "code": "true"}
    code, stderr = apply(tasks_ns, "raised", **quick, priority=5)
    assert code == 0, stderr
    code, stderr = apply(tasks_ns, "raised", **quick, priority=500)
    assert code != 0
    assert DENIED + "spec.priority: 500 is above the highest allowed (100)" in stderr, stderr


def test_operator_ends_tasks_above_the_caps_invalid_without_a_job(
    api_client: client.ApiClient, namespace: str, operator: Operator
) -> None:
    # No webhook here (the session's operator serves this namespace): the operator's own check.
    for case, spec, _ in OVER_CAPS:
        create(api_client, namespace, codetask(f"over-{case}", **SLEEPER, **spec))
    for case, _, message in OVER_CAPS:
        status = wait_for(api_client, namespace, f"over-{case}", timeout=30)["status"]
        assert (status["phase"], status["reason"]) == ("Failed", "InvalidSpec"), status
        assert message in status["message"]
    assert not jobs_of(api_client, namespace)


def ready_addresses(core: client.CoreV1Api, ns: str, service: str) -> list[str]:
    endpoints = core.read_namespaced_endpoints(service, ns)
    return [a.ip for s in endpoints.subsets or [] for a in s.addresses or []]


def all_addresses(core: client.CoreV1Api, ns: str, service: str) -> list[str]:
    endpoints = core.read_namespaced_endpoints(service, ns)
    return [
        a.ip
        for s in endpoints.subsets or []
        for a in [*(s.addresses or []), *(s.not_ready_addresses or [])]
    ]


def test_service_selecting_a_task_label_the_chart_does_not_allow_gets_no_endpoint(
    api_client: client.ApiClient, tasks_ns: str
) -> None:
    core = client.CoreV1Api(api_client)
    # `app` is what the victim Service selects; `team` is allowed onto pods: the control that shows
    # this cluster's Endpoints do pick up a task pod whose labels match.
    for name, selector in (("victim", {"app": "victim"}), ("control", {"team": "ml"})):
        port = client.V1ServicePort(port=80, target_port=8080)
        spec = client.V1ServiceSpec(selector=selector, ports=[port])
        service = client.V1Service(metadata=client.V1ObjectMeta(name=name), spec=spec)
        core.create_namespaced_service(tasks_ns, service)
    labels = {"app": "victim", "team": "ml"}
    code, stderr = apply(tasks_ns, "labelled", **SLEEPER, labels=labels)
    assert code == 0, stderr
    task = wait_for(api_client, tasks_ns, "labelled", phases={"Running", *FINAL})
    assert task["status"]["phase"] == "Running", task["status"]

    pod = core.read_namespaced_pod(task["status"]["podName"], tasks_ns)
    assert pod.metadata.labels["team"] == "ml"
    assert "app" not in pod.metadata.labels
    job = client.BatchV1Api(api_client).read_namespaced_job(
        pod.metadata.labels["job-name"], tasks_ns
    )
    assert labels.items() <= job.metadata.labels.items()

    end = time.monotonic() + 30
    while pod.status.pod_ip not in ready_addresses(core, tasks_ns, "control"):
        assert time.monotonic() < end, "the control Service never selected the task's pod"
        time.sleep(0.5)
    # The Endpoints controller has seen the pod; give it a moment more for the other Service.
    end = time.monotonic() + 2
    while time.monotonic() < end:
        assert all_addresses(core, tasks_ns, "victim") == []
        time.sleep(0.2)
    assert get(api_client, tasks_ns, "labelled")["status"]["phase"] == "Running"
    code, stderr = apply(tasks_ns, "labelled", **SLEEPER, labels=labels, cancel=True)
    assert code == 0, stderr
