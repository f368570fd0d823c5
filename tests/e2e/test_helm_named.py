"""The chart with `watchNamespaces` naming its namespaces (no glob): namespaced Roles, no listing of
the cluster's namespaces, and the operator serves them as soon as it is ready.

Until 2026-12-06 kopf still tried to list the cluster's namespaces, was refused (403) and retried
for about 2.5 minutes (the operator's API backoffs) before serving anything, at every start and
every leader takeover.
"""

from __future__ import annotations

import pytest
from kubernetes import client

from tests.conftest import SESSION
from tests.e2e.conftest import RELEASE_LABEL, chart_values, helm_release, kubectl
from tests.e2e.tasks import codetask, create, wait_for

RELEASE = f"{SESSION}n-codetask-operator"
RELEASE_NS = f"{SESSION}n-system"
SERVED_NS = f"{SESSION}n-served"
SERVED_WITHIN = 60
"""Seconds from the release ready to the first task finished: a pod start, with room for a loaded
node; the refused listing alone took about 150."""


@pytest.mark.timeout(360)
def test_named_namespaces_are_served_at_once_without_listing_namespaces(
    crd: None, api_client: client.ApiClient
) -> None:
    core = client.CoreV1Api(api_client)
    # Before the release: its Role and RoleBinding go into the namespace.
    core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(name=SERVED_NS, labels={RELEASE_LABEL: RELEASE})
        )
    )
    try:
        with helm_release(RELEASE, RELEASE_NS, chart_values(RELEASE, SERVED_NS)):
            create(api_client, SERVED_NS, codetask("first", language="python", code="print(1)"))
            task = wait_for(api_client, SERVED_NS, "first", timeout=SERVED_WITHIN)
            assert task["status"]["phase"] == "Succeeded", task["status"]
            logs = kubectl("logs", "-n", RELEASE_NS, f"deploy/{RELEASE}")
            assert logs.returncode == 0, logs.stderr
            assert "namespaces is forbidden" not in logs.stdout
            assert "Not enough permissions" not in logs.stdout
    finally:
        kubectl("delete", "namespace", SERVED_NS, "--wait=false")
