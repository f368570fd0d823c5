"""Retries with growing backoff, cancellation, TTL, running limits with priority, metrics."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kubernetes import client

from tests.e2e.conftest import namespace_operator
from tests.e2e.tasks import Operator, codetask, create, get, jobs_of, pods_of, wait_for


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.mark.usefixtures("operator")
def test_task_failing_twice_then_succeeding_ends_succeeded_with_growing_backoff(
    api_client: client.ApiClient, namespace: str
) -> None:
    code = (
        "import os, sys\nprint('attempt', os.environ['CODETASK_ATTEMPT'])\n"
        "sys.exit(0 if os.environ['CODETASK_ATTEMPT'] == '3' else 1)\n"
    )
    create(
        api_client,
        namespace,
        codetask(
            "t",
            language="python",
            code=code,
            retries=2,
            retryPolicy=["NonZeroExit"],
            backoffSeconds=5,
        ),
    )
    status = wait_for(api_client, namespace, "t", timeout=120)["status"]
    assert (status["phase"], status["attempts"], status["stdout"]) == (
        "Succeeded",
        3,
        "attempt 3\n",
    )
    history = status["history"]
    assert [h["attempt"] for h in history] == [1, 2]
    assert all(h["reason"] == "NonZeroExit" and h["exitCode"] == 1 for h in history)
    starts = [ts(h["startTime"]) for h in history] + [ts(status["startTime"])]
    ends = [ts(h["completionTime"]) for h in history]
    gaps = [(starts[i + 1] - ends[i]).total_seconds() for i in range(2)]
    assert 4 <= gaps[0] < gaps[1], gaps
    assert len(jobs_of(api_client, namespace)) == 3


@pytest.mark.usefixtures("operator")
def test_cancel_mid_run_ends_cancelled_within_5_seconds_and_removes_the_pod(
    api_client: client.ApiClient, namespace: str
) -> None:
    create(api_client, namespace, codetask("t", language="sh", code="echo started; sleep 300"))
    wait_for(api_client, namespace, "t", {"Running"})
    start = time.monotonic()
    client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
        "codetask.dev", "v1alpha1", namespace, "codetasks", "t", {"spec": {"cancel": True}}
    )
    status = wait_for(api_client, namespace, "t", timeout=10)["status"]
    assert (status["phase"], status["reason"]) == ("Cancelled", "Cancelled")
    assert time.monotonic() - start < 5
    end = time.monotonic() + 30
    while pods_of(api_client, namespace) and time.monotonic() < end:
        time.sleep(0.5)
    assert not pods_of(api_client, namespace)


@pytest.mark.usefixtures("operator")
def test_cancel_is_idempotent_and_works_before_the_pod_runs(
    api_client: client.ApiClient, namespace: str
) -> None:
    create(api_client, namespace, codetask("t", language="sh", code="sleep 300", cancel=True))
    status = wait_for(api_client, namespace, "t", timeout=30)["status"]
    assert status["phase"] == "Cancelled"
    client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
        "codetask.dev", "v1alpha1", namespace, "codetasks", "t", {"spec": {"cancel": True}}
    )
    time.sleep(1)
    assert get(api_client, namespace, "t")["status"]["phase"] == "Cancelled"


@pytest.mark.usefixtures("operator")
def test_ttl_deletes_the_finished_task_with_its_job(
    api_client: client.ApiClient, namespace: str
) -> None:
    create(
        api_client,
        namespace,
        codetask("t", language="python", code="print(1)", ttlSecondsAfterFinished=2),
    )
    wait_for(api_client, namespace, "t")
    custom = client.CustomObjectsApi(api_client)
    end = time.monotonic() + 20
    while time.monotonic() < end:
        names = [
            t["metadata"]["name"]
            for t in custom.list_namespaced_custom_object(
                "codetask.dev", "v1alpha1", namespace, "codetasks"
            )["items"]
        ]
        if not names:
            break
        time.sleep(0.5)
    assert names == []
    end = time.monotonic() + 30
    while jobs_of(api_client, namespace) and time.monotonic() < end:
        time.sleep(0.5)
    assert not jobs_of(api_client, namespace)


def test_a_task_out_of_the_watch_still_goes_at_its_ttl_after_a_restart(
    api_client: client.ApiClient, crd: None, tmp_path: Path
) -> None:
    """A finished task is labelled out of the operator's watch; the operator that starts next
    lists such tasks (they are not in its watch) and deletes each at its TTL."""
    settings = {"CODETASK_SWEEP_INTERVAL_SECONDS": "1"}
    ns, op = namespace_operator(api_client, tmp_path / "op.log", "ttl", settings)
    try:
        create(api_client, ns, codetask("t", language="python", code="print(1)"))
        create(
            api_client,
            ns,
            codetask("ttl", language="python", code="print(1)", ttlSecondsAfterFinished=25),
        )
        for name in ("t", "ttl"):
            end = time.monotonic() + 60
            while (get(api_client, ns, name)["metadata"].get("labels") or {}).get(
                "codetask.dev/finished"
            ) != "true":
                assert time.monotonic() < end, get(api_client, ns, name)
                time.sleep(0.3)
        op.restart()
        done = ts(get(api_client, ns, "ttl")["status"]["completionTime"])
        custom = client.CustomObjectsApi(api_client)
        while True:
            names = [
                t["metadata"]["name"]
                for t in custom.list_namespaced_custom_object(
                    "codetask.dev", "v1alpha1", ns, "codetasks"
                )["items"]
            ]
            if names == ["t"]:
                break
            assert (datetime.now(UTC) - done).total_seconds() < 25 + 15, names
            time.sleep(0.5)
        assert (datetime.now(UTC) - done).total_seconds() >= 25 - 1, "not before its TTL"
    finally:
        op.stop()
        client.CoreV1Api(api_client).delete_namespace(ns)


@pytest.fixture
def limited_operator(crd: None, tmp_path: object, api_client: client.ApiClient) -> Iterator[str]:
    """An operator with max 2 running tasks, serving its own namespace."""
    log = tmp_path / "op.log"  # type: ignore[operator]
    ns, op = namespace_operator(api_client, log, "q", {"CODETASK_MAX_RUNNING": "2"})
    yield ns
    op.stop()
    client.CoreV1Api(api_client).delete_namespace(ns)


def test_limit_of_two_is_never_exceeded_and_queued_tasks_start_by_priority(
    api_client: client.ApiClient, limited_operator: str
) -> None:
    ns = limited_operator
    sleeper = "import time\ntime.sleep(3)\n"
    for name in ("block-a", "block-b"):
        create(api_client, ns, codetask(name, language="python", code=sleeper))
    for name in ("block-a", "block-b"):
        wait_for(api_client, ns, name, {"Running"})
    priorities = [3, 9, 1, 7, 5, 8, 2, 6]
    for i, p in enumerate(priorities):
        create(api_client, ns, codetask(f"q{i}", language="python", code=sleeper, priority=p))
    queued = wait_for(api_client, ns, "q0", {"Queued"})["status"]
    assert queued["reason"] == "Queued" and queued["queuePosition"] >= 1

    peak = 0
    stop = threading.Event()

    def watch_running() -> None:
        nonlocal peak
        core = client.CoreV1Api(api_client)
        while not stop.is_set():
            running = [p for p in core.list_namespaced_pod(ns).items if p.status.phase == "Running"]
            peak = max(peak, len(running))
            time.sleep(0.1)

    watcher = threading.Thread(target=watch_running)
    watcher.start()
    try:
        statuses = {
            f"q{i}": wait_for(api_client, ns, f"q{i}", timeout=180)["status"] for i in range(8)
        }
    finally:
        stop.set()
        watcher.join()
    assert peak <= 2
    assert all(s["phase"] == "Succeeded" for s in statuses.values())
    admitted = {
        name: ts(next(c for c in s["conditions"] if c["type"] == "Admitted")["lastTransitionTime"])
        for name, s in statuses.items()
    }
    # Slots freed together are filled in one decision, and those tasks' starts race each other:
    # within a round (under a second apart; a round lasts the 3 s sleep) the order is free.
    by_time = sorted(admitted, key=admitted.__getitem__)
    late = [
        (priorities[int(hi[1:])], priorities[int(lo[1:])])
        for hi in admitted
        for lo in admitted
        if priorities[int(hi[1:])] > priorities[int(lo[1:])]
        and (admitted[hi] - admitted[lo]).total_seconds() >= 1
    ]
    assert not late, [(priorities[int(n[1:])], admitted[n].isoformat()) for n in by_time]


def metric(port: str, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def test_metrics_counters_move(
    api_client: client.ApiClient, namespace: str, operator: Operator
) -> None:
    port = operator.env["CODETASK_METRICS_PORT"]
    before = metric(port, "codetask_tasks_finished_total")
    jobs_before = metric(port, "codetask_jobs_created_total")
    create(api_client, namespace, codetask("t", language="python", code="print(1)"))
    wait_for(api_client, namespace, "t")
    time.sleep(0.5)
    assert metric(port, "codetask_tasks_finished_total") == before + 1
    assert metric(port, "codetask_jobs_created_total") == jobs_before + 1
    assert metric(port, 'codetask_tasks{phase="Succeeded"}') >= 1


@pytest.mark.usefixtures("operator")
def test_pod_deleted_mid_run_is_terminated_within_30_seconds_and_retried(
    api_client: client.ApiClient, namespace: str
) -> None:
    code = (
        "import os, time\nif os.environ['CODETASK_ATTEMPT'] == '1':\n    time.sleep(300)\n"
        "print('attempt', os.environ['CODETASK_ATTEMPT'])\n"
    )
    create(
        api_client,
        namespace,
        codetask("t", language="python", code=code, retries=1, backoffSeconds=1),
    )
    running = wait_for(api_client, namespace, "t", {"Running"})["status"]
    client.CoreV1Api(api_client).delete_namespaced_pod(running["podName"], namespace)
    deleted = time.monotonic()
    retrying = wait_for(api_client, namespace, "t", {"Pending", "Failed"}, timeout=30)["status"]
    assert time.monotonic() - deleted < 30
    assert retrying["history"][0]["reason"] == "Terminated"
    assert "stopped while it ran" in retrying["history"][0]["message"]
    status = wait_for(api_client, namespace, "t", timeout=90)["status"]
    assert (status["phase"], status["attempts"], status["stdout"]) == (
        "Succeeded",
        2,
        "attempt 2\n",
    )
