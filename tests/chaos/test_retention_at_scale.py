"""With the chart's retention defaults, 2000 finished tasks in one namespace leave the newest 1000,
and every task's result is in the results stream once, across an operator kill.

The tasks are created with `spec.cancel` (the operator ends each at once, Cancelled, without a
pod), which makes 2000 finished tasks in about a minute. About 3 minutes in all.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest
import redis
from kubernetes import client

from codetask_operator.settings import Settings
from tests.e2e.conftest import namespace_operator
from tests.e2e.tasks import GROUP, PLURAL, VERSION, codetask, create

pytestmark = [pytest.mark.long, pytest.mark.timeout(900)]

KEEP = Settings.model_validate({}).keep_finished_per_namespace
TASKS = 2 * KEEP
SWEEP_SECONDS = Settings.model_validate({}).sweep_interval_seconds


def test_the_newest_finished_tasks_up_to_the_default_cap_stay_and_every_result_is_in_the_stream(
    api_client: client.ApiClient, crd: None, redis_url: str, tmp_path: Path
) -> None:
    ns, op = namespace_operator(
        api_client, tmp_path / "op.log", "r", {"CODETASK_REDIS_URL": redis_url}
    )
    custom = client.CustomObjectsApi(api_client)
    stream = redis.Redis.from_url(redis_url, decode_responses=True)

    def make(n: int) -> None:
        create(api_client, ns, codetask(f"t{n:04d}", language="python", code="1", cancel=True))

    def left() -> set[str]:
        items = custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
        return {item["metadata"]["name"] for item in items}

    def entries() -> list[dict[str, str]]:
        return [f for _, f in stream.xrange("codetask:results:stream") if f["namespace"] == ns]

    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(make, range(TASKS // 2)))
            op.restart()  # SIGKILL: the new one must see the whole namespace before pruning
            list(pool.map(make, range(TASKS // 2, TASKS)))
        end = time.monotonic() + 600
        while len(found := entries()) < TASKS or len(kept := left()) > KEEP:
            assert time.monotonic() < end, (len(found), len(left()))
            time.sleep(2)
        time.sleep(3 * SWEEP_SECONDS)  # nothing more goes
        assert left() == kept and len(kept) == KEEP
        names = Counter(f["name"] for f in entries())
        assert len(names) == TASKS and set(names.values()) == {1}, names.most_common(3)
        assert {f["phase"] for f in found} == {"Cancelled"}
        done = {f["name"]: datetime.fromisoformat(f["completionTime"]) for f in found}
        newest_removed = max(done[name] for name in done.keys() - kept)
        oldest_kept = min(done[name] for name in kept)
        assert newest_removed <= oldest_kept, (newest_removed, oldest_kept)
    finally:
        op.stop(signal.SIGTERM)
        client.CoreV1Api(api_client).delete_namespace(ns)
