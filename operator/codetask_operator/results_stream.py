"""Every task's final result, appended once to a Redis Stream: the seed design's results queue.

Consumers read it with consumer groups (`XREADGROUP`, `XACK`; docs/results.md). Once means once: a
Lua script appends the entry together with a marker for the task (`codetask:published:{uid}`,
`SET NX`), atomically, so publishing a task again — after a Redis error, by an operator restarted
between the task's final status write and the append, or by two operators around a change of
leader — adds nothing. The marker lives `markerTtl` seconds: tasks that finished longer ago are not
checked again after a restart.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from redis import asyncio as aioredis

PUBLISH: Final = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
end
return false
"""
"""KEYS: marker, stream; ARGV: marker TTL, MAXLEN, then the entry's field/value pairs."""

VERSION: Final = "1"


def marker(uid: str) -> str:
    """The key that says the task's result is in the stream."""
    return f"codetask:published:{uid}"


def result(namespace: str, name: str, uid: str, status: Mapping[str, Any]) -> dict[str, Any]:
    """A finished task's result as consumers get it (the stream entry, a callback's data), from its
    final status. Its stdout and stderr are the status's tails: up to `outputLimitBytes`, read
    from Redis by the operator where the termination message cut them."""
    return {
        "namespace": namespace,
        "name": name,
        "uid": uid,
        "attempts": status.get("attempts") or 0,
        "phase": status.get("phase") or "",
        "reason": status.get("reason") or "",
        "message": status.get("message") or "",
        "exitCode": status.get("exitCode"),
        "durationSeconds": status.get("durationSeconds"),
        "startTime": status.get("startTime") or "",
        "completionTime": status.get("completionTime") or "",
        "stdout": status.get("stdout") or "",
        "stderr": status.get("stderr") or "",
        "truncated": status.get("truncated") or {},
        "agent": status.get("agent"),
    }


def entry(namespace: str, name: str, uid: str, status: Mapping[str, Any]) -> dict[str, str]:
    """The stream entry of a finished task: its `result`, all values strings (JSON for the
    structured ones, "" for a missing number)."""
    fields = {"v": VERSION, **result(namespace, name, uid, status)}
    return {key: _text(key, value) for key, value in fields.items()}


def _text(key: str, value: Any) -> str:
    if key in ("truncated", "agent"):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return "" if value is None else str(value)


class ResultsStream:
    """Appends finished tasks' entries to the stream `name` (approximately `maxlen` kept)."""

    def __init__(self, client: aioredis.Redis, name: str, maxlen: int, marker_ttl: int) -> None:
        self.client = client
        self.name = name
        self.maxlen = maxlen
        self.marker_ttl = marker_ttl
        self._script = client.register_script(PUBLISH)

    async def publish(self, uid: str, fields: Mapping[str, str]) -> bool:
        """Append the task's entry unless it is there already; True when this call appended it.
        Redis errors propagate: the caller tries again later."""
        args: list[str | int] = [self.marker_ttl, self.maxlen]
        for key, value in fields.items():
            args += [key, value]
        added = await self._script(keys=[marker(uid), self.name], args=args)
        return bool(added)

    async def unpublished(self, uids: Sequence[str]) -> list[str]:
        """Those of `uids` whose result is not in the stream (no marker)."""
        async with self.client.pipeline(transaction=False) as pipe:
            for uid in uids:
                pipe.exists(marker(uid))
            found = await pipe.execute()
        return [uid for uid, there in zip(uids, found, strict=True) if not there]
