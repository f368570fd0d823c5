"""Pure: a pool's warm pods (docs/pools.md, "Warm pods").

A warm pod is a Job of its own, made ahead of demand in the namespace of the tasks it is for, under
the same lockdown as a task's Job and owned by its pool. Its runner waits on a Redis list that only
it can read (its inbox, through an ACL user of its own). A task that fits is bound to one: the Job
is patched to belong to the task (labels, controller, a deadline counted from now) with the Job's
resourceVersion as precondition, so each pod goes to one task; then the task's environment and
code go to the inbox. The runner runs it once, reports through Redis (`{prefix}:done`) and exits;
the pool makes another.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from codetask_operator import api, jobs
from codetask_operator.pools import Pool
from codetask_operator.settings import Settings

LABEL_WARM: Final = "codetask.dev/warm"
"""On warm Jobs and pods: their pool (as a label value). Stays after binding."""
LABEL_TOKEN: Final = "codetask.dev/warm-token"
"""On warm Jobs and pods: the token that names the pod's inbox and Redis user."""
COMMANDS: Final = ("blpop", "ping", "select")
"""What a warm runner sends before it has a task."""
OWN_ENV: Final = frozenset(
    {
        "POD_NAME",
        "NODE_NAME",
        "HOME",
        "TMPDIR",
        "CODETASK_WORKDIR",
        "CODETASK_RESULT_PATH",
        "CODETASK_CODE_FILE",
        "CODETASK_STDIN_FILE",
        "CODETASK_WARM_INBOX",
    }
)
"""The warm pod's own variables: a task's payload does not carry them (the runner ignores them)."""
IDLE_MARGIN: Final = 30
"""A waiting pod this close to its idle limit is replaced, never bound: its runner may be leaving
(it counts from its own start, a little after the Job's creation)."""
DEADLINE_MARGIN: Final = 5
"""Seconds the bound Job's deadline leaves beyond the runner's own timeout, as a cold Job's."""


def new_token() -> str:
    return secrets.token_hex(8)


def inbox(token: str) -> str:
    """The Redis list a warm pod waits on."""
    return f"codetask:warm:{token}:inbox"


def user(token: str) -> str:
    """The warm pod's ACL user."""
    return f"codetask-warm-{token}"


def password(secret: bytes, namespace: str, token: str) -> str:
    """The warm pod's password: HMAC-SHA256 of (namespace, token) under the operator's secret."""
    return hmac.new(secret, f"warm/{namespace}/{token}".encode(), hashlib.sha256).hexdigest()


def acl_rules(token: str, secret_password: str) -> list[str]:
    """`ACL SETUSER` rules: its inbox only, BLPOP and PING only."""
    return [
        "reset",
        "on",
        f">{secret_password}",
        f"~codetask:warm:{token}:*",
        "resetchannels",
        "-@all",
        *(f"+{command}" for command in COMMANDS),
    ]


def job_name(pool: str, token: str) -> str:
    """`warm-<pool>-<token>`, within the 52 characters a Job name may have."""
    base = re.sub(r"[^a-z0-9-]", "-", pool.lower())[: jobs.JOB_NAME_MAX - 6 - len(token)]
    return f"warm-{base.strip('-') or 'pool'}-{token}"


def owner_reference(pool: Pool) -> dict[str, Any]:
    """The pool controls its waiting pods: deleting the pool deletes them."""
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.POOL_KIND,
        "name": pool.name,
        "uid": pool.uid,
        "controller": True,
    }


def labels(pool: Pool, token: str) -> dict[str, str]:
    value = jobs.label_value(pool.name)
    return {
        jobs.LABEL_MANAGED_BY: jobs.MANAGED_BY,
        jobs.LABEL_POOL: value,
        LABEL_WARM: value,
        LABEL_TOKEN: token,
    }


def selector(pool: str) -> str:
    """The label selector of a pool's warm Jobs and pods (bound ones included)."""
    return f"{LABEL_WARM}={jobs.label_value(pool)}"


def build_job(
    pool: Pool, namespace: str, settings: Settings, token: str, redis_url: str
) -> dict[str, Any]:
    """A warm pod's Job: the pool's image, class and placement, the lockdown of a task's pod;
    `redis_url` carries the pod's own user, which may only wait on its inbox."""
    assert pool.spec is not None and pool.spec.warm is not None
    idle = pool.spec.warm.max_idle_seconds
    resources = jobs.resources(api.Resources(), settings, pool)
    env = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "CODETASK_WORKDIR", "value": jobs.SCRATCH_DIR},
        {"name": "HOME", "value": jobs.SCRATCH_DIR},
        {"name": "TMPDIR", "value": jobs.SCRATCH_DIR},
        {"name": "CODETASK_RESULT_PATH", "value": jobs.RESULT_PATH},
        {"name": "CODETASK_WARM_INBOX", "value": inbox(token)},
        {"name": "CODETASK_WARM_IDLE_SECONDS", "value": str(idle)},
        {"name": "REDIS_URL", "value": redis_url},
    ]
    container = {
        "name": jobs.CONTAINER_NAME,
        "image": pool.spec.image or settings.runner_image,
        "imagePullPolicy": settings.image_pull_policy,
        "env": env,
        "resources": resources,
        "volumeMounts": [{"name": "scratch", "mountPath": jobs.SCRATCH_DIR}],
        "terminationMessagePath": jobs.RESULT_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": jobs.CONTAINER_SECURITY,
    }
    scratch_limit = resources["limits"]["ephemeral-storage"]
    scratch = {"name": "scratch", "emptyDir": {"sizeLimit": scratch_limit}}
    own = labels(pool, token)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(pool.name, token),
            "namespace": namespace,
            "labels": own,
            "ownerReferences": [owner_reference(pool)],
        },
        "spec": {
            "backoffLimit": 0,
            # The runner leaves after `idle` seconds without a task; this stops one that does not.
            "activeDeadlineSeconds": idle + 60,
            "template": {
                "metadata": {"labels": {**own, jobs.LABEL_MODE: "code"}},
                "spec": jobs.pod_spec(settings, container, [scratch], pool),
            },
        },
    }


def cold_reason(spec: api.CodeTaskSpec, pool: Pool | None, settings: Settings) -> str | None:
    """Why the task cannot start in a warm pod of its pool (a pod spec of its own is needed), or
    None when it can."""
    if pool is None or pool.spec is None or pool.spec.warm is None:
        return "its pool keeps no warm pods" if pool is not None else "it runs in no pool"
    if spec.code is None:
        return "agent and custom-image tasks start cold"
    if any(var.value_from is not None for var in spec.env):
        return "spec.env from Secrets or ConfigMaps needs a pod of its own"
    if any(key in settings.pod_label_keys for key in spec.labels):
        return "pod labels need a pod of its own"
    if jobs.resources(spec.resources, settings, pool) != jobs.resources(
        api.Resources(), settings, pool
    ):
        return "its resources differ from the pool's class"
    return None


def payload(
    task_name: str,
    namespace: str,
    spec: api.CodeTaskSpec,
    attempt: int,
    settings: Settings,
    redis: jobs.RedisAccess,
) -> dict[str, Any]:
    """What the bound pod's runner gets: the environment a cold pod of the attempt would have
    (less the pod's own variables), the code and stdin."""
    env = {
        var["name"]: var["value"]
        for var in jobs.task_env(task_name, namespace, spec, attempt, settings, redis)
        if "value" in var and var["name"] not in OWN_ENV
    }
    return {"env": env, "code": spec.code, "stdin": spec.stdin}


def bind_patch(
    job: dict[str, Any],
    task_name: str,
    task_uid: str,
    attempt: int,
    timeout_seconds: int,
    now: datetime,
) -> dict[str, Any]:
    """The merge patch that makes a waiting Job the attempt's: the task's labels and controller
    reference, a deadline from now, and the Job's resourceVersion as precondition (409 Conflict:
    another task got it first, or it changed)."""
    started = job.get("status", {}).get("startTime") or job["metadata"].get("creationTimestamp")
    since = (now - datetime.fromisoformat(started.replace("Z", "+00:00"))).total_seconds()
    return {
        "metadata": {
            "resourceVersion": job["metadata"]["resourceVersion"],
            "labels": jobs.labels_for(task_name, task_uid, attempt),
            "ownerReferences": [jobs.owner_reference(task_name, task_uid)],
        },
        "spec": {
            "activeDeadlineSeconds": math.ceil(max(since, 0)) + timeout_seconds + DEADLINE_MARGIN
        },
    }


@dataclass(frozen=True)
class WarmPod:
    """One warm Job and its pod, as the operator sees them."""

    namespace: str
    job: str
    pool: str
    token: str
    created: datetime | None
    pod: str | None = None
    node: str | None = None
    running: bool = False
    """Its runner's container runs (and so waits on the inbox)."""
    bound: bool = False
    ended: bool = False
    deleting: bool = False


def plan(pods: list[WarmPod], warm: api.WarmSpec, now: datetime) -> tuple[int, list[str]]:
    """How many warm Jobs to make in one namespace, and which to delete: those idle past
    maxIdleSeconds, those that ended without a task, and the newest beyond the target (scaled
    down), those not running yet first."""
    waiting = [p for p in pods if not (p.bound or p.ended or p.deleting)]
    old = [
        p.job
        for p in waiting
        if p.created is not None
        and (now - p.created).total_seconds() > warm.max_idle_seconds - IDLE_MARGIN
    ]
    ended = [p.job for p in pods if p.ended and not p.bound and not p.deleting]
    target = min(warm.min_ready, warm.max)
    kept = [p for p in waiting if p.job not in old]
    kept.sort(key=lambda p: (p.running, -(p.created or now).timestamp()))
    excess = [p.job for p in kept[: max(0, len(kept) - target)]]
    return max(0, target - len(kept)), old + ended + excess


def ready(pods: list[WarmPod], warm: api.WarmSpec, now: datetime) -> list[WarmPod]:
    """The pods a task may be bound to now, those waiting longest first."""
    _, going = plan(pods, warm, now)
    waiting = [
        p
        for p in pods
        if p.running and not (p.bound or p.ended or p.deleting) and p.job not in going
    ]
    return sorted(waiting, key=lambda p: p.created or now)
