"""What the node tests share: operators of their own (with or without Redis heartbeats), node 2's
script under the disruption lock, and the placement that puts a pool's pods on node 2."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.chaos.disrupt import REPO
from tests.conftest import SECOND_NODE_LABEL
from tests.e2e.conftest import namespace_operator
from tests.e2e.tasks import Operator

NODE2 = REPO / "hack/cluster/node2.sh"

PREFER_NODE2: dict[str, Any] = {
    "nodeAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {
                "weight": 100,
                "preference": {
                    "matchExpressions": [
                        {"key": SECOND_NODE_LABEL, "operator": "In", "values": ["true"]}
                    ]
                },
            }
        ]
    }
}
"""A pool's affinity: node 2 while it takes pods, node 1 otherwise (with the taint tolerated)."""


def node2(command: str) -> None:
    """node2.sh COMMAND, with the disruption lock the calling test holds."""
    env = {**os.environ, "CODETASK_DISRUPT_LOCK_HELD": "1"}
    done = subprocess.run([str(NODE2), command], env=env, capture_output=True, text=True)
    # The failed step first: the log tail printed after it can push it out of the last 3000.
    failed = [line for line in done.stderr.splitlines() if "FAILED at step" in line]
    assert done.returncode == 0, "\n".join([*failed, done.stderr[-3000:]])


def own_operator(
    api: client.ApiClient, tmp: Path, redis_url: str | None, tag: str, ttl: int
) -> tuple[str, Operator]:
    """An operator serving a namespace of its own (`namespace_operator`), with Redis heartbeats
    when `redis_url` is given: every 2 s, TTL `ttl` s, swept every second."""
    settings = {
        "CODETASK_HEARTBEAT_INTERVAL_SECONDS": "2",
        "CODETASK_HEARTBEAT_TTL_SECONDS": str(ttl),
        "CODETASK_SWEEP_INTERVAL_SECONDS": "1",
    }
    if redis_url:
        settings["CODETASK_REDIS_URL"] = redis_url
    return namespace_operator(
        api, tmp / f"operator-{tag}-{uuid.uuid4().hex[:6]}.log", tag, settings
    )
