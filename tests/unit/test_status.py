"""The phase machine: (Job, pod, runner result) → attempt outcome and status patch."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from codetask_operator import heartbeats, status
from codetask_operator.api import CodeTaskStatus, ConditionStatus, ConditionType, Phase, Reason

pytestmark = pytest.mark.unit
NOW = datetime(2026, 11, 23, 12, 0, 5, tzinfo=UTC)


def result(reason: str = "Completed", exit_code: int | None = 0, **extra: Any) -> str:
    body = {
        "v": 1,
        "reason": reason,
        "exitCode": exit_code,
        "message": "",
        "stdout": "out\n",
        "stderr": "err\n",
        "truncated": {"stdout": False, "stderr": False},
        "startedAt": "2026-11-23T12:00:01.000000Z",
        "finishedAt": "2026-11-23T12:00:02.500000Z",
        "durationSeconds": 1.5,
    }
    return json.dumps(body | extra)


def pod(
    *,
    waiting: str | None = None,
    message: str | None = None,
    running: bool = False,
    terminated: dict[str, Any] | None = None,
    unschedulable: bool = False,
    node: str | None = "n1",
) -> dict[str, Any]:
    state: dict[str, Any] = {}
    if waiting:
        state["waiting"] = {"reason": waiting, "message": message or f"{waiting} details"}
    if running:
        state["running"] = {"startedAt": "2026-11-23T12:00:01Z"}
    if terminated is not None:
        state["terminated"] = {
            "startedAt": "2026-11-23T12:00:01Z",
            "finishedAt": "2026-11-23T12:00:03Z",
        } | terminated
    conditions = (
        [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/1 nodes are available: 1 Insufficient memory.",
            }
        ]
        if unschedulable
        else []
    )
    return {
        "metadata": {"name": "t-abc-1-xyz", "labels": {"job-name": "t-abc-1"}},
        "spec": {"nodeName": None if unschedulable else node},
        "status": {
            "conditions": conditions,
            "containerStatuses": [{"name": "runner", "state": state}] if state else [],
        },
    }


def job(condition: str | None = None, reason: str = "") -> dict[str, Any]:
    conditions = (
        [{"type": condition, "status": "True", "reason": reason, "message": "m"}]
        if condition
        else []
    )
    return {"metadata": {"name": "t-abc-1"}, "status": {"conditions": conditions}}


def view(p: dict[str, Any]) -> status.PodView:
    return status.PodView.of(p)


@pytest.mark.parametrize(
    ("job_body", "pod_body", "custom", "expected"),
    [
        # A definite runner result settles the attempt without waiting for the Job.
        (
            job(),
            pod(terminated={"exitCode": 0, "message": result()}),
            False,
            (Phase.SUCCEEDED, Reason.COMPLETED, 0),
        ),
        (
            job(),
            pod(terminated={"exitCode": 3, "message": result("NonZeroExit", 3)}),
            False,
            (Phase.FAILED, Reason.NON_ZERO_EXIT, 3),
        ),
        (
            job(),
            pod(terminated={"exitCode": 124, "message": result("DeadlineExceeded", 124)}),
            False,
            (Phase.TIMED_OUT, Reason.DEADLINE_EXCEEDED, 124),
        ),
        (
            job(),
            pod(terminated={"exitCode": 137, "message": result("OOMKilled", 137)}),
            False,
            (Phase.FAILED, Reason.OOM_KILLED, 137),
        ),
        (
            job(),
            pod(terminated={"exitCode": 127, "message": result("StartError", 127)}),
            False,
            (Phase.FAILED, Reason.START_ERROR, 127),
        ),
        # A runner stopped by SIGTERM waits for the Job to say why.
        (
            job(),
            pod(terminated={"exitCode": 143, "message": result("Terminated", 143)}),
            False,
            None,
        ),
        (
            job("Failed", "DeadlineExceeded"),
            pod(terminated={"exitCode": 143, "message": result("Terminated", 143)}),
            False,
            (Phase.TIMED_OUT, Reason.DEADLINE_EXCEEDED, 143),
        ),
        (
            job("Failed", "BackoffLimitExceeded"),
            pod(terminated={"exitCode": 143, "message": result("Terminated", 143)}),
            False,
            (Phase.FAILED, Reason.TERMINATED, 143),
        ),
        # Job deadline with the pod already gone.
        (
            job("Failed", "DeadlineExceeded"),
            None,
            False,
            (Phase.TIMED_OUT, Reason.DEADLINE_EXCEEDED, None),
        ),
        # No runner result: the container's own state.
        (
            job("Failed", "BackoffLimitExceeded"),
            pod(terminated={"exitCode": 137, "reason": "OOMKilled"}),
            False,
            (Phase.FAILED, Reason.OOM_KILLED, 137),
        ),
        (
            job("Failed", "BackoffLimitExceeded"),
            pod(terminated={"exitCode": 1, "reason": "Error", "message": "Traceback"}),
            False,
            (Phase.FAILED, Reason.RUNNER_ERROR, 1),
        ),
        (
            job("Complete"),
            pod(terminated={"exitCode": 0, "reason": "Completed"}),
            True,
            (Phase.SUCCEEDED, Reason.COMPLETED, 0),
        ),
        (
            job("Failed", "BackoffLimitExceeded"),
            pod(terminated={"exitCode": 2, "reason": "Error"}),
            True,
            (Phase.FAILED, Reason.NON_ZERO_EXIT, 2),
        ),
        # An ended Job whose pod is not (yet) known waits; once settled, the pod is gone.
        (
            job("Failed", "BackoffLimitExceeded"),
            None,
            False,
            None,
        ),
        # Not over yet.
        (job(), pod(running=True), False, None),
        (None, None, False, None),
    ],
)
def test_attempt_outcome(
    job_body: dict[str, Any] | None,
    pod_body: dict[str, Any] | None,
    custom: bool,
    expected: tuple[Phase, Reason, int | None] | None,
) -> None:
    outcome = status.attempt_outcome(
        job_body, view(pod_body) if pod_body else None, custom_image=custom
    )
    got = (outcome.phase, outcome.reason, outcome.exit_code) if outcome else None
    assert got == expected


DOWN = (
    'Failed to inspect image "codetask-runner:dev": rpc error: code = Unavailable desc = connection'
    ' error: desc = "transport: Error while dialing dial unix /run/containerd/containerd.sock"'
)
"""What the kubelet reports while containerd restarts (seen in the chaos test)."""


@pytest.mark.parametrize(
    ("pod_body", "pending_for", "expected"),
    [
        (pod(waiting="ErrImageNeverPull"), 0, Reason.IMAGE_ERROR),
        (pod(waiting="ImagePullBackOff"), 0, Reason.IMAGE_ERROR),
        (pod(waiting="ImageInspectError"), 1, None),
        (pod(waiting="ImageInspectError"), 30, Reason.IMAGE_ERROR),
        (pod(waiting="ImageInspectError", message=DOWN), 300, None),
        (pod(waiting="CreateContainerError", message=DOWN), 300, None),
        (pod(waiting="CreateContainerConfigError"), 1, None),
        (pod(waiting="CreateContainerConfigError"), 30, Reason.CONFIG_ERROR),
        (pod(waiting="RunContainerError"), 30, Reason.START_ERROR),
        (pod(unschedulable=True), 1, None),
        (pod(unschedulable=True), 300, None),
        (pod(waiting="ContainerCreating"), 300, None),
    ],
)
def test_early_failure_waits_out_the_grace_except_for_image_errors_and_a_runtime_down(
    pod_body: dict[str, Any], pending_for: float, expected: Reason | None
) -> None:
    outcome = status.early_failure(view(pod_body), pending_for, grace_seconds=20)
    assert (outcome.reason if outcome else None) == expected


def ctx(limit: int = 16384) -> status.Context:
    return status.Context(generation=1, attempt=1, output_limit=limit, custom_image=False, now=NOW)


def test_final_patch_carries_the_result_and_validates_against_the_api() -> None:
    p = view(pod(terminated={"exitCode": 3, "message": result("NonZeroExit", 3)}))
    outcome = status.attempt_outcome(job(), p, custom_image=False)
    assert outcome is not None
    patch = status.final_patch({}, outcome, p, ctx())
    assert patch["phase"] == "Failed" and patch["exitCode"] == 3
    assert (patch["stdout"], patch["stderr"]) == ("out\n", "err\n")
    assert patch["durationSeconds"] == 1.5
    assert patch["startTime"] == "2026-11-23T12:00:01.000000Z"
    assert patch["completionTime"] == "2026-11-23T12:00:02.500000Z"
    conditions = {c["type"]: (c["status"], c["reason"]) for c in patch["conditions"]}
    assert conditions == {
        "Running": ("False", "NonZeroExit"),
        "Finished": ("True", "NonZeroExit"),
        "Succeeded": ("False", "NonZeroExit"),
    }
    CodeTaskStatus.model_validate(patch)


def test_final_patch_cuts_output_to_the_limit_and_says_so() -> None:
    p = view(pod(terminated={"exitCode": 0, "message": result(stdout="x" * 100 + "END")}))
    outcome = status.attempt_outcome(job(), p, custom_image=False)
    assert outcome is not None
    patch = status.final_patch({}, outcome, p, ctx(limit=10))
    assert patch["stdout"] == "xxxxxxxEND"
    assert patch["truncated"] == {"stdout": True, "stderr": False}


def test_running_patch_reports_pod_node_and_start_then_changes_nothing_twice() -> None:
    p = view(pod(running=True))
    patch = status.running_patch({}, p, ctx())
    assert (patch["phase"], patch["reason"], patch["podName"], patch["nodeName"]) == (
        "Running",
        "Started",
        "t-abc-1-xyz",
        "n1",
    )
    assert patch["startTime"] == "2026-11-23T12:00:01Z"
    assert status.running_patch(patch, p, ctx()) == {}


def test_an_attempt_bound_to_a_running_warm_pod_started_at_its_binding() -> None:
    p = view(pod(running=True))  # its container started 2026-11-23T12:00:01Z
    bound = {"startTime": "2026-11-23T12:30:00.250Z"}
    assert "startTime" not in status.running_patch(bound, p, ctx())  # kept
    earlier = {"startTime": "2026-11-23T11:00:00Z"}  # a cold attempt's pod started after
    assert status.running_patch(earlier, p, ctx())["startTime"] == "2026-11-23T12:00:01Z"


@pytest.mark.parametrize("waiting", ["ContainerCreating", "PodInitializing", None])
def test_a_schedulable_pending_pod_writes_nothing(waiting: str | None) -> None:
    created = {"phase": "Pending", "reason": "Scheduled", "message": "Job t-abc-1 created"}
    assert status.running_patch(created, view(pod(waiting=waiting)), ctx()) == {}


def test_set_condition_moves_transition_time_only_on_status_change() -> None:
    first = status.set_condition(
        [], ConditionType.RUNNING, ConditionStatus.TRUE, Reason.STARTED, "a", NOW, 1
    )
    later = datetime(2026, 11, 23, 13, 0, tzinfo=UTC)
    same = status.set_condition(
        first, ConditionType.RUNNING, ConditionStatus.TRUE, Reason.STARTED, "b", later, 2
    )
    assert same[0]["lastTransitionTime"] == first[0]["lastTransitionTime"]
    assert (same[0]["message"], same[0]["observedGeneration"]) == ("b", 2)
    flipped = status.set_condition(
        same, ConditionType.RUNNING, ConditionStatus.FALSE, Reason.COMPLETED, "c", later, 2
    )
    assert flipped[0]["lastTransitionTime"] == "2026-11-23T13:00:00.000Z"
    assert len(flipped) == 1


AGENT_REPORT = {
    "model": "claude-sonnet-4-5",
    "sessionId": "1e0536b3-a04a-44cf-bf74-cedf84673cd0",
    "turns": 2,
    "toolCalls": 1,
    "deniedToolCalls": 1,
    "deniedTools": ["Bash"],
    "usage": {"inputTokens": 84, "outputTokens": 14, "cacheReadInputTokens": 0},
    "costUsd": 0.000616,
}


@pytest.mark.parametrize(
    ("reason", "code", "expected"),
    [
        ("Completed", 0, (Phase.SUCCEEDED, Reason.COMPLETED)),
        ("MaxTurns", 1, (Phase.FAILED, Reason.MAX_TURNS)),
        ("AgentError", 1, (Phase.FAILED, Reason.AGENT_ERROR)),
        ("DeadlineExceeded", 124, (Phase.TIMED_OUT, Reason.DEADLINE_EXCEEDED)),
    ],
)
def test_agent_results_end_the_attempt_with_their_reason_and_report(
    reason: str, code: int, expected: tuple[Phase, Reason]
) -> None:
    message = result(reason, code, message="" if code == 0 else "why", agent=AGENT_REPORT)
    p = view(pod(terminated={"exitCode": code, "message": message}))
    outcome = status.attempt_outcome(job(), p, custom_image=False)
    assert outcome is not None
    assert (outcome.phase, outcome.reason) == expected
    patch = status.final_patch({}, outcome, p, ctx())
    assert patch["agent"] == AGENT_REPORT
    CodeTaskStatus.model_validate(patch)


def test_agent_report_fields_of_the_wrong_shape_are_dropped() -> None:
    raw = {**AGENT_REPORT, "turns": -1, "costUsd": "free", "deniedTools": "Bash", "extra": 1}
    parsed = status.parse_result(result(agent=raw))
    assert parsed is not None and parsed.agent is not None
    assert set(parsed.agent) == set(AGENT_REPORT) - {"turns", "costUsd", "deniedTools"}
    assert status.parse_result(result(agent="nonsense")).agent is None  # type: ignore[union-attr]


def test_code_results_leave_status_agent_alone_and_a_new_outcome_clears_it() -> None:
    p = view(pod(terminated={"exitCode": 0, "message": result()}))
    outcome = status.attempt_outcome(job(), p, custom_image=False)
    assert outcome is not None
    assert "agent" not in status.final_patch({}, outcome, p, ctx())
    lost = status.Outcome(Phase.FAILED, Reason.LOST, "gone")
    assert status.final_patch({"agent": AGENT_REPORT}, lost, None, ctx())["agent"] is None


@pytest.mark.parametrize(
    "message",
    [None, "", "Traceback (most recent call last)", "{not json", '{"v": 2}', "[1, 2]", '{"v": 1}'],
)
def test_parse_result_rejects_what_is_not_a_runner_result(message: str | None) -> None:
    assert status.parse_result(message) is None


@given(st.text(), st.integers(min_value=0, max_value=64))
def test_tail_never_exceeds_the_limit_and_keeps_the_end(text: str, limit: int) -> None:
    tail, cut = status._tail(text, limit)
    assert len(tail.encode()) <= limit
    assert text.endswith(tail)
    assert cut == (len(text.encode()) > limit)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            '{"percent": 40, "stage": "dl", "message": "3/7", "time": "t"}',
            {"percent": 40.0, "stage": "dl", "message": "3/7", "time": "t"},
        ),
        ('{"percent": 250}', {"percent": 100.0}),
        ('{"percent": true, "stage": 5}', None),
        ('{"stage": "' + "s" * 300 + '"}', {"stage": "s" * 256}),
        ("not json", None),
        ("[1]", None),
        (None, None),
    ],
)
def test_progress_from_redis_is_bounded_and_typed(
    raw: str | None, expected: dict[str, Any] | None
) -> None:
    assert heartbeats.parse_progress(raw) == expected


def test_evicted_pod_names_the_eviction() -> None:
    evicted = pod(terminated={"exitCode": 143, "message": result("Terminated", 143)})
    evicted["status"] |= {
        "phase": "Failed",
        "reason": "Evicted",
        "message": "Pod ephemeral local storage usage exceeds the total limit",
    }
    outcome = status.attempt_outcome(
        job("Failed", "BackoffLimitExceeded"), view(evicted), custom_image=False
    )
    assert outcome is not None
    assert (outcome.phase, outcome.reason) == (Phase.FAILED, Reason.TERMINATED)
    assert "evicted: Pod ephemeral local storage" in outcome.message


def test_slim_keeps_what_the_phase_machine_reads_and_drops_the_template() -> None:
    body = pod(running=True)
    body["metadata"]["annotations"] = {"codetask.dev/code": "x" * 100_000}
    body["spec"]["containers"] = [{"name": "runner"}]
    slim = status.slim(body)
    assert "annotations" not in slim["metadata"] and "containers" not in slim["spec"]
    assert status.PodView.of(slim) == status.PodView.of(body)


def test_ended_job_waits_for_its_pods_final_state_until_settled() -> None:
    still_running = view(pod(running=True))
    complete = job("Complete")
    assert status.attempt_outcome(complete, still_running, custom_image=False) is None
    settled = status.attempt_outcome(complete, still_running, custom_image=False, settle=True)
    assert settled is not None and settled.phase is Phase.SUCCEEDED


def test_ended_job_without_a_pod_is_lost_once_settled() -> None:
    ended = job("Failed", "BackoffLimitExceeded")
    outcome = status.attempt_outcome(ended, None, custom_image=False, settle=True)
    assert outcome is not None and (outcome.phase, outcome.reason) == (Phase.FAILED, Reason.LOST)


@pytest.mark.parametrize(
    ("ready", "unready_for", "ttl", "lost"),
    [
        ("False", 300, 30, True),
        ("False", 299, 30, False),  # a kubelet stopped for minutes: its containers still run
        ("False", 40, 30, False),  # past the heartbeat TTL is not enough
        ("False", 5, 30, False),
        ("False", 400, 600, False),  # a heartbeat TTL longer than NODE_LOST_SECONDS counts
        ("False", 600, 600, True),
        ("True", 400, 30, False),
        (None, 400, 30, False),
    ],
)
def test_running_pod_not_ready_is_lost_only_after_kubernetes_gives_up_on_its_node(
    ready: str | None, unready_for: float, ttl: float, lost: bool
) -> None:
    body = pod(running=True)
    if ready is not None:
        body["status"]["conditions"].append({"type": "Ready", "status": ready})
    outcome = status.node_lost(view(body), unready_for, ttl_seconds=ttl)
    assert (outcome is not None and outcome.reason is Reason.LOST) == lost


@pytest.mark.parametrize(("elapsed", "passed"), [(10, True), (9.2, True), (5, False)])
def test_deadline_passed_tells_a_deadline_kill_from_a_lost_pod(
    elapsed: float, passed: bool
) -> None:
    started = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
    body = {"spec": {"activeDeadlineSeconds": 10}, "status": {"startTime": "2026-11-23T12:00:00Z"}}
    now = started + timedelta(seconds=elapsed)
    assert status.deadline_passed(status.slim(body | {"metadata": {}}), now) is passed
    assert status.deadline_passed(None, now) is False


def test_unschedulable_pod_keeps_the_task_pending_with_the_schedulers_message() -> None:
    created = {"phase": "Pending", "reason": "Scheduled", "message": "Job t-abc-1 created"}
    patch = status.running_patch(created, view(pod(unschedulable=True)), ctx())
    assert (patch["reason"], patch["message"]) == (
        "Unschedulable",
        "0/1 nodes are available: 1 Insufficient memory.",
    )
    waiting = {**created, **patch}
    scheduled = status.running_patch(waiting, view(pod(waiting="ContainerCreating")), ctx())
    assert (scheduled["reason"], scheduled["message"]) == ("Scheduled", "scheduled on n1")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (result(), (Phase.SUCCEEDED, Reason.COMPLETED, 0)),
        (result("NonZeroExit", 3), (Phase.FAILED, Reason.NON_ZERO_EXIT, 3)),
        (None, None),  # no result in Redis
        ("not json", None),
    ],
)
def test_reported_outcome(raw: str | None, expected: tuple[Phase, Reason, int] | None) -> None:
    outcome = status.reported_outcome(raw)
    if expected is None:
        assert outcome is None
    else:
        assert outcome is not None
        assert (outcome.phase, outcome.reason, outcome.exit_code) == expected
        assert outcome.result is not None and outcome.result.stdout == "out\n"
