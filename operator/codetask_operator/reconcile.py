"""Level-triggered reconciliation of one CodeTask from what the watches last showed.

Every watch event (CodeTask, Job, pod) updates the task's `TaskState` and calls `reconcile`, which
asks the pure functions in `status.py`/`jobs.py` what should be true and makes the one or two API
calls that make it so. Running it twice changes nothing: Job names are deterministic, an existing
Job owned by the task is adopted, and status is only patched where it differs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from codetask_operator import admission, api, jobs, lifecycle, metrics, status
from codetask_operator.heartbeats import Heartbeats
from codetask_operator.kube import ApiError, Kube, NotOurs
from codetask_operator.settings import Settings
from codetask_operator.status import Outcome as PodOutcome
from codetask_operator.status import PodView

log = logging.getLogger("codetask")


@dataclass
class TaskState:
    """The latest known CodeTask, its Jobs and their pods (from the watches)."""

    uid: str
    namespace: str = ""
    name: str = ""
    generation: int | None = None
    created: str | None = None
    spec: dict[str, Any] | None = None
    status: dict[str, Any] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    deleted: bool = False
    final: bool = False
    pending_since: float | None = None
    job_missing_since: float | None = None
    position_written_at: float = 0.0
    heartbeat_seen: bool = False
    job_end_seen: float | None = None
    unready_since: float | None = None
    decided: PodOutcome | None = None
    """How the current attempt ended, once decided: sticky until written, whatever events follow."""
    heartbeat_written_at: float = 0.0
    status_known: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def body(self) -> dict[str, Any]:
        """A minimal object body, for posting Events about the task."""
        return {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid},
        }

    def current_pod(self) -> dict[str, Any] | None:
        """The pod of the current attempt's Job: the oldest one, should there be more."""
        job_name = self.status.get("jobName")
        pods = [
            p
            for p in self.pods.values()
            if (p["metadata"].get("labels") or {}).get("job-name") == job_name
        ]
        pods.sort(key=lambda p: p["metadata"].get("creationTimestamp") or "")
        return pods[0] if pods else None

    def finished(self) -> None:
        """Mark the task final and keep only what a final task still needs (its TTL and a summary
        of its status): with thousands of finished tasks, their specs and outputs add up."""
        self.final = True
        self.jobs.clear()
        self.pods.clear()
        self.spec = final_spec(self.spec or {})
        self.status = {k: self.status[k] for k in FINAL_STATUS_FIELDS if k in self.status}

    def pod_view(self) -> PodView | None:
        """The current pod, as the phase machine sees it."""
        pod = self.current_pod()
        return status.PodView.of(pod) if pod else None


FINAL_SPEC_FIELDS = ("ttlSecondsAfterFinished",)
FINAL_STATUS_FIELDS = ("phase", "reason", "completionTime", "durationSeconds")
"""What the operator still reads of a finished task: when to delete it, and the phase gauge."""


def final_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The part of a finished task's spec the operator still reads."""
    return {k: spec[k] for k in FINAL_SPEC_FIELDS if k in spec}


class Registry:
    """Task states by CodeTask uid."""

    def __init__(self) -> None:
        self.tasks: dict[str, TaskState] = {}

    def get(self, uid: str) -> TaskState:
        """The state for `uid`, created empty if a Job or pod is seen before its task."""
        state = self.tasks.get(uid)
        if state is None:
            state = self.tasks[uid] = TaskState(uid=uid)
        return state

    def forget(self, uid: str) -> None:
        """Drop a deleted task."""
        self.tasks.pop(uid, None)


def _now() -> datetime:
    return datetime.now(UTC)


HISTORY_KEEP = api.MAX_RETRIES + 1
SETTLE_SECONDS = 10.0
"""How long an ended Job waits for its pod's final state to be seen before settling without it."""
POSITION_REFRESH_SECONDS = 10.0
"""A queued task's position in status is refreshed at most this often (bounded API writes)."""
POSITION_WRITES_PER_SWEEP = 20
"""At most this many queue positions are rewritten per sweep (every sweepIntervalSeconds)."""
ATTEMPT_FIELDS = (
    "agent",
    "exitCode",
    "stdout",
    "stderr",
    "truncated",
    "durationSeconds",
    "startTime",
    "completionTime",
    "podName",
    "nodeName",
    "nextAttemptTime",
    "queuePosition",
    "lastHeartbeatTime",
    "progress",
)
"""Status fields of one attempt: cleared when the next attempt starts."""


class Reconciler:
    """Decides and acts for one task at a time (a lock per task, one more for admission)."""

    def __init__(
        self,
        kube: Kube,
        settings: Settings,
        registry: Registry,
        rng: random.Random | None = None,
        heartbeats: Heartbeats | None = None,
    ) -> None:
        self.kube = kube
        self.heartbeats = heartbeats
        self.settings = settings
        self.registry = registry
        self.rng = rng or random.Random()
        self.admission_lock = asyncio.Lock()
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.background: set[asyncio.Task[None]] = set()

    def spawn(self, what: str, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` in the background (guarded), keeping a reference until it is done."""
        task = asyncio.get_running_loop().create_task(guarded(what, coro))
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def reconcile(self, state: TaskState) -> None:
        """Bring the task's Job and status in line with what was last observed."""
        async with state.lock:
            if state.spec is None or state.deleted:
                return
            try:
                if state.final or status.is_final(state.status):
                    state.finished()
                    await self._expire_if_due(state)
                else:
                    await self._reconcile(state)
            except ApiError as exc:
                if exc.status == 404:
                    state.deleted = True
                    return
                raise

    def post_event(self, state: TaskState, type_: str, reason: str, message: str) -> None:
        """Post a Kubernetes Event on the task in the background (`kubectl describe ct`);
        Normal ones only with `events: all` (each is an API write)."""
        if type_ == "Normal" and self.settings.events != "all":
            return
        # Seconds precision: core/v1 Event timestamps are metav1.Time.
        now = _now().strftime("%Y-%m-%dT%H:%M:%SZ")
        self.spawn(
            f"event {reason}", self.kube.post_event(state.body(), type_, reason, message, now)
        )

    def wake_at(self, state: TaskState, when: datetime) -> None:
        """Reconcile `state` again at `when` (one timer per task; the sweeper is the backstop)."""
        if (old := self.timers.pop(state.uid, None)) is not None:
            old.cancel()
        delay = max(0.0, (when - _now()).total_seconds())

        def fire() -> None:
            self.timers.pop(state.uid, None)
            self.spawn(state.name, self.reconcile(state))

        self.timers[state.uid] = asyncio.get_running_loop().call_later(delay, fire)

    async def _reconcile(self, state: TaskState) -> None:
        assert state.spec is not None
        try:
            spec = api.CodeTaskSpec.model_validate(state.spec)
        except ValidationError as exc:
            errors = [
                f"spec.{'.'.join(map(str, e['loc']))}: {api.describe_error(e)}"
                for e in exc.errors()
            ]
            await self._invalid(state, "; ".join(errors))
            return
        job_name = state.status.get("jobName")
        job = state.jobs.get(job_name) if job_name else None
        if spec.cancel:
            if job_name and status.job_finished(job) is None:
                await self.kube.delete_job(state.namespace, job_name)
            cancelled = status.Outcome(
                api.Phase.CANCELLED, api.Reason.CANCELLED, "cancelled by spec.cancel"
            )
            await self._finish(state, spec, cancelled, state.pod_view() if job_name else None)
            return
        if not job_name or state.status.get("reason") == api.Reason.RETRYING:
            due = status.parse_time(state.status.get("nextAttemptTime"))
            if due is not None and due > _now():
                self.wake_at(state, due)
                return
            await self._admit_or_queue(state, spec)
            return
        pod = state.pod_view()
        if state.decided is not None:
            await self._attempt_ended(state, spec, state.decided, pod)
            return
        if pod is not None and pod.deleted and status.job_finished(job) is None:
            # The Job watch can lag the pod watch (a reconnecting stream): the Job controller may
            # have deleted the pod at the deadline. Judge from the Job as it is now.
            job = await self._read_job(state, job_name)
        settle = False
        if status.job_finished(job) is not None:
            # Counted from when this operator saw the end, not from the Job's own timestamp: after a
            # restart the pod's final state may still be on its way through the pod watch.
            state.job_end_seen = state.job_end_seen or time.monotonic()
            settle = time.monotonic() - state.job_end_seen > SETTLE_SECONDS
            if not settle:
                self.wake_at(state, _now() + timedelta(seconds=SETTLE_SECONDS + 0.5))
        outcome: status.Outcome | None = status.attempt_outcome(
            job, pod, cancel=False, custom_image=spec.command is not None, settle=settle
        )
        if (
            outcome is None
            and job is not None
            and pod is not None
            and pod.deleted
            and status.job_finished(job) is None
        ):
            # Someone deleted the pod mid-run. Kubernetes 1.20's Job controller would start a
            # replacement pod (a second run of this attempt): end the attempt and its Job now.
            if status.deadline_passed(job, _now()):
                outcome = status.Outcome(
                    api.Phase.TIMED_OUT,
                    api.Reason.DEADLINE_EXCEEDED,
                    "the attempt ran past timeoutSeconds and was stopped",
                )
            else:
                outcome = status.Outcome(
                    api.Phase.FAILED, api.Reason.LOST, f"pod {pod.name} was deleted while it ran"
                )
                await self._stop_attempt(state, job_name, outcome)
        if outcome is None and pod is not None and pod.terminated is None:
            outcome = self._stalled(state, pod)
            if outcome is not None:
                await self._stop_attempt(state, job_name, outcome)
        if outcome is not None:
            await self._attempt_ended(state, spec, outcome, pod)
        elif pod is not None:
            ctx = self._context(state, spec)
            before = state.status.get("phase")
            await self._write(state, status.running_patch(state.status, pod, ctx))
            if before != state.status.get("phase") == api.Phase.RUNNING:
                self.post_event(state, "Normal", "Started", f"pod {pod.name} running on {pod.node}")

    def _stalled(self, state: TaskState, pod: PodView) -> status.Outcome | None:
        """How a pod that has not ended fails its attempt, if it does: it never started within the
        pending grace, or it runs on a node that stopped reporting. Keeps the two stopwatches."""
        if pod.started_at is None:
            state.pending_since, pending_for = _stopwatch(state.pending_since)
            return status.early_failure(pod, pending_for, self.settings.pending_grace_seconds)
        state.pending_since = None
        if pod.ready is not False:
            state.unready_since = None
            return None
        state.unready_since, unready_for = _stopwatch(state.unready_since)
        return status.node_lost(pod, unready_for, self.settings.heartbeat_ttl_seconds)

    async def _read_job(self, state: TaskState, job_name: str) -> dict[str, Any] | None:
        """Read the Job from the API server into `state` (a GET, not a write)."""
        fresh = await self.kube.get_job(state.namespace, job_name)
        if fresh is None:
            state.jobs.pop(job_name, None)
            return None
        state.jobs[job_name] = status.slim(fresh)
        return state.jobs[job_name]

    async def _stop_attempt(self, state: TaskState, job_name: str, outcome: status.Outcome) -> None:
        """End the attempt as `outcome` before its Job did: the decision sticks, the Job goes."""
        state.decided = outcome
        await self.kube.delete_job(state.namespace, job_name)

    async def lost(self, state: TaskState, message: str) -> None:
        """The attempt's Job or pod vanished before it ended."""
        try:
            await self._lost(state, message)
        except ApiError as exc:
            if exc.status != 404:
                raise
            state.deleted = True

    async def _lost(self, state: TaskState, message: str) -> None:
        async with state.lock:
            if state.spec is None or state.final or state.deleted or status.is_final(state.status):
                return
            if state.status.get("reason") == api.Reason.RETRYING:
                return
            spec = api.CodeTaskSpec.model_validate(state.spec)
            lost = status.Outcome(api.Phase.FAILED, api.Reason.LOST, message)
            state.decided = state.decided or await self._reported(state) or lost
            if job_name := state.status.get("jobName"):
                await self.kube.delete_job(state.namespace, job_name)
            await self._attempt_ended(state, spec, state.decided, state.pod_view())

    async def _reported(self, state: TaskState) -> status.Outcome | None:
        """What the runner reported through Redis for the current attempt: its code may have ended
        while the pod, its node or the Job could not tell (a node that stopped reporting)."""
        if self.heartbeats is None:
            return None
        raw = await self.heartbeats.result(state.namespace, state.name)
        return status.reported_outcome(raw, state.status.get("startTime"))

    async def admit_waiting(self, refresh_positions: bool = False) -> None:
        """Start the queued tasks that fit now. With `refresh_positions` (the sweeper), also rewrite
        the stale queue positions, front of the queue first and at most POSITION_WRITES_PER_SWEEP:
        every start moves every waiting task, and a deep queue must not cost a write per task."""
        if not self._limited():
            return
        async with self.admission_lock:
            decision = self._decide()
        for uid in decision.admit:
            state = self.registry.tasks[uid]
            self.spawn(state.name, self.reconcile(state))
        if not refresh_positions:
            return
        now = time.monotonic()
        stale = sorted(
            (position, uid)
            for uid, position in decision.positions.items()
            if now - self.registry.tasks[uid].position_written_at >= POSITION_REFRESH_SECONDS
            and self.registry.tasks[uid].status.get("queuePosition") != position
        )
        for position, uid in stale[:POSITION_WRITES_PER_SWEEP]:
            state = self.registry.tasks[uid]
            state.position_written_at = now  # one write in flight per task
            self.spawn(state.name, self._requeue(state, position))

    async def check_heartbeats(self) -> None:
        """Heartbeats and progress of running tasks from Redis; a silent runner is Lost."""
        if self.heartbeats is None:
            return
        running = [
            t
            for t in self.registry.tasks.values()
            if t.spec
            and not t.final
            and not t.deleted
            and t.status.get("phase") == api.Phase.RUNNING
        ]
        beats = await self.heartbeats.read([(t.namespace, t.name) for t in running])
        if beats is None:
            return
        ttl = self.settings.heartbeat_ttl_seconds
        for state in running:
            beat = beats[(state.namespace, state.name)]
            if beat.heartbeat is None:
                if state.heartbeat_seen:
                    self.spawn(state.name, self.lost(state, f"no heartbeat for {ttl}s"))
                continue
            state.heartbeat_seen = True
            patch: dict[str, Any] = {}
            if beat.progress is not None and beat.progress != state.status.get("progress"):
                patch["progress"] = beat.progress
            if patch or time.monotonic() - state.heartbeat_written_at >= ttl:
                patch["lastHeartbeatTime"] = beat.heartbeat
            if patch:
                self.spawn(state.name, self._beat(state, patch))

    async def _beat(self, state: TaskState, patch: dict[str, Any]) -> None:
        async with state.lock:
            if state.final or state.status.get("phase") != api.Phase.RUNNING:
                return
            await self._write(state, status.changed(state.status, patch))
            state.heartbeat_written_at = time.monotonic()

    async def _full_result(self, state: TaskState, outcome: status.Outcome) -> status.Outcome:
        """The outcome with the runner's full tails from Redis, when the 4 KiB message cut them."""
        result = outcome.result
        if self.heartbeats is None or result is None:
            return outcome
        if not (result.truncated_stdout or result.truncated_stderr):
            return outcome
        full = status.parse_result(await self.heartbeats.result(state.namespace, state.name))
        if full is None or full.started_at != result.started_at:
            return outcome
        return dataclasses.replace(outcome, result=full)

    def _limited(self) -> bool:
        return bool(self.settings.max_running or self.settings.max_running_per_namespace)

    def _decide(self) -> lifecycle.Admission:
        now = _now()
        candidates = []
        for t in self.registry.tasks.values():
            if t.spec is None or t.final or t.deleted or t.spec.get("cancel"):
                continue
            retrying = t.status.get("reason") == api.Reason.RETRYING
            due = status.parse_time(t.status.get("nextAttemptTime"))
            if retrying and due is not None and due > now:
                continue
            candidates.append(
                lifecycle.Candidate(
                    uid=t.uid,
                    namespace=t.namespace,
                    priority=int(t.spec.get("priority") or 0),
                    created=t.created or "",
                    running=bool(t.status.get("jobName")) and not retrying,
                )
            )
        return lifecycle.admit(
            candidates, self.settings.max_running, self.settings.max_running_per_namespace
        )

    async def _admit_or_queue(self, state: TaskState, spec: api.CodeTaskSpec) -> None:
        attempt = int(state.status.get("attempts") or 0) + 1
        if not self._limited():
            await self._start(state, spec, attempt)
            return
        async with self.admission_lock:
            decision = self._decide()
            if state.uid in decision.admit:
                await self._start(state, spec, attempt)
                return
        if state.status.get("phase") != api.Phase.QUEUED:
            # Once queued, its position moves with every start: the sweeper rewrites it, bounded
            # (every write here would come back as an event and move it again).
            await self._queue(state, decision.positions.get(state.uid))

    async def _requeue(self, state: TaskState, position: int) -> None:
        async with state.lock:
            if state.status.get("phase") == api.Phase.QUEUED and not state.final:
                await self._queue(state, position)

    async def _queue(self, state: TaskState, position: int | None) -> None:
        limits = (
            f"{self.settings.max_running} running tasks in the cluster"
            if self.settings.max_running
            else ""
        )
        if self.settings.max_running_per_namespace:
            per_ns = f"{self.settings.max_running_per_namespace} per namespace"
            limits = f"{limits}, {per_ns}" if limits else per_ns
        message = f"waiting for a slot (limit: {limits}); position {position}"
        conditions = status.set_condition(
            state.status.get("conditions") or [],
            api.ConditionType.ADMITTED,
            api.ConditionStatus.FALSE,
            api.Reason.QUEUED,
            message,
            _now(),
            state.generation,
        )
        before = state.status.get("phase")
        await self._write(
            state,
            status.changed(
                state.status,
                {
                    "phase": str(api.Phase.QUEUED),
                    "reason": str(api.Reason.QUEUED),
                    "message": message,
                    "queuePosition": position,
                    "conditions": conditions,
                    "observedGeneration": state.generation,
                },
            ),
        )
        state.position_written_at = time.monotonic()
        if before != api.Phase.QUEUED:
            self.post_event(state, "Normal", "Queued", message)

    def _context(self, state: TaskState, spec: api.CodeTaskSpec) -> status.Context:
        return status.Context(
            generation=state.generation,
            attempt=int(state.status.get("attempts") or 1),
            output_limit=spec.output_limit_bytes,
            cancel=spec.cancel,
            custom_image=spec.command is not None,
            now=_now(),
        )

    async def _write(self, state: TaskState, patch: dict[str, Any]) -> None:
        if not patch:
            return
        body = await self.kube.patch_status(state.namespace, state.name, patch)
        state.status = body.get("status") or {}
        state.status_known = True
        log.info(
            "status %s",
            state.status.get("phase"),
            extra={
                "namespace": state.namespace,
                "task": state.name,
                "phase": state.status.get("phase"),
                "reason": state.status.get("reason"),
            },
        )

    async def _invalid(self, state: TaskState, message: str) -> None:
        ctx = status.Context(state.generation, 0, 0, False, False, _now())
        outcome = status.Outcome(api.Phase.FAILED, api.Reason.INVALID_SPEC, message)
        await self._write(state, status.final_patch(state.status, outcome, None, ctx))
        state.finished()
        self.post_event(state, "Warning", str(api.Reason.INVALID_SPEC), message)

    async def _start(self, state: TaskState, spec: api.CodeTaskSpec, attempt: int) -> None:
        errors = admission.validate(state.spec or {}, self.settings)
        if errors:
            await self._invalid(state, "; ".join(errors))
            return
        manifest = jobs.build_job(
            state.name, state.uid, state.namespace, spec, attempt, self.settings
        )
        try:
            name = await self.kube.create_job(state.namespace, manifest, state.uid)
        except NotOurs as exc:
            await self._invalid(state, str(exc))
            return
        except ApiError as exc:
            if exc.status in (400, 403, 422):
                await self._invalid(
                    state, f"Kubernetes rejected the Job: {exc.reason}: {exc.body!s}"
                )
                return
            raise
        metrics.JOBS_CREATED.inc()
        conditions = status.set_condition(
            state.status.get("conditions") or [],
            api.ConditionType.ADMITTED,
            api.ConditionStatus.TRUE,
            api.Reason.SCHEDULED,
            f"Job {name} created",
            _now(),
            state.generation,
        )
        patch: dict[str, Any] = dict.fromkeys(
            (f for f in ATTEMPT_FIELDS if state.status.get(f) is not None), None
        )
        patch.update(
            {
                "phase": str(api.Phase.PENDING),
                "reason": str(api.Reason.SCHEDULED),
                "message": f"Job {name} created (attempt {attempt})",
                "attempts": attempt,
                "jobName": name,
                "conditions": conditions,
                "observedGeneration": state.generation,
            }
        )
        state.pending_since = None
        state.heartbeat_seen = False
        state.job_end_seen = None
        state.unready_since = None
        state.decided = None
        await self._write(state, patch)
        self.post_event(state, "Normal", "Scheduled", f"Job {name} created (attempt {attempt})")

    async def _attempt_ended(
        self,
        state: TaskState,
        spec: api.CodeTaskSpec,
        outcome: status.Outcome,
        pod: status.PodView | None,
    ) -> None:
        attempts = int(state.status.get("attempts") or 1)
        outcome = await self._full_result(state, outcome)
        delay = None
        if outcome.phase not in (api.Phase.SUCCEEDED, api.Phase.CANCELLED):
            delay = lifecycle.retry_delay(spec, attempts, outcome.reason, self.rng)
        if delay is None:
            await self._finish(state, spec, outcome, pod)
            return
        ctx = self._context(state, spec)
        ended = status.final_patch(state.status, outcome, pod, ctx)
        record = lifecycle.history_record(
            {**state.status, **ended}, outcome.reason, outcome.message
        )
        next_at = ctx.now + timedelta(seconds=delay)
        message = (
            f"attempt {attempts} ended {outcome.reason}: {outcome.message}; "
            f"attempt {attempts + 1} of {spec.retries + 1} at {status.iso(next_at)}"
        )
        patch = {key: ended[key] for key in ended if key in ATTEMPT_FIELDS}
        patch.update(
            {
                "phase": str(api.Phase.PENDING),
                "reason": str(api.Reason.RETRYING),
                "message": message,
                "nextAttemptTime": status.iso(next_at),
                "history": lifecycle.bounded(
                    state.status.get("history") or [], record, HISTORY_KEEP
                ),
                "conditions": status.set_condition(
                    state.status.get("conditions") or [],
                    api.ConditionType.RUNNING,
                    api.ConditionStatus.FALSE,
                    api.Reason.RETRYING,
                    message,
                    ctx.now,
                    state.generation,
                ),
            }
        )
        await self._write(state, patch)
        metrics.RETRIES.inc()
        self.post_event(state, "Warning", str(api.Reason.RETRYING), message)
        self.wake_at(state, next_at)
        await self.admit_waiting()

    async def _finish(
        self,
        state: TaskState,
        spec: api.CodeTaskSpec,
        outcome: status.Outcome,
        pod: status.PodView | None,
    ) -> None:
        ctx = self._context(state, spec)
        patch = status.final_patch(state.status, outcome, pod, ctx)
        if state.status.get("nextAttemptTime") or state.status.get("queuePosition"):
            patch.update(nextAttemptTime=None, queuePosition=None)
        await self._write(state, patch)
        state.finished()
        metrics.FINISHED.labels(str(outcome.phase), str(outcome.reason)).inc()
        if (duration := state.status.get("durationSeconds")) is not None:
            metrics.DURATION.labels(str(outcome.phase)).observe(duration)
        kind = (
            "Normal" if outcome.phase in (api.Phase.SUCCEEDED, api.Phase.CANCELLED) else "Warning"
        )
        self.post_event(state, kind, str(outcome.reason), f"{outcome.phase}: {outcome.message}")
        await self._expire_if_due(state)
        await self.admit_waiting()

    async def _expire_if_due(self, state: TaskState) -> None:
        """Delete a finished task whose TTL has passed; otherwise wake up when it does."""
        spec = state.spec or {}
        ttl = spec.get("ttlSecondsAfterFinished")
        if ttl is None:
            ttl = self.settings.default_ttl_seconds_after_finished
        at = lifecycle.expires_at(status.parse_time(state.status.get("completionTime")), ttl)
        if at is None:
            return
        if at > _now():
            self.wake_at(state, at)
            return
        await self.kube.delete_task(state.namespace, state.name, state.uid)
        state.deleted = True
        log.info(
            "deleted after ttlSecondsAfterFinished",
            extra={
                "namespace": state.namespace,
                "task": state.name,
                "phase": state.status.get("phase"),
            },
        )


def _stopwatch(started: float | None) -> tuple[float, float]:
    """(start, seconds since it) of a stopwatch on the monotonic clock, started now if not yet."""
    now = time.monotonic()
    start = now if started is None else started
    return start, now - start


async def guarded(what: str, coro: Awaitable[None]) -> None:
    """Run a reconcile step; log (never raise) an error, the sweeper will try again."""
    try:
        await coro
    except Exception:
        metrics.RECONCILE_ERRORS.inc()
        log.exception("reconcile failed: %s", what)
