"""Losing the second node with tasks running on it (hack/cluster/node2.sh kill, then its Node
object deleted, as when a cloud node dies and its controller removes it).

Each task's first attempt runs on node 2 (its pool prefers that node), then the node dies: its
link is cut and every process of it is SIGKILLed. No second attempt may start while the first's pod
might still run — a dead node says nothing, so the operator cannot know — and none does until the
Node object is deleted, which makes the pod garbage collector delete the pod. Then the second
attempt runs on node 1. The code counts its own runs per attempt in Redis, so "ran once per
attempt" is the code's own word. One operator has Redis heartbeats, one has none. A task of
each on node 1 runs through the loss untouched: one attempt, one run.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from kubernetes import client

from tests.chaos.disrupt import cluster_disruption, require_local_cluster
from tests.chaos.nodes import PREFER_NODE2, node2, own_operator
from tests.conftest import SECOND_NODE_TOLERATION
from tests.e2e.tasks import FINAL, codetask, create, get

pytestmark = [pytest.mark.long, pytest.mark.timeout(900)]

TTL = 6
SILENT_SECONDS = 60
"""How long after the kill the test watches that no second attempt starts (the node is NotReady
after 40 s; with Redis the first attempt is Lost after the heartbeat TTL)."""

CODE = (
    "import os, time, redis\n"
    "r = redis.Redis.from_url(os.environ['FAULT_REDIS'])\n"
    "key = 'loss:%s:%s:%s' % (os.environ['CODETASK_NAMESPACE'], os.environ['CODETASK_NAME'],\n"
    "                         os.environ['CODETASK_ATTEMPT'])\n"
    "r.incr(key + ':runs')\n"
    "r.set(key + ':node', os.environ['NODE_NAME'])\n"
    "r.set(key + ':started', time.time())\n"
    "while not r.exists(os.environ['FAULT_GO']):\n"
    "    time.sleep(0.2)\n"
    "print('done on', os.environ['NODE_NAME'])\n"
)


@pytest.fixture
def lost_node(second_node: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """The disruption lock for the test; node 2 back after it (`restore`: as after a reboot, its
    kubelet registers the Node again, with its taint)."""
    require_local_cluster()
    with cluster_disruption(f"test_node_loss: {request.node.name}"):
        try:
            yield second_node
        finally:
            node2("restore")


def test_tasks_on_a_lost_node_run_again_on_the_other_only_once_their_pod_is_gone(
    api_client: client.ApiClient,
    crd: None,
    redis_url: str,
    tmp_path: Path,
    pool: Callable[..., str],
    lost_node: str,
) -> None:
    counts = redis.Redis.from_url(redis_url)
    go = f"loss:go:{uuid.uuid4().hex[:8]}"
    operators = {"redis": own_operator(api_client, tmp_path, redis_url, "l", TTL)}
    operators["plain"] = own_operator(api_client, tmp_path, None, "l", TTL)
    name = pool(
        namespaces=[ns for ns, _ in operators.values()],
        tolerations=[SECOND_NODE_TOLERATION],
        affinity=PREFER_NODE2,
    )
    env = [{"name": "FAULT_REDIS", "value": redis_url}, {"name": "FAULT_GO", "value": go}]
    for ns, _ in operators.values():
        body = codetask(
            "t",
            language="python",
            code=CODE,
            env=env,
            pool=name,
            retries=1,
            retryPolicy=["Lost", "Terminated"],
            backoffSeconds=1,
            timeoutSeconds=600,
        )
        create(api_client, ns, body)
        # A task without the pool: node 1, which the loss of node 2 must leave alone.
        create(api_client, ns, codetask("n", language="python", code=CODE, env=env))
    try:
        started = time.monotonic()

        def ran_on(ns: str, task: str) -> bytes:
            """The node the task's first attempt runs on, in its code's own word (written a moment
            after its container starts)."""
            while (node := counts.get(f"loss:{ns}:{task}:1:node")) is None:
                assert time.monotonic() - started < 90, get(api_client, ns, task).get("status")
                time.sleep(0.3)
            return bytes(node)

        for ns, _ in operators.values():
            # Running in status: the kubelet reported the container running before the node died.
            while (get(api_client, ns, "t").get("status") or {}).get("phase") != "Running":
                assert time.monotonic() - started < 90, get(api_client, ns, "t").get("status")
                time.sleep(0.3)
            assert ran_on(ns, "t") == lost_node.encode()
            assert ran_on(ns, "n") != lost_node.encode()

        node2("kill")
        killed = time.time()
        counts.set(go, 1)  # a second attempt would finish at once
        seen: dict[str, set[tuple[str, str]]] = {kind: set() for kind in operators}
        while time.time() - killed < SILENT_SECONDS:
            for kind, (ns, _) in operators.items():
                status = get(api_client, ns, "t").get("status") or {}
                seen[kind].add((str(status.get("phase")), str(status.get("reason"))))
                assert counts.get(f"loss:{ns}:t:2:runs") is None, (kind, status)
            time.sleep(1)
        # With heartbeats the first attempt is Lost within the TTL, and the second waits for its
        # pod to stop; without, the task still shows the first attempt running.
        assert ("Pending", "Stopping") in seen["redis"], seen
        assert ("Running", "Started") in seen["plain"], seen

        # The Node object goes: the pod garbage collector deletes the pods bound to it.
        client.CoreV1Api(api_client).delete_node(lost_node)
        deleted = time.time()
        for kind, (ns, _) in operators.items():
            end = time.monotonic() + 180
            while (status := get(api_client, ns, "t").get("status") or {}).get(
                "phase"
            ) not in FINAL:
                assert time.monotonic() < end, (kind, status)
                time.sleep(1)
            assert (status["phase"], status["attempts"]) == ("Succeeded", 2), (kind, status)
            assert status["history"][0]["reason"] in ("Lost", "Terminated"), (kind, status)
            runs = [int(counts.get(f"loss:{ns}:t:{a}:runs") or 0) for a in (1, 2)]
            if kind == "redis":
                assert runs == [1, 1], (kind, runs)
            else:
                # Kubernetes 1.20 only (legacy Job tracking): once the pod garbage collector deletes
                # the dead node's pod, the Job controller starts a replacement before the operator,
                # told of the deletion at the same moment, deletes the Job: attempt 1's code runs
                # again, on node 1, after its first run died with node 2 — never beside it. From
                # 1.26 a deleted pod counts as failed (backoffLimit 0: no replacement). With Redis
                # the first attempt was over, and its Job deleted, long before.
                assert runs[1] == 1 and runs[0] in (1, 2), (kind, runs)
                if runs[0] == 2:
                    again = float(counts.get(f"loss:{ns}:t:1:started") or 0)
                    assert again > deleted, (kind, "replacement ran beside the first run")
            second_started = float(counts.get(f"loss:{ns}:t:2:started") or 0)
            assert second_started > deleted, (kind, second_started - deleted)
            assert counts.get(f"loss:{ns}:t:2:node") != lost_node.encode(), kind
            assert status["stdout"].startswith("done on "), status
            untouched = get(api_client, ns, "n").get("status") or {}
            assert (untouched.get("phase"), untouched.get("attempts")) == ("Succeeded", 1), (
                kind,
                untouched,
            )
            assert not untouched.get("history"), (kind, untouched)
            assert counts.get(f"loss:{ns}:n:1:runs") == b"1", kind
        print(
            f"\nnode 2 killed; no second attempt for {SILENT_SECONDS} s "
            f"(statuses seen: {seen}); its Node deleted {deleted - killed:.0f} s after the kill; "
            + "; ".join(
                f"{kind}: second attempt started "
                f"{float(counts.get(f'loss:{ns}:t:2:started') or 0) - deleted:.1f} s after"
                for kind, (ns, _) in operators.items()
            )
        )
    finally:
        for ns, op in operators.values():
            op.stop(signal.SIGTERM)
            client.CoreV1Api(api_client).delete_namespace(ns)
