"""The task lifecycle as a table: what is observed → the one action `decide` takes.

Each row is one case of docs/lifecycle.md. Rows marked #N are the exactly-once issue's items: they
failed (or had no single place to fail) before the decision was one function.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from codetask_operator import decide
from codetask_operator.api import CodeTaskSpec, Phase, Reason
from codetask_operator.decide import (
    EVENTS,
    JOB,
    PODS,
    REPORT,
    Clocks,
    Confirm,
    End,
    Invalid,
    Observed,
    Start,
    Stop,
    Update,
    Wait,
)
from codetask_operator.status import Outcome, PodView

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)
JOB_NAME = "t-0123456789-1"
LOST = Outcome(Phase.FAILED, Reason.LOST, "no heartbeat")


def iso(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def job(
    age: float = 30,
    started: bool = True,
    ended: str | None = None,
    deadline: int = 300,
) -> dict[str, Any]:
    conditions = [{"type": ended, "status": "True", "reason": "X"}] if ended else []
    st: dict[str, Any] = {"conditions": conditions}
    if started:
        st["startTime"] = iso(age)
    return {
        "metadata": {"name": JOB_NAME, "creationTimestamp": iso(age)},
        "spec": {"activeDeadlineSeconds": deadline},
        "status": st,
    }


def result(reason: str = "Completed", code: int = 0) -> str:
    return json.dumps(
        {"v": 1, "reason": reason, "exitCode": code, "stdout": "4\n", "startedAt": iso(20)}
    )


def pod(
    state: str = "running",
    ready: bool = True,
    deleted: bool = False,
    message: str | None = None,
    waiting: str | None = None,
    unschedulable: bool = False,
    disruption: bool = False,
) -> PodView:
    container: dict[str, Any] = {}
    phase = "Running"
    if state == "running":
        container = {"running": {"startedAt": iso(20)}}
    elif state == "terminated":
        container = {"terminated": {"exitCode": 0, "startedAt": iso(20), "message": message}}
        phase = "Succeeded"
    elif state == "waiting":
        container = {"waiting": {"reason": waiting, "message": "boom"}}
        phase = "Pending"
    conditions = [{"type": "Ready", "status": str(ready)}]
    if unschedulable:
        conditions.append(
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1"}
        )
        phase = "Pending"
    if disruption:
        conditions.append(
            {
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "EvictionByEvictionAPI",
                "message": "Eviction API: evicting",
            }
        )
    meta: dict[str, Any] = {"name": f"{JOB_NAME}-abcde"}
    if deleted:
        meta["deletionTimestamp"] = iso(1)
    return PodView.of(
        {
            "metadata": meta,
            "spec": {"nodeName": "node-1"},
            "status": {
                "phase": phase,
                "conditions": conditions,
                "containerStatuses": [{"state": container}] if container else [],
            },
        }
    )


SCHEDULED = {"phase": "Pending", "reason": "Scheduled", "jobName": JOB_NAME, "attempts": 1}
RETRYING = {
    "phase": "Pending",
    "reason": "Retrying",
    "jobName": JOB_NAME,
    "attempts": 1,
    "nextAttemptTime": iso(-30),
}


def observed(spec: dict[str, Any] | None = None, **fields: Any) -> Observed:
    base = Observed(
        spec=CodeTaskSpec.model_validate(
            {"language": "python", "code": "print(4)", **(spec or {})}
        ),
        status=SCHEDULED,
        now=NOW,
        job=job(),
        pod=pod(),
    )
    return replace(base, **fields)


def kind(action: decide.Action) -> tuple[Any, ...]:
    """The action's type and what decides it (phase and reason of an outcome, reads, attempt)."""
    match action:
        case Stop(outcome) | End(outcome):
            return (type(action).__name__, outcome.phase, outcome.reason)
        case Confirm(reads):
            return ("Confirm", *sorted(reads))
        case Start(attempt):
            return ("Start", attempt)
        case Update(patch):
            return ("Update", patch.get("phase"), patch.get("reason"))
        case Wait(until):
            return ("Wait", until is not None)
        case Invalid(message):
            return ("Invalid", message)
    raise AssertionError(action)


CASES: list[tuple[str, Observed, tuple[Any, ...]]] = [
    (
        "invalid spec",
        replace(observed(), spec=None, spec_error="spec.x: bad"),
        ("Invalid", "spec.x: bad"),
    ),
    ("new task starts attempt 1", observed(status={}), ("Start", 1)),
    ("queued task starts when admitted", observed(status={"phase": "Queued"}), ("Start", 1)),
    ("backoff not over: wait for it", observed(status=RETRYING), ("Wait", True)),
    (
        "backoff over: attempt 2",
        observed(status={**RETRYING, "nextAttemptTime": iso(1)}),
        ("Start", 2),
    ),
    (
        "fenced retry tries again",
        observed(status={**RETRYING, "reason": "Stopping", "nextAttemptTime": iso(9)}),
        ("Start", 2),
    ),
    (
        "a retry waiting for its namespace's policies tries again (not its old Job)",
        observed(status={**RETRYING, "reason": "NotIsolated", "nextAttemptTime": iso(9)}),
        ("Start", 2),
    ),
    (
        "a first attempt waiting for its namespace's policies tries again",
        observed(status={"phase": "Pending", "reason": "NotIsolated"}),
        ("Start", 1),
    ),
    (
        "cancel before any Job",
        observed({"cancel": True}, status={}),
        ("End", Phase.CANCELLED, Reason.CANCELLED),
    ),
    (
        "cancel during backoff",
        observed({"cancel": True}, status=RETRYING),
        ("End", Phase.CANCELLED, Reason.CANCELLED),
    ),
    # 5: a Stop whose delete failed is a Stop again, until its delete went through.
    (
        "#5 decided, delete failed: stop again",
        observed(decided=LOST),
        ("Stop", Phase.FAILED, Reason.LOST),
    ),
    (
        "decided and stopped: the attempt ends",
        observed(decided=LOST, stopped=True),
        ("End", Phase.FAILED, Reason.LOST),
    ),
    # 1: a Job missing from the cache is read afresh, never taken for gone.
    (
        "#1 Job not in view yet: wait",
        observed(job=None, pod=None, clocks=Clocks(job_missing=3)),
        ("Wait", True),
    ),
    (
        "#1 Job missing past the grace: GET it",
        observed(job=None, pod=None, clocks=Clocks(job_missing=11)),
        ("Confirm", JOB),
    ),
    (
        "#1 its pod seen, Job not: GET it",
        observed(job=None, pod_of_job_seen=True),
        ("Confirm", JOB),
    ),
    (
        "Job gone (GET): read pods and the report",
        observed(job=None, pod=None, fresh=frozenset({JOB}), redis=True),
        ("Confirm", PODS, REPORT),
    ),
    (
        "Job gone, no Redis: read pods",
        observed(job=None, pod=None, fresh=frozenset({JOB})),
        ("Confirm", PODS),
    ),
    (
        "Job gone, pod ended with a result",
        observed(job=None, pod=pod("terminated", message=result()), fresh=frozenset({JOB, PODS})),
        ("End", Phase.SUCCEEDED, Reason.COMPLETED),
    ),
    (
        "Job gone, the runner reported",
        observed(
            job=None,
            pod=None,
            fresh=frozenset({JOB, PODS, REPORT}),
            redis=True,
            report=Outcome(Phase.FAILED, Reason.NON_ZERO_EXIT, "exit 3", 3),
        ),
        ("End", Phase.FAILED, Reason.NON_ZERO_EXIT),
    ),
    (
        "warm runner announced its end: read its report",
        observed(pod=pod("running"), redis=True, runner_done=True),
        ("Confirm", REPORT),
    ),
    (
        "warm runner announced its end: its report ends the attempt (and its Job) at once",
        observed(
            pod=pod("running"),
            redis=True,
            runner_done=True,
            fresh=frozenset({REPORT}),
            report=Outcome(Phase.SUCCEEDED, Reason.COMPLETED, "the code exited 0", 0),
        ),
        ("Stop", Phase.SUCCEEDED, Reason.COMPLETED),
    ),
    (
        "warm runner announced its end, no report (expired): judged as any attempt",
        observed(pod=pod("running"), redis=True, runner_done=True, fresh=frozenset({REPORT})),
        ("Update", "Running", "Started"),
    ),
    (
        "Job gone, nothing known: Lost, its pod stopped",
        observed(job=None, fresh=frozenset({JOB, PODS})),
        ("Stop", Phase.FAILED, Reason.LOST),
    ),
    (
        "Job gone while cancelled",
        observed({"cancel": True}, job=None, pod=None, fresh=frozenset({JOB, PODS})),
        ("Stop", Phase.CANCELLED, Reason.CANCELLED),
    ),
    # The Job is the authority on the end; the pod carries the result.
    (
        "pod ended with a result",
        observed(pod=pod("terminated", message=result())),
        ("End", Phase.SUCCEEDED, Reason.COMPLETED),
    ),
    (
        "non-zero exit",
        observed(pod=pod("terminated", message=result("NonZeroExit", 3))),
        ("End", Phase.FAILED, Reason.NON_ZERO_EXIT),
    ),
    (
        "Job ended, pod's end not seen yet",
        observed(job=job(ended="Complete"), clocks=Clocks(job_ended=2)),
        ("Wait", True),
    ),
    (
        "Job ended long ago, pod not seen: read pods",
        observed(job=job(ended="Complete"), pod=None, clocks=Clocks(job_ended=11)),
        ("Confirm", PODS),
    ),
    (
        "Job ended, pods read, none",
        observed(
            job=job(ended="Complete"),
            pod=None,
            fresh=frozenset({PODS}),
            clocks=Clocks(job_ended=11),
        ),
        ("End", Phase.SUCCEEDED, Reason.COMPLETED),
    ),
    # 4: cancel never throws away a result that exists.
    (
        "#4 cancel after the code finished",
        observed({"cancel": True}, pod=pod("terminated", message=result())),
        ("End", Phase.SUCCEEDED, Reason.COMPLETED),
    ),
    (
        "#4 cancel after the Job completed",
        observed(
            {"cancel": True}, job=job(ended="Complete"), pod=pod("terminated", message=result())
        ),
        ("End", Phase.SUCCEEDED, Reason.COMPLETED),
    ),
    (
        "cancel while running",
        observed({"cancel": True}),
        ("Stop", Phase.CANCELLED, Reason.CANCELLED),
    ),
    # A deleted pod is judged from the Job read afresh (the Job watch can lag).
    ("pod deleted: GET the Job", observed(pod=pod(deleted=True)), ("Confirm", JOB)),
    (
        "pod deleted at the deadline",
        observed(job=job(age=301), pod=pod(deleted=True), fresh=frozenset({JOB})),
        ("End", Phase.TIMED_OUT, Reason.DEADLINE_EXCEEDED),
    ),
    (
        "pod deleted mid-run",
        observed(pod=pod(deleted=True), fresh=frozenset({JOB})),
        ("Stop", Phase.FAILED, Reason.TERMINATED),
    ),
    (
        "pod evicted mid-run (a drain, Kubernetes ≥ 1.26)",
        observed(pod=pod(deleted=True, disruption=True), fresh=frozenset({JOB})),
        ("Stop", Phase.FAILED, Reason.TERMINATED),
    ),
    # 2: a silent heartbeat stops the pod first; the retry is fenced (Start), never overlapping.
    (
        "#2 heartbeat silent, pod healthy: stop it",
        observed(heartbeat_silent=True),
        ("Stop", Phase.FAILED, Reason.LOST),
    ),
    (
        "#2 heartbeat silent, pod not ready",
        observed(heartbeat_silent=True, pod=pod(ready=False)),
        ("Stop", Phase.FAILED, Reason.LOST),
    ),
    ("running", observed(), ("Update", "Running", "Started")),
    (
        "already Running: nothing to write",
        observed(
            status={
                **SCHEDULED,
                "phase": "Running",
                "reason": "Started",
                "podName": f"{JOB_NAME}-abcde",
                "nodeName": "node-1",
                "startTime": iso(20),
                "message": "running on node-1",
                "lastHeartbeatTime": iso(20),
                "conditions": [
                    {
                        "type": "Running",
                        "status": "True",
                        "reason": "Started",
                        "message": f"pod {JOB_NAME}-abcde is running",
                        "lastTransitionTime": iso(20),
                        "observedGeneration": None,
                    }
                ],
            }
        ),
        ("Wait", False),
    ),
    (
        "node not ready 60 s: not a verdict",
        observed(pod=pod(ready=False), clocks=Clocks(unready=60)),
        ("Update", "Running", "Started"),
    ),
    (
        "node not ready 300 s: Lost",
        observed(pod=pod(ready=False), clocks=Clocks(unready=301)),
        ("Stop", Phase.FAILED, Reason.LOST),
    ),
    (
        "image cannot be pulled",
        observed(pod=pod("waiting", waiting="ErrImagePull")),
        ("Stop", Phase.FAILED, Reason.IMAGE_ERROR),
    ),
    (
        "missing Secret, within the grace",
        observed(
            pod=pod("waiting", waiting="CreateContainerConfigError"), clocks=Clocks(pending=5)
        ),
        ("Wait", False),
    ),
    (
        "missing Secret, past the grace",
        observed(
            pod=pod("waiting", waiting="CreateContainerConfigError"), clocks=Clocks(pending=21)
        ),
        ("Stop", Phase.FAILED, Reason.CONFIG_ERROR),
    ),
    (
        "unschedulable",
        observed(pod=pod("none", unschedulable=True)),
        ("Update", None, "Unschedulable"),
    ),
    # Never stranded: a pod the cluster refuses to create is said, and times out.
    ("no pod yet", observed(pod=None, clocks=Clocks(no_pod=3)), ("Wait", True)),
    (
        "no pod past the grace: read the Job's events",
        observed(pod=None, clocks=Clocks(no_pod=11)),
        ("Confirm", EVENTS),
    ),
    (
        "events read lately, nothing: wait",
        observed(pod=None, clocks=Clocks(no_pod=15, events_read=3)),
        ("Wait", False),
    ),
    (
        "the cluster refuses the pod",
        observed(
            pod=None, create_failure="exceeded quota", clocks=Clocks(no_pod=15, events_read=3)
        ),
        ("Update", None, "FailedCreate"),
    ),
    # A Job that never got a pod never starts Kubernetes' own deadline: the operator's runs.
    (
        "refused pod past the deadline: read pods",
        observed(job=job(age=303, started=False), pod=None, create_failure="exceeded quota"),
        ("Confirm", PODS),
    ),
    (
        "refused pod past the deadline: TimedOut",
        observed(
            job=job(age=303, started=False),
            pod=None,
            create_failure="exceeded quota",
            fresh=frozenset({PODS}),
        ),
        ("Stop", Phase.TIMED_OUT, Reason.DEADLINE_EXCEEDED),
    ),
    # A busy Job controller has not handled the Job yet (no refusal): its deadline will count from
    # when it does; the operator's waits UNSYNCED_GRACE longer.
    (
        "Job not handled yet at the deadline",
        observed(
            job=job(age=303, started=False), pod=None, clocks=Clocks(no_pod=303, events_read=1)
        ),
        ("Wait", False),
    ),
    (
        "Job not handled a minute past the deadline",
        observed(job=job(age=361, started=False), pod=None, fresh=frozenset({PODS})),
        ("Stop", Phase.TIMED_OUT, Reason.DEADLINE_EXCEEDED),
    ),
    (
        "pod never started a minute past the deadline",
        observed(job=job(age=361, started=False), pod=pod("waiting", waiting="ContainerCreating")),
        ("Stop", Phase.TIMED_OUT, Reason.DEADLINE_EXCEEDED),
    ),
    # The Job's own deadline deleted the pod; its Failed condition is on its way: not ours to stop.
    (
        "Job started, pod gone at its deadline",
        observed(job=job(age=303), pod=None, clocks=Clocks(no_pod=1)),
        ("Wait", True),
    ),
    (
        "Job started, pod gone at its deadline, pods read",
        observed(
            job=job(age=303),
            pod=None,
            fresh=frozenset({PODS}),
            clocks=Clocks(no_pod=11, events_read=1),
        ),
        ("Wait", False),
    ),
    # 6: a missed DELETED (watch re-list) cannot strand a task: past its deadline it is re-read.
    (
        "#6 past deadline, nothing changed: re-read",
        observed(job=job(age=340), clocks=Clocks(quiet=31)),
        ("Confirm", JOB, PODS),
    ),
    (
        "past deadline, events still coming",
        observed(job=job(age=340), clocks=Clocks(quiet=2)),
        ("Update", "Running", "Started"),
    ),
]


@pytest.mark.parametrize(("seen", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decide(seen: Observed, expected: tuple[Any, ...]) -> None:
    assert kind(decide.decide(seen)) == expected


def test_every_read_asked_for_is_one_not_yet_made() -> None:
    """A Confirm never repeats a read of the same pass: the executor's loop always ends."""
    for _, seen, _ in CASES:
        action = decide.decide(seen)
        while isinstance(action, Confirm):
            assert not action.reads & seen.fresh
            seen = replace(seen, fresh=seen.fresh | action.reads)
            action = decide.decide(seen)


@pytest.mark.parametrize(
    ("disruption", "says"),
    [
        (True, "(EvictionByEvictionAPI: Eviction API: evicting)"),
        (False, "(evicted, drained or deleted)"),
    ],
)
def test_a_pod_stopped_mid_run_names_why_when_the_cluster_says(disruption: bool, says: str) -> None:
    action = decide.decide(
        observed(pod=pod(deleted=True, disruption=disruption), fresh=frozenset({JOB}))
    )
    assert isinstance(action, Stop)
    assert action.outcome.message == f"pod {JOB_NAME}-abcde was stopped while it ran {says}"
