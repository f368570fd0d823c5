"""The cluster side of a run: clients, namespaces, the operator's own identity, clean-up."""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

REPO = Path(__file__).resolve().parent.parent
KUBECONFIG = Path(os.environ.get("KUBECONFIG") or REPO / ".cluster/kubeconfig")
K8S_BIN = Path(os.environ.get("CODETASK_CACHE", Path.home() / ".cache/codetask")) / "k8s-1.20.2"
AUDIT_LOG = Path(os.environ.get("CODETASK_AUDIT_LOG", "/var/lib/codetask-cluster/logs/audit.log"))
GROUP, VERSION, PLURAL = "codetask.dev", "v1alpha1", "codetasks"
RUN_LABEL = "codetask.dev/bench"
OPERATOR_RULES: list[dict[str, Any]] = [
    # The chart's ClusterRole (charts/codetask-operator/templates/rbac.yaml) with namespace globs.
    {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["get", "list", "watch", "delete"]},
    {"apiGroups": [GROUP], "resources": [f"{PLURAL}/status"], "verbs": ["patch"]},
    {"apiGroups": [GROUP], "resources": [f"{PLURAL}/finalizers"], "verbs": ["update"]},
    {
        "apiGroups": ["batch"],
        "resources": ["jobs"],
        "verbs": ["create", "get", "list", "watch", "delete"],
    },
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
]


def core_api(api: Any) -> Any:
    """CoreV1Api, typed loosely: the benchmarks pass plain dicts as bodies, which it accepts."""
    return client.CoreV1Api(api)


def rbac_api(api: Any) -> Any:
    return client.RbacAuthorizationV1Api(api)


def kubectl() -> str:
    """The kubectl built with the local cluster (matches its API server), else the one on PATH."""
    local = K8S_BIN / "kubectl"
    return str(local) if local.exists() else "kubectl"


def api_client(pool: int = 32) -> Any:
    """An admin API client with a connection pool for `pool` concurrent requests."""
    cfg = client.Configuration()
    config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(KUBECONFIG), client_configuration=cfg
    )
    cfg.connection_pool_maxsize = pool
    return client.ApiClient(cfg)


def apply_crd() -> None:
    """The repository's CRD, applied and Established (what the tests do too)."""
    env = {**os.environ, "KUBECONFIG": str(KUBECONFIG)}
    subprocess.run(
        [kubectl(), "apply", "-f", str(REPO / "crds")], check=True, env=env, capture_output=True
    )
    subprocess.run(
        [kubectl(), "wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}"],
        check=True,
        env=env,
        capture_output=True,
    )


def server_version(api: Any) -> str:
    return str(client.VersionApi(api).get_code().git_version)


@dataclass
class Run:
    """One benchmark run: its namespaces are `bench-<id>-*`, all labelled with the run id."""

    api: Any
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    namespaces: list[str] = field(default_factory=list)

    @property
    def glob(self) -> str:
        """What the run's operator serves (CODETASK_NAMESPACES)."""
        return f"bench-{self.id}-*"

    def namespace(self, suffix: str) -> str:
        """A new namespace `bench-<id>-<suffix>`."""
        name = f"bench-{self.id}-{suffix}"
        body = {"metadata": {"name": name, "labels": {RUN_LABEL: self.id}}}
        core_api(self.api).create_namespace(body)
        self.namespaces.append(name)
        return name

    def delete_namespace(self, name: str, wait: float = 0) -> None:
        """Delete a namespace (everything in it goes too); wait up to `wait` seconds."""
        core = core_api(self.api)
        with contextlib.suppress(ApiException):
            core.delete_namespace(name, propagation_policy="Background")
        with contextlib.suppress(ValueError):
            self.namespaces.remove(name)
        end = time.monotonic() + wait
        while time.monotonic() < end:
            try:
                core.read_namespace(name)
            except ApiException as exc:
                if exc.status == 404:
                    return
            time.sleep(0.5)

    def cleanup(self) -> None:
        """Delete what the run created: namespaces and the cluster-scoped RBAC objects."""
        for name in list(self.namespaces):
            self.delete_namespace(name)
        rbac = rbac_api(self.api)
        with contextlib.suppress(ApiException):
            rbac.delete_cluster_role_binding(f"codetask-bench-{self.id}")
        with contextlib.suppress(ApiException):
            rbac.delete_cluster_role(f"codetask-bench-{self.id}")


def cleanup_all(api: Any) -> list[str]:
    """Delete every benchmark namespace and ClusterRole(Binding), of this run or earlier ones."""
    core = core_api(api)
    rbac = rbac_api(api)
    gone: list[str] = []
    for ns in core.list_namespace(label_selector=RUN_LABEL).items:
        if ns.status.phase != "Terminating":
            core.delete_namespace(ns.metadata.name, propagation_policy="Background")
        gone.append(ns.metadata.name)
    for binding in rbac.list_cluster_role_binding().items:
        if binding.metadata.name.startswith("codetask-bench-"):
            rbac.delete_cluster_role_binding(binding.metadata.name)
            gone.append(binding.metadata.name)
    for role in rbac.list_cluster_role().items:
        if role.metadata.name.startswith("codetask-bench-"):
            rbac.delete_cluster_role(role.metadata.name)
            gone.append(role.metadata.name)
    return gone


@dataclass(frozen=True)
class Identity:
    """The operator's own ServiceAccount: its writes are the audit entries with this user."""

    user: str
    kubeconfig: Path


@contextlib.contextmanager
def operator_identity(run: Run) -> Iterator[Identity]:
    """A ServiceAccount with the chart's permissions and a kubeconfig carrying its token.

    The operator would otherwise share the admin user (and kopf's user agent) with every other
    operator and test on the cluster; a user of its own makes the audit-log count exact.
    """
    ns = run.namespace("system")
    name = "codetask-operator"
    core = core_api(run.api)
    rbac = rbac_api(run.api)
    core.create_namespaced_service_account(ns, {"metadata": {"name": name}})
    role = f"codetask-bench-{run.id}"
    rbac.create_cluster_role({"metadata": {"name": role}, "rules": OPERATOR_RULES})
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": role},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role,
            },
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}],
        }
    )
    token = _token(core, ns, name)
    admin = yaml.safe_load(KUBECONFIG.read_text())
    cluster = admin["clusters"][0]["cluster"]
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "bench", "cluster": cluster}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": name}}],
        "current-context": "bench",
    }
    with tempfile.TemporaryDirectory(prefix="codetask-bench-") as tmp:
        path = Path(tmp) / "kubeconfig"
        path.write_text(yaml.safe_dump(kubeconfig))
        path.chmod(0o600)
        yield Identity(f"system:serviceaccount:{ns}:{name}", path)


def _token(core: Any, ns: str, name: str) -> str:
    """The token the token controller issues for the ServiceAccount (Kubernetes < 1.24)."""
    end = time.monotonic() + 30
    while time.monotonic() < end:
        sa = core.read_namespaced_service_account(name, ns)
        for ref in sa.secrets or []:
            secret = core.read_namespaced_secret(ref.name, ns)
            if secret.data and "token" in secret.data:
                return base64.b64decode(secret.data["token"]).decode()
        time.sleep(0.2)
    raise RuntimeError(f"no token for ServiceAccount {ns}/{name} after 30s")
