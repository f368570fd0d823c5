"""The cluster side of a run: clients, namespaces, the operator's own identity, clean-up."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

REPO = Path(__file__).resolve().parent.parent
KUBECONFIG = Path(os.environ.get("KUBECONFIG") or REPO / ".cluster/kubeconfig")
K8S_BIN = Path(os.environ.get("CODETASK_CACHE", Path.home() / ".cache/codetask")) / "k8s-1.20.2"
AUDIT_LOG = Path(os.environ.get("CODETASK_AUDIT_LOG", "/var/lib/codetask-cluster/logs/audit.log"))
GROUP, VERSION, PLURAL = "codetask.dev", "v1alpha1", "codetasks"
RUN_LABEL = "codetask.dev/bench"
SERVED_LABEL = "codetask.dev/bench-served"
"""On the namespaces the run's operator serves: its webhook's namespace selector."""


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
    def system_namespace(self) -> str:
        """Where the operator's release is installed (made by `namespace("system")`)."""
        return f"bench-{self.id}-system"

    @property
    def glob(self) -> str:
        """What the run's operator serves (CODETASK_NAMESPACES)."""
        return f"bench-{self.id}-*"

    def namespace(self, suffix: str, served: bool = True) -> str:
        """A new namespace `bench-<id>-<suffix>`, served by the run's operator; not `served`:
        `bench-<id>x-<suffix>` (outside its glob, e.g. for a baseline operator)."""
        name = f"bench-{self.id}-{suffix}" if served else f"bench-{self.id}x-{suffix}"
        labels = {RUN_LABEL: self.id, **({SERVED_LABEL: self.id} if served else {})}
        body = {"metadata": {"name": name, "labels": labels}}
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
        """Delete what the run created: namespaces and the cluster-scoped objects of its releases
        and baselines (named `bench-<id>-...` and `codetask-bench-<id>...`)."""
        for name in list(self.namespaces):
            self.delete_namespace(name)
        _delete_release_objects(self.api, (f"bench-{self.id}-", f"codetask-bench-{self.id}"))


def _release_objects(api: Any, prefix: str) -> list[tuple[Any, str]]:
    """Cluster-scoped objects of benchmark releases and baselines: (delete call, name)."""
    rbac = rbac_api(api)
    admission: Any = client.AdmissionregistrationV1Api(api)
    found: list[tuple[Any, str]] = []
    for listed, delete in (
        (rbac.list_cluster_role_binding, rbac.delete_cluster_role_binding),
        (rbac.list_cluster_role, rbac.delete_cluster_role),
        (
            admission.list_validating_webhook_configuration,
            admission.delete_validating_webhook_configuration,
        ),
        (
            admission.list_mutating_webhook_configuration,
            admission.delete_mutating_webhook_configuration,
        ),
    ):
        names = [o.metadata.name for o in listed().items]
        found += [(delete, n) for n in names if n.startswith(prefix) and "codetask" in n]
    return found


def _delete_release_objects(api: Any, prefixes: tuple[str, ...]) -> list[str]:
    gone = []
    for prefix in prefixes:
        for delete, name in _release_objects(api, prefix):
            with contextlib.suppress(ApiException):
                delete(name)
            gone.append(name)
    return gone


def cleanup_all(api: Any) -> list[str]:
    """Delete every benchmark namespace and cluster-scoped object, of this run or earlier ones."""
    core = core_api(api)
    gone: list[str] = []
    for ns in core.list_namespace(label_selector=RUN_LABEL).items:
        if ns.status.phase != "Terminating":
            core.delete_namespace(ns.metadata.name, propagation_policy="Background")
        gone.append(ns.metadata.name)
    return gone + _delete_release_objects(api, ("codetask-bench-", "bench-"))


@dataclass(frozen=True)
class Identity:
    """The operator's ServiceAccount: its writes are the audit entries with this user."""

    user: str
