"""Finished tasks beyond keepFinishedPerNamespace go, oldest first, their results kept in the
results stream."""

from __future__ import annotations

import signal
import time
from datetime import datetime
from pathlib import Path

import redis
from kubernetes import client

from tests.e2e.conftest import namespace_operator
from tests.e2e.tasks import GROUP, PLURAL, VERSION, codetask, create

KEEP = 3


def test_the_oldest_finished_tasks_beyond_the_keep_go_and_their_results_stay_in_the_stream(
    api_client: client.ApiClient, crd: None, redis_url: str, tmp_path: Path
) -> None:
    settings = {
        "CODETASK_REDIS_URL": redis_url,
        "CODETASK_KEEP_FINISHED_PER_NAMESPACE": str(KEEP),
        "CODETASK_SWEEP_INTERVAL_SECONDS": "1",
    }
    ns, op = namespace_operator(api_client, tmp_path / "op.log", "p", settings)
    custom = client.CustomObjectsApi(api_client)
    try:
        names = [f"t{n}" for n in range(2 * KEEP)]
        for name in names:
            create(api_client, ns, codetask(name, language="python", code=f"print('{name}')"))
        stream = redis.Redis.from_url(redis_url, decode_responses=True)
        end = time.monotonic() + 120
        while True:
            items = custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
            left = sorted(item["metadata"]["name"] for item in items)
            entries = [
                f for _, f in stream.xrange("codetask:results:stream") if f["namespace"] == ns
            ]
            if len(entries) == len(names) and len(left) == KEEP:
                break
            assert time.monotonic() < end, (left, entries)
            time.sleep(0.5)
        assert sorted(f["name"] for f in entries) == names  # each once
        completed = {f["name"]: datetime.fromisoformat(f["completionTime"]) for f in entries}
        newest = sorted(completed, key=lambda name: completed[name])[-KEEP:]
        assert left == sorted(newest), (left, completed)
    finally:
        op.stop(signal.SIGTERM)
        client.CoreV1Api(api_client).delete_namespace(ns)
