"""Operator SIGKILLed at random moments while mixed tasks run: nothing lost, nothing duplicated.

`make test` runs 30 tasks and 4 kills; `make chaos` 200 tasks and 10 kills (set CHAOS_TASKS,
CHAOS_KILLS, CHAOS_SEED to change or replay a run). The operator has Redis (heartbeats, per-attempt
users, the results stream), as the chart with `redis.enabled`.

The proof of "ran at most once per attempt" is a side effect the code itself makes: an INCR on a
Redis key per (task, attempt), read back afterwards — not the operator's own status. Every task's
result is in the results stream exactly once.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest
import redis
from kubernetes import client

from tests.e2e.conftest import namespace_operator
from tests.e2e.tasks import Operator, codetask, create, get

TASKS = int(os.environ.get("CHAOS_TASKS", "30"))
KILLS = int(os.environ.get("CHAOS_KILLS", "4"))
SEED = int(os.environ.get("CHAOS_SEED", str(random.SystemRandom().randrange(10**6))))

COUNT = (
    "import os, redis\n"
    "redis.Redis.from_url(os.environ['CHAOS_REDIS']).incr("
    "'chaos:%s:%s' % (os.environ['CODETASK_NAME'], os.environ['CODETASK_ATTEMPT']))\n"
)
KINDS = {
    "ok": ({}, COUNT + "print('ok')\n", "Succeeded", 1),
    "fail": ({}, COUNT + "raise SystemExit(3)\n", "Failed", 1),
    "timeout": ({"timeoutSeconds": 8}, COUNT + "import time\ntime.sleep(60)\n", "TimedOut", 1),
    "retry": (
        {"retries": 1, "retryPolicy": ["NonZeroExit"], "backoffSeconds": 1},
        COUNT + "raise SystemExit(0 if os.environ['CODETASK_ATTEMPT'] == '2' else 1)\n",
        "Succeeded",
        2,
    ),
}


@pytest.mark.timeout(1200)  # `make chaos` runs 200 tasks
def test_operator_kills_lose_and_duplicate_nothing(
    api_client: client.ApiClient, crd: None, redis_url: str, tmp_path: Path
) -> None:
    print(f"chaos seed {SEED}: {TASKS} tasks, {KILLS} kills")
    settings = {"CODETASK_REDIS_URL": redis_url, "CODETASK_SWEEP_INTERVAL_SECONDS": "1"}
    namespace, operator = namespace_operator(api_client, tmp_path / "op.log", "k", settings)
    try:
        check_kills(api_client, namespace, operator, redis_url)
    finally:
        operator.stop(signal.SIGTERM)
        client.CoreV1Api(api_client).delete_namespace(namespace)


def check_kills(
    api_client: client.ApiClient, namespace: str, operator: Operator, redis_url: str
) -> None:
    rng = random.Random(SEED)
    kinds = list(KINDS)
    plan = {f"c{i}-{kind}": kind for i in range(TASKS) for kind in [rng.choice(kinds)]}
    done = threading.Event()
    kills = 0

    def killer() -> None:
        nonlocal kills
        while kills < KILLS and not done.is_set():
            time.sleep(rng.uniform(1.0, 6.0))
            operator.stop()  # SIGKILL
            kills += 1
            time.sleep(rng.uniform(0.2, 2.0))
            operator.start()

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        for name, kind in plan.items():
            extra, code, _, _ = KINDS[kind]
            env = [{"name": "CHAOS_REDIS", "value": redis_url}]
            create(
                api_client,
                namespace,
                codetask(name, language="python", code=code, env=env, **extra),
            )
        deadline = time.monotonic() + 900
        pending = set(plan)
        while pending and time.monotonic() < deadline:
            for name in list(pending):
                phase = (get(api_client, namespace, name).get("status") or {}).get("phase")
                if phase in ("Succeeded", "Failed", "TimedOut", "Cancelled"):
                    pending.discard(name)
            time.sleep(1)
    finally:
        done.set()
        thread.join()
        if operator.proc is None:
            operator.start()
    assert kills == KILLS, f"only {kills} kills happened before the tasks finished"
    assert not pending, f"not finished: {sorted(pending)[:10]}"

    counts = redis.Redis.from_url(redis_url)
    jobs = client.BatchV1Api(api_client).list_namespaced_job(namespace).items
    jobs_per_task: dict[str, int] = {}
    for job in jobs:
        task = job.metadata.owner_references[0].name
        jobs_per_task[task] = jobs_per_task.get(task, 0) + 1
    # A task whose final status was written just before a kill is published by the next operator
    # (its sweep, every second here).
    end = time.monotonic() + 30
    while len(published := stream_counts(counts, namespace)) < len(plan):
        if time.monotonic() > end:
            break
        time.sleep(1)
    wrong = []
    for name, kind in plan.items():
        status = get(api_client, namespace, name)["status"]
        if published.get(name) != 1:
            wrong.append((name, "in the results stream", published.get(name)))
        _, _, phase, attempts = KINDS[kind]
        runs = [int(counts.get(f"chaos:{name}:{a}") or 0) for a in range(1, attempts + 1)]
        if (status["phase"], status["attempts"]) != (phase, attempts):
            wrong.append((name, "status", status["phase"], status["attempts"], status["message"]))
        # A timeout may stop an attempt before its code ran (the deadline counts pod start-up).
        expected_runs = ([0], [1]) if kind == "timeout" else ([1] * attempts,)
        if runs not in expected_runs:
            wrong.append((name, "runs per attempt", runs))
        if jobs_per_task.get(name) != attempts:
            wrong.append((name, "jobs", jobs_per_task.get(name)))
        if kind == "ok" and status["stdout"] != "ok\n":
            wrong.append((name, "stdout", status["stdout"], status["message"]))
    pods = client.CoreV1Api(api_client).list_namespaced_pod(namespace).items
    left = {p.metadata.name: p.status.phase for p in pods}
    assert wrong == [], f"seed {SEED}: {wrong[:20]}; pods: {left}"


def stream_counts(counts: redis.Redis, namespace: str) -> dict[str, int]:
    """How often each task of `namespace` is in the results stream."""
    published: dict[str, int] = {}
    for _, fields in counts.xrange("codetask:results:stream"):
        if fields[b"namespace"] == namespace.encode():
            name = fields[b"name"].decode()
            published[name] = published.get(name, 0) + 1
    return published
