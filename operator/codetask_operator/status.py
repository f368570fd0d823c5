"""Pure: what the cluster shows of a task's attempt (Job, pod, runner result) → the task's status.

This is the phase machine. The Job is the authority on when an attempt ends; the pod supplies the
detail (node, start, exit code, the runner's result) and the early failures a Job never reports on
its own (image errors, unschedulable pods, missing Secrets).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from pydantic import ValidationError

from codetask_operator.api import (
    FINAL_PHASES,
    AgentReport,
    ConditionStatus,
    ConditionType,
    Phase,
    Reason,
)

Obj = Mapping[str, Any]

IMAGE_ERRORS: Final = frozenset(
    {"ErrImageNeverPull", "ImagePullBackOff", "ErrImagePull", "InvalidImageName"}
)
ERRORS_AFTER_GRACE: Final = {
    "CreateContainerConfigError": Reason.CONFIG_ERROR,
    "CreateContainerError": Reason.START_ERROR,
    "RunContainerError": Reason.START_ERROR,
    # The runtime could not look at an image it has: a node fault more often than a bad image.
    "ImageInspectError": Reason.IMAGE_ERROR,
}
"""Waiting reasons that fail a task once the pod has been pending for the grace period."""
RUNTIME_UNAVAILABLE: Final = "code = Unavailable"
"""How the kubelet's call to the container runtime fails while the runtime is down (gRPC status)."""


def iso(t: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and a Z (ordering of admissions needs sub-seconds)."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_time(value: str | None) -> datetime | None:
    """A Kubernetes timestamp (or the runner's, with fractions) as an aware datetime."""
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True)
class RunnerResult:
    """The runner's result JSON (docs/runner-contract.md)."""

    reason: str
    exit_code: int | None
    message: str
    stdout: str
    stderr: str
    truncated_stdout: bool
    truncated_stderr: bool
    started_at: str | None
    finished_at: str | None
    duration_seconds: float | None
    agent: dict[str, Any] | None = None
    """Agent tasks: the runner's agent report, as status.agent (validated, camelCase)."""


def _agent_report(raw: object) -> dict[str, Any] | None:
    """The runner's `agent` object as `status.agent`; None when absent or not an object.

    Fields of the wrong type or out of bounds are dropped rather than failing the result.
    """
    if not isinstance(raw, dict):
        return None
    fields: dict[str, Any] = {}
    for name, field in AgentReport.model_fields.items():
        alias = field.alias or name
        if alias not in raw or raw[alias] is None:
            continue
        try:
            value = AgentReport.model_validate({alias: raw[alias]})
        except ValidationError:
            continue
        fields[alias] = value.model_dump(mode="json", exclude_none=True)[alias]
    return fields


def parse_result(message: str | None) -> RunnerResult | None:
    """The runner's result from a termination message; None when it is absent or not ours."""
    if not message or not message.startswith("{"):
        return None
    try:
        raw = json.loads(message)
    except ValueError:
        return None
    if not isinstance(raw, dict) or raw.get("v") != 1 or not isinstance(raw.get("reason"), str):
        return None
    truncated = raw.get("truncated") or {}
    return RunnerResult(
        reason=raw["reason"],
        exit_code=raw.get("exitCode"),
        message=str(raw.get("message") or ""),
        stdout=str(raw.get("stdout") or ""),
        stderr=str(raw.get("stderr") or ""),
        truncated_stdout=bool(truncated.get("stdout")),
        truncated_stderr=bool(truncated.get("stderr")),
        started_at=raw.get("startedAt"),
        finished_at=raw.get("finishedAt"),
        duration_seconds=raw.get("durationSeconds"),
        agent=_agent_report(raw.get("agent")),
    )


@dataclass(frozen=True)
class PodView:
    """The parts of a task pod that decide the task's status."""

    name: str
    node: str | None
    deleted: bool
    unschedulable: str | None
    waiting_reason: str | None
    waiting_message: str
    started_at: str | None
    terminated: Obj | None
    evicted: str | None = None
    """The kubelet's message when it evicted the pod (e.g. over its ephemeral-storage limit)."""
    ready: bool | None = None
    """The Ready condition; the node controller sets it False when the node stops reporting."""
    phase: str = "Pending"
    """The pod's phase: Succeeded or Failed once every container has stopped (kubelet)."""
    disruption: str | None = None
    """Why the cluster is stopping the pod (its DisruptionTarget condition, Kubernetes ≥ 1.26):
    `EvictionByEvictionAPI` (a drain), `PreemptionByScheduler`, `DeletionByTaintManager`, …"""

    @classmethod
    def of(cls, pod: Obj) -> PodView:
        status = pod.get("status") or {}
        scheduled: Obj = next(
            (c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), {}
        )
        unschedulable = (
            scheduled.get("message") or "Unschedulable"
            if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable"
            else None
        )
        container: Obj = next(iter(status.get("containerStatuses") or []), {})
        state = container.get("state") or {}
        waiting = state.get("waiting") or {}
        running = state.get("running") or {}
        terminated = state.get("terminated")
        return cls(
            name=pod["metadata"]["name"],
            node=(pod.get("spec") or {}).get("nodeName"),
            deleted=bool(pod["metadata"].get("deletionTimestamp")),
            unschedulable=unschedulable,
            waiting_reason=waiting.get("reason"),
            waiting_message=waiting.get("message") or "",
            started_at=running.get("startedAt") or (terminated or {}).get("startedAt"),
            terminated=terminated,
            ready=next(
                (
                    c.get("status") == "True"
                    for c in status.get("conditions") or []
                    if c.get("type") == "Ready"
                ),
                None,
            ),
            evicted=(status.get("message") or "evicted")
            if status.get("reason") == "Evicted"
            else None,
            phase=status.get("phase") or "Pending",
            disruption=_disruption(status),
        )

    @property
    def stopped(self) -> bool:
        """The kubelet reported every container stopped: nothing of the attempt runs here."""
        return self.phase in ("Succeeded", "Failed")


def _disruption(status: Obj) -> str | None:
    target: Obj = next(
        (
            c
            for c in status.get("conditions") or []
            if c.get("type") == "DisruptionTarget" and c.get("status") == "True"
        ),
        {},
    )
    if not target:
        return None
    reason, message = target.get("reason") or "DisruptionTarget", target.get("message")
    return f"{reason}: {message}" if message else str(reason)


def controller_uid(body: Obj) -> str | None:
    """The uid of the object's controller (its ownerReference with controller: true), if any."""
    refs = (body.get("metadata") or {}).get("ownerReferences") or []
    return next((r.get("uid") for r in refs if r.get("controller")), None)


def slim(body: Obj) -> dict[str, Any]:
    """The parts of a Job or pod the phase machine reads (not the pod template with the code), and
    what identifies it: namespace, uid and its controller's uid (ownership, never labels)."""
    meta = body.get("metadata") or {}
    return {
        "metadata": {
            **{
                key: meta[key]
                for key in (
                    "name",
                    "namespace",
                    "uid",
                    "labels",
                    "creationTimestamp",
                    "deletionTimestamp",
                )
                if key in meta
            },
            "controller": controller_uid(body),
        },
        "spec": {
            key: (body.get("spec") or {}).get(key) for key in ("nodeName", "activeDeadlineSeconds")
        },
        "status": body.get("status") or {},
    }


def deadline_passed(job: Obj | None, now: datetime) -> bool:
    """Whether the Job's activeDeadlineSeconds has run out (its controller then deletes the pod,
    possibly before its Failed condition is seen)."""
    deadline = ((job or {}).get("spec") or {}).get("activeDeadlineSeconds")
    started = parse_time(((job or {}).get("status") or {}).get("startTime"))
    if deadline is None or started is None:
        return False
    return (now - started).total_seconds() >= float(deadline) - 1


def job_finished(job: Obj | None) -> tuple[str, str, str] | None:
    """(Complete|Failed, reason, message) once the Job has ended, else None."""
    for c in (job or {}).get("status", {}).get("conditions") or []:
        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
            return c["type"], c.get("reason") or "", c.get("message") or ""
    return None


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended."""

    phase: Phase
    reason: Reason
    message: str
    exit_code: int | None = None
    result: RunnerResult | None = None
    log_tail: str | None = None


_RESULT_REASONS: Final = {
    "Completed": (Phase.SUCCEEDED, Reason.COMPLETED),
    "NonZeroExit": (Phase.FAILED, Reason.NON_ZERO_EXIT),
    "DeadlineExceeded": (Phase.TIMED_OUT, Reason.DEADLINE_EXCEEDED),
    "StartError": (Phase.FAILED, Reason.START_ERROR),
    "OOMKilled": (Phase.FAILED, Reason.OOM_KILLED),
    "Terminated": (Phase.FAILED, Reason.TERMINATED),
    "MaxTurns": (Phase.FAILED, Reason.MAX_TURNS),
    "AgentError": (Phase.FAILED, Reason.AGENT_ERROR),
    "AgentUnavailable": (Phase.FAILED, Reason.AGENT_UNAVAILABLE),
}


def _outcome_of_result(result: RunnerResult) -> Outcome:
    phase, reason = _RESULT_REASONS.get(result.reason, (Phase.FAILED, Reason.RUNNER_ERROR))
    message = result.message or {
        Reason.COMPLETED: "the code exited 0",
        Reason.NON_ZERO_EXIT: f"the code exited {result.exit_code}",
        Reason.DEADLINE_EXCEEDED: "the code ran past timeoutSeconds and was stopped",
        Reason.OOM_KILLED: "the code exceeded the memory limit and was killed",
    }.get(reason, result.reason)
    return Outcome(phase, reason, message, result.exit_code, result)


def reported_outcome(raw: str | None) -> Outcome | None:
    """The outcome the runner reported through Redis (`raw` result JSON, read under the attempt's
    own key prefix: only that attempt's runner may write it)."""
    result = parse_result(raw)
    return _outcome_of_result(result) if result is not None else None


def _outcome_of_container(terminated: Obj, custom_image: bool) -> Outcome:
    """An ended container without a runner result: OOMKilled, custom images, a crashed runner."""
    code = terminated.get("exitCode")
    log_tail = terminated.get("message")
    if terminated.get("reason") == "OOMKilled":
        return Outcome(
            Phase.FAILED,
            Reason.OOM_KILLED,
            "the container exceeded its memory limit and was killed",
            code,
            None,
            log_tail,
        )
    if custom_image:
        if code == 0:
            return Outcome(
                Phase.SUCCEEDED, Reason.COMPLETED, "the command exited 0", 0, None, log_tail
            )
        return Outcome(
            Phase.FAILED, Reason.NON_ZERO_EXIT, f"the command exited {code}", code, None, log_tail
        )
    return Outcome(
        Phase.FAILED,
        Reason.RUNNER_ERROR,
        f"the runner ended (exit {code}, {terminated.get('reason')}) without a result",
        code,
        None,
        log_tail,
    )


def attempt_outcome(
    job: Obj | None,
    pod: PodView | None,
    *,
    custom_image: bool,
    settle: bool = False,
) -> Outcome | None:
    """How the attempt ended, or None while it has not.

    A pod that ended with a definite runner result settles the attempt at once. A runner stopped by
    SIGTERM (Job deadline, cancellation, eviction) waits for the Job, whose condition says why. A
    Job that ended while its pod's final state has not been seen yet (the two watches are separate
    streams) waits for the pod, unless `settle` says it waited long enough.
    """
    terminated = pod.terminated if pod else None
    result = parse_result(terminated.get("message")) if terminated else None
    if result and result.reason != "Terminated":
        return _outcome_of_result(result)
    finished = job_finished(job)
    if finished is None:
        return None
    kind, job_reason, job_message = finished
    if kind == "Failed" and job_reason == "DeadlineExceeded":
        return Outcome(
            Phase.TIMED_OUT,
            Reason.DEADLINE_EXCEEDED,
            "the attempt ran past timeoutSeconds and was stopped",
            result.exit_code if result else None,
            result,
        )
    if (pod is None or pod.terminated is None) and not (pod and pod.evicted) and not settle:
        return None
    if pod and pod.evicted:
        code = result.exit_code if result else (terminated or {}).get("exitCode")
        message = f"the pod was evicted: {pod.evicted}"
        return Outcome(Phase.FAILED, Reason.TERMINATED, message, code, result)
    if result:
        return _outcome_of_result(result)
    if terminated:
        return _outcome_of_container(terminated, custom_image)
    if kind == "Complete":
        return Outcome(Phase.SUCCEEDED, Reason.COMPLETED, "the Job completed", 0)
    return Outcome(
        Phase.FAILED,
        Reason.LOST,
        f"the Job failed ({job_reason}: {job_message}) and its pod is gone",
    )


def early_failure(pod: PodView, pending_for: float, grace_seconds: float) -> Outcome | None:
    """Failures visible on a pod that has not run: they would otherwise wait for timeoutSeconds.

    Neither is an unschedulable pod (a full cluster frees up: the task stays Pending with reason
    Unschedulable) nor one whose node's container runtime is down or restarting (it comes back);
    the attempt's deadline still runs for both."""
    if RUNTIME_UNAVAILABLE in pod.waiting_message:
        return None
    if pod.waiting_reason is None:
        return None
    message = f"{pod.waiting_reason}: {pod.waiting_message}".rstrip(": ")
    if pod.waiting_reason in IMAGE_ERRORS:
        return Outcome(Phase.FAILED, Reason.IMAGE_ERROR, message)
    reason = ERRORS_AFTER_GRACE.get(pod.waiting_reason)
    if reason is None or pending_for < grace_seconds:
        return None
    return Outcome(Phase.FAILED, reason, message)


NODE_LOST_SECONDS = 300.0
"""How long a running pod may stay not Ready (its node not reporting) before it is Lost: Kubernetes'
own default for giving up on such a pod (tolerationSeconds of node.kubernetes.io/unreachable)."""


def node_lost(pod: PodView, unready_for: float, ttl_seconds: float) -> Outcome | None:
    """A pod whose container was last seen running but which is not Ready: its node stopped
    reporting (the node controller marks such pods not ready). That alone does not say the code
    stopped: a stopped or cut-off kubelet leaves its containers running, and ending the attempt
    then could run the code twice. So it is Lost only after NODE_LOST_SECONDS (or the heartbeat TTL
    if longer); a dead runner is found sooner by its heartbeats, when Redis is configured."""
    if pod.terminated is not None or pod.started_at is None or pod.ready is not False:
        return None
    if unready_for < max(ttl_seconds, NODE_LOST_SECONDS):
        return None
    return Outcome(
        Phase.FAILED,
        Reason.LOST,
        f"pod {pod.name} on node {pod.node} not ready for {unready_for:.0f}s while running "
        "(node not ready?)",
    )


def set_condition(
    conditions: Sequence[Obj],
    type_: ConditionType,
    status: ConditionStatus,
    reason: Reason,
    message: str,
    now: datetime,
    generation: int | None,
) -> list[dict[str, Any]]:
    """`conditions` with one condition set; lastTransitionTime moves only when status changes."""
    out = [dict(c) for c in conditions]
    old = next((c for c in out if c.get("type") == type_), None)
    new = {
        "type": str(type_),
        "status": str(status),
        "reason": str(reason),
        "message": message,
        "lastTransitionTime": (
            old["lastTransitionTime"] if old and old.get("status") == status else iso(now)
        ),
        "observedGeneration": generation,
    }
    if old is None:
        out.append(new)
    else:
        out[out.index(old)] = new
    return out


def changed(current: Obj, patch: dict[str, Any]) -> dict[str, Any]:
    """The keys of `patch` whose values differ from `current`."""
    return {k: v for k, v in patch.items() if current.get(k) != v}


@dataclass(frozen=True)
class Context:
    """What the phase machine needs to know about the task itself."""

    generation: int | None
    attempt: int
    output_limit: int
    custom_image: bool
    now: datetime


def running_patch(current: Obj, pod: PodView, ctx: Context) -> dict[str, Any]:
    """Status of an attempt whose pod exists and has not ended (an ended pod changes nothing).

    A pending pod changes status only when it cannot be scheduled (or no longer so): its name and
    node go with the Running or final write, one API write fewer per task.
    """
    if pod.terminated is not None:
        return {}
    patch: dict[str, Any]
    if pod.started_at is None:
        if pod.unschedulable:
            patch = {
                "reason": str(Reason.UNSCHEDULABLE),
                "message": pod.unschedulable,
                "podName": pod.name,
            }
        elif current.get("reason") in (Reason.UNSCHEDULABLE, Reason.FAILED_CREATE):
            patch = {"reason": str(Reason.SCHEDULED), "message": f"scheduled on {pod.node}"}
        else:
            return {}
        return changed(current, patch)
    conditions = set_condition(
        current.get("conditions") or [],
        ConditionType.RUNNING,
        ConditionStatus.TRUE,
        Reason.STARTED,
        f"pod {pod.name} is running",
        ctx.now,
        ctx.generation,
    )
    # A warm pod ran before its attempt was bound to it: the attempt started at the binding.
    started = pod.started_at
    bound = parse_time(current.get("startTime"))
    if bound is not None and (parse_time(started) or bound) < bound:
        started = current["startTime"]
    patch = {
        "phase": str(Phase.RUNNING),
        "reason": str(Reason.STARTED),
        "message": f"running on {pod.node}",
        "podName": pod.name,
        "nodeName": pod.node,
        "startTime": started,
        "conditions": conditions,
    }
    if current.get("lastHeartbeatTime") is None:
        # Until a runner heartbeat (Redis) says more: the kubelet reports the container running.
        patch["lastHeartbeatTime"] = started
    return changed(current, patch)


def _tail(text: str, limit: int) -> tuple[str, bool]:
    """The last `limit` bytes of `text` (whole characters), and whether anything was cut."""
    data = text.encode()
    if len(data) <= limit:
        return text, False
    return data[len(data) - limit :].decode(errors="ignore"), True


def final_patch(
    current: Obj, outcome: Outcome, pod: PodView | None, ctx: Context
) -> dict[str, Any]:
    """Status of a task whose (last) attempt ended with `outcome`."""
    result = outcome.result
    stdout = result.stdout if result else (outcome.log_tail or "")
    stderr = result.stderr if result else ""
    stdout, cut_out = _tail(stdout, ctx.output_limit)
    stderr, cut_err = _tail(stderr, ctx.output_limit)
    terminated = (pod.terminated if pod else None) or {}
    start = (
        (result.started_at if result else None)
        or terminated.get("startedAt")
        or (pod.started_at if pod else None)
    )
    end = (result.finished_at if result else None) or terminated.get("finishedAt") or iso(ctx.now)
    duration = result.duration_seconds if result else None
    if duration is None and start:
        started, ended = parse_time(start), parse_time(end)
        duration = (ended - started).total_seconds() if started and ended else None
    succeeded = outcome.phase is Phase.SUCCEEDED
    conditions = current.get("conditions") or []
    conditions = set_condition(
        conditions,
        ConditionType.RUNNING,
        ConditionStatus.FALSE,
        outcome.reason,
        outcome.message,
        ctx.now,
        ctx.generation,
    )
    conditions = set_condition(
        conditions,
        ConditionType.FINISHED,
        ConditionStatus.TRUE,
        outcome.reason,
        outcome.message,
        ctx.now,
        ctx.generation,
    )
    conditions = set_condition(
        conditions,
        ConditionType.SUCCEEDED,
        ConditionStatus.TRUE if succeeded else ConditionStatus.FALSE,
        outcome.reason,
        outcome.message,
        ctx.now,
        ctx.generation,
    )
    patch: dict[str, Any] = {
        "phase": str(outcome.phase),
        "reason": str(outcome.reason),
        "message": outcome.message,
        "exitCode": outcome.exit_code,
        "stdout": stdout,
        "stderr": stderr,
        "truncated": {
            "stdout": cut_out or bool(result and result.truncated_stdout),
            "stderr": cut_err or bool(result and result.truncated_stderr),
        },
        "startTime": start,
        "completionTime": end,
        "durationSeconds": round(duration, 3) if duration is not None else None,
        "conditions": conditions,
        "observedGeneration": ctx.generation,
        "agent": result.agent if result else None,
    }
    if pod:
        patch["podName"] = pod.name
        patch["nodeName"] = pod.node
    return changed(current, patch)


def is_final(status: Obj) -> bool:
    """Whether the task has reached a final phase."""
    return status.get("phase") in {str(p) for p in FINAL_PHASES}
