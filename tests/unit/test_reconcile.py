"""The reconciler's judgement of a pod deleted mid-run, against a fake API server: the Job watch can
lag the pod watch, so the Job is read before the attempt is called Lost."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from codetask_operator import api, status
from codetask_operator.reconcile import Reconciler, Registry, TaskState
from codetask_operator.settings import Settings

JOB = "t-0123456789-1"


def iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def job(created: datetime, deadline: int, started: bool) -> dict[str, Any]:
    return {
        "metadata": {"name": JOB, "creationTimestamp": iso(created)},
        "spec": {"activeDeadlineSeconds": deadline},
        "status": {"startTime": iso(created)} if started else {},
    }


def deleted_pod(started: datetime) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"{JOB}-abcde",
            "labels": {"job-name": JOB},
            "creationTimestamp": iso(started),
            "deletionTimestamp": iso(datetime.now(UTC)),
        },
        "spec": {"nodeName": "node-1"},
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {"name": "runner", "ready": True, "state": {"running": {"startedAt": iso(started)}}}
            ],
        },
    }


class FakeKube:
    """The API server as the reconciler calls it: a Job store, status patches recorded."""

    def __init__(self, job: dict[str, Any] | None) -> None:
        self.job = job
        self.deleted: list[str] = []
        self.status: dict[str, Any] = {}

    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.job

    async def delete_job(self, namespace: str, name: str) -> None:
        self.deleted.append(name)

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> Any:
        self.status = {k: v for k, v in {**self.status, **patch}.items() if v is not None}
        return {"status": self.status}

    async def post_event(self, *args: Any) -> None:
        return None

    async def delete_task(self, *args: Any) -> None:
        return None


@pytest.mark.parametrize(
    ("seen", "deadline", "phase", "reason", "job_deleted"),
    [
        # The watch has not shown the Job's start: the API server has it past its deadline.
        ("unstarted", 6, api.Phase.TIMED_OUT, api.Reason.DEADLINE_EXCEEDED, False),
        # The watch has not shown the Job at all.
        (None, 6, api.Phase.TIMED_OUT, api.Reason.DEADLINE_EXCEEDED, False),
        # The Job is well within its deadline: someone deleted the pod.
        ("unstarted", 600, api.Phase.FAILED, api.Reason.LOST, True),
        ("started", 600, api.Phase.FAILED, api.Reason.LOST, True),
    ],
)
def test_a_deleted_pod_is_judged_from_the_job_as_it_is_now(
    seen: str | None, deadline: int, phase: api.Phase, reason: api.Reason, job_deleted: bool
) -> None:
    started = datetime.now(UTC) - timedelta(seconds=30)
    kube = FakeKube(job(started, deadline, started=True))
    reconciler = Reconciler(kube, Settings(), Registry())  # type: ignore[arg-type]
    seen_job = job(started, deadline, started=seen == "started")
    state = TaskState(
        uid="u1",
        namespace="ns",
        name="t",
        spec={"code": "import time; time.sleep(60)", "timeoutSeconds": deadline},
        status={"phase": "Running", "jobName": JOB, "attempts": 1, "startTime": iso(started)},
        jobs={JOB: status.slim(seen_job)} if seen else {},
        pods={f"{JOB}-abcde": status.slim(deleted_pod(started))},
    )
    asyncio.run(reconciler.reconcile(state))
    assert (kube.status.get("phase"), kube.status.get("reason")) == (phase, reason)
    assert kube.deleted == ([JOB] if job_deleted else [])
