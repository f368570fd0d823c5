"""Pure decisions over a task's life: retry or not and when, when to delete it, who runs next."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from codetask_operator.api import (
    BACKOFF_CAP_SECONDS,
    DEFAULT_RETRY_POLICY,
    CodeTaskSpec,
    Reason,
)

JITTER = 0.2
"""Each delay is scaled by a random factor in [1 - JITTER, 1 + JITTER]: doubling still grows."""


def retry_delay(
    spec: CodeTaskSpec, attempts: int, reason: Reason, rng: random.Random
) -> float | None:
    """Seconds to wait before attempt `attempts + 1`, or None when the task ends now.

    Retries while `reason` is in `spec.retryPolicy` (unset: DEFAULT_RETRY_POLICY) and fewer than
    `spec.retries` retries were made; the delay doubles per retry from `spec.backoffSeconds`, with
    jitter, capped.
    """
    policy = DEFAULT_RETRY_POLICY if spec.retry_policy is None else spec.retry_policy
    if reason is Reason.INVALID_SPEC or reason not in policy:
        return None
    if attempts > spec.retries:
        return None
    base = float(spec.backoff_seconds * 2 ** (attempts - 1))
    return min(float(BACKOFF_CAP_SECONDS), base * rng.uniform(1 - JITTER, 1 + JITTER))


def expires_at(completion: datetime | None, ttl_seconds: int | None) -> datetime | None:
    """When a finished task is to be deleted; None to keep it."""
    if completion is None or ttl_seconds is None:
        return None
    return completion + timedelta(seconds=ttl_seconds)


def beyond_keep(finished: Sequence[tuple[str, datetime | None]], keep: int) -> list[str]:
    """Of a namespace's finished tasks, (uid, completion time), the uids to delete so that `keep`
    remain: the oldest first (one without a time before all others; ties by uid)."""
    if keep <= 0 or len(finished) <= keep:
        return []
    ordered = sorted(finished, key=lambda task: (task[1] is not None, task[1] or _EPOCH, task[0]))
    return [uid for uid, _ in ordered[: len(finished) - keep]]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Candidate:
    """A task as the admission queue sees it."""

    uid: str
    namespace: str
    priority: int
    created: str
    running: bool
    """It holds a slot: an attempt's Job exists and the task has not finished."""


@dataclass(frozen=True)
class Admission:
    """Who may start now, and the 1-based queue position of everyone else who waits."""

    admit: list[str]
    positions: dict[str, int]


def admit(candidates: Iterable[Candidate], max_running: int, max_per_namespace: int) -> Admission:
    """Fill free slots by priority (higher first), then creation time, then uid.

    A limit of 0 means unlimited. A task blocked only by its namespace's limit does not hold back
    tasks of other namespaces.
    """
    everyone = list(candidates)
    running = [c for c in everyone if c.running]
    waiting = sorted(
        (c for c in everyone if not c.running), key=lambda c: (-c.priority, c.created, c.uid)
    )
    total = len(running)
    per_ns: dict[str, int] = {}
    for c in running:
        per_ns[c.namespace] = per_ns.get(c.namespace, 0) + 1
    admitted: list[str] = []
    queued: list[str] = []
    for c in waiting:
        if (max_running and total >= max_running) or (
            max_per_namespace and per_ns.get(c.namespace, 0) >= max_per_namespace
        ):
            queued.append(c.uid)
            continue
        admitted.append(c.uid)
        total += 1
        per_ns[c.namespace] = per_ns.get(c.namespace, 0) + 1
    return Admission(admitted, {uid: i + 1 for i, uid in enumerate(queued)})


def history_record(status: dict[str, object], reason: str, message: str) -> dict[str, object]:
    """The finished attempt, as kept in `status.history`."""
    return {
        "attempt": status.get("attempts"),
        "jobName": status.get("jobName"),
        "podName": status.get("podName"),
        "nodeName": status.get("nodeName"),
        "startTime": status.get("startTime"),
        "completionTime": status.get("completionTime"),
        "exitCode": status.get("exitCode"),
        "reason": reason,
        "message": message[:1024],
    }


def bounded(
    history: Sequence[dict[str, object]], record: dict[str, object], keep: int
) -> list[dict[str, object]]:
    """`history` plus `record`, keeping the newest `keep`."""
    return [*history, record][-keep:]
