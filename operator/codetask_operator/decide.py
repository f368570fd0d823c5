"""Pure: what is observed of one CodeTask → the one thing to do next.

The task's lifecycle in one function, in the shape of kubebuilder's `Reconcile → Result`: from the
task, its current attempt's Job and pod (as the watches showed them, or as read afresh), the
runner's report, and the stopwatches the operator keeps, to exactly one action. `reconcile.py`
performs it; for `Confirm` it reads what was asked (API server, Redis) and asks again. A verdict
that ends or stops an attempt because something is gone is only given on a fresh read: a watch
cache can lag, miss a deletion across a re-list, or list Jobs after their tasks.
docs/lifecycle.md is this table in prose.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from codetask_operator.api import CodeTaskSpec, Phase, Reason
from codetask_operator.status import (
    Context,
    Outcome,
    PodView,
    attempt_outcome,
    changed,
    deadline_passed,
    early_failure,
    job_finished,
    node_lost,
    parse_time,
    running_patch,
)

MISSING_JOB_GRACE: Final = 10.0
"""Seconds the current Job may be absent from the watch cache (not listed or echoed yet) before it
is read afresh."""
SETTLE: Final = 10.0
"""Seconds an ended Job waits for its pod's final state through the pod watch before the pods are
read afresh."""
NO_POD_GRACE: Final = 10.0
"""Seconds a Job may have no pod before the Job controller's FailedCreate events are read."""
RESYNC: Final = 30.0
"""An attempt past its deadline whose Job and pod showed no change for this long is read afresh: a
DELETED event lost across a watch re-list must not leave it running forever."""
DEADLINE_GRACE: Final = 2.0
"""The operator's own deadline (a Job whose pod the cluster refuses) allows this much over
timeoutSeconds for the Job controller's own verdict to come first."""
UNSYNCED_GRACE: Final = 60.0
"""A Job without a `startTime` and without a refusal on record has not been handled by a busy Job
controller yet (a burst of Jobs): its own deadline will count from when it is. The operator's
deadline waits this much longer before it stops such a Job."""

BETWEEN_ATTEMPTS: Final = (Reason.RETRYING, Reason.STOPPING, Reason.NOT_ISOLATED)
"""With one of these reasons the task waits for its next attempt (`jobName` names the last one)."""

JOB: Final = "job"
PODS: Final = "pods"
REPORT: Final = "report"
EVENTS: Final = "events"


@dataclass(frozen=True)
class Clocks:
    """Seconds since the operator first saw each condition (None: not now)."""

    job_missing: float | None = None
    job_ended: float | None = None
    pending: float = 0.0
    unready: float = 0.0
    no_pod: float | None = None
    quiet: float = 0.0
    """Since the last change of the task's Job or pods in view (event or fresh read)."""
    events_read: float | None = None
    """Since the Job's events were last read."""


@dataclass(frozen=True)
class Observed:
    """Everything the decision reads: no I/O and no clock of its own."""

    spec: CodeTaskSpec | None
    status: Mapping[str, Any]
    now: datetime
    generation: int | None = None
    spec_error: str = ""
    job: Mapping[str, Any] | None = None
    """The current attempt's Job, when known to exist (controlled by this task)."""
    pod: PodView | None = None
    """Its pod (controlled by that Job)."""
    pod_of_job_seen: bool = False
    """A pod that names the current Job was seen, though the Job is not in view."""
    fresh: frozenset[str] = frozenset()
    """What was read afresh in this pass: JOB, PODS, REPORT, EVENTS."""
    report: Outcome | None = None
    """What the runner reported through Redis for this attempt (when REPORT was read)."""
    redis: bool = False
    create_failure: str | None = None
    """The Job controller's last FailedCreate message for this Job."""
    decided: Outcome | None = None
    """How the attempt ends, decided by an earlier Stop (sticky)."""
    stopped: bool = False
    """That Stop's delete went through."""
    heartbeat_silent: bool = False
    """This attempt's runner beat, then stopped beating (Redis)."""
    runner_done: bool = False
    """This attempt's (warm) runner announced through Redis that its result is written."""
    clocks: Clocks = field(default_factory=Clocks)
    pending_grace: float = 20.0
    heartbeat_ttl: float = 30.0


@dataclass(frozen=True)
class Invalid:
    """The spec cannot run: end InvalidSpec, no Job."""

    message: str


@dataclass(frozen=True)
class Wait:
    """Nothing to do now; look again at `until` (events and the sweeper come anyway)."""

    until: datetime | None = None


@dataclass(frozen=True)
class Start:
    """Create attempt `attempt`'s Job — under the running limits, and only once every earlier
    attempt's pod is known stopped (the executor fences)."""

    attempt: int


@dataclass(frozen=True)
class Confirm:
    """Read these afresh, then decide again."""

    reads: frozenset[str]


@dataclass(frozen=True)
class Stop:
    """End the attempt as `outcome` before its Job did: record it, delete the Job."""

    outcome: Outcome


@dataclass(frozen=True)
class End:
    """The attempt ended as `outcome`: retry after backoff, or finish the task."""

    outcome: Outcome


@dataclass(frozen=True)
class Update:
    """Patch the live attempt's status."""

    patch: dict[str, Any]


Action = Invalid | Wait | Start | Confirm | Stop | End | Update

CANCELLED: Final = Outcome(Phase.CANCELLED, Reason.CANCELLED, "cancelled by spec.cancel")


def decide(o: Observed) -> Action:
    """The next action for the task `o` describes."""
    if o.spec is None:
        return Invalid(o.spec_error)
    job_name = o.status.get("jobName")
    if not job_name or o.status.get("reason") in BETWEEN_ATTEMPTS:
        return _between_attempts(o, o.spec)
    if o.decided is not None:
        return End(o.decided) if o.stopped else Stop(o.decided)
    return _attempt(o, o.spec, str(job_name))


def _between_attempts(o: Observed, spec: CodeTaskSpec) -> Action:
    if spec.cancel:
        return End(CANCELLED)
    due = parse_time(o.status.get("nextAttemptTime"))
    if due is not None and due > o.now:
        return Wait(due)
    return Start(int(o.status.get("attempts") or 0) + 1)


def _confirm(o: Observed, *reads: str) -> Confirm | None:
    """Confirm the reads not yet made in this pass; None when all were."""
    missing = frozenset(r for r in reads if r not in o.fresh and (r != REPORT or o.redis))
    return Confirm(missing) if missing else None


def _attempt(o: Observed, spec: CodeTaskSpec, job_name: str) -> Action:
    """The current attempt, whose Job was created."""
    if o.runner_done:
        # Its runner wrote the result and is leaving: no need to wait for the kubelet's report.
        # The Job goes too: the code may have written the report itself and still run, and a
        # finished task no longer counts against the running limits.
        if confirm := _confirm(o, REPORT):
            return confirm
        if o.report is not None:
            return Stop(o.report)
    if o.job is None:
        return _job_absent(o, spec, job_name)
    job, pod, clocks = o.job, o.pod, o.clocks
    finished = job_finished(job)
    settle = False
    if finished is not None and (pod is None or pod.terminated is None):
        if (clocks.job_ended or 0.0) < SETTLE:
            until = o.now + timedelta(seconds=SETTLE - (clocks.job_ended or 0.0) + 0.5)
            outcome = attempt_outcome(job, pod, custom_image=spec.command is not None)
            return End(outcome) if outcome else Wait(until)
        if confirm := _confirm(o, PODS):
            return confirm
        settle = True
    outcome = attempt_outcome(job, pod, custom_image=spec.command is not None, settle=settle)
    if outcome is not None:
        return End(outcome)
    if pod is not None and pod.deleted and finished is None:
        # The Job watch can lag the pod watch: the Job controller may have deleted the pod at the
        # deadline. Judged from the Job as it is now.
        if confirm := _confirm(o, JOB):
            return confirm
        if deadline_passed(job, o.now):
            return End(
                Outcome(
                    Phase.TIMED_OUT,
                    Reason.DEADLINE_EXCEEDED,
                    "the attempt ran past timeoutSeconds and was stopped",
                )
            )
        # Kubernetes 1.20's Job controller would start a replacement pod: a second run.
        why = pod.disruption or "evicted, drained or deleted"
        message = f"pod {pod.name} was stopped while it ran ({why})"
        return Stop(Outcome(Phase.FAILED, Reason.TERMINATED, message))
    if spec.cancel:
        return Stop(CANCELLED)
    stale = _past_deadline(o, job, spec, RESYNC) and clocks.quiet >= RESYNC
    if stale and (confirm := _confirm(o, JOB, PODS)):
        return confirm
    if pod is None:
        return _no_pod(o, spec, job, job_name)
    if pod.started_at is None:
        failure = early_failure(pod, clocks.pending, o.pending_grace)
        if failure is not None:
            return Stop(failure)
        if _unclocked_past_deadline(o, job, spec):
            return Stop(_no_start(spec, f"pod {pod.name} did not start"))
        return _update(o, running_patch(o.status, pod, _context(o, spec)))
    if pod.terminated is not None:
        return Wait()  # the Job's end follows (a runner stopped by SIGTERM waits for its reason)
    if o.heartbeat_silent:
        evidence = "" if pod.ready is not False else f"; pod {pod.name} not ready"
        return Stop(
            Outcome(
                Phase.FAILED,
                Reason.LOST,
                f"no heartbeat from the runner for {o.heartbeat_ttl:.0f}s{evidence}; "
                f"pod {pod.name} stopped",
            )
        )
    lost = node_lost(pod, clocks.unready, o.heartbeat_ttl)
    if lost is not None:
        return Stop(lost)
    return _update(o, running_patch(o.status, pod, _context(o, spec)))


def _job_absent(o: Observed, spec: CodeTaskSpec, job_name: str) -> Action:
    """The current Job is not in view: not listed or echoed yet, or gone. Only a fresh read says."""
    if JOB not in o.fresh:
        missing = o.clocks.job_missing or 0.0
        if missing < MISSING_JOB_GRACE and not o.pod_of_job_seen:
            return Wait(o.now + timedelta(seconds=MISSING_JOB_GRACE - missing + 0.5))
        return Confirm(frozenset({JOB}))
    if confirm := _confirm(o, PODS, REPORT):
        return confirm
    pod = o.pod
    outcome = attempt_outcome(None, pod, custom_image=spec.command is not None)
    if outcome is not None:
        return End(outcome)
    if o.report is not None:
        return End(o.report)
    if spec.cancel:
        return Stop(CANCELLED)
    return Stop(Outcome(Phase.FAILED, Reason.LOST, f"Job {job_name} is gone"))


def _no_pod(o: Observed, spec: CodeTaskSpec, job: Mapping[str, Any], job_name: str) -> Action:
    """A Job without a pod in view: starting, refused by the cluster, or its pod gone unseen (a
    Job whose clock runs ends by its own deadline: its controller deletes the pod first)."""
    if _unclocked_past_deadline(o, job, spec):
        if confirm := _confirm(o, PODS):
            return confirm
        why = o.create_failure or "no pod was created"
        return Stop(_no_start(spec, f"Job {job_name}: {why}"))
    no_pod = o.clocks.no_pod or 0.0
    if no_pod < NO_POD_GRACE:
        return Wait(o.now + timedelta(seconds=NO_POD_GRACE - no_pod + 0.5))
    read = o.clocks.events_read
    if EVENTS not in o.fresh and (read is None or read >= NO_POD_GRACE):
        return Confirm(frozenset({EVENTS}))
    if o.create_failure is None:
        return Wait()
    return _update(
        o,
        changed(
            o.status,
            {"reason": str(Reason.FAILED_CREATE), "message": o.create_failure[:1024]},
        ),
    )


def _past_deadline(o: Observed, job: Mapping[str, Any], spec: CodeTaskSpec, grace: float) -> bool:
    """Whether the attempt is past timeoutSeconds plus `grace`, counted from the Job's start, or
    from its creation while it has none (a Job that never got a pod never starts its clock)."""
    if deadline_passed(job, o.now - timedelta(seconds=grace)):
        return True
    started = (job.get("status") or {}).get("startTime")
    created = parse_time((job.get("metadata") or {}).get("creationTimestamp"))
    if started is not None or created is None:
        return False
    return (o.now - created).total_seconds() >= spec.timeout_seconds + grace


def _unclocked_past_deadline(o: Observed, job: Mapping[str, Any], spec: CodeTaskSpec) -> bool:
    """A Job without a `startTime` (Kubernetes' own deadline never started) past timeoutSeconds
    from its creation: the operator's deadline — soon after it when the cluster refused the pod,
    UNSYNCED_GRACE later otherwise. A Job with a `startTime` is left to the Job controller."""
    grace = DEADLINE_GRACE if o.create_failure else UNSYNCED_GRACE
    return (job.get("status") or {}).get("startTime") is None and _past_deadline(
        o, job, spec, grace
    )


def _no_start(spec: CodeTaskSpec, why: str) -> Outcome:
    return Outcome(
        Phase.TIMED_OUT,
        Reason.DEADLINE_EXCEEDED,
        f"no pod started within timeoutSeconds ({spec.timeout_seconds}s): {why}",
    )


def _context(o: Observed, spec: CodeTaskSpec) -> Context:
    return Context(
        generation=o.generation,
        attempt=int(o.status.get("attempts") or 1),
        output_limit=spec.output_limit_bytes,
        custom_image=spec.command is not None,
        now=o.now,
    )


def _update(o: Observed, patch: dict[str, Any]) -> Action:
    return Update(patch) if patch else Wait()
