"""What objects weigh in etcd: the stored values' sizes, read from the local cluster's etcd through
its JSON gateway (hack/cluster/lib.sh: ETCD_PORT). The API server stores core objects as protobuf
and CodeTasks as JSON; these are the bytes each object's current revision takes (older revisions
go at the API server's compaction, every 5 minutes)."""

from __future__ import annotations

import base64
import json
import urllib.request

ETCD = "http://127.0.0.1:12379"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def sizes(prefix: str) -> dict[str, int]:
    """Key (less `prefix`) → bytes of its value, for every key under `prefix`."""
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    body = json.dumps({"key": _b64(prefix), "range_end": _b64(end)}).encode()
    request = urllib.request.Request(f"{ETCD}/v3/kv/range", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        found = json.load(response)
    return {
        base64.b64decode(kv["key"]).decode()[len(prefix) :]: len(base64.b64decode(kv["value"]))
        for kv in found.get("kvs", [])
    }


def namespace_sizes(ns: str, group_plural: str) -> dict[str, dict[str, int]]:
    """The namespace's CodeTasks (`group_plural`, e.g. codetask.dev/codetasks), Jobs, pods and
    events: kind → name → bytes."""
    return {
        kind: sizes(f"/registry/{kind}/{ns}/") for kind in (group_plural, "jobs", "pods", "events")
    }


def weight(found: dict[str, dict[str, int]], names: list[str]) -> dict[str, int]:
    """Bytes of the objects of one run, by kind: those named `names`, or `NAME-suffix` (a Job's
    pods), and events about them (`NAME.suffix`, `NAME-suffix.suffix`)."""

    def ours(key: str) -> bool:
        return any(key == n or key.startswith((f"{n}-", f"{n}.")) for n in names)

    return {kind: sum(b for k, b in objects.items() if ours(k)) for kind, objects in found.items()}
