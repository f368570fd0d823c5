"""The executor: from watch events to `decide`'s one action per step, and the writes it takes.

Every watch event (CodeTask, Job, pod) updates the task's `TaskState` and calls `reconcile`, which
builds what is observed, asks `decide.decide` what to do, and does it: a write, a fresh read
(`Confirm`, then decide again), or nothing. Running it twice changes nothing: Job names are
deterministic, an existing Job owned by the task is adopted, and status is only patched where it
differs. Two invariants live here rather than in the decision: a Job or pod counts for a task only
by ownership (namespace and controller uid, never labels), and attempt N+1's Job is created only
once every earlier attempt's pod is known stopped (fencing: a fresh list of the task's pods).
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
from typing import Any, Final

from pydantic import ValidationError

from codetask_operator import (
    access,
    admission,
    api,
    decide,
    jobs,
    lifecycle,
    metrics,
    pools,
    redis_access,
    status,
    warm,
)
from codetask_operator.callbacks import Deliverer
from codetask_operator.finished_index import FinishedIndex, finished, of_task
from codetask_operator.heartbeats import Heartbeats
from codetask_operator.isolation import Isolation
from codetask_operator.kube import ApiError, Kube, NotOurs
from codetask_operator.pool_catalog import Catalog
from codetask_operator.publication import Publisher
from codetask_operator.results_stream import ResultsStream
from codetask_operator.settings import Settings, names_only
from codetask_operator.status import Outcome, PodView
from codetask_operator.warm_pool import WarmPools

log = logging.getLogger("codetask")


@dataclass
class TaskState:
    """The latest known CodeTask, its Jobs and their pods (from the watches and fresh reads), and
    the stopwatches and sticky decisions of its current attempt."""

    uid: str
    namespace: str = ""
    name: str = ""
    generation: int | None = None
    created: str | None = None
    generate_name: str = ""
    references_stamp: str | None = None
    """The admission webhook's stamp (access.py), if any."""
    spec: dict[str, Any] | None = None
    status: dict[str, Any] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    job_uids: dict[str, str] = field(default_factory=dict)
    """Uids of this task's Jobs by name, kept after a Job goes: its pods are known by it."""
    deleted: bool = False
    final: bool = False
    seen_at: float = field(default_factory=time.monotonic)
    touched: float = field(default_factory=time.monotonic)
    """When the Jobs or pods in view last changed (an event or a fresh read)."""
    pending_since: float | None = None
    unready_since: float | None = None
    job_missing_since: float | None = None
    job_end_seen: float | None = None
    no_pod_since: float | None = None
    events_read_at: float | None = None
    create_failure: str | None = None
    fenced_since: float | None = None
    position_written_at: float = 0.0
    heartbeat_seen: bool = False
    silent_attempt: int | None = None
    """The attempt whose runner stopped beating, as the heartbeat check saw it."""
    decided: Outcome | None = None
    """How the current attempt ends, once decided: sticky until written, whatever events follow."""
    stopped: bool = False
    """The decided attempt's Job delete went through."""
    starting: bool = False
    """Admitted under the running limits, its Job being created: it holds a slot."""
    heartbeat_written_at: float = 0.0
    held: dict[str, Any] = field(default_factory=dict)
    """Status changes made in memory only: they go with the next write, or at `held_until`."""
    held_until: datetime | None = None
    status_known: bool = False
    done_attempt: int | None = None
    """The attempt whose (warm) runner announced its end through Redis."""
    delivered: int | None = None
    """The warm attempt whose task this process put into its pod's inbox."""
    retired: set[str] = field(default_factory=set)
    """The finished task's Jobs and pods (`jobs/NAME`, `pods/NAME`) labelled out of the watches."""
    announcing: bool = False
    """The finished task's result is going to the results stream and its callback."""
    labelling: set[asyncio.Task[None]] = field(default_factory=set)
    """The label patches of its Jobs and pods in flight: the task leaves the watch after them."""
    left: bool = False
    """The finished task is labelled out of the CodeTask watch (`finished_index`)."""
    out_of_view: bool = False
    """The CodeTask went out of the watch before the operator labelled it (someone else did)."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def body(self) -> dict[str, Any]:
        """A minimal object body, for posting Events about the task."""
        return {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid},
        }

    def owns(self, body: dict[str, Any], controller: str | None) -> bool:
        """Whether a slim Job or pod is in this task's namespace and controlled by `controller`."""
        meta = body.get("metadata") or {}
        return controller is not None and (
            meta.get("controller") == controller and meta.get("namespace") == self.namespace
        )

    def add_job(self, job: dict[str, Any]) -> None:
        """Keep a (slim) Job in view if this task controls it."""
        if self.owns(job, self.uid):
            name = job["metadata"]["name"]
            self.jobs[name] = job
            self.job_uids[name] = job["metadata"].get("uid", "")
            self.touched = time.monotonic()

    def current_job(self) -> dict[str, Any] | None:
        """The current attempt's Job, if in view."""
        name = self.status.get("jobName")
        return self.jobs.get(name) if name else None

    def current_pod(self) -> dict[str, Any] | None:
        """The pod of the current attempt's Job (by its controller uid): the oldest, should there be
        more."""
        job_uid = self.job_uids.get(self.status.get("jobName") or "")
        pods = [p for p in self.pods.values() if self.owns(p, job_uid)]
        pods.sort(key=lambda p: p["metadata"].get("creationTimestamp") or "")
        return pods[0] if pods else None

    def redis_prefix(self, attempt: int | None = None) -> str:
        """The Redis key prefix of an attempt (the current one by default)."""
        attempt = attempt or int(self.status.get("attempts") or 0)
        return redis_access.prefix(self.namespace, self.name, self.uid, attempt)

    def pod_view(self) -> PodView | None:
        """The current pod, as the phase machine sees it."""
        pod = self.current_pod()
        return PodView.of(pod) if pod else None

    def finished(self) -> list[tuple[str, str]]:
        """Mark the task final and keep only what a final task still needs (its TTL and a summary
        of its status): with thousands of finished tasks, their specs and outputs add up. Returns
        the Jobs and pods in view to label finished (`leftovers`)."""
        left = self.leftovers()
        self.final = True
        self.jobs.clear()
        self.pods.clear()
        self.job_uids.clear()
        self.spec = final_spec(self.spec or {})
        self.status = {k: self.status[k] for k in FINAL_STATUS_FIELDS if k in self.status}
        return left

    def leftovers(self) -> list[tuple[str, str]]:
        """This task's Jobs and pods in view that stay once it is finished, as (plural, name): not
        being deleted, not already labelled finished, and not of a Job the operator deleted."""
        deleted = self.job_uids.get(self.status.get("jobName") or "") if self.stopped else None
        found = [("jobs", j) for j in self.jobs.values() if j["metadata"].get("uid") != deleted]
        found += [("pods", p) for p in self.pods.values() if p["metadata"]["controller"] != deleted]
        return [
            (plural, body["metadata"]["name"])
            for plural, body in found
            if not body["metadata"].get("deletionTimestamp")
            and jobs.LABEL_FINISHED not in (body["metadata"].get("labels") or {})
        ]

    def new_attempt(self) -> None:
        """Forget the stopwatches and decisions of the attempt before."""
        self.pending_since = self.unready_since = self.job_missing_since = None
        self.job_end_seen = self.no_pod_since = self.events_read_at = self.fenced_since = None
        self.create_failure = None
        self.heartbeat_seen = False
        self.silent_attempt = None
        self.decided = None
        self.stopped = False


FINAL_SPEC_FIELDS = ("ttlSecondsAfterFinished",)
FINAL_STATUS_FIELDS = ("phase", "reason", "completionTime", "durationSeconds")
"""What the operator still reads of a finished task: when to delete it, and the phase gauge."""


def final_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The part of a finished task's spec the operator still reads."""
    return {k: spec[k] for k in FINAL_SPEC_FIELDS if k in spec}


FORGET_AFTER: Final = 600.0
"""Seconds a deleted task's uid is remembered (late events ignored), and an unknown one waits for
its CodeTask to be seen."""


class Registry:
    """Task states by CodeTask uid, and the uids of deleted tasks (for a while)."""

    def __init__(self) -> None:
        self.tasks: dict[str, TaskState] = {}
        self.gone: dict[str, float] = {}

    def get(self, uid: str) -> TaskState | None:
        """The state for `uid`, created empty if a Job or pod is seen before its task; None for a
        deleted task: late events do not bring it back."""
        if uid in self.gone:
            return None
        state = self.tasks.get(uid)
        if state is None:
            state = self.tasks[uid] = TaskState(uid=uid)
        return state

    def forget(self, uid: str) -> None:
        """Drop a deleted task and remember that it was."""
        state = self.tasks.pop(uid, None)
        if state is not None:
            state.deleted = True
        self.gone[uid] = time.monotonic()

    def prune(self) -> None:
        """Drop old tombstones, and states whose CodeTask never showed up."""
        cutoff = time.monotonic() - FORGET_AFTER
        self.gone = {uid: at for uid, at in self.gone.items() if at > cutoff}
        for uid in [u for u, t in self.tasks.items() if t.spec is None and t.seen_at < cutoff]:
            del self.tasks[uid]

    def phases(self) -> list[str | None]:
        """Every task's phase (a snapshot: the metrics thread reads it while the loop runs); those
        out of the watch are counted by the `FinishedIndex`."""
        return [t.status.get("phase") for t in list(self.tasks.values()) if not t.left]


def _now() -> datetime:
    return datetime.now(UTC)


HISTORY_KEEP = api.MAX_RETRIES + 1
POSITION_REFRESH_SECONDS = 10.0
"""A queued task's position in status is refreshed at most this often (bounded API writes)."""
POSITION_WRITES_PER_SWEEP = 20
"""At most this many queue positions are rewritten per sweep (every sweepIntervalSeconds)."""
FENCE_RECHECK_SECONDS = 2.0
"""How often a retry waiting for the previous attempt's pod to stop looks again."""
HOLD_SECONDS = 2.0
"""How long a started attempt's `Pending` waits in memory for the pod's `Running` (or the end) to
carry it: one API write fewer per task that starts within it."""
NOT_ISOLATED_RECHECK_SECONDS = 10.0
"""How often a task waiting for its namespace's NetworkPolicies tries again."""
PRUNE_PER_SWEEP = 100
"""At most this many finished tasks beyond keepFinishedPerNamespace are deleted per sweep, and at
most this many out of the watch at their TTL."""
EXPIRE_RETRY_SECONDS = 10.0
"""A failed delete of an expired task is tried again after this long."""
MAX_STEPS = 6
"""Decisions per reconcile: reads (`Confirm`) and a stop lead to one more each."""
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
    "bindSeconds",
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
        catalog: Catalog | None = None,
    ) -> None:
        self.kube = kube
        self.heartbeats = heartbeats
        self.catalog = catalog
        self.settings = settings
        self.registry = registry
        self.rng = rng or random.Random()
        self.admission_lock = asyncio.Lock()
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.background: set[asyncio.Task[None]] = set()
        self.redis_secret = redis_access.secret(settings.redis_acl_secret, settings.redis_url or "")
        self.isolation = Isolation(kube, settings)
        self.out_of_watch = FinishedIndex()
        self.labelling_out: set[str] = set()
        """Jobs and pods (`plural/namespace/name`) of tasks out of the watch being labelled."""
        self.callbacks: Deliverer | None = None
        if settings.callback_key and settings.callback_allowed_hosts:
            self.callbacks = Deliverer(
                kube,
                settings.callback_allowed_hosts,
                settings.callback_key,
                settings.callback_retry_seconds,
                settings.callback_timeout_seconds,
            )
        self.publisher: Publisher | None = None
        if heartbeats is not None and settings.results_stream:
            stream = ResultsStream(
                heartbeats.client,
                settings.results_stream,
                settings.results_max_len,
                settings.results_marker_ttl_seconds,
            )
            ttl = settings.results_marker_ttl_seconds
            self.publisher = Publisher(stream, kube, ttl)
        self.warm: WarmPools | None = None
        if heartbeats is not None and catalog is not None:
            self.warm = WarmPools(kube, settings, heartbeats, catalog, self.isolation)

    def spawn(self, what: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `coro` in the background (guarded), keeping a reference until it is done."""
        task = asyncio.get_running_loop().create_task(guarded(what, coro))
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    def forget(self, uid: str) -> None:
        """A deleted task: no timer fires for it and no late event brings it back."""
        if (timer := self.timers.pop(uid, None)) is not None:
            timer.cancel()
        state = self.registry.tasks.get(uid)
        if state is not None and self.heartbeats is not None:
            attempts = int(state.status.get("attempts") or 0)
            users = [redis_access.user(uid, n) for n in range(1, attempts + 1)]
            self.spawn(f"revoke {uid}", self.heartbeats.revoke(users))
        if state is not None:
            self.isolation.forget(state.namespace)
        self.registry.forget(uid)

    def retire(self, state: TaskState, objects: list[tuple[str, str]]) -> None:
        """In the background, label a finished task's Jobs and pods (plural, name) out of the
        watches, each once: they stay for `kubectl logs` until the task goes, and a restart does
        not list them (with thousands kept, listing them cost hundreds of MB)."""
        for plural, name in objects:
            if (key := f"{plural}/{name}") not in state.retired:
                state.retired.add(key)
                task = self.spawn(f"retire {key}", self._retire(state, plural, name))
                state.labelling.add(task)
                task.add_done_callback(state.labelling.discard)

    async def _retire(self, state: TaskState, plural: str, name: str) -> None:
        try:
            await self.kube.label_finished(state.namespace, plural, name)
        except ApiError as exc:
            if exc.status != 404:
                state.retired.discard(f"{plural}/{name}")  # the next event of it tries again
                raise

    async def reconcile(self, state: TaskState) -> None:
        """Bring the task's Job and status in line with what is observed."""
        async with state.lock:
            if state.spec is None or state.deleted:
                return
            try:
                if state.held_until is not None and state.held_until <= _now():
                    await self._write(state, {})
                if state.final or status.is_final(state.status):
                    if not state.final:
                        self._announce(state, first_sight=True)
                    self.retire(state, state.finished())
                    await self._expire_if_due(state)
                else:
                    await self._reconcile(state)
            except ApiError as exc:
                if exc.status == 404 and await self._task_gone(state):
                    self.forget(state.uid)
                    return
                raise

    async def _task_gone(self, state: TaskState) -> bool:
        """Whether this incarnation of the task is gone, read afresh: a 404 from a call about it
        may also be its namespace's or a Job's."""
        task = await self.kube.get_task(state.namespace, state.name)
        return task is None or task["metadata"].get("uid") != state.uid

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
        """Reconcile `state` again at `when`, or when its held status is due if that is sooner
        (one timer per task; the sweeper is the backstop)."""
        if state.held_until is not None:
            when = min(when, state.held_until)
        if (old := self.timers.pop(state.uid, None)) is not None:
            old.cancel()
        delay = max(0.0, (when - _now()).total_seconds())

        def fire() -> None:
            self.timers.pop(state.uid, None)
            if not state.deleted:
                self.spawn(state.name, self.reconcile(state))

        self.timers[state.uid] = asyncio.get_running_loop().call_later(delay, fire)

    def _spec(self, state: TaskState) -> tuple[api.CodeTaskSpec | None, str]:
        try:
            return api.CodeTaskSpec.model_validate(state.spec), ""
        except ValidationError as exc:
            errors = [
                f"spec.{'.'.join(map(str, e['loc']))}: {api.describe_error(e)}"
                for e in exc.errors()
            ]
            return None, "; ".join(errors)

    def observe(
        self,
        state: TaskState,
        spec: api.CodeTaskSpec | None,
        spec_error: str,
        fresh: frozenset[str],
        report: Outcome | None,
    ) -> decide.Observed:
        """What `decide` reads: the task as in view, and the stopwatches, started or stopped."""
        now = time.monotonic()
        job_name = state.status.get("jobName")
        job = state.current_job()
        pod = state.pod_view()
        ended = job is not None and status.job_finished(job) is not None
        state.job_missing_since = _since(state.job_missing_since, bool(job_name) and job is None)
        state.job_end_seen = _since(state.job_end_seen, ended)
        state.no_pod_since = _since(state.no_pod_since, job is not None and pod is None)
        state.pending_since = _since(state.pending_since, pod is not None and not pod.started_at)
        state.unready_since = _since(
            state.unready_since, pod is not None and bool(pod.started_at) and pod.ready is False
        )
        attempt = int(state.status.get("attempts") or 0)
        return decide.Observed(
            spec=spec,
            status=state.status,
            now=_now(),
            generation=state.generation,
            spec_error=spec_error,
            job=job,
            pod=pod,
            pod_of_job_seen=any(
                (p["metadata"].get("labels") or {}).get("job-name") == job_name
                for p in state.pods.values()
            ),
            fresh=fresh,
            report=report,
            redis=self.heartbeats is not None,
            create_failure=state.create_failure,
            decided=state.decided,
            stopped=state.stopped,
            heartbeat_silent=state.silent_attempt == attempt,
            runner_done=state.done_attempt == attempt,
            clocks=decide.Clocks(
                job_missing=_elapsed(state.job_missing_since, now),
                job_ended=_elapsed(state.job_end_seen, now),
                pending=_elapsed(state.pending_since, now) or 0.0,
                unready=_elapsed(state.unready_since, now) or 0.0,
                no_pod=_elapsed(state.no_pod_since, now),
                quiet=now - state.touched,
                events_read=_elapsed(state.events_read_at, now),
            ),
            pending_grace=self.settings.pending_grace_seconds,
            heartbeat_ttl=self.settings.heartbeat_ttl_seconds,
        )

    async def _reconcile(self, state: TaskState) -> None:
        spec, spec_error = self._spec(state)
        if spec is not None:
            await self._deliver_warm(state, spec)
        fresh: frozenset[str] = frozenset()
        report: Outcome | None = None
        for _ in range(MAX_STEPS):
            action = decide.decide(self.observe(state, spec, spec_error, fresh, report))
            if isinstance(action, decide.Confirm):
                report = await self._read(state, action.reads) or report
                fresh |= action.reads
                continue
            if isinstance(action, decide.Stop):
                await self._stop(state, action.outcome)
                continue
            assert spec is not None or isinstance(action, decide.Invalid)
            await self._act(state, spec, action)
            return
        log.error("no decision after %d steps", MAX_STEPS, extra={"task": state.name})

    async def _act(
        self, state: TaskState, spec: api.CodeTaskSpec | None, action: decide.Action
    ) -> None:
        match action:
            case decide.Invalid(message):
                await self._invalid(state, message)
            case decide.Wait(until):
                if until is not None:
                    self.wake_at(state, until)
            case decide.Start(attempt):
                assert spec is not None
                await self._admit_or_queue(state, spec, attempt)
            case decide.End(outcome):
                assert spec is not None
                await self._attempt_ended(state, spec, outcome, state.pod_view())
            case decide.Update(patch):
                before = state.status.get("phase")
                await self._write(state, patch)
                if before != state.status.get("phase") == api.Phase.RUNNING:
                    pod = state.pod_view()
                    where = f"pod {pod.name} running on {pod.node}" if pod else "running"
                    self.post_event(state, "Normal", "Started", where)

    async def _read(self, state: TaskState, reads: frozenset[str]) -> Outcome | None:
        """Read afresh what `decide` asked for; the runner's report, if that was asked."""
        job_name = state.status.get("jobName") or ""
        if decide.JOB in reads:
            fresh = await self.kube.get_job(state.namespace, job_name)
            state.jobs.pop(job_name, None)
            if fresh is not None:
                state.add_job(status.slim(fresh))
            state.touched = time.monotonic()
        if decide.PODS in reads:
            selector = f"{jobs.LABEL_TASK_UID}={state.uid}"
            listed = await self.kube.list_pods(state.namespace, selector)
            state.pods = {p["metadata"]["name"]: status.slim(p) for p in listed}
            state.touched = time.monotonic()
        if decide.EVENTS in reads:
            uid = state.job_uids.get(job_name)
            message = await self.kube.failed_create(state.namespace, uid) if uid else None
            state.create_failure = message or state.create_failure
            state.events_read_at = time.monotonic()
        if decide.REPORT in reads and self.heartbeats is not None:
            return status.reported_outcome(await self.heartbeats.result(state.redis_prefix()))
        return None

    async def _stop(self, state: TaskState, outcome: Outcome) -> None:
        """End the attempt as `outcome` before its Job did: the decision sticks, the Job goes (its
        pods after it, by the garbage collector). A failed delete is tried again next pass."""
        state.decided = state.decided or outcome
        await self.kube.delete_job(state.namespace, state.status.get("jobName") or "")
        state.stopped = True

    async def admit_waiting(self, refresh_positions: bool = False) -> None:
        """Start the queued tasks that fit now. With `refresh_positions` (the sweeper), also rewrite
        the stale queue positions, front of the queue first and at most POSITION_WRITES_PER_SWEEP:
        every start moves every waiting task, and a deep queue must not cost a write per task."""
        if not self._limited():
            return
        async with self.admission_lock:
            decision = self._decide()
        for uid in decision.admit:
            if (state := self.registry.tasks.get(uid)) is not None:
                self.spawn(state.name, self.reconcile(state))
        if not refresh_positions:
            return
        now = time.monotonic()
        queued = [
            (position, state)
            for uid, position in decision.positions.items()
            if (state := self.registry.tasks.get(uid)) is not None
        ]
        stale = sorted(
            (
                (position, state)
                for position, state in queued
                if now - state.position_written_at >= POSITION_REFRESH_SECONDS
                and state.status.get("queuePosition") != position
            ),
            key=lambda item: item[0],
        )
        for position, state in stale[:POSITION_WRITES_PER_SWEEP]:
            state.position_written_at = now  # one write in flight per task
            self.spawn(state.name, self._requeue(state, position))

    async def check_heartbeats(self) -> None:
        """Heartbeats and progress of running tasks from Redis. A runner that beat and went silent
        marks its attempt (not whichever attempt is current later) for `decide`."""
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
        beats = await self.heartbeats.read([t.redis_prefix() for t in running])
        if self.heartbeats.users_lost:
            self.heartbeats.users_lost = False
            await self._grant_all()
        if beats is None:
            return
        ttl = self.settings.heartbeat_ttl_seconds
        for state in running:
            beat = beats[state.redis_prefix()]
            if beat.heartbeat is None:
                if state.heartbeat_seen:
                    state.silent_attempt = int(state.status.get("attempts") or 0)
                    self.spawn(state.name, self.reconcile(state))
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
        full = status.parse_result(await self.heartbeats.result(state.redis_prefix()))
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
            between = t.status.get("reason") in decide.BETWEEN_ATTEMPTS
            due = status.parse_time(t.status.get("nextAttemptTime"))
            if between and due is not None and due > now:
                continue
            candidates.append(
                lifecycle.Candidate(
                    uid=t.uid,
                    namespace=t.namespace,
                    priority=int(t.spec.get("priority") or 0),
                    created=t.created or "",
                    running=t.starting or (bool(t.status.get("jobName")) and not between),
                )
            )
        return lifecycle.admit(
            candidates, self.settings.max_running, self.settings.max_running_per_namespace
        )

    async def _admit_or_queue(self, state: TaskState, spec: api.CodeTaskSpec, attempt: int) -> None:
        """Start the attempt if a slot is free (the slot is taken under the admission lock, the
        API calls made outside it), else queue the task."""
        if self._limited():
            async with self.admission_lock:
                decision = self._decide()
                state.starting = state.uid in decision.admit
            if not state.starting:
                if state.status.get("phase") != api.Phase.QUEUED:
                    # Once queued, its position moves with every start: the sweeper rewrites it,
                    # bounded (every write here would come back as an event and move it again).
                    await self._queue(state, decision.positions.get(state.uid))
                return
        try:
            await self._start(state, spec, attempt)
        finally:
            state.starting = False

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
        conditions = _condition(
            state, api.ConditionType.ADMITTED, api.ConditionStatus.FALSE, api.Reason.QUEUED, message
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
            custom_image=spec.command is not None,
            now=_now(),
        )

    def _hold(self, state: TaskState, patch: dict[str, Any]) -> None:
        """Change the status in memory only; the change goes with the task's next write, or by
        itself after HOLD_SECONDS. A pod that runs at once is shown Running without a Pending write
        before it; a crash before the write loses nothing (the Job's name is deterministic: the
        next start adopts it)."""
        state.held.update(patch)
        state.status = {k: v for k, v in {**state.status, **patch}.items() if v is not None}
        if state.held_until is None:
            state.held_until = _now() + timedelta(seconds=HOLD_SECONDS)
        self.wake_at(state, state.held_until)

    async def _write(self, state: TaskState, patch: dict[str, Any]) -> None:
        patch = {**state.held, **patch}
        if not patch:
            return
        body = await self.kube.patch_status(state.namespace, state.name, patch)
        state.held, state.held_until = {}, None
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
        ctx = status.Context(state.generation, 0, 0, False, _now())
        outcome = status.Outcome(api.Phase.FAILED, api.Reason.INVALID_SPEC, message)
        await self._write(state, status.final_patch(state.status, outcome, None, ctx))
        self._announce(state, first_sight=False)
        self.retire(state, state.finished())
        self.post_event(state, "Warning", str(api.Reason.INVALID_SPEC), message)

    async def _start(self, state: TaskState, spec: api.CodeTaskSpec, attempt: int) -> None:
        known = await self.catalog.with_fresh(spec.pool) if self.catalog else {}
        errors = admission.validate(state.spec or {}, self.settings, state.namespace, known)
        if errors:
            await self._invalid(state, "; ".join(errors))
            return
        pool, _ = pools.choose(spec.pool, state.namespace, known)
        if (unchecked := self._unchecked(state, spec)) is not None:
            await self._invalid(state, unchecked)
            return
        if attempt > 1 and (running := await self._fence(state, attempt)):
            await self._fenced(state, spec, attempt, running)
            return
        if (why := await self.isolation.ensure(state.namespace)) is not None:
            await self._not_isolated(state, attempt, why)
            return
        redis = await self._redis_access(state, attempt)
        if (cold := await self._start_warm(state, spec, attempt, pool, redis)) is None:
            return
        manifest = jobs.build_job(
            state.name, state.uid, state.namespace, spec, attempt, self.settings, redis, pool
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
        message = f"Job {name} created (attempt {attempt})"
        if cold:
            message = f"{message}; started cold: {cold}"
        patch = self._started(state, attempt, name, message, pool)
        state.new_attempt()
        self._hold(state, patch)
        self.post_event(state, "Normal", "Scheduled", message)

    def _started(
        self, state: TaskState, attempt: int, job: str, message: str, pool: pools.Pool | None
    ) -> dict[str, Any]:
        """The status patch of an attempt whose Job was made (cold) or bound (warm)."""
        conditions = status.set_condition(
            state.status.get("conditions") or [],
            api.ConditionType.ADMITTED,
            api.ConditionStatus.TRUE,
            api.Reason.SCHEDULED,
            message,
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
                "message": message,
                "attempts": attempt,
                "jobName": job,
                "dispatch": "cold",
                "conditions": conditions,
                "observedGeneration": state.generation,
            }
        )
        if pool is not None or state.status.get("pool") is not None:
            patch["pool"] = pool.name if pool else None
        return patch

    async def _start_warm(
        self,
        state: TaskState,
        spec: api.CodeTaskSpec,
        attempt: int,
        pool: pools.Pool | None,
        redis: jobs.RedisAccess | None,
    ) -> str | None:
        """Start the attempt in a ready warm pod of its pool, if it fits there and one is ready:
        bind the pod, write the status (after a restart it names the bound Job), deliver the task.
        None once started; else why it starts cold ("" outside a warm pool)."""
        if pool is None or pool.spec is None or pool.spec.warm is None:
            return ""
        if (why := warm.cold_reason(spec, pool, self.settings)) is not None:
            return why
        not_ready = "no warm pod was ready"
        if self.warm is None or redis is None:
            return not_ready
        bound = await self.warm.bind(
            pool, state.namespace, state.name, state.uid, attempt, spec.timeout_seconds
        )
        if bound is None:
            return not_ready
        message = f"bound to warm pod {bound.pod} (attempt {attempt})"
        patch = self._started(state, attempt, bound.job, message, pool)
        now = _now()
        running = status.set_condition(
            patch["conditions"],
            api.ConditionType.RUNNING,
            api.ConditionStatus.TRUE,
            api.Reason.STARTED,
            f"pod {bound.pod} is running",
            now,
            state.generation,
        )
        # Running already: its pod runs, and has the task in milliseconds.
        patch.update(
            {
                "phase": str(api.Phase.RUNNING),
                "reason": str(api.Reason.STARTED),
                "message": f"running on {bound.node}",
                "dispatch": "warm",
                "podName": bound.pod,
                "nodeName": bound.node,
                "startTime": status.iso(now),
                "lastHeartbeatTime": status.iso(now),
                "bindSeconds": round(bound.seconds, 4),
                "conditions": running,
            }
        )
        state.new_attempt()
        await self._write(state, patch)
        await self._deliver_warm(state, spec, redis)
        self.post_event(state, "Normal", "Scheduled", message)
        return None

    async def _deliver_warm(
        self, state: TaskState, spec: api.CodeTaskSpec, redis: jobs.RedisAccess | None = None
    ) -> None:
        """Put a warm attempt's task into its pod's inbox, once per process (again after a restart:
        the runner takes one and claims the attempt, so a second copy is never run), and wait for
        its runner's notice in the background. `redis`: the attempt's access, if just granted."""
        attempt = int(state.status.get("attempts") or 0)
        if (
            self.warm is None
            or state.status.get("dispatch") != "warm"
            or state.delivered == attempt
            or state.final
            or state.status.get("reason") in decide.BETWEEN_ATTEMPTS
        ):
            return
        job = self.warm.jobs.get((state.namespace, state.status.get("jobName") or ""))
        token = ((job or {}).get("metadata", {}).get("labels") or {}).get(warm.LABEL_TOKEN)
        if token is None:
            return  # not in view yet: the next pass
        redis = redis or await self._redis_access(state, attempt)
        if redis is None:
            return  # Redis down: the next pass
        payload = warm.payload(state.name, state.namespace, spec, attempt, self.settings, redis)
        if await self.warm.deliver(token, payload):
            state.delivered = attempt
            self.spawn(f"warm {state.name}", self._await_done(state, attempt, spec))

    async def _await_done(self, state: TaskState, attempt: int, spec: api.CodeTaskSpec) -> None:
        """Wait for the warm runner's notice that it wrote its result, then reconcile: the result
        is in status without waiting for the kubelet to report the pod's end."""
        assert self.heartbeats is not None
        prefix = state.redis_prefix(attempt)
        end = time.monotonic() + spec.timeout_seconds + self.settings.grace_seconds + 60
        while time.monotonic() < end:
            current = int(state.status.get("attempts") or 0) == attempt
            if state.final or state.deleted or not current:
                return
            done = await self.heartbeats.wait_done(prefix)
            if done:
                state.done_attempt = attempt
                await self.reconcile(state)
                return
            if done is None:
                await asyncio.sleep(1)
            elif await self.heartbeats.claimed(prefix) is False:
                # Not taken in a whole wait (Redis restarted and lost the inbox, or a reply was
                # lost): deliver it again; the runner's claim keeps it to one run.
                state.delivered = None
                await self._deliver_warm(state, spec)
                return

    def _unchecked(self, state: TaskState, spec: api.CodeTaskSpec) -> str | None:
        """Why a task may not start with its Secret/ConfigMap references: the webhook did not
        check that its creator may read them (no valid stamp). None when it may start."""
        if self.settings.references_key is None:
            return None
        refs = access.references(spec)
        if not refs:
            return None
        created = status.parse_time(state.created)
        key = self.settings.references_key.encode()
        stamp = state.references_stamp
        ns, name, generate_name = state.namespace, state.name, state.generate_name
        if created and access.verified(key, stamp, ns, name, generate_name, refs, created):
            return None
        return access.unchecked(refs)

    async def _fence(self, state: TaskState, attempt: int) -> list[PodView]:
        """The pods of earlier attempts that may still run, read afresh (labels select, and any pod
        so labelled in the namespace counts: fencing errs on the side of waiting). Each one's Job
        is deleted (again: a delete may have failed); the garbage collector deletes the pod."""
        listed = await self.kube.list_pods(state.namespace, f"{jobs.LABEL_TASK_UID}={state.uid}")
        running = []
        for pod in listed:
            view = PodView.of(pod)
            labels = pod["metadata"].get("labels") or {}
            if view.stopped or labels.get(jobs.LABEL_ATTEMPT) == str(attempt):
                continue
            running.append(view)
            if not view.deleted and (job_name := labels.get("job-name")):
                await self.kube.delete_job(state.namespace, job_name)
        return running

    async def _fenced(
        self, state: TaskState, spec: api.CodeTaskSpec, attempt: int, running: list[PodView]
    ) -> None:
        """Attempt `attempt` waits for `running` to stop; after timeoutSeconds of waiting the task
        ends with the previous attempt's outcome."""
        now = time.monotonic()
        state.fenced_since = state.fenced_since or now
        pods = ", ".join(
            f"pod {p.name} on node {p.node or '(none)'}"
            + (" (not ready: node unreachable?)" if p.ready is False else "")
            for p in running
        )
        why = f"the previous attempt's {pods} has not stopped yet"
        if now - state.fenced_since > spec.timeout_seconds:
            last = (state.status.get("history") or [{}])[-1]
            reason = api.Reason(last.get("reason") or api.Reason.LOST)
            phase = (
                api.Phase.TIMED_OUT if reason == api.Reason.DEADLINE_EXCEEDED else api.Phase.FAILED
            )
            message = (
                f"{last.get('message') or reason}; attempt {attempt} was not started: {why} "
                f"after {spec.timeout_seconds}s"
            )
            outcome = Outcome(phase, reason, message, last.get("exitCode"))
            await self._finish(state, spec, outcome, None)
            return
        await self._wait_to_start(
            state, api.ConditionType.RUNNING, api.Reason.STOPPING, f"attempt {attempt} waits: {why}"
        )
        self.wake_at(state, _now() + timedelta(seconds=FENCE_RECHECK_SECONDS))

    async def _not_isolated(self, state: TaskState, attempt: int, why: str) -> None:
        """Attempt `attempt` waits for its namespace's NetworkPolicies: no pod runs unisolated."""
        message = f"attempt {attempt} waits: {why}"
        before = state.status.get("reason")
        await self._wait_to_start(
            state, api.ConditionType.ADMITTED, api.Reason.NOT_ISOLATED, message
        )
        if before != api.Reason.NOT_ISOLATED:
            self.post_event(state, "Warning", str(api.Reason.NOT_ISOLATED), message)
        self.wake_at(state, _now() + timedelta(seconds=NOT_ISOLATED_RECHECK_SECONDS))

    async def _wait_to_start(
        self, state: TaskState, condition: api.ConditionType, reason: api.Reason, message: str
    ) -> None:
        """Show the next attempt as `Pending` for `reason` (its condition False), if not already."""
        conditions = _condition(state, condition, api.ConditionStatus.FALSE, reason, message)
        patch = {
            "phase": str(api.Phase.PENDING),
            "reason": str(reason),
            "message": message,
            "conditions": conditions,
        }
        await self._write(state, status.changed(state.status, patch))

    async def _redis_access(self, state: TaskState, attempt: int) -> jobs.RedisAccess | None:
        """The attempt's own Redis user, created now — or, while Redis is down, once it is back
        (the password is the same: HMAC); None when task pods get no Redis."""
        if self.heartbeats is None or await self.heartbeats.task_access() is False:
            return None
        assert self.settings.redis_url is not None
        password = await self._grant(self.heartbeats, state, attempt)
        user = redis_access.user(state.uid, attempt)
        return jobs.RedisAccess(
            redis_access.task_url(self.settings.redis_url, user, password),
            state.redis_prefix(attempt),
        )

    async def _grant(self, heartbeats: Heartbeats, state: TaskState, attempt: int) -> str:
        """Create (or set again) the attempt's Redis user; its password."""
        password = redis_access.password(self.redis_secret, state.namespace, state.uid, attempt)
        rules = redis_access.acl_rules(state.redis_prefix(attempt), password)
        await heartbeats.grant(redis_access.user(state.uid, attempt), rules)
        return password

    async def _grant_all(self) -> None:
        """Set again the users of every attempt under way and of every waiting warm pod (the same
        passwords: HMAC)."""
        if self.heartbeats is None or not await self.heartbeats.task_access():
            return
        if self.warm is not None:
            await self.warm.regrant()
        for state in list(self.registry.tasks.values()):
            under_way = state.status.get("jobName") and (
                state.status.get("reason") not in decide.BETWEEN_ATTEMPTS
            )
            if state.spec and not state.final and not state.deleted and under_way:
                await self._grant(self.heartbeats, state, int(state.status.get("attempts") or 1))

    def _attempt_over(
        self, state: TaskState, attempt: int, outcome: Outcome, node: str | None
    ) -> None:
        """In the background, once the attempt's end is written: revoke its Redis user (a runner
        still stopping writes no more) and count it for its node."""
        heartbeats = self.heartbeats
        if heartbeats is None:
            return
        succeeded = outcome.phase is api.Phase.SUCCEEDED
        user = redis_access.user(state.uid, attempt)

        async def over() -> None:
            await heartbeats.revoke([user])
            if node:
                await heartbeats.record(node, succeeded)

        self.spawn(f"attempt over {state.name}", over())

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
            node = state.status.get("nodeName") or (pod.node if pod else None)
            await self._finish(state, spec, outcome, pod)
            self._attempt_over(state, attempts, outcome, node)
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
                "conditions": _condition(
                    state,
                    api.ConditionType.RUNNING,
                    api.ConditionStatus.FALSE,
                    api.Reason.RETRYING,
                    message,
                ),
            }
        )
        await self._write(state, patch)
        self._attempt_over(state, attempts, outcome, state.status.get("nodeName"))
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
        self._announce(state, first_sight=False)
        self.retire(state, state.finished())
        metrics.FINISHED.labels(str(outcome.phase), str(outcome.reason)).inc()
        if (duration := state.status.get("durationSeconds")) is not None:
            metrics.DURATION.labels(str(outcome.phase)).observe(duration)
        kind = (
            "Normal" if outcome.phase in (api.Phase.SUCCEEDED, api.Phase.CANCELLED) else "Warning"
        )
        self.post_event(state, kind, str(outcome.reason), f"{outcome.phase}: {outcome.message}")
        await self._expire_if_due(state)
        await self.admit_waiting()

    def _announce(self, state: TaskState, first_sight: bool) -> None:
        """In the background, once the task's final status is written (or it is first seen
        finished, after a restart): its result to the results stream and its spec.callback, then
        the task out of the watch. Called before the state is trimmed (`TaskState.finished`)."""
        final, spec = dict(state.status), dict(state.spec or {})
        state.announcing = True
        self.spawn(f"announce {state.name}", self._settle(state, final, spec, first_sight))

    async def _settle(
        self, state: TaskState, final: dict[str, Any], spec: dict[str, Any], first_sight: bool
    ) -> None:
        ns, name, uid = state.namespace, state.name, state.uid
        try:
            if self.publisher is not None:
                if first_sight:  # the operator may have died between the status and the append
                    self.publisher.check(ns, name, uid, final, _now())
                else:
                    await self.publisher.publish(ns, name, uid, final)
            url = (spec.get("callback") or {}).get("url")
            callbacks = self.callbacks
            if (
                callbacks is not None
                and url
                and (not first_sight or callbacks.wants(spec, final, _now()))
            ):
                await callbacks.deliver(ns, name, uid, url, final)
        finally:
            state.announcing = False
        if state.labelling:  # its Jobs and pods first: their events would not find it after
            await asyncio.wait(set(state.labelling))
        await self.leave_watch(state)

    async def leave_watch(self, state: TaskState) -> None:
        """Label a finished task out of the CodeTask watch, once its result is announced (the
        sweeper tries again one it could not); the index keeps what its deletion needs."""
        if not state.final or state.left or state.deleted or state.announcing or state.labelling:
            return
        if self.publisher is not None and state.uid in self.publisher.pending:
            return  # the sweeper publishes it first
        try:
            await self.kube.label_task_finished(state.namespace, state.name, state.uid)
        except ApiError as exc:
            if exc.status in (404, 409, 422):  # gone, or the name is another task's now
                state.deleted = True
                return
            raise
        state.left = True
        ttl = self.settings.default_ttl_seconds_after_finished
        spec, final = state.spec or {}, state.status
        self.out_of_watch.add(finished(state.namespace, state.name, state.uid, spec, final, ttl))
        if state.out_of_view:
            self.left_watch(state.uid)

    def left_watch(self, uid: str) -> None:
        """The task's CodeTask went out of the watch (its finished label): forget it, as one
        deleted, without revoking anything (all its attempts are over). One the operator has not
        labelled yet stays until it has (then its TTL and the namespace cap apply); one not
        finished goes on without its CodeTask's events (the admission webhook refuses that)."""
        state = self.registry.tasks.get(uid)
        if state is not None and not state.left:
            state.out_of_view = True
            if not state.final:
                log.warning(
                    "labelled %s before it finished: its changes (spec.cancel) are not seen",
                    jobs.LABEL_FINISHED,
                    extra={"namespace": state.namespace, "task": state.name},
                )
            return
        if (timer := self.timers.pop(uid, None)) is not None:
            timer.cancel()
        self.registry.forget(uid)

    async def settle_finished(self) -> None:
        """Take out of the watch the finished tasks that could not go yet."""
        for state in list(self.registry.tasks.values()):
            await self.leave_watch(state)

    async def unfinished_tasks(self, namespaces: list[str]) -> list[dict[str, Any]]:
        """The CodeTasks of the served namespaces still in the watch, read afresh."""
        return [
            task
            for scope in _list_scopes(namespaces)
            for task in await self.kube.list_tasks(scope, UNFINISHED_SELECTOR)
            if _served(task["metadata"]["namespace"], namespaces)
        ]

    async def load_out_of_watch(self, namespaces: list[str]) -> None:
        """Index the finished tasks already out of the watch (after a start), a page at a time;
        then label out the Jobs and pods of theirs seen meanwhile (their owner unknown then)."""
        ttl = self.settings.default_ttl_seconds_after_finished
        for namespace in _list_scopes(namespaces):
            async for task in self.kube.task_pages(namespace, FINISHED_SELECTOR):
                if _served(task["metadata"]["namespace"], namespaces):
                    self.out_of_watch.add(of_task(task, ttl))
        self.out_of_watch.loaded = True
        for state in list(self.registry.tasks.values()):
            if state.spec is None and state.uid in self.out_of_watch:
                del self.registry.tasks[state.uid]
                namespace = self.out_of_watch.namespace_of[state.uid]
                selector = f"{jobs.LABEL_TASK_UID}={state.uid},!{jobs.LABEL_FINISHED}"
                for plural in ("jobs", "pods"):
                    read = self.kube.list_jobs if plural == "jobs" else self.kube.list_pods
                    for body in await read(namespace, selector):
                        if not body["metadata"].get("deletionTimestamp"):
                            self.label_out(namespace, plural, body["metadata"]["name"])

    def label_out(self, namespace: str, plural: str, name: str) -> None:
        """In the background, label a Job or pod of a task out of the watch finished too (seen
        after its task left, as after a restart, or with its label removed)."""
        if (key := f"{plural}/{namespace}/{name}") in self.labelling_out:
            return
        self.labelling_out.add(key)

        async def label() -> None:
            try:
                await self.kube.label_finished(namespace, plural, name)
            except ApiError as exc:
                if exc.status != 404:
                    raise
            finally:
                self.labelling_out.discard(key)

        self.spawn(f"label out {key}", label())

    async def expire_out_of_watch(self) -> None:
        """Delete the finished tasks out of the watch whose TTL has passed, each read afresh
        first: a TTL made longer (or removed) since holds, and one back in the watch (its label
        removed) is the watch's again."""
        ttl = self.settings.default_ttl_seconds_after_finished
        now = _now()
        for entry in self.out_of_watch.due(now, PRUNE_PER_SWEEP):
            task = await self.kube.get_task(entry.namespace, entry.name)
            meta = (task or {}).get("metadata") or {}
            if task is None or meta.get("uid") != entry.uid or not _labelled_finished(meta):
                self.out_of_watch.discard(entry.namespace, entry.uid)
                continue
            fresh = of_task(task, ttl)
            if fresh.expires is None or fresh.expires > now:
                self.out_of_watch.add(fresh)
                continue
            await self.kube.delete_task(entry.namespace, entry.name, entry.uid)
            self.out_of_watch.discard(entry.namespace, entry.uid)
            log.info(
                "deleted after ttlSecondsAfterFinished",
                extra={"namespace": entry.namespace, "task": entry.name, "phase": entry.phase},
            )

    async def prune_finished(self) -> None:
        """Delete the oldest finished tasks of each namespace beyond keepFinishedPerNamespace, at
        most PRUNE_PER_SWEEP, none whose result is not in the results stream yet.

        Only tasks a fresh list of the namespace still has count (the index may keep some deleted
        by someone else). Those known to the operator may be fewer than the namespace has (after
        a start, before the watch showed them all): the oldest beyond the keep among them are
        also beyond it among all, so nothing is deleted that a full view would keep."""
        keep = self.settings.keep_finished_per_namespace
        if not keep or not self.out_of_watch.loaded:
            return
        watched: dict[str, dict[str, TaskState]] = {}
        for state in self.registry.tasks.values():
            if state.final and not state.deleted and not state.left:
                watched.setdefault(state.namespace, {})[state.uid] = state
        budget = PRUNE_PER_SWEEP
        for namespace in sorted(set(watched) | set(self.out_of_watch.by_namespace)):
            in_view = watched.get(namespace, {})
            if len(in_view) + len(self.out_of_watch.namespace(namespace)) <= keep or budget <= 0:
                continue
            listed = await self.kube.task_uids(namespace)
            self.out_of_watch.confirm(namespace, listed)
            out = {entry.uid: entry for entry in self.out_of_watch.namespace(namespace)}
            ages = [
                (state.uid, status.parse_time(state.status.get("completionTime")))
                for state in in_view.values()
                if state.uid in listed
            ] + [(entry.uid, entry.completed) for entry in out.values()]
            for uid in lifecycle.beyond_keep(ages, keep):
                if budget <= 0:
                    break
                if self.publisher is not None and uid in self.publisher.pending:
                    continue
                name = in_view[uid].name if uid in in_view else out[uid].name
                await self.kube.delete_task(namespace, name, uid)
                if uid in in_view:
                    in_view[uid].deleted = True
                else:
                    self.out_of_watch.discard(namespace, uid)
                budget -= 1
                log.info(
                    "deleted beyond keepFinishedPerNamespace",
                    extra={"namespace": namespace, "task": name, "keep": keep},
                )

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
        if self.publisher is not None and state.uid in self.publisher.pending:
            # Its result is not in the results stream yet: the task keeps it meanwhile.
            self.wake_at(state, _now() + timedelta(seconds=EXPIRE_RETRY_SECONDS))
            return
        try:
            await self.kube.delete_task(state.namespace, state.name, state.uid)
        except ApiError:
            self.wake_at(state, _now() + timedelta(seconds=EXPIRE_RETRY_SECONDS))
            raise
        state.deleted = True
        log.info(
            "deleted after ttlSecondsAfterFinished",
            extra={
                "namespace": state.namespace,
                "task": state.name,
                "phase": state.status.get("phase"),
            },
        )


FINISHED_SELECTOR: Final = jobs.LABEL_FINISHED
"""The finished tasks out of the watch (`Reconciler.leave_watch`)."""
UNFINISHED_SELECTOR: Final = f"!{jobs.LABEL_FINISHED}"
"""The CodeTasks the operator watches."""


def _list_scopes(namespaces: list[str]) -> list[str | None]:
    """Where to list the served namespaces' CodeTasks: namespace by namespace when they are all
    names (the chart then grants namespaced Roles only), else the cluster's (None)."""
    if names_only(namespaces):
        return list(namespaces)
    return [None]


def _labelled_finished(meta: dict[str, Any]) -> bool:
    return jobs.LABEL_FINISHED in (meta.get("labels") or {})


def _served(namespace: str, namespaces: list[str]) -> bool:
    """Whether the operator serves `namespace` (names or globs; none: all)."""
    return pools.matches(namespace, namespaces or ["*"])


async def guarded(what: str, coro: Awaitable[None]) -> None:
    """Run a reconcile step; log (never raise) an error, the sweeper will try again."""
    try:
        await coro
    except Exception:
        metrics.RECONCILE_ERRORS.inc()
        log.exception("reconcile failed: %s", what)


def _condition(
    state: TaskState,
    type_: api.ConditionType,
    status_: api.ConditionStatus,
    reason: api.Reason,
    message: str,
) -> list[dict[str, Any]]:
    """The task's conditions with one set now."""
    return status.set_condition(
        state.status.get("conditions") or [],
        type_,
        status_,
        reason,
        message,
        _now(),
        state.generation,
    )


def _since(started: float | None, running: bool) -> float | None:
    """A stopwatch on the monotonic clock: started when `running` first holds, cleared when not."""
    if not running:
        return None
    return started if started is not None else time.monotonic()


def _elapsed(started: float | None, now: float) -> float | None:
    return None if started is None else now - started
