"""Draining the second node while tasks run on it (`kubectl drain`: cordon, then evict each pod).

Tasks whose pool puts them on node 2 are evicted mid-run: each attempt ends `Terminated`, naming
the pod stopped under it, and is retried per its policy — on node 1, node 2 being cordoned — or,
with no retries left, the task ends Failed. A task on node 1 runs through untouched. The code counts
its own runs per attempt and how many of the task's runs are alive at once (Redis), so "never two
at a time" is the code's own word. The retry waits for every pod of the task to be gone (fencing);
a second pod of one attempt (1.20's replacement) finds the attempt claimed and does not run it.
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from kubernetes import client

from tests.chaos.disrupt import cluster_disruption, require_local_cluster
from tests.chaos.nodes import PREFER_NODE2, own_operator
from tests.conftest import SECOND_NODE_TOLERATION
from tests.e2e.tasks import FINAL, codetask, create, get

pytestmark = [pytest.mark.long, pytest.mark.timeout(600)]

CODE = (
    "import os, signal, sys, time, redis\n"
    "r = redis.Redis.from_url(os.environ['FAULT_REDIS'])\n"
    "task = 'drain:%s:%s' % (os.environ['CODETASK_NAMESPACE'], os.environ['CODETASK_NAME'])\n"
    "key = '%s:%s' % (task, os.environ['CODETASK_ATTEMPT'])\n"
    "def stop(*_):\n"
    "    r.decr(task + ':alive')\n"
    "    sys.exit(143)\n"
    "signal.signal(signal.SIGTERM, stop)\n"
    "if r.incr(task + ':alive') > 1:\n"
    "    r.set(task + ':overlap', key)\n"
    "r.incr(key + ':runs')\n"
    "r.set(key + ':node', os.environ['NODE_NAME'])\n"
    "while not r.exists(os.environ['FAULT_GO']):\n"
    "    time.sleep(0.2)\n"
    "r.decr(task + ':alive')\n"
    "print('done on', os.environ['NODE_NAME'])\n"
)


def kubectl(*args: str) -> None:
    done = subprocess.run(["kubectl", *args], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture
def drained_node(second_node: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """Node 2, under the disruption lock; uncordoned after the test."""
    require_local_cluster()
    with cluster_disruption(f"test_node_drain: {request.node.name}"):
        try:
            yield second_node
        finally:
            kubectl("uncordon", second_node)


def test_a_drain_ends_its_attempts_terminated_and_retries_them_per_policy_on_the_other_node(
    api_client: client.ApiClient,
    crd: None,
    redis_url: str,
    tmp_path: Path,
    pool: Callable[..., str],
    drained_node: str,
) -> None:
    counts = redis.Redis.from_url(redis_url)
    go = f"drain:go:{uuid.uuid4().hex[:8]}"
    ns, op = own_operator(api_client, tmp_path, redis_url, "d", 6)
    name = pool(namespaces=[ns], tolerations=[SECOND_NODE_TOLERATION], affinity=PREFER_NODE2)
    env = [{"name": "FAULT_REDIS", "value": redis_url}, {"name": "FAULT_GO", "value": go}]
    plain = {"language": "python", "code": CODE, "env": env, "timeoutSeconds": 300}
    # "again" may retry (the default retryPolicy has Terminated), "once" may not; "stay" has no
    # pool: node 1.
    create(api_client, ns, codetask("again", pool=name, retries=1, backoffSeconds=1, **plain))
    create(api_client, ns, codetask("once", pool=name, **plain))
    create(api_client, ns, codetask("stay", **plain))
    try:
        started = time.monotonic()
        where = {}
        for task in ("again", "once", "stay"):
            while (node := counts.get(f"drain:{ns}:{task}:1:node")) is None:
                assert time.monotonic() - started < 90, get(api_client, ns, task).get("status")
                time.sleep(0.3)
            where[task] = node.decode()
        assert where == {"again": drained_node, "once": drained_node, "stay": where["stay"]}
        assert where["stay"] != drained_node

        drain_started = time.monotonic()
        kubectl(
            "drain",
            drained_node,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=180s",
        )
        drained = time.monotonic() - drain_started
        # Attempt 2 of "again" starts on node 1 once the evicted pod is gone, and waits for "go".
        while counts.get(f"drain:{ns}:again:2:node") is None:
            assert time.monotonic() - drain_started < 120, get(api_client, ns, "again")["status"]
            time.sleep(0.3)
        retried = time.monotonic() - drain_started
        counts.set(go, 1)

        statuses = {}
        for task in ("again", "once", "stay"):
            end = time.monotonic() + 120
            while (status := get(api_client, ns, task).get("status") or {}).get(
                "phase"
            ) not in FINAL:
                assert time.monotonic() < end, (task, status)
                time.sleep(0.5)
            statuses[task] = status

        again, once, stay = statuses["again"], statuses["once"], statuses["stay"]
        assert (again["phase"], again["attempts"]) == ("Succeeded", 2), again
        assert again["history"][0]["reason"] == "Terminated", again
        assert "stopped while it ran" in again["history"][0]["message"], again
        assert again["stdout"].strip() == f"done on {where['stay']}", again
        assert (once["phase"], once["reason"], once["attempts"]) == ("Failed", "Terminated", 1)
        assert "stopped while it ran" in once["message"], once
        assert (stay["phase"], stay["attempts"]) == ("Succeeded", 1), stay
        assert not stay.get("history"), stay

        runs = {
            key: int(counts.get(f"drain:{ns}:{key}:runs") or 0)
            for key in ("again:1", "again:2", "once:1", "stay:1")
        }
        # Kubernetes < 1.26 (legacy Job tracking) starts a replacement pod the moment the evicted
        # one is marked for deletion, and its container may start before the garbage collector
        # deletes it (seen: deleted 80 ms after it was made, its code run beside the evicted
        # one's). The runner's claim in Redis stops it before the code.
        assert runs == {"again:1": 1, "again:2": 1, "once:1": 1, "stay:1": 1}, runs
        for task in ("again", "once", "stay"):
            assert counts.get(f"drain:{ns}:{task}:overlap") is None, task
        print(
            f"\ndrain took {drained:.1f} s; the retry started {retried:.1f} s after it began; "
            f"runs per attempt: {runs}"
        )
    finally:
        op.stop(signal.SIGTERM)
        client.CoreV1Api(api_client).delete_namespace(ns)
