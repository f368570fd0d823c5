"""The chart's in-cluster Redis: heartbeats and progress reach status without cluster DNS."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from kubernetes import client

from tests.conftest import SESSION
from tests.e2e.conftest import RELEASE_LABEL, chart_values, helm_release
from tests.e2e.tasks import codetask, create, get

RELEASE = f"{SESSION}d-codetask-operator"
TASKS_NS = f"{SESSION}d-tasks"

PROGRESS = (
    "import json, os, time\n"
    "for i in range(1, 5):\n"
    "    with open(os.environ['CODETASK_PROGRESS_FILE'], 'a') as f:\n"
    "        f.write(json.dumps({'percent': i * 25, 'stage': 'step'}) + '\\n')\n"
    "    time.sleep(2)\n"
)


@pytest.fixture(scope="module")
def release(crd: None, api_client: client.ApiClient) -> Iterator[str]:
    values = [
        *chart_values(RELEASE, f"{SESSION}d-*"),
        *("--set", "redis.enabled=true", "--set", "redis.image.pullPolicy=Never"),
        *("--set", "heartbeat.intervalSeconds=2", "--set", "heartbeat.ttlSeconds=10"),
        *("--set", "sweepIntervalSeconds=1"),
    ]
    core = client.CoreV1Api(api_client)
    with helm_release(RELEASE, f"{SESSION}d-system", values):
        labels = {RELEASE_LABEL: RELEASE}
        core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=TASKS_NS, labels=labels))
        )
        yield RELEASE
        core.delete_namespace(TASKS_NS)


def test_in_chart_redis_carries_progress_and_heartbeats_into_status(
    release: str, api_client: client.ApiClient
) -> None:
    create(api_client, TASKS_NS, codetask("p", language="python", code=PROGRESS))
    percents: set[float] = set()
    status: dict[str, object] = {}
    end = time.monotonic() + 90
    while time.monotonic() < end:
        status = get(api_client, TASKS_NS, "p").get("status") or {}
        progress = status.get("progress")
        if isinstance(progress, dict):
            percents.add(progress["percent"])
        if status.get("phase") == "Succeeded":
            break
        time.sleep(0.3)
    assert status.get("phase") == "Succeeded", status
    assert percents and max(percents) >= 50, percents
    assert status.get("lastHeartbeatTime")
