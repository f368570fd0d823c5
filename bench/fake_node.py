"""A Node object with no kubelet behind it: where finished pods stay as a finished run left them.

The pod garbage collector deletes pods bound to a node that does not exist, and a real node's
kubelet would try to run (or clean up) pods bound to it. On this node nothing runs and nothing is
scheduled (`unschedulable`, a NoSchedule taint that DaemonSet pods do not tolerate either). The
node lifecycle controller marks it unreachable after its start-up grace (a minute) and taints it;
pods put here tolerate every taint (`TOLERATE_ALL`), so even a NoExecute one would evict none.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from kubernetes.client.exceptions import ApiException

from bench.cluster import RUN_LABEL, core_api

PREFIX = "codetask-bench-"
TAINT = {"key": "codetask.dev/bench", "value": "no-kubelet", "effect": "NoSchedule"}
TOLERATE_ALL: list[dict[str, Any]] = [{"operator": "Exists"}]
"""No key, no effect, no tolerationSeconds: every taint, for ever."""


def name_for(run_id: str) -> str:
    return f"{PREFIX}{run_id}-node"


def taints(api: Any, name: str) -> list[str]:
    """The node's taints as `key:effect` (the controllers' ones show what was tolerated)."""
    node = core_api(api).read_node(name)
    return [f"{t.key}:{t.effect}" for t in node.spec.taints or []]


def delete(api: Any, name: str) -> None:
    """Delete the node; absent is fine. Pods still bound to it go to the pod garbage collector."""
    with contextlib.suppress(ApiException):
        core_api(api).delete_node(name)


def delete_leftovers(api: Any) -> list[str]:
    """Delete the fake nodes an interrupted run left (named `codetask-bench-*`)."""
    names = [
        n.metadata.name
        for n in core_api(api).list_node().items
        if n.metadata.name.startswith(PREFIX)
    ]
    for name in names:
        delete(api, name)
    return names


@contextlib.contextmanager
def fake_node(api: Any, run_id: str) -> Iterator[str]:
    """A fake node `codetask-bench-<run id>-node` while the block runs; its name."""
    name = name_for(run_id)
    body = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {RUN_LABEL: run_id, "kubernetes.io/hostname": name},
        },
        "spec": {"unschedulable": True, "taints": [TAINT]},
    }
    core_api(api).create_node(body)
    try:
        yield name
    finally:
        delete(api, name)
