"""kopf handlers: thin glue from watch events to `Reconciler`.

Only `on.event` handlers are used, and they return None: kopf then writes nothing of its own (no
finalizers, no diffbase or progress annotations), and every API write is one the reconciler decided.
Jobs and pods are watched with a server-side label selector, so only the operator's own are listed;
finished tasks, their Jobs and their pods are labelled out of the watches (finished_index.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import kopf

from codetask_operator import access, api, jobs, metrics, namespace_discovery, warm
from codetask_operator import settings as settings_mod
from codetask_operator.heartbeats import Heartbeats
from codetask_operator.kube import Kube, connect, login
from codetask_operator.pool_catalog import Catalog
from codetask_operator.reconcile import (
    UNFINISHED_SELECTOR,
    Reconciler,
    Registry,
    TaskState,
    final_spec,
    guarded,
)
from codetask_operator.status import slim
from codetask_operator.warm_pool import WarmPools

log = logging.getLogger("codetask")
SELECTOR = f"{jobs.LABEL_MANAGED_BY}={jobs.MANAGED_BY},!{jobs.LABEL_FINISHED}"
"""The Jobs and pods the operator watches: its own, less those of finished tasks."""
API_ERROR_BACKOFFS = (1, 2, 4, 8, 15, 30, 30, 30, 30)
"""Seconds between kopf's retries of a failing API call (watches included)."""

registry = Registry()
HANDLERS = kopf.OperatorRegistry()
"""kopf's registry for this module: a plain one, so kopf probes for no client library to log in
with (importing one costs ~35 MB); it logs in as the operator's own calls do."""
kopf.on.login(registry=HANDLERS)(login)
_runtime: dict[str, Any] = {}


def use_catalog(catalog: Catalog) -> None:
    """The process's pool catalog, for the reconciler the startup handler makes."""
    _runtime["catalog"] = catalog


def _reconciler() -> Reconciler:
    reconciler: Reconciler = _runtime["reconciler"]
    return reconciler


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf computes a diff base of every event's body (two deep copies) for on.create/on.update
    handlers; this operator has only on.event handlers, so it never reads one."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


@kopf.on.startup(registry=HANDLERS)
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Configure kopf for low API cost and memory, connect, and start the sweeper."""
    config = settings_mod.load()
    settings.watching.label_selectors["batch", "v1", "jobs"] = SELECTOR
    settings.watching.label_selectors["", "v1", "pods"] = SELECTOR
    settings.watching.label_selectors[api.GROUP, api.VERSION, api.PLURAL] = UNFINISHED_SELECTOR
    settings.watching.chunk_size = 500
    # A worker keeps its object's last event (the whole parsed body) until it idles out. At start-up
    # kopf lists 500 objects a page faster than 0.5 s idles them out, and the heap that many bodies
    # needed stays with the process (pymalloc frees an arena only when all of it is free): 0.05 s
    # saves about 24 MB with 10 000 finished tasks (bench/README.md).
    settings.queueing.idle_timeout = 0.05
    settings.posting.level = logging.INFO
    settings.persistence.diffbase_storage = NoDiffBase()
    # kopf's default gives up on a failing API call (a watch included) after 54 s and the operator
    # exits; an API server restart or upgrade can take longer: wait about 2.5 minutes (kopf retries
    # 403 too, so much longer would hide a missing RBAC rule behind minutes of retries).
    settings.networking.error_backoffs = API_ERROR_BACKOFFS
    metrics.serve(config.metrics_port, _phases)
    client = await connect()
    _runtime["client"] = client
    beats = Heartbeats(config.redis_url, config.heartbeat_ttl_seconds) if config.redis_url else None
    _runtime["heartbeats"] = beats
    reconciler = Reconciler(
        Kube(client), config, registry, heartbeats=beats, catalog=_runtime["catalog"]
    )
    _runtime["reconciler"] = reconciler
    if beats is None or not config.results_stream:
        why = "no Redis (CODETASK_REDIS_URL unset)" if beats is None else "resultsStream is empty"
        log.info("results stream off: %s", why)
    else:
        log.info(
            "results stream %s: each finished task once (about %d kept)",
            config.results_stream,
            config.results_max_len,
        )
    namespace_discovery.on_change(reconciler.isolation.forget)
    if config.max_running or config.max_running_per_namespace:
        # kopf lists CodeTasks namespace by namespace and hands them over one by one: until the
        # last one is seen, the tasks already running would not count against the limits.
        for task in await reconciler.unfinished_tasks(config.namespaces):
            _seen(task)
    _runtime["out of watch"] = asyncio.create_task(
        guarded("finished tasks", reconciler.load_out_of_watch(config.namespaces))
    )
    _runtime["sweeper"] = asyncio.create_task(_sweep(config.sweep_interval_seconds))
    if reconciler.warm is not None:
        _runtime["warm"] = asyncio.create_task(reconciler.warm.run(), name="warm pods")


@kopf.on.cleanup(registry=HANDLERS)
async def cleanup(**_: Any) -> None:
    """Stop the sweeper and close the API client."""
    for name in ("sweeper", "warm", "out of watch"):
        if (task := _runtime.pop(name, None)) is not None:
            task.cancel()
    client = _runtime.pop("client", None)
    if client:
        await client.close()
    beats = _runtime.pop("heartbeats", None)
    if beats:
        await beats.close()


@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL, id="codetask", registry=HANDLERS)
async def codetask_event(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
    """A CodeTask appeared, changed or went away."""
    meta = body["metadata"]
    if event["type"] == "DELETED":
        if jobs.LABEL_FINISHED in (meta.get("labels") or {}):
            _reconciler().left_watch(meta["uid"])  # labelled out of the watch, not deleted
        else:
            _reconciler().forget(meta["uid"])
        return
    state = _seen(body)
    if state is not None:
        await guarded(f"{state.namespace}/{state.name}", _reconciler().reconcile(state))


def _phases() -> list[str | None]:
    """Every task's phase, for the phase gauge: those in the watch and those out of it."""
    reconciler: Reconciler | None = _runtime.get("reconciler")
    out = reconciler.out_of_watch.phases() if reconciler is not None else []
    return [*registry.phases(), *out]


def _seen(body: Mapping[str, Any]) -> TaskState | None:
    """Take in a CodeTask as listed or watched; None for a deleted one (a late event)."""
    meta = body["metadata"]
    state = registry.get(meta["uid"])
    if state is None:
        return None
    state.namespace, state.name = meta["namespace"], meta["name"]
    state.generation = meta.get("generation")
    state.created = meta.get("creationTimestamp")
    state.generate_name = meta.get("generateName") or ""
    state.references_stamp = (meta.get("annotations") or {}).get(access.STAMP_ANNOTATION)
    spec = dict(body.get("spec") or {})
    state.spec = final_spec(spec) if state.final else spec
    if not state.status_known:
        # After the first sight the operator's own writes are the truth: an event may be older.
        state.status = dict(body.get("status") or {})
        state.status_known = True
    return state


def _warm_pools(body: kopf.Body) -> WarmPools | None:
    """The keeper of warm pods, for a warm Job or pod (bound or not)."""
    if warm.LABEL_WARM not in (body["metadata"].get("labels") or {}):
        return None
    return _reconciler().warm


def _unfinished_owner(event: kopf.RawEvent, body: kopf.Body, plural: str) -> TaskState | None:
    """The state of the task a Job or pod is labelled for, unless finished or deleted. The label
    only selects: the reconciler counts a Job or pod for the task by its ownership. A finished
    task's Job or pod still in the watch (the operator stopped before labelling it, or its label
    was removed) is labelled."""
    meta = body["metadata"]
    uid = (meta.get("labels") or {}).get(jobs.LABEL_TASK_UID)
    if not uid:
        return None
    if uid in _reconciler().out_of_watch:
        if event["type"] != "DELETED" and not meta.get("deletionTimestamp"):
            _reconciler().label_out(meta["namespace"], plural, meta["name"])
        return None
    state = registry.get(uid)
    if state is None:
        return None
    if state.final:
        name = body["metadata"]["name"]
        if event["type"] == "DELETED":
            # Out of view (labelled, or gone): should it come back unlabelled, it is labelled again.
            state.retired.discard(f"{plural}/{name}")
        else:
            in_view = state.jobs if plural == "jobs" else state.pods
            in_view[name] = slim(body)
            _reconciler().retire(state, state.finished())
        return None
    state.touched = time.monotonic()
    return state


@kopf.on.event(
    "batch",
    "v1",
    "jobs",
    labels={jobs.LABEL_MANAGED_BY: jobs.MANAGED_BY},
    id="job",
    registry=HANDLERS,
)
async def job_event(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
    """One of our Jobs changed."""
    if (pools := _warm_pools(body)) is not None:
        pools.observe_job(event["type"] == "DELETED", body)
    state = _unfinished_owner(event, body, "jobs")
    if state is None:
        return
    name = body["metadata"]["name"]
    if event["type"] == "DELETED":
        # Gone from view; `decide` reads it afresh before calling it gone.
        state.jobs.pop(name, None)
    else:
        state.add_job(slim(body))
    await guarded(name, _reconciler().reconcile(state))


@kopf.on.event(
    "", "v1", "pods", labels={jobs.LABEL_MANAGED_BY: jobs.MANAGED_BY}, id="pod", registry=HANDLERS
)
async def pod_event(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
    """One of our pods changed."""
    if (pools := _warm_pools(body)) is not None:
        pools.observe_pod(event["type"] == "DELETED", body)
    state = _unfinished_owner(event, body, "pods")
    if state is None:
        return
    name = body["metadata"]["name"]
    # A deleted pod's last state stays (its body carries deletionTimestamp): the reconciler tells a
    # Job deadline from a pod deleted mid-run, and the Job's end may still need its result.
    state.pods[name] = slim(body)
    await guarded(name, _reconciler().reconcile(state))


async def _sweep(interval: float) -> None:
    """Re-check unfinished tasks: grace periods run out and missed events leave no task behind."""
    while True:
        await asyncio.sleep(interval)
        registry.prune()
        for state in list(registry.tasks.values()):
            if state.spec is None or state.final or state.deleted:
                continue
            if state.status.get("phase") == api.Phase.QUEUED:
                continue
            await guarded(f"{state.namespace}/{state.name}", _reconciler().reconcile(state))
        await guarded("admission", _reconciler().admit_waiting(refresh_positions=True))
        await guarded("heartbeats", _reconciler().check_heartbeats())
        if (publisher := _reconciler().publisher) is not None:
            await guarded("results stream", publisher.flush())
        await guarded("out of the watch", _reconciler().settle_finished())
        await guarded("expire finished", _reconciler().expire_out_of_watch())
        await guarded("prune finished", _reconciler().prune_finished())
