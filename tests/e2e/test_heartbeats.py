"""With Redis: heartbeats and progress reach status, a frozen runner is Lost and retried, and the
full output tails come from Redis rather than the 4 KiB termination message."""

from __future__ import annotations

import os
import signal
import time

import redis
from kubernetes import client

from tests.conftest import HEARTBEAT_TTL as TTL
from tests.e2e.tasks import codetask, create, get, runner_pid, wait_for


def test_progress_and_heartbeats_reach_status(
    api_client: client.ApiClient, redis_operator: str
) -> None:
    code = (
        "import json, os, time\n"
        "for i in range(1, 5):\n"
        "    with open(os.environ['CODETASK_PROGRESS_FILE'], 'a') as f:\n"
        "        line = {'percent': i * 25, 'stage': 'step', 'message': f'{i}/4'}\n"
        "        f.write(json.dumps(line) + '\\n')\n"
        "    time.sleep(1.5)\n"
    )
    create(api_client, redis_operator, codetask("p", language="python", code=code))
    seen: set[float] = set()
    beats: set[str] = set()
    end = time.monotonic() + 60
    while time.monotonic() < end:
        status = get(api_client, redis_operator, "p").get("status") or {}
        if progress := status.get("progress"):
            seen.add(progress["percent"])
            assert progress["stage"] == "step"
        if status.get("lastHeartbeatTime"):
            beats.add(status["lastHeartbeatTime"])
        if status.get("phase") == "Succeeded":
            break
        time.sleep(0.3)
    assert status["phase"] == "Succeeded"
    assert len(seen) >= 2 and max(seen) >= 75, seen
    assert beats


def test_frozen_runner_is_lost_within_ttl_plus_10_seconds_and_retried(
    api_client: client.ApiClient, redis_operator: str, redis_url: str
) -> None:
    code = (
        "import os, time\nif os.environ['CODETASK_ATTEMPT'] == '1':\n"
        "    time.sleep(120)\nprint('ok')\n"
    )
    create(api_client, redis_operator, codetask("f", language="python", code=code, retries=1))
    wait_for(api_client, redis_operator, "f", {"Running"})
    pattern = f"codetask:{redis_operator}:f:*:1:heartbeat"  # the attempt's own keys
    end = time.monotonic() + 20
    while not redis.Redis.from_url(redis_url).keys(pattern):
        assert time.monotonic() < end, "no heartbeat key"
        time.sleep(0.2)
    time.sleep(2)  # the operator has seen a heartbeat (sweep: 1 s)
    pid = runner_pid(redis_operator, "f")
    os.kill(pid, signal.SIGSTOP)
    frozen = time.monotonic()
    try:
        retrying = wait_for(
            api_client, redis_operator, "f", {"Pending", "Failed"}, timeout=TTL + 15
        )
    finally:
        os.kill(pid, signal.SIGCONT)
    assert time.monotonic() - frozen <= TTL + 10
    assert retrying["status"]["history"][0]["reason"] == "Lost"
    status = wait_for(api_client, redis_operator, "f", timeout=90)["status"]
    assert (status["phase"], status["attempts"], status["stdout"]) == ("Succeeded", 2, "ok\n")


def test_full_output_tails_come_from_redis(
    api_client: client.ApiClient, redis_operator: str
) -> None:
    code = "import sys\nsys.stdout.write('x' * 10000 + 'END\\n')\nsys.stderr.write('e' * 3000)\n"
    create(api_client, redis_operator, codetask("o", language="python", code=code))
    status = wait_for(api_client, redis_operator, "o")["status"]
    assert status["phase"] == "Succeeded"
    assert status["stdout"] == "x" * 10000 + "END\n"
    assert status["stderr"] == "e" * 3000
    assert status["truncated"] == {"stdout": False, "stderr": False}


def test_a_finished_task_is_in_the_results_stream_once_with_its_full_output(
    api_client: client.ApiClient, redis_operator: str, redis_url: str
) -> None:
    """Output beyond the 4 KiB termination message: the entry has the status's full tails."""
    code = "print('x' * 10000)\nprint('done')\n"
    create(api_client, redis_operator, codetask("s", language="python", code=code, retries=0))
    done = wait_for(api_client, redis_operator, "s")
    uid = done["metadata"]["uid"]
    admin = redis.Redis.from_url(redis_url, decode_responses=True)
    end = time.monotonic() + 10
    while not (ours := [f for _, f in admin.xrange("codetask:results:stream") if f["uid"] == uid]):
        assert time.monotonic() < end, "not in the stream"
        time.sleep(0.2)
    time.sleep(6)  # a sweep later: the check of pending publications adds nothing
    ours = [f for _, f in admin.xrange("codetask:results:stream") if f["uid"] == uid]
    assert len(ours) == 1, ours
    assert (ours[0]["phase"], ours[0]["name"], ours[0]["exitCode"]) == ("Succeeded", "s", "0")
    assert ours[0]["stdout"] == done["status"]["stdout"] == "x" * 10000 + "\ndone\n"
