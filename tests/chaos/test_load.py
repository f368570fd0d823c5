"""Load: 1000 tasks under a concurrency limit of 20 all finish, never more than 20 run at once, and
the operator's peak memory and API write rate are recorded (`make chaos`; LOAD_TASKS to change).

"Running at once" is counted independently of the operator: a watch on the namespace's pods, where a
pod counts from its creation until its phase is Succeeded or Failed (its code has ended) or it is
deleted. (A Job is marked complete a moment after its pod ends: the operator frees the slot when it
sees the pod end, so counting Jobs would overstate what runs.)
"""

from __future__ import annotations

import os
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from kubernetes import client, watch

from tests.conftest import SESSION
from tests.e2e.conftest import OPERATOR_ENV, free_port
from tests.e2e.tasks import FINAL, GROUP, PLURAL, VERSION, Operator, codetask, create

pytestmark = [pytest.mark.long, pytest.mark.timeout(2400)]

TASKS = int(os.environ.get("LOAD_TASKS", "1000"))
LIMIT = 20


@pytest.fixture
def load_namespace(api_client: client.ApiClient) -> Iterator[str]:
    core = client.CoreV1Api(api_client)
    ns = f"{SESSION}l-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    yield ns
    core.delete_namespace(ns)


class ActivePods:
    """Watches a namespace's pods; the most that were unfinished at the same moment."""

    def __init__(self, api_client: client.ApiClient, namespace: str) -> None:
        self.api, self.namespace = client.CoreV1Api(api_client), namespace
        self.active: set[str] = set()
        self.seen: set[str] = set()
        self.peak = 0
        self.version = ""
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self._follow()
            except client.ApiException as exc:  # 410 Gone: list again (seen pods stay seen)
                assert exc.status == 410, exc
                self.version = ""

    def _follow(self) -> None:
        for event in watch.Watch().stream(
            self.api.list_namespaced_pod,
            self.namespace,
            resource_version=self.version,
            timeout_seconds=5,
        ):
            pod = event["object"]
            self.version = pod.metadata.resource_version
            name = pod.metadata.name
            if event["type"] == "DELETED" or pod.status.phase in ("Succeeded", "Failed"):
                self.active.discard(name)
            elif name not in self.seen:
                self.seen.add(name)
                self.active.add(name)
                self.peak = max(self.peak, len(self.active))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def _metric(port: str, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_thousand_tasks_under_a_limit_of_twenty(
    api_client: client.ApiClient,
    crd: None,
    load_namespace: str,
    tmp_path: Path,
) -> None:
    ns = load_namespace
    metrics_port = str(free_port())
    env = {
        **os.environ,
        **OPERATOR_ENV,
        "CODETASK_NAMESPACES": ns,
        "CODETASK_MAX_RUNNING": str(LIMIT),
        "CODETASK_HEALTH_PORT": str(free_port()),
        "CODETASK_METRICS_PORT": metrics_port,
    }
    operator = Operator([sys.executable, "-m", "codetask_operator"], env, tmp_path / "op.log")
    operator.start()
    assert operator.proc is not None
    pods = ActivePods(api_client, ns)
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda i: create(
                        api_client,
                        ns,
                        codetask(f"l{i}", language="python", code=f"print({i} * 2)"),
                    ),
                    range(TASKS),
                )
            )
        created = time.monotonic() - started
        custom = client.CustomObjectsApi(api_client)
        deadline = time.monotonic() + 1500
        while True:
            items = custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
            final = [t for t in items if (t.get("status") or {}).get("phase") in FINAL]
            if len(final) == TASKS or time.monotonic() > deadline:
                break
            time.sleep(10)  # a list of 1000 tasks is heavy for the API server
        elapsed = time.monotonic() - started
        writes = _metric(metrics_port, "codetask_api_writes_total")
        retries = _metric(metrics_port, "codetask_api_retries_total")
        peak_rss = _peak_rss_mb(operator.proc.pid)
    finally:
        pods.close()
        operator.stop()
    print(
        f"load: {TASKS} tasks, limit {LIMIT}: created in {created:.0f}s, all final after "
        f"{elapsed:.0f}s ({TASKS / elapsed:.1f} tasks/s); peak unfinished pods {pods.peak}; "
        f"operator peak RSS {peak_rss:.0f} MB; {writes:.0f} API writes "
        f"({writes / elapsed:.1f}/s, {writes / TASKS:.2f} per task), {retries:.0f} retried"
    )
    assert len(final) == TASKS, f"{TASKS - len(final)} tasks not final after {elapsed:.0f}s"
    wrong = [
        (t["metadata"]["name"], t["status"].get("phase"), t["status"].get("stdout"))
        for t in final
        if (t["status"]["phase"], t["status"].get("stdout"))
        != ("Succeeded", f"{int(t['metadata']['name'][1:]) * 2}\n")
    ]
    assert wrong == []
    jobs = client.BatchV1Api(api_client).list_namespaced_job(ns).items
    assert len(jobs) == len(pods.seen) == TASKS, "one Job and one pod per task"
    assert pods.peak == LIMIT, f"peak unfinished pods {pods.peak}, limit {LIMIT}"
