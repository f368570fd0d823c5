"""Getting each finished task's result into the results stream (results_stream.py) once.

A task is published right after its final status is written. What could not be published then
(Redis down), and every task first seen already finished (after a restart, the operator may have
died between the status write and the append), waits in `pending`; the sweeper checks their
markers and publishes those without one, from a fresh read of the task (a finished task's status is
trimmed in memory).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Final

from redis.exceptions import RedisError

from codetask_operator import status
from codetask_operator.kube import ApiError, Kube
from codetask_operator.results_stream import ResultsStream, entry

log = logging.getLogger(__name__)

BATCH: Final = 500
"""Tasks checked per sweep."""


class Publisher:
    """Publishes finished tasks to the results stream; remembers what is still to be checked."""

    def __init__(self, stream: ResultsStream, kube: Kube, marker_ttl: int) -> None:
        self.stream = stream
        self.kube = kube
        self.marker_ttl = timedelta(seconds=marker_ttl)
        self.pending: dict[str, tuple[str, str]] = {}
        """uid → (namespace, name) of finished tasks whose publication is to be checked."""

    async def publish(
        self,
        namespace: str,
        name: str,
        uid: str,
        final: Mapping[str, Any],
    ) -> None:
        """Append the task's entry (its `final` status); on a Redis error, leave it to the
        sweeper."""
        try:
            await self.stream.publish(uid, entry(namespace, name, uid, final))
        except (RedisError, OSError) as exc:
            log.warning("results stream: %s/%s not published yet: %s", namespace, name, exc)
            self.pending[uid] = (namespace, name)

    def check(
        self, namespace: str, name: str, uid: str, final: Mapping[str, Any], now: datetime
    ) -> None:
        """A task first seen finished: check its publication in the next sweep, unless it
        finished before the markers' lifetime (its marker may be gone)."""
        done = status.parse_time(final.get("completionTime"))
        if done is None or now - done < self.marker_ttl:
            self.pending[uid] = (namespace, name)

    async def flush(self) -> None:
        """Publish the pending tasks that have no marker, from a fresh read of each."""
        batch = list(self.pending.items())[:BATCH]
        if not batch:
            return
        try:
            missing = set(await self.stream.unpublished([uid for uid, _ in batch]))
        except (RedisError, OSError):
            return
        for uid, (namespace, name) in batch:
            if uid in missing:
                try:
                    task = await self.kube.get_task(namespace, name)
                except ApiError:
                    return
                final = (task or {}).get("status") or {}
                if (
                    task is not None
                    and task["metadata"].get("uid") == uid
                    and status.is_final(final)
                ):
                    try:
                        await self.stream.publish(uid, entry(namespace, name, uid, final))
                    except (RedisError, OSError):
                        return
            del self.pending[uid]
