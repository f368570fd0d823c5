"""What every cluster benchmark needs: the run, its operator, task and Job bodies, API calls."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client

from bench import profile
from bench.audit import AuditLog
from bench.cluster import AUDIT_LOG, GROUP, PLURAL, VERSION, Identity, Run
from bench.operator_process import Operator
from bench.profile import CpuMeter, EtcdMeter
from codetask_operator.jobs import LABEL_TASK  # type: ignore[import-not-found, unused-ignore]

RUNNER_IMAGE = "codetask-runner:dev"


@dataclass
class Context:
    """A benchmark run on the cluster."""

    api: Any
    run: Run
    identity: Identity
    logs: Path
    scale: float = 1.0
    profile: bool = False
    operator_env: dict[str, str] = field(default_factory=dict)
    """Extra environment of every operator (BENCH_PATCHES, MALLOC_ARENA_MAX, ...)."""

    @contextlib.contextmanager
    def measure(self, op: Operator, name: str) -> Iterator[dict[str, Any]]:
        """CPU seconds of every process involved, the API server's etcd latency, and py-spy
        samples (with --profile) while the block runs."""
        meter, etcd = CpuMeter({"operator": op.pid}), EtcdMeter()
        with profile.record(op.pid, self.logs / f"{name}.folded", self.profile) as samples:
            found: dict[str, Any] = {}
            yield found
        found["cpu_seconds"] = meter.stop()
        found["api_server_etcd_requests"] = etcd.stop()
        if samples:
            found["profile"] = samples

    def n(self, full: int, least: int = 1) -> int:
        """`full` scaled down for quick runs (`--scale`)."""
        return max(least, round(full * self.scale))

    def settle(self, full: float) -> None:
        """Let the operator finish what it started (late status writes, Events): `full` seconds,
        scaled down as sample counts are, to 2 s at least (`--scale` runs assert no figure)."""
        time.sleep(min(full, max(2.0, full * self.scale)))

    @property
    def audit(self) -> AuditLog:
        return AuditLog(AUDIT_LOG)

    @contextlib.contextmanager
    def operator(
        self,
        name: str,
        no_pods: bool = False,
        values: tuple[str, ...] = (),
        serves: str = "",
        **env: str,
    ) -> Iterator[Operator]:
        """A fresh release of the chart serving this run's namespaces, or only `serves` (`values`:
        more `--set` flags), uninstalled afterwards."""
        op = Operator(
            self.run,
            self.logs / f"operator-{name}.log",
            no_pods=no_pods,
            extra_env={**self.operator_env, **env},
            values=values,
            serves=serves,
        )
        op.start()
        try:
            yield op
        finally:
            op.stop()

    def custom(self) -> Any:
        return client.CustomObjectsApi(self.api)

    def batch(self) -> Any:
        return client.BatchV1Api(self.api)

    def create_task(self, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST a CodeTask; returns the created object."""
        resp = self.custom().create_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, body, _preload_content=False
        )
        created: dict[str, Any] = json.loads(resp.data)
        return created

    def post_task(self, ns: str, name: str) -> None:
        """POST a `print(2+2)` CodeTask, reading the response raw as `create_job` does."""
        drain(
            self.custom().create_namespaced_custom_object(
                GROUP, VERSION, ns, PLURAL, codetask(name), _preload_content=False
            )
        )

    def create_job(self, ns: str, body: dict[str, Any]) -> None:
        """POST a Job, reading the response raw (the fastest a client can be)."""
        drain(self.batch().create_namespaced_job(ns, body, _preload_content=False))

    def task_watch_call(self) -> tuple[Any, ...]:
        """The list call and leading arguments for a Watcher of CodeTasks (namespace follows)."""
        return (self.custom().list_namespaced_custom_object, GROUP, VERSION)


def task_of(job: dict[str, Any]) -> str:
    """A Watcher key: the task a Job was made for (its `codetask.dev/task` label), else its name."""
    return str((job["metadata"].get("labels") or {}).get(LABEL_TASK) or job["metadata"]["name"])


def drain(response: Any) -> None:
    """Read a raw response to its end: only then may its connection serve the next request."""
    response.read()
    response.release_conn()


def codetask(name: str, code: str = "print(2+2)", **spec: Any) -> dict[str, Any]:
    """A python CodeTask."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "CodeTask",
        "metadata": {"name": name},
        "spec": {"language": "python", "code": code, **spec},
    }


def raw_job(name: str, command: list[str], pods: bool = True) -> dict[str, Any]:
    """A bare Job of the runner image running `command`: what a user could do without us."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            **({} if pods else {"parallelism": 0}),
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "dnsPolicy": "Default",
                    "containers": [
                        {
                            "name": "main",
                            "image": RUNNER_IMAGE,
                            "imagePullPolicy": "Never",
                            "command": command,
                        }
                    ],
                }
            },
        },
    }


def phase(*phases: str) -> Any:
    """A Watcher predicate: the CodeTask's status.phase is one of `phases`."""

    def check(obj: dict[str, Any]) -> bool:
        return (obj.get("status") or {}).get("phase") in phases

    return check


def job_succeeded(obj: dict[str, Any]) -> bool:
    return bool((obj.get("status") or {}).get("succeeded"))
