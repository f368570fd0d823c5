"""The runners' heartbeats, progress and full results, read from Redis (when configured).

Keys are those of docs/runner-contract.md. Redis trouble never stops the operator: it logs one
warning per outage and the tasks go on without heartbeats. A heartbeat missing just after Redis
came back (or restarted, empty) proves nothing yet: reads are withheld until every runner seen
beating before has beaten again, or a heartbeat TTL has passed.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from codetask_operator.settings import Settings

log = logging.getLogger("codetask")

DEFAULT_TTL: float = Settings.model_fields["heartbeat_ttl_seconds"].default


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

    def __init__(self, url: str, ttl_seconds: float = DEFAULT_TTL) -> None:
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_timeout=1.0, socket_connect_timeout=1.0
        )
        self.ttl = ttl_seconds
        self.healthy = True
        self.run_id: str | None = None
        """The Redis server's run_id: another one means it restarted (and may have lost keys)."""
        self.unsure_until = 0.0
        """Before this (monotonic), a missing heartbeat may only mean Redis just came back."""
        self.beating: set[tuple[str, str]] = set()
        """Running tasks whose heartbeat has been read."""

    async def read(self, tasks: list[tuple[str, str]]) -> dict[tuple[str, str], Beat] | None:
        """Heartbeat and progress of each (namespace, name); None while Redis is unreachable."""
        if not tasks:
            return {}
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.info("server")
                for ns, name in tasks:
                    pipe.get(f"{prefix(ns, name)}:heartbeat")
                    pipe.get(f"{prefix(ns, name)}:progress")
                server, *values = await pipe.execute()
        except (RedisError, OSError) as exc:
            self._down(exc)
            return None
        self._up(str(server.get("run_id")))
        beats = {}
        for i, key in enumerate(tasks):
            heartbeat, progress = values[2 * i], values[2 * i + 1]
            beats[key] = Beat(
                heartbeat.decode() if isinstance(heartbeat, bytes) else heartbeat,
                parse_progress(progress),
            )
        running = set(tasks)
        beating = {key for key, beat in beats.items() if beat.heartbeat is not None}
        if time.monotonic() < self.unsure_until and (self.beating & running) - beating:
            return None
        self.unsure_until = 0.0
        self.beating = (self.beating & running) | beating
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

    def _up(self, run_id: str | None = None) -> None:
        if not self.healthy:
            log.info("Redis reachable again")
            self.unsure_until = time.monotonic() + self.ttl
        elif run_id is not None and self.run_id is not None and run_id != self.run_id:
            log.info("Redis restarted (run_id %s); heartbeats may be missing for a while", run_id)
            self.unsure_until = time.monotonic() + self.ttl
        self.healthy = True
        if run_id is not None:
            self.run_id = run_id

    async def close(self) -> None:
        """Close the connection pool."""
        await self.client.aclose()
