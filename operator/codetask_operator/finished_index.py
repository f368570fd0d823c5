"""Finished tasks out of the watch: what their TTL and the namespace cap still need of them.

Once a finished task's result is announced (results stream, callback), the operator labels it
`codetask.dev/finished` and kopf's CodeTask watch, which selects `!codetask.dev/finished`, lets it
go: a restart lists only the tasks still to be worked on (10 000 finished tasks listed at start-up
cost hundreds of MB). What the operator still does for a finished task is delete it, at its TTL or
as one of the oldest beyond keepFinishedPerNamespace; this index keeps the few strings that takes.
It is filled as tasks leave the watch and, at start-up, from a paged list of the labelled ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from codetask_operator import lifecycle, status


@dataclass(frozen=True)
class Finished:
    """A finished task out of the watch."""

    namespace: str
    name: str
    uid: str
    phase: str | None
    completed: datetime | None
    expires: datetime | None
    """When its TTL deletes it; None: kept (until the namespace cap)."""


def finished(
    namespace: str,
    name: str,
    uid: str,
    spec: Mapping[str, Any],
    final: Mapping[str, Any],
    default_ttl: int | None,
) -> Finished:
    """The index entry of a finished task, from its spec and final status."""
    ttl = spec.get("ttlSecondsAfterFinished")
    completed = status.parse_time(final.get("completionTime"))
    return Finished(
        namespace,
        name,
        uid,
        final.get("phase"),
        completed,
        lifecycle.expires_at(completed, default_ttl if ttl is None else ttl),
    )


def of_task(task: Mapping[str, Any], default_ttl: int | None) -> Finished:
    """The index entry of a listed CodeTask."""
    meta = task["metadata"]
    return finished(
        meta["namespace"],
        meta["name"],
        meta["uid"],
        task.get("spec") or {},
        task.get("status") or {},
        default_ttl,
    )


class FinishedIndex:
    """The finished tasks out of the watch, by namespace and uid."""

    def __init__(self) -> None:
        self.by_namespace: dict[str, dict[str, Finished]] = {}
        self.namespace_of: dict[str, str] = {}
        self.loaded = False
        """Whether the start-up list is in: until then the cap is not applied to these."""

    def add(self, entry: Finished) -> None:
        self.by_namespace.setdefault(entry.namespace, {})[entry.uid] = entry
        self.namespace_of[entry.uid] = entry.namespace

    def discard(self, namespace: str, uid: str) -> None:
        tasks = self.by_namespace.get(namespace)
        if tasks is not None and tasks.pop(uid, None) is not None:
            del self.namespace_of[uid]
            if not tasks:
                del self.by_namespace[namespace]

    def __contains__(self, uid: object) -> bool:
        return uid in self.namespace_of

    def __len__(self) -> int:
        return len(self.namespace_of)

    def namespace(self, namespace: str) -> list[Finished]:
        return list(self.by_namespace.get(namespace, {}).values())

    def due(self, now: datetime, limit: int) -> list[Finished]:
        """At most `limit` tasks whose TTL has passed, those due first first."""
        due = [
            entry
            for tasks in self.by_namespace.values()
            for entry in tasks.values()
            if entry.expires is not None and entry.expires <= now
        ]
        return sorted(due, key=lambda entry: (entry.expires, entry.uid))[:limit]

    def confirm(self, namespace: str, listed: Iterable[str]) -> None:
        """Keep only the namespace's tasks a fresh list still has (others were deleted by
        someone else, or with their namespace)."""
        there = set(listed)
        for uid in [uid for uid in self.by_namespace.get(namespace, {}) if uid not in there]:
            self.discard(namespace, uid)

    def phases(self) -> list[str | None]:
        """Every task's phase (a snapshot: the metrics thread reads it while the loop runs)."""
        return [e.phase for tasks in list(self.by_namespace.values()) for e in list(tasks.values())]
