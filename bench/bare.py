"""The second baseline: a bare kopf operator (`bare_operator.py`) running in the cluster as a pod.

Its one handler, `@kopf.on.create` for CodeTasks, POSTs the benchmarks' raw Job (`raw_job(name,
["true"], pods=False)`) with the task as controller, over aiohttp with the pod's service-account
token. kopf with its defaults otherwise (one annotation patch per task; kopf 1.45 posts no Events
for its log messages unless told to), run by
`kopf run --standalone --namespace=NS` in a one-replica Deployment of the operator's image, with
the chart's resources and security contexts (no probes) and a ServiceAccount of its own. Besides
kopf's, its one deviation is a login handler: kopf's own service-account login names the server
`kubernetes.default.svc`, and the cluster has no DNS. The operator minus bare kopf is what our code
(and the chart: its admission webhook on the served namespaces) adds on top of kopf.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from bench.cluster import GROUP, PLURAL, core_api, rbac_api
from bench.harness import Context, codetask, raw_job
from bench.profile import cpu_seconds, pod_pid
from bench.watch import Watcher

IMAGE = "codetask-operator:dev"
NAME = "codetask-bench-bare"
SCRIPT = Path(__file__).with_name("bare_operator.py")
LABELS = {"app.kubernetes.io/name": NAME}
SELECTOR = f"app.kubernetes.io/name={NAME}"
RESOURCES = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}
"""The chart's default resources of the operator (values.yaml), so both get the same CPU share."""
POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}
"""The chart's pod security context (its container's is copied too): same seccomp filter."""
HANDLED = "kopf.zalando.org/last-handled-configuration"
"""The annotation kopf patches onto a task once its create handler succeeded."""


def rules() -> list[dict[str, Any]]:
    """Its handler's calls, and what kopf needs to watch the resource in one namespace."""
    return [
        {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["get", "list", "watch", "patch"]},
        {"apiGroups": [GROUP], "resources": [f"{PLURAL}/status"], "verbs": ["patch"]},
        {"apiGroups": [GROUP], "resources": [f"{PLURAL}/finalizers"], "verbs": ["update"]},
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
        {
            "apiGroups": ["apiextensions.k8s.io"],
            "resources": ["customresourcedefinitions"],
            "verbs": ["list", "watch"],
        },
    ]


def handled(obj: dict[str, Any]) -> bool:
    """A Watcher predicate: kopf has recorded the task as handled (its patch after the Job)."""
    return HANDLED in ((obj.get("metadata") or {}).get("annotations") or {})


@dataclass
class BareOperator:
    """The deployed bare kopf operator."""

    namespace: str
    """The one namespace it serves."""
    system_namespace: str
    user: str
    """Its ServiceAccount's user name, as in the audit log."""
    pod_uid: str
    pid: int | None
    """Its process on this host (the local cluster's containers run here), if found."""

    def cpu_seconds(self) -> float | None:
        """User + system CPU time so far (None if its process was not found or has exited)."""
        if self.pid is None:
            return None
        try:
            return cpu_seconds(self.pid)
        except OSError:
            return None


def _deployment(namespace: str) -> dict[str, Any]:
    command = ["/opt/venv/bin/kopf", "run", "--standalone", f"--namespace={namespace}"]
    container = {
        "name": "kopf",
        "image": IMAGE,
        "imagePullPolicy": "Never",
        "command": [*command, "/bare/bare_operator.py"],
        "resources": RESOURCES,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "bare", "mountPath": "/bare", "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": NAME, "labels": LABELS},
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": LABELS},
            "template": {
                "metadata": {"labels": LABELS},
                "spec": {
                    "serviceAccountName": NAME,
                    "dnsPolicy": "Default",
                    "terminationGracePeriodSeconds": 5,
                    "securityContext": POD_SECURITY,
                    "containers": [container],
                    "volumes": [
                        {"name": "bare", "configMap": {"name": NAME}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                    ],
                },
            },
        },
    }


def _running_pod(core: Any, ns: str, timeout: float) -> Any:
    """The Deployment's pod once its container runs."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for pod in core.list_namespaced_pod(ns, label_selector=SELECTOR).items:
            statuses = pod.status.container_statuses or []
            if pod.status.phase == "Running" and all(s.ready for s in statuses):
                return pod
        time.sleep(0.5)
    raise TimeoutError(f"bare kopf pod in {ns} not running after {timeout}s")


def _logs(core: Any, ns: str) -> str:
    with contextlib.suppress(ApiException):
        for pod in core.list_namespaced_pod(ns).items:
            return str(core.read_namespaced_pod_log(pod.metadata.name, ns, tail_lines=30))
    return ""


@contextlib.contextmanager
def bare_operator(ctx: Context, namespace: str, timeout: float = 120) -> Iterator[BareOperator]:
    """Deploy bare kopf serving `namespace` (one outside the operator-under-test's glob:
    `ctx.run.namespace(..., served=False)`), wait until it dispatches a warm-up task, and delete
    it (its namespace and cluster role) at the end. The warm-up task and Job stay in `namespace`."""
    suffix = namespace.removeprefix(f"bench-{ctx.run.id}x-")
    system = ctx.run.namespace(f"{suffix}-system", served=False)
    core, rbac = core_api(ctx.api), rbac_api(ctx.api)
    role = f"codetask-bench-{ctx.run.id}-bare"
    subject = {"kind": "ServiceAccount", "name": NAME, "namespace": system}
    try:
        rbac.create_cluster_role({"metadata": {"name": role}, "rules": rules()})
        rbac.create_cluster_role_binding(
            {
                "metadata": {"name": role},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": role,
                },
                "subjects": [subject],
            }
        )
        core.create_namespaced_service_account(system, {"metadata": {"name": NAME}})
        job = raw_job("", ["true"], pods=False)
        del job["metadata"]
        files = {"bare_operator.py": SCRIPT.read_text(), "job.json": json.dumps(job)}
        core.create_namespaced_config_map(system, {"metadata": {"name": NAME}, "data": files})
        apps: Any = client.AppsV1Api(ctx.api)  # takes plain dicts as bodies
        apps.create_namespaced_deployment(system, _deployment(namespace))
        pod = _running_pod(core, system, timeout)
        jobs = Watcher(ctx.batch().list_namespaced_job, namespace).start()
        try:
            ctx.create_task(namespace, codetask("warm"))
            jobs.first("warm", timeout=timeout)
        except TimeoutError as exc:
            raise TimeoutError(f"bare kopf made no Job: {_logs(core, system)}") from exc
        finally:
            jobs.stop()
        yield BareOperator(
            namespace,
            system,
            f"system:serviceaccount:{system}:{NAME}",
            pod.metadata.uid,
            pod_pid(pod.metadata.uid, "kopf"),
        )
    finally:
        ctx.run.delete_namespace(system, wait=60)
        with contextlib.suppress(ApiException):
            rbac.delete_cluster_role_binding(role)
        with contextlib.suppress(ApiException):
            rbac.delete_cluster_role(role)
