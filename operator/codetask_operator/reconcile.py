"""Level-triggered reconciliation of one CodeTask from what the watches last showed.

Every watch event (CodeTask, Job, pod) updates the task's `TaskState` and calls `reconcile`, which
asks the pure functions in `status.py`/`jobs.py` what should be true and makes the one or two API
calls that make it so. Running it twice changes nothing: Job names are deterministic, an existing
Job owned by the task is adopted, and status is only patched where it differs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from codetask_operator import admission, api, jobs, metrics, status
from codetask_operator.kube import Kube, NotOurs
from codetask_operator.settings import Settings
from codetask_operator.status import PodView

log = logging.getLogger("codetask")

EventPoster = Callable[["TaskState", str, str, str], None]
"""(task, type Normal|Warning, reason, message) → posts a Kubernetes Event on the task."""


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

    def pod_view(self) -> PodView | None:
        """The current pod, as the phase machine sees it."""
        pod = self.current_pod()
        return status.PodView.of(pod) if pod else None


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


class Reconciler:
    """Decides and acts for one task at a time (a lock per task)."""

    def __init__(self, kube: Kube, settings: Settings, post_event: EventPoster) -> None:
        self.kube = kube
        self.settings = settings
        self.post_event = post_event

    async def reconcile(self, state: TaskState) -> None:
        """Bring the task's Job and status in line with what was last observed."""
        async with state.lock:
            if state.spec is None or state.deleted or state.final:
                return
            if status.is_final(state.status):
                state.final = True
                return
            try:
                await self._reconcile(state)
            except ApiException as exc:
                if exc.status == 404:
                    state.deleted = True
                    return
                raise

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
        if not state.status.get("jobName"):
            await self._start(state, spec, attempt=1)
            return
        job_name = state.status["jobName"]
        if spec.cancel:
            await self.kube.delete_job(state.namespace, job_name)
            await self._finish(
                state,
                spec,
                status.Outcome(
                    api.Phase.CANCELLED, api.Reason.CANCELLED, "cancelled by spec.cancel"
                ),
                state.pod_view(),
            )
            return
        job = state.jobs.get(job_name)
        pod = state.pod_view()
        outcome = status.attempt_outcome(
            job, pod, cancel=False, custom_image=spec.command is not None
        )
        if outcome is None and pod is not None and pod.terminated is None:
            if pod.started_at is None:
                if state.pending_since is None:
                    state.pending_since = time.monotonic()
                pending_for = time.monotonic() - state.pending_since
                outcome = status.early_failure(
                    pod, pending_for, self.settings.pending_grace_seconds
                )
                if outcome is not None:
                    await self.kube.delete_job(state.namespace, job_name)
            else:
                state.pending_since = None
        if outcome is not None:
            await self._finish(state, spec, outcome, pod)
        elif pod is not None:
            ctx = self._context(state, spec)
            before = state.status.get("phase")
            await self._write(state, status.running_patch(state.status, pod, ctx))
            if (
                before != state.status.get("phase")
                and state.status.get("phase") == api.Phase.RUNNING
            ):
                self.post_event(state, "Normal", "Started", f"pod {pod.name} running on {pod.node}")

    async def lost(self, state: TaskState, message: str) -> None:
        """The attempt's Job or pod vanished before it ended."""
        async with state.lock:
            if state.spec is None or state.final or state.deleted or status.is_final(state.status):
                return
            spec = api.CodeTaskSpec.model_validate(state.spec)
            if job_name := state.status.get("jobName"):
                await self.kube.delete_job(state.namespace, job_name)
            await self._finish(
                state,
                spec,
                status.Outcome(api.Phase.FAILED, api.Reason.LOST, message),
                state.pod_view(),
            )

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
        state.final = True
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
            metrics.JOBS_CREATED.inc()
        except NotOurs as exc:
            await self._invalid(state, str(exc))
            return
        except ApiException as exc:
            if exc.status in (400, 403, 422):
                await self._invalid(
                    state, f"Kubernetes rejected the Job: {exc.reason}: {exc.body!s}"
                )
                return
            raise
        now = _now()
        conditions = status.set_condition(
            state.status.get("conditions") or [],
            api.ConditionType.ADMITTED,
            api.ConditionStatus.TRUE,
            api.Reason.SCHEDULED,
            f"Job {name} created",
            now,
            state.generation,
        )
        await self._write(
            state,
            {
                "phase": str(api.Phase.PENDING),
                "reason": str(api.Reason.SCHEDULED),
                "message": f"Job {name} created",
                "attempts": attempt,
                "jobName": name,
                "conditions": conditions,
                "observedGeneration": state.generation,
            },
        )
        self.post_event(state, "Normal", "Scheduled", f"Job {name} created (attempt {attempt})")

    async def _finish(
        self,
        state: TaskState,
        spec: api.CodeTaskSpec,
        outcome: status.Outcome,
        pod: status.PodView | None,
    ) -> None:
        await self._write(
            state, status.final_patch(state.status, outcome, pod, self._context(state, spec))
        )
        state.final = True
        kind = (
            "Normal" if outcome.phase in (api.Phase.SUCCEEDED, api.Phase.CANCELLED) else "Warning"
        )
        self.post_event(state, kind, str(outcome.reason), f"{outcome.phase}: {outcome.message}")


async def guarded(what: str, coro: Awaitable[None]) -> None:
    """Run a reconcile step; log (never raise) an error, the sweeper will try again."""
    try:
        await coro
    except Exception:
        metrics.RECONCILE_ERRORS.inc()
        log.exception("reconcile failed: %s", what)
