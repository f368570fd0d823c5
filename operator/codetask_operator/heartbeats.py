"""The runners' heartbeats, progress and full results, read from Redis (when configured).

Keys are those of docs/runner-contract.md. Redis trouble never stops the operator: it logs one
warning per outage and the tasks go on without heartbeats.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger("codetask")


def prefix(namespace: str, name: str) -> str:
    """Key prefix of one task."""
    return f"codetask:{namespace}:{name}"


@dataclass(frozen=True)
class Beat:
    """What Redis holds for a running task."""

    heartbeat: str | None
    progress: dict[str, Any] | None


def parse_progress(raw: str | bytes | None) -> dict[str, Any] | None:
    """The runner's progress JSON as a status.progress value (bounded, typed), or None."""
    if not raw:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    out: dict[str, Any] = {}
    percent = doc.get("percent")
    if isinstance(percent, int | float) and not isinstance(percent, bool):
        out["percent"] = min(100.0, max(0.0, float(percent)))
    for key, limit in (("stage", 256), ("message", 1024)):
        if isinstance(doc.get(key), str):
            out[key] = doc[key][:limit]
    if isinstance(doc.get("time"), str):
        out["time"] = doc["time"]
    return out or None


class Heartbeats:
    """Batched reads of heartbeat and progress keys."""

    def __init__(self, url: str) -> None:
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_timeout=1.0, socket_connect_timeout=1.0
        )
        self.healthy = True

    async def read(self, tasks: list[tuple[str, str]]) -> dict[tuple[str, str], Beat] | None:
        """Heartbeat and progress of each (namespace, name); None while Redis is unreachable."""
        if not tasks:
            return {}
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for ns, name in tasks:
                    pipe.get(f"{prefix(ns, name)}:heartbeat")
                    pipe.get(f"{prefix(ns, name)}:progress")
                values = await pipe.execute()
        except (RedisError, OSError) as exc:
            self._down(exc)
            return None
        self._up()
        beats = {}
        for i, key in enumerate(tasks):
            heartbeat, progress = values[2 * i], values[2 * i + 1]
            beats[key] = Beat(
                heartbeat.decode() if isinstance(heartbeat, bytes) else heartbeat,
                parse_progress(progress),
            )
        return beats

    async def result(self, namespace: str, name: str) -> str | None:
        """The runner's full result JSON (tails up to outputLimitBytes), if Redis has it."""
        try:
            raw = await self.client.get(f"{prefix(namespace, name)}:result")
        except (RedisError, OSError) as exc:
            self._down(exc)
            return None
        self._up()
        return raw.decode() if isinstance(raw, bytes) else raw

    def _down(self, exc: Exception) -> None:
        if self.healthy:
            log.warning("Redis unreachable, tasks run without heartbeats: %s", exc)
        self.healthy = False

    def _up(self) -> None:
        if not self.healthy:
            log.info("Redis reachable again")
        self.healthy = True

    async def close(self) -> None:
        """Close the connection pool."""
        await self.client.aclose()
