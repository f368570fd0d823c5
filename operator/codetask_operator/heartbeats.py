"""Redis (when configured): the runners' heartbeats, progress and full results, each attempt's own
ACL user, and the per-node counters and results list the operator keeps.

Keys are those of docs/runner-contract.md, under each attempt's prefix (`redis_access`). Redis
trouble never stops the operator: it logs one warning per outage and the tasks go on without
heartbeats. A heartbeat missing just after Redis came back (or restarted, empty) proves nothing
yet: reads are withheld until every runner seen beating before has beaten again, or a heartbeat
TTL has passed.
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
WAIT_SLICE = 10
"""Seconds one BLPOP for a warm runner's notice waits (then again, while the attempt runs)."""


def stats_key(node: str) -> str:
    """Per-node counters: started, succeeded, failed attempts."""
    return f"codetask:node:{node}:stats"


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
        self.blocking: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_timeout=WAIT_SLICE + 5, socket_connect_timeout=1.0
        )
        """For BLPOP: a connection each while it waits."""
        self.ttl = ttl_seconds
        self.healthy = True
        self.run_id: str | None = None
        """The Redis server's run_id: another one means it restarted (and may have lost keys)."""
        self.users_lost = False
        """Redis came back or restarted: the attempts' ACL users may be gone (a Redis without
        persistence loses them) and are to be set again."""
        self.unsure_until = 0.0
        """Before this (monotonic), a missing heartbeat may only mean Redis just came back."""
        self.beating: set[str] = set()
        """Running attempts (key prefixes) whose heartbeat has been read."""
        self.isolation: str | None = None
        """Why task pods cannot get Redis users of their own ("" once they can; None: not known
        yet)."""

    async def task_access(self) -> bool | None:
        """Whether attempts can get ACL users of their own: Redis ≥ 6 with ACLs, and the operator's
        own user protected by a password (else a task could connect as it). Said once, at the
        first answer; None while Redis cannot be asked."""
        if self.isolation is None:
            try:
                whoami = await self.client.acl_whoami()
                own = await self.client.acl_getuser(whoami)
            except (RedisError, OSError) as exc:
                if "unknown command" not in str(exc).lower():
                    self._down(exc)
                    return None
                self.isolation = f"this Redis has no ACLs (Redis >= 6 needed): {exc}"
            else:
                self.isolation = (
                    "the operator's Redis user needs no password, so any task could connect as it"
                    if "nopass" in (own or {}).get("flags", [])
                    else ""
                )
            if self.isolation:
                log.warning(
                    "task pods get no Redis (no heartbeats or progress): %s", self.isolation
                )
        return not self.isolation

    async def grant(self, user: str, rules: list[str]) -> bool:
        """Create or reset an attempt's ACL user."""
        try:
            await self.client.execute_command(  # type: ignore[no-untyped-call]
                "ACL", "SETUSER", user, *rules
            )
        except (RedisError, OSError) as exc:
            self._down(exc)
            return False
        self._up()
        return True

    async def revoke(self, users: list[str]) -> None:
        """Delete attempts' ACL users (absent ones are fine) and end their connections: a runner
        still stopping can write no more."""
        if not users:
            return
        try:
            await self.client.acl_deluser(*users)
        except (RedisError, OSError) as exc:
            self._down(exc)

    async def record(self, node: str, succeeded: bool) -> None:
        """An attempt on `node` ended: count it."""
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.hincrby(stats_key(node), "started", 1)
                pipe.hincrby(stats_key(node), "succeeded" if succeeded else "failed", 1)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._down(exc)

    async def read(self, prefixes: list[str]) -> dict[str, Beat] | None:
        """Heartbeat and progress of each attempt (by key prefix); None while Redis is down. Also
        notices a restarted Redis (its run_id), with or without attempts to read."""
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.info("server")
                for key in prefixes:
                    pipe.get(f"{key}:heartbeat")
                    pipe.get(f"{key}:progress")
                server, *values = await pipe.execute()
        except (RedisError, OSError) as exc:
            self._down(exc)
            return None
        self._up(str(server.get("run_id")))
        beats = {}
        for i, key in enumerate(prefixes):
            heartbeat, progress = values[2 * i], values[2 * i + 1]
            beats[key] = Beat(
                heartbeat.decode() if isinstance(heartbeat, bytes) else heartbeat,
                parse_progress(progress),
            )
        running = set(prefixes)
        beating = {key for key, beat in beats.items() if beat.heartbeat is not None}
        if time.monotonic() < self.unsure_until and (self.beating & running) - beating:
            return None
        self.unsure_until = 0.0
        self.beating = (self.beating & running) | beating
        return beats

    async def result(self, key_prefix: str) -> str | None:
        """The attempt's full result JSON (tails up to outputLimitBytes), if Redis has it."""
        try:
            raw = await self.client.get(f"{key_prefix}:result")
        except (RedisError, OSError) as exc:
            self._down(exc)
            return None
        self._up()
        return raw.decode() if isinstance(raw, bytes) else raw

    async def push(self, key: str, value: str, ttl: int) -> bool:
        """Append `value` to the list `key` (kept `ttl` seconds): a warm pod's inbox."""
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.rpush(key, value)
                pipe.expire(key, ttl)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._down(exc)
            return False
        self._up()
        return True

    async def claimed(self, key_prefix: str) -> bool | None:
        """Whether a runner claimed the attempt (`{prefix}:claim`); None while Redis fails."""
        try:
            found = await self.client.exists(f"{key_prefix}:claim")
        except (RedisError, OSError) as exc:
            self._down(exc)
            return None
        return bool(found)

    async def wait_done(self, key_prefix: str) -> bool | None:
        """Wait up to WAIT_SLICE seconds for a warm runner's `{prefix}:done` notice: True once it
        came, False if not yet, None while Redis fails."""
        try:
            got = await self.blocking.blpop([f"{key_prefix}:done"], timeout=WAIT_SLICE)  # type: ignore[misc]
        except (RedisError, OSError) as exc:
            self._down(exc)
            return None
        return got is not None

    def _down(self, exc: Exception) -> None:
        if self.healthy:
            log.warning("Redis unreachable, tasks run without heartbeats: %s", exc)
        self.healthy = False

    def _up(self, run_id: str | None = None) -> None:
        if not self.healthy:
            log.info("Redis reachable again")
            self.unsure_until = time.monotonic() + self.ttl
            self.users_lost = True
        elif run_id is not None and self.run_id is not None and run_id != self.run_id:
            log.info("Redis restarted (run_id %s); heartbeats may be missing for a while", run_id)
            self.unsure_until = time.monotonic() + self.ttl
            self.users_lost = True
        self.healthy = True
        if run_id is not None:
            self.run_id = run_id

    async def close(self) -> None:
        """Close the connection pools."""
        await self.client.aclose()
        await self.blocking.aclose()
