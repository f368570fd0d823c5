"""The operator under test as users run it: the Helm chart installed with its defaults.

Webhook, leader election and the operator in a pod of its own, as `helm install` gives them; only
what the local cluster needs is set (images loaded rather than pulled, no cluster DNS), and the
release serves the run's namespaces only (`watchNamespaces`, and its webhook's namespace selector).
Bench-only switches (launcher.py: Jobs without pods, proposed kopf settings, tracemalloc) run the
image's operator through `bench/launcher.py`, mounted from a ConfigMap (the release is installed
with no replica, then its Deployment changed and scaled to one); without them the Deployment is the
chart's, untouched. Its process is found on this host (the local
cluster's containers run here) for /proc: RSS, CPU seconds, py-spy.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

from bench.cluster import KUBECONFIG, REPO, SERVED_LABEL, Run, core_api, kubectl
from bench.profile import cpu_seconds, pod_pid

CHART = REPO / "charts/codetask-operator"
LOCAL_CLUSTER_VALUES = (
    *("--set", "image.pullPolicy=Never"),
    *("--set", "runner.imagePullPolicy=Never"),
    *("--set", "runner.dnsPolicy=Default"),
)
"""What the local cluster needs (the tests set the same): images preloaded, no cluster DNS."""
LAUNCHER_FILES = ("__init__.py", "launcher.py", "patches.py")
LAUNCHER_DIR = "/opt/bench"
METRICS_PORT = 8000


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    """helm from the project's tools (hack/tools.sh), on the local cluster's kubeconfig."""
    tools = subprocess.run(
        [str(REPO / "hack/tools.sh")], check=True, capture_output=True, text=True
    ).stdout.strip()
    return subprocess.run(
        [f"{tools}/helm", "--kubeconfig", str(KUBECONFIG), *args], capture_output=True, text=True
    )


def release_name(run: Run) -> str:
    return f"bench-{run.id}"


def operator_user(run: Run) -> str:
    """The release's ServiceAccount: its writes are the audit entries with this user."""
    return f"system:serviceaccount:{run.system_namespace}:{release_name(run)}-codetask-operator"


def launcher_config_map(run: Run) -> dict[str, Any]:
    """bench/launcher.py and what it imports, for the post-renderer's volume."""
    here = Path(__file__).resolve().parent
    return {
        "metadata": {"name": "bench-launcher", "namespace": run.system_namespace},
        "data": {name: (here / name).read_text() for name in LAUNCHER_FILES},
    }


def with_launcher(deployment: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """The chart's Deployment with its operator run through bench/launcher.py, `env` set
    (replacing a variable the chart sets) and one replica."""
    deployment["spec"]["replicas"] = 1
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    container["command"] = ["/opt/venv/bin/python", "-m", "bench.launcher"]
    extra = {"PYTHONPATH": LAUNCHER_DIR, **env}
    kept = [e for e in container.get("env") or [] if e["name"] not in extra]
    container["env"] = kept + [{"name": k, "value": v} for k, v in extra.items()]
    container.setdefault("volumeMounts", []).append(
        {"name": "bench-launcher", "mountPath": f"{LAUNCHER_DIR}/bench", "readOnly": True}
    )
    pod.setdefault("volumes", []).append(
        {"name": "bench-launcher", "configMap": {"name": "bench-launcher"}}
    )
    return deployment


@dataclass
class Operator:
    """A release of the chart serving the run's namespaces (or only `serves`); one at a time per
    run."""

    run: Run
    log_path: Path
    no_pods: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)
    values: tuple[str, ...] = ()
    """More `--set` flags, e.g. limits.maxRunning=20."""
    serves: str = ""
    """The namespace (name or glob) it serves; empty: all the run's (`Run.glob`)."""
    pod: str = ""
    pod_uid: str = ""
    pod_ip: str = ""
    _pid: int | None = None

    @property
    def release(self) -> str:
        return release_name(self.run)

    def start(self, timeout: float = 180) -> float:
        """Install the release and wait until its operator holds the Lease (acts); the seconds
        that took."""
        started = time.monotonic()
        env = dict(self.extra_env)
        if self.no_pods:
            env["BENCH_NO_PODS"] = "1"
        selector = {"matchLabels": {SERVED_LABEL: self.run.id}}
        args = [
            *("install", self.release, str(CHART), "-n", self.run.system_namespace),
            *LOCAL_CLUSTER_VALUES,
            *("--set", f"watchNamespaces={{{self.serves or self.run.glob}}}"),
            *("--set-json", f"webhook.namespaceSelector={json.dumps(selector)}"),
            *self.values,
            *("--wait", "--timeout", f"{int(timeout)}s"),
        ]
        if env:  # installed without a pod, which then starts through the launcher
            args += ["--set", "replicas=0"]
        done = helm(*args)
        if done.returncode != 0:
            raise RuntimeError(f"helm install failed: {done.stderr[-3000:]}")
        if env:
            self._launch(env)
        self._find_pod(timeout)
        self._wait_for_lease(started + timeout)
        return time.monotonic() - started

    def _launch(self, env: dict[str, str]) -> None:
        """The launcher's ConfigMap, and the release's Deployment running it (helm 4 takes only
        plugins as post-renderers, so the Deployment is changed once installed)."""
        core = core_api(self.run.api)
        body = launcher_config_map(self.run)
        try:
            core.create_namespaced_config_map(self.run.system_namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            core.replace_namespaced_config_map("bench-launcher", self.run.system_namespace, body)
        apps: Any = client.AppsV1Api(self.run.api)
        name = f"{self.release}-codetask-operator"
        raw = apps.read_namespaced_deployment(
            name, self.run.system_namespace, _preload_content=False
        )
        deployment = with_launcher(json.loads(raw.data), env)
        apps.replace_namespaced_deployment(name, self.run.system_namespace, deployment)

    def _find_pod(self, timeout: float) -> None:
        core = core_api(self.run.api)
        selector = f"app.kubernetes.io/instance={self.release},app.kubernetes.io/component=operator"
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            pods = [
                p
                for p in core.list_namespaced_pod(
                    self.run.system_namespace, label_selector=selector
                ).items
                if p.status.phase == "Running" and not p.metadata.deletion_timestamp
            ]
            if len(pods) == 1:
                pod = pods[0]
                self.pod, self.pod_uid, self.pod_ip = (
                    pod.metadata.name,
                    pod.metadata.uid,
                    pod.status.pod_ip,
                )
                self._pid = pod_pid(self.pod_uid, "python")
                if self._pid is not None:
                    return
            time.sleep(0.5)
        raise RuntimeError(f"the release's operator pod did not come up within {timeout}s")

    def _wait_for_lease(self, deadline: float) -> None:
        leases = client.CoordinationV1Api(self.run.api)
        name = f"{self.release}-codetask-operator"
        while time.monotonic() < deadline:
            lease: Any = leases.read_namespaced_lease(name, self.run.system_namespace)
            if (lease.spec.holder_identity or "").startswith(self.pod):
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.pod} did not take the Lease {name}")

    def exit_code(self) -> int | None:
        """The exit code of the operator's container if it ended or restarted, else None."""
        try:
            pod = core_api(self.run.api).read_namespaced_pod(self.pod, self.run.system_namespace)
        except ApiException:
            return -1
        for status in pod.status.container_statuses or []:
            ended = status.state.terminated or (
                status.last_state.terminated if status.restart_count else None
            )
            if ended is not None:
                return int(ended.exit_code)
        return None

    def logs(self, previous: bool = False) -> str:
        done = subprocess.run(
            [
                kubectl(),
                f"--kubeconfig={KUBECONFIG}",
                *("logs", "-n", self.run.system_namespace, self.pod),
                *(["--previous"] if previous else []),
            ],
            capture_output=True,
            text=True,
        )
        return done.stdout

    def last_error(self) -> str:
        """The last line of its log that names an error (or the last line)."""
        lines = (self.logs(previous=True) + self.logs()).splitlines() or [""]
        hits = [line for line in lines if "Error" in line or "error" in line]
        return (hits or lines)[-1][-600:]

    @property
    def pid(self) -> int:
        assert self._pid is not None, "operator not started"
        return self._pid

    def stop(self) -> None:
        """Keep its log, uninstall the release and wait until its pod is gone."""
        if not self.pod:
            return
        with contextlib.suppress(OSError):
            self.log_path.write_text(self.logs())
        helm("uninstall", self.release, "-n", self.run.system_namespace, "--wait")
        core = core_api(self.run.api)
        end = time.monotonic() + 60
        while time.monotonic() < end:
            try:
                core.read_namespaced_pod(self.pod, self.run.system_namespace)
            except ApiException as exc:
                if exc.status == 404:
                    break
            time.sleep(0.5)
        self.pod, self._pid = "", None

    def memory_mb(self) -> dict[str, float]:
        """VmRSS (now) and VmHWM (peak) from /proc/PID/status, in MB (10^6 bytes)."""
        fields: dict[str, float] = {}
        try:
            text = Path(f"/proc/{self.pid}/status").read_text()
        except (OSError, AssertionError):  # ended
            return fields
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = round(int(value.split()[0]) * 1024 / 1e6, 1)
        return fields

    def cpu_seconds(self) -> float:
        """User + system CPU time so far."""
        return cpu_seconds(self.pid)

    def samples(self) -> list[tuple[str, dict[str, str], float]]:
        """Every sample on its /metrics (the pod's address is reachable from this host)."""
        url = f"http://{self.pod_ip}:{METRICS_PORT}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        return [
            (s.name, dict(s.labels), s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]

    def api_writes(self) -> dict[str, float]:
        """`codetask_api_writes_total`, keyed `verb resource`."""
        return {
            f"{labels['verb']} {labels['resource']}": value
            for name, labels, value in self.samples()
            if name == "codetask_api_writes_total"
        }
