"""No confused deputy: a user who may create CodeTasks but not read a Secret or ConfigMap cannot
have a task read it for them (the operator's Job makes the pod, not the user).

The chart's webhook asks, as the requesting user, whether they may `get` each Secret and ConfigMap
a task references, refuses the task naming the field otherwise, and stamps the task it let through;
the operator starts a task with references only with that stamp, so a task whose create the webhook
did not see (here: a namespace outside its namespaceSelector) does not start with them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.conftest import SESSION
from tests.e2e.conftest import kubectl
from tests.e2e.tasks import codetask, create, wait_for
from tests.e2e.test_webhook import checked_namespace

PREFIX = f"{SESSION}c"
USER = "alice"
DENIED = 'admission webhook "references.codetasks.codetask.dev" denied the request: '
PRINT = "import os\nprint(os.environ['DB'], os.environ['CFG'])\n"
ENV = [
    {"name": "DB", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
    {"name": "CFG", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
]


def apply(namespace: str, body: dict[str, Any], *flags: str) -> tuple[int, str]:
    done = kubectl("apply", "-n", namespace, *flags, "-f", "-", stdin=yaml.safe_dump(body))
    return done.returncode, done.stderr


def rbac(namespace: str, name: str, rules: list[dict[str, Any]]) -> None:
    """A Role with `rules` bound to USER."""
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role"}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding"}
    manifest = [
        {**role, "metadata": {"name": name}, "rules": rules},
        {
            **binding,
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "User", "name": USER, "apiGroup": "rbac.authorization.k8s.io"}],
        },
    ]
    done = kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump_all(manifest))
    assert done.returncode == 0, done.stderr


def secrets(api_client: client.ApiClient, namespace: str) -> None:
    """Secret `db` and ConfigMap `cfg`, made by the admin."""
    core = client.CoreV1Api(api_client)
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name="db"), string_data={"password": "s3"}),
    )
    core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cfg"), data={"mode": "m"})
    )


@pytest.fixture(scope="module")
def tasks_ns(crd: None, api_client: client.ApiClient) -> Iterator[str]:
    """A namespace the release serves and checks; USER may create CodeTasks there, nothing more."""
    with checked_namespace(api_client, PREFIX) as namespace:
        secrets(api_client, namespace)
        codetasks = {"apiGroups": ["codetask.dev"], "resources": ["codetasks"]}
        rbac(namespace, "tasks-only", [{**codetasks, "verbs": ["get", "list", "create", "patch"]}])
        yield namespace


@pytest.mark.timeout(240)
def test_references_are_refused_naming_the_field_until_the_user_may_get_them(
    tasks_ns: str, api_client: client.ApiClient
) -> None:
    body = codetask("deputy", language="python", code=PRINT, env=ENV)
    code, stderr = apply(tasks_ns, body, f"--as={USER}")
    assert code != 0
    assert DENIED in stderr, stderr
    assert f"spec.env[0].valueFrom.secretKeyRef: {USER} may not get secret 'db'" in stderr
    assert f"spec.env[1].valueFrom.configMapKeyRef: {USER} may not get configmap 'cfg'" in stderr
    assert kubectl("-n", tasks_ns, "get", "ct", "deputy").returncode != 0

    rbac(
        tasks_ns,
        "read-db",
        [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["db"]}],
    )
    code, stderr = apply(tasks_ns, body, f"--as={USER}")
    assert code != 0 and "configmap 'cfg'" in stderr and "secret 'db'" not in stderr, stderr

    rbac(
        tasks_ns,
        "read-cfg",
        [
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "verbs": ["get"],
                "resourceNames": ["cfg"],
            }
        ],
    )
    code, stderr = apply(tasks_ns, body, f"--as={USER}")
    assert code == 0, stderr
    status = wait_for(api_client, tasks_ns, "deputy", timeout=90)["status"]
    assert (status["phase"], status["stdout"]) == ("Succeeded", "s3 m\n"), status


@pytest.mark.timeout(240)
def test_a_task_the_webhook_did_not_see_does_not_start_with_its_references(
    tasks_ns: str, api_client: client.ApiClient
) -> None:
    unchecked = f"{PREFIX}-unchecked"  # served by the release, outside its webhook's selector
    core = client.CoreV1Api(api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=unchecked)))
    try:
        secrets(api_client, unchecked)
        forged = codetask("forged", language="python", code=PRINT, env=ENV)
        forged["metadata"]["annotations"] = {"codetask.dev/references-checked": "1.n.0000"}
        create(api_client, unchecked, forged)
        create(api_client, unchecked, codetask("plain", language="python", code="print(1)"))
        status = wait_for(api_client, unchecked, "forged", timeout=90)["status"]
        assert (status["phase"], status["reason"]) == ("Failed", "InvalidSpec"), status
        assert status["message"].startswith(
            "spec.env[0].valueFrom.secretKeyRef, spec.env[1].valueFrom.configMapKeyRef: not checked"
        )
        assert "stdout" not in status or status["stdout"] == ""
        assert (
            wait_for(api_client, unchecked, "plain", timeout=90)["status"]["phase"] == "Succeeded"
        )
        jobs = client.BatchV1Api(api_client).list_namespaced_job(unchecked).items
        assert [j.metadata.labels["codetask.dev/task"] for j in jobs] == ["plain"]
    finally:
        core.delete_namespace(unchecked)
