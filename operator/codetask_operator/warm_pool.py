"""The pools' warm pods (warm.py decides; this keeps them and binds them): the warm Jobs and pods
in view (from the operator's Job and pod watches), made and recycled to each pool's `spec.warm`,
bound to tasks, and counted in the pools' status.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from codetask_operator import jobs, metrics, redis_access, status, warm
from codetask_operator.heartbeats import Heartbeats
from codetask_operator.isolation import Isolation
from codetask_operator.kube import ApiError, Kube
from codetask_operator.pool_catalog import Catalog
from codetask_operator.pools import Pool
from codetask_operator.settings import Settings

log = logging.getLogger("codetask.warm")

BIND_TRIES: Final = 3
"""Ready pods tried per binding before the task starts cold (another task may take each first)."""
LABEL_RETRY_DELAYS: Final = (0.1, 0.3, 0.0)
"""Seconds after each failed label patch of a bound pod (three tries)."""
INBOX_TTL: Final = 86400
"""A delivered task waits in the inbox at most this long (the pod's idle limit ends sooner)."""


@dataclass(frozen=True)
class Bound:
    """A task's attempt bound to a warm pod."""

    job: str
    pod: str | None
    node: str | None
    token: str
    seconds: float


class WarmPools:
    """Keeps each pool's warm pods per `spec.warm`, and binds tasks to them."""

    def __init__(
        self,
        kube: Kube,
        settings: Settings,
        heartbeats: Heartbeats,
        catalog: Catalog,
        isolation: Isolation,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.heartbeats = heartbeats
        self.catalog = catalog
        self.isolation = isolation
        self.secret = redis_access.secret(settings.redis_acl_secret, settings.redis_url or "")
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        """(namespace, name) → a warm Job as last seen, or as made (until the watch shows it)."""
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        """(namespace, Job name) → its pod as last seen."""
        self.wake = asyncio.Event()
        self.written: dict[str, dict[str, Any]] = {}
        """Pool name → the status last written."""
        self.retired: set[str] = set()
        """Tokens of warm pods that ended or went, whose Redis users are to be deleted."""
        self.listed: set[tuple[str, str]] = set()
        """(namespace, pool) whose warm Jobs were read afresh by this process."""
        self.claiming: set[tuple[str, str]] = set()
        """Warm Jobs a binding is patching now: other bindings pass them by."""

    def observe_job(self, deleted: bool, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        token = (meta.get("labels") or {}).get(warm.LABEL_TOKEN)
        if deleted:
            self.jobs.pop(key, None)
            self.pods.pop(key, None)
            if token:
                self.retired.add(token)
            self.wake.set()
            return
        slim = status.slim(body)
        slim["metadata"]["resourceVersion"] = meta.get("resourceVersion")  # binding's precondition
        self.jobs[key] = slim
        if status.job_finished(self.jobs[key]) is not None:
            if token:
                self.retired.add(token)
            self.wake.set()

    def observe_pod(self, deleted: bool, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        job = (meta.get("labels") or {}).get("job-name")
        if not job:
            return
        key = (meta["namespace"], job)
        if deleted:
            if (self.pods.get(key) or {}).get("name") == meta["name"]:
                self.pods.pop(key, None)
            return
        running = any(
            "running" in (c.get("state") or {})
            for c in (body.get("status") or {}).get("containerStatuses") or []
        )
        pod = {
            "name": meta["name"],
            "node": (body.get("spec") or {}).get("nodeName"),
            "running": running and not meta.get("deletionTimestamp"),
        }
        if (self.pods.get(key) or {}).get("running") != pod["running"]:
            self.wake.set()  # ready (or not) now: the pool's status says so
        self.pods[key] = pod

    def view(self, pool: Pool, namespace: str) -> list[warm.WarmPod]:
        """The pool's warm pods in `namespace`: its label, and made by the pool (a Job labelled so
        by anyone else is not one) or bound to a task since."""
        value = jobs.label_value(pool.name)
        out = []
        for (ns, name), job in self.jobs.items():
            labels = job["metadata"].get("labels") or {}
            if ns != namespace or labels.get(warm.LABEL_WARM) != value:
                continue
            bound = jobs.LABEL_TASK_UID in labels
            owner = job["metadata"].get("controller")
            if not bound and owner != pool.uid:
                continue
            pod = self.pods.get((ns, name)) or {}
            out.append(
                warm.WarmPod(
                    namespace=ns,
                    job=name,
                    pool=pool.name,
                    token=labels.get(warm.LABEL_TOKEN, ""),
                    created=status.parse_time(job["metadata"].get("creationTimestamp")),
                    pod=pod.get("name"),
                    node=pod.get("node"),
                    running=bool(pod.get("running")),
                    bound=bound,
                    ended=status.job_finished(job) is not None,
                    deleting=bool(job["metadata"].get("deletionTimestamp")),
                )
            )
        return out

    def _served(self, namespace: str) -> bool:
        patterns = self.settings.namespaces
        return not patterns or any(fnmatch.fnmatchcase(namespace, p) for p in patterns)

    async def run(self) -> None:
        """Keep the pools' warm pods, on every change in view and at least every sweep."""
        while True:
            self.wake.clear()
            try:
                await self.maintain()
            except Exception:  # logged; the next pass tries again
                log.exception("keeping warm pods failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.settings.sweep_interval_seconds)

    async def maintain(self) -> None:
        """Make, delete and count each pool's warm pods; delete the Redis users of those gone."""
        if self.retired:
            retired, self.retired = self.retired, set()
            await self.heartbeats.revoke([warm.user(token) for token in sorted(retired)])
        now = datetime.now(UTC)
        for pool in list(self.catalog.pools.values()):
            if pool.spec is None or pool.spec.warm is None:
                continue
            served = [ns for ns in pool.spec.warm.namespaces if self._served(ns)]
            if not served:
                continue  # another release's (pools are cluster-wide)
            counts = {"replicas": 0, "ready": 0, "bound": 0}
            problems: list[str] = []
            for namespace in served:
                try:
                    why = await self._keep(pool, namespace, now, counts)
                except (ApiError, OSError) as exc:
                    why = f"{exc}"
                if why:
                    problems.append(f"{namespace}: {why}")
            await self._write_status(pool, counts, problems)
        await self._drop_orphans()

    async def _keep(
        self, pool: Pool, namespace: str, now: datetime, counts: dict[str, int]
    ) -> str | None:
        """Bring one namespace's warm pods of `pool` to its spec; why not, if not."""
        assert pool.spec is not None and pool.spec.warm is not None
        if (namespace, pool.name) not in self.listed:
            # The watch may not have shown this namespace's warm Jobs yet (a restart): read them.
            await self._list(pool, namespace)
        pods = self.view(pool, namespace)
        make, going = warm.plan(pods, pool.spec.warm, now)
        counts["bound"] += sum(1 for p in pods if p.bound and not p.ended)
        counts["ready"] += len(warm.ready(pods, pool.spec.warm, now))
        counts["replicas"] += sum(
            1 for p in pods if not (p.bound or p.ended or p.deleting) and p.job not in going
        )
        for name in going:
            await self._delete_waiting(namespace, name)
        if not make:
            return None
        if await self.heartbeats.task_access() is not True:
            return "Redis cannot give warm pods users of their own"
        if (why := await self.isolation.ensure(namespace)) is not None:
            return why
        for _ in range(make):
            await self._make(pool, namespace, now)
            counts["replicas"] += 1
        return None

    async def _grant(self, namespace: str, token: str) -> str | None:
        """Create (or set again) a warm pod's Redis user; its password, None if Redis failed."""
        password = warm.password(self.secret, namespace, token)
        granted = await self.heartbeats.grant(warm.user(token), warm.acl_rules(token, password))
        return password if granted else None

    async def _make(self, pool: Pool, namespace: str, now: datetime) -> None:
        token = warm.new_token()
        if (password := await self._grant(namespace, token)) is None:
            raise OSError("Redis did not take the warm pod's user")
        assert self.settings.redis_url is not None
        url = redis_access.task_url(self.settings.redis_url, warm.user(token), password)
        manifest = warm.build_job(pool, namespace, self.settings, token, url)
        try:
            await self.kube.create_job(namespace, manifest, pool.uid)
        except ApiError:
            await self.heartbeats.revoke([warm.user(token)])
            raise
        metrics.JOBS_CREATED.inc()
        made = {
            **manifest["metadata"],
            "creationTimestamp": status.iso(now),
            "controller": pool.uid,
        }
        # Until the watch shows it (unless it already did): counted, never bound.
        self.jobs.setdefault(
            (namespace, manifest["metadata"]["name"]), {"metadata": made, "status": {}}
        )

    async def _list(self, pool: Pool, namespace: str) -> None:
        """Take in the pool's warm Jobs in `namespace` as the API server has them now."""
        for job in await self.kube.list_jobs(namespace, warm.selector(pool.name)):
            key = (namespace, job["metadata"]["name"])
            if key not in self.jobs:
                self.observe_job(False, job)
        self.listed.add((namespace, pool.name))

    async def regrant(self) -> None:
        """Set the Redis users of the waiting warm pods again (Redis restarted empty, or failed
        over to a replica that never had them): otherwise they look ready and never get a task."""
        for (namespace, _), job in list(self.jobs.items()):
            labels = job["metadata"].get("labels") or {}
            token = labels.get(warm.LABEL_TOKEN)
            if token and jobs.LABEL_TASK_UID not in labels:
                await self._grant(namespace, token)

    async def _drop_orphans(self) -> None:
        """Delete the waiting pods of pools (or namespaces) that no longer keep warm pods."""
        kept = {
            (ns, jobs.label_value(pool.name))
            for pool in self.catalog.pools.values()
            if pool.spec is not None and pool.spec.warm is not None
            for ns in pool.spec.warm.namespaces
        }
        for (ns, name), job in list(self.jobs.items()):
            labels = job["metadata"].get("labels") or {}
            waiting = jobs.LABEL_TASK_UID not in labels and not job["metadata"].get(
                "deletionTimestamp"
            )
            if waiting and (ns, labels.get(warm.LABEL_WARM)) not in kept:
                await self._delete_waiting(ns, name)

    async def _delete_waiting(self, namespace: str, name: str) -> None:
        """Delete a waiting warm Job as last seen: not one a binding is patching, and not if it
        changed since (a binding took it while the watch still showed it waiting)."""
        job = self.jobs.get((namespace, name))
        if job is None or (namespace, name) in self.claiming:
            return
        try:
            await self.kube.delete_job(namespace, name, job["metadata"].get("resourceVersion"))
        except ApiError as exc:
            if exc.status != 409:
                raise
            return  # the watch will show what it is now
        job["metadata"]["deletionTimestamp"] = status.iso(datetime.now(UTC))

    async def _write_status(self, pool: Pool, counts: dict[str, int], problems: list[str]) -> None:
        """The pool's counts (and why pods are missing), when they changed."""
        body: dict[str, Any] = {
            **counts,
            "selector": warm.selector(pool.name),
            "message": "; ".join(problems)[:4000] or None,
        }
        if self.written.get(pool.name) == body:
            return
        try:
            await self.kube.patch_pool_status(pool.name, body)
        except ApiError as exc:
            if exc.status != 404:
                raise
        self.written[pool.name] = body

    async def bind(
        self,
        pool: Pool,
        namespace: str,
        name: str,
        uid: str,
        attempt: int,
        timeout_seconds: int,
    ) -> Bound | None:
        """Bind the attempt to a ready warm pod of `pool` in `namespace`; None when there is none
        (or each one tried went to another task first)."""
        assert pool.spec is not None and pool.spec.warm is not None
        started = time.monotonic()
        now = datetime.now(UTC)
        candidates = [
            pod
            for pod in warm.ready(self.view(pool, namespace), pool.spec.warm, now)
            if (namespace, pod.job) not in self.claiming
            and "resourceVersion" in self.jobs[(namespace, pod.job)]["metadata"]
        ]
        for pod in candidates[:BIND_TRIES]:
            job = self.jobs[(namespace, pod.job)]
            patch = warm.bind_patch(job, name, uid, attempt, timeout_seconds, now)
            self.claiming.add((namespace, pod.job))
            try:
                await self.kube.patch_job(namespace, pod.job, patch)
            except ApiError as exc:
                if exc.status not in (404, 409):
                    raise
                continue  # taken, changed or gone: the watch will say
            finally:
                self.claiming.discard((namespace, pod.job))
            task_labels = patch["metadata"]["labels"]
            job["metadata"]["labels"] = {**job["metadata"]["labels"], **task_labels}
            self.wake.set()
            if pod.pod is None or not await self._label_pod(namespace, pod.pod, task_labels):
                # The task's watch and fencing find its pod by these labels: a pod without them
                # (or gone) is never used. Nothing was delivered to it yet.
                with contextlib.suppress(ApiError):
                    await self.kube.delete_job(namespace, pod.job)
                continue
            return Bound(pod.job, pod.pod, pod.node, pod.token, time.monotonic() - started)
        return None

    async def _label_pod(self, namespace: str, pod: str, labels: dict[str, str]) -> bool:
        """Give a bound pod its task's labels, trying a failing call again; False if it cannot."""
        for delay in LABEL_RETRY_DELAYS:
            try:
                await self.kube.patch_pod_labels(namespace, pod, labels)
                return True
            except ApiError as exc:
                if exc.status == 404:
                    return False
                log.warning("labelling bound pod %s/%s: %s", namespace, pod, exc)
            await asyncio.sleep(delay)
        return False

    async def deliver(self, token: str, payload: dict[str, Any]) -> bool:
        """Put the task into the warm pod's inbox."""
        data = json.dumps(payload, separators=(",", ":"))
        return await self.heartbeats.push(warm.inbox(token), data, INBOX_TTL)
