"""Helpers for e2e tests: apply CodeTasks, wait for phases, run the operator process."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, watch

GROUP, VERSION, PLURAL = "codetask.dev", "v1alpha1", "codetasks"
FINAL = {"Succeeded", "Failed", "TimedOut", "Cancelled"}


def codetask(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "CodeTask",
        "metadata": {"name": name},
        "spec": spec,
    }


def create(api: client.ApiClient, ns: str, body: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, body
    )
    return result


def get(api: client.ApiClient, ns: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, name
    )
    return result


def wait_for(
    api: client.ApiClient, ns: str, name: str, phases: set[str] = FINAL, timeout: float = 90
) -> dict[str, Any]:
    """The task once its phase is one of `phases`."""
    end = time.monotonic() + timeout
    task: dict[str, Any] = {}
    while time.monotonic() < end:
        task = get(api, ns, name)
        if (task.get("status") or {}).get("phase") in phases:
            return task
        time.sleep(0.2)
    raise AssertionError(
        f"{ns}/{name} not in {phases} after {timeout}s: {json.dumps(task.get('status'))}"
    )


def jobs_of(api: client.ApiClient, ns: str) -> list[client.V1Job]:
    return list(client.BatchV1Api(api).list_namespaced_job(ns).items)


def pods_of(api: client.ApiClient, ns: str) -> list[client.V1Pod]:
    return list(client.CoreV1Api(api).list_namespaced_pod(ns).items)


@dataclass
class Operator:
    """The operator as a child process, with its log kept for failing tests."""

    cmd: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        port = self.env.get("CODETASK_HEALTH_PORT", "8080")
        end = time.monotonic() + 30
        while time.monotonic() < end:
            assert self.proc.poll() is None, f"operator exited: {self.log_path.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("operator not healthy after 30s")

    def stop(self, sig: signal.Signals = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        self.proc = None

    def restart(self) -> None:
        self.stop(signal.SIGKILL)
        self.start()

    def log(self) -> str:
        return self.log_path.read_text()


def runner_pid(ns: str, name: str) -> int:
    """The task's runner on this node: of the processes with its CODETASK_* environment (the
    runner and the code it forked), the one whose parent is not one of them."""
    wanted = {f"CODETASK_NAMESPACE={ns}".encode(), f"CODETASK_NAME={name}".encode()}
    parents = {}
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and wanted <= set((proc / "environ").read_bytes().split(b"\0")):
                stat = (proc / "stat").read_text()
                parents[int(proc.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
    runners = [pid for pid, parent in parents.items() if parent not in parents]
    assert len(runners) == 1, (ns, name, parents)
    return runners[0]


def policies_at_first_pod(
    api: client.ApiClient, ns: str, name: str, **spec: Any
) -> tuple[Any, list[Any]]:
    """Run the CodeTask `name` (to Succeeded) in `ns`; its first pod as a watch of the namespace
    first saw it, and the namespace's NetworkPolicies as listed at that moment."""
    core = client.CoreV1Api(api)
    networking = client.NetworkingV1Api(api)
    seen: dict[str, Any] = {}
    since = core.list_namespaced_pod(ns).metadata.resource_version

    def first_pod() -> None:
        stream = watch.Watch().stream(
            core.list_namespaced_pod, ns, resource_version=since, timeout_seconds=60
        )
        for event in stream:
            seen["pod"] = event["object"]
            seen["policies"] = networking.list_namespaced_network_policy(ns).items
            return

    watcher = threading.Thread(target=first_pod)
    watcher.start()
    create(api, ns, codetask(name, **spec))
    status = wait_for(api, ns, name)["status"]
    assert status["phase"] == "Succeeded", status
    watcher.join(60)
    return seen["pod"], seen["policies"]
