"""Heartbeats, progress and the final result in Redis, written from one background thread.

Redis is optional and never in the way: redis-py is imported only here, in the thread; sockets
time out after ``SOCKET_TIMEOUT`` with no retries; the first failure of any kind prints the run's
only warning line, and later beats keep trying quietly (Redis may come back).
"""

from __future__ import annotations

import json
import math
import threading
import time

from . import log
from .result import iso_time

TYPE_CHECKING = False  # typing costs ~10 ms at start-up; mypy still reads the block below
if TYPE_CHECKING:
    from collections.abc import Callable

    import redis

    from .config import Config

SOCKET_TIMEOUT = 0.5
"""Connect and read timeout of every Redis call, in seconds."""
FINAL_WAIT = 1.0
"""How long the runner waits, at most, for the final writes before it exits."""
PROGRESS_INTERVAL = 1.0
"""At most one progress write per this many seconds."""
RESULT_TTL = 86400
FINISHED_TTL = 300
"""The last heartbeat, written with the result, lives this long (seconds): the runner has ended,
not died, and its pod's result reaches the API once the kubelet reports it — which may be a while
on a node that stopped reporting (Kubernetes evicts such pods after 300 s by default). Until then
the operator must not take the silence for a lost runner."""


class Reporter:
    """Writes the keys of docs/runner-contract.md ("Redis") for one run: only its attempt's, under
    `CODETASK_REDIS_PREFIX` (the attempt's own Redis user may write nothing else)."""

    def __init__(self, config: Config, warn: log.Once) -> None:
        self._url = config.redis_url or ""
        prefix = config.redis_prefix
        self.heartbeat_key = f"{prefix}:heartbeat"
        self.runner_key = f"{prefix}:runner"
        self.progress_key = f"{prefix}:progress"
        self.result_key = f"{prefix}:result"
        self.done_key = f"{prefix}:done" if config.warm else None
        """A warm pod's completion notice: the operator BLPOPs it, then reads the result."""
        self._interval = config.heartbeat_interval
        self._ttl = max(1, math.ceil(config.heartbeat_ttl))
        self._info = {
            "pod": config.pod,
            "node": config.node,
            "pid": "",
            "started": iso_time(time.time()),
            "attempt": str(config.attempt),
        }
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._done = threading.Event()
        self._progress: str | None = None
        self._final: str | None = None
        self._thread: threading.Thread | None = None
        self._final_written = False
        self._warn = warn

    def start(self, pid: int | None) -> None:
        """Start heartbeats for the code's main process ``pid``."""
        if pid is not None:
            self._info["pid"] = str(pid)
        self._thread = threading.Thread(target=self._run, name="codetask-redis", daemon=True)
        self._thread.start()

    def progress(self, fields: dict[str, object]) -> None:
        """Queue the latest progress; written at most once per PROGRESS_INTERVAL."""
        doc = json.dumps({**fields, "time": iso_time(time.time())}, separators=(",", ":"))
        with self._lock:
            self._progress = doc
        self._wake.set()

    def finish(self, result: str, wait: float = FINAL_WAIT) -> bool:
        """Write the result (and the last heartbeat and progress); wait at most ``wait``.

        Returns False when the writes did not complete in time (or at all).
        """
        with self._lock:
            self._final = result
        if self._thread is None:
            self.start(None)
        self._wake.set()
        return self._done.wait(wait) and self._final_written

    def _run(self) -> None:
        client = self._connect()
        if client is None:
            self._done.set()
            return
        next_beat = next_progress = time.monotonic()
        while True:
            with self._lock:
                final, progress = self._final, self._progress
            if final is not None:
                self._final_written = self._attempt(self._write_final, client, final)
                self._done.set()
                return
            now = time.monotonic()
            if progress is not None and now >= next_progress:
                with self._lock:
                    if self._progress is progress:
                        self._progress = None
                self._attempt(self._write_progress, client, progress)
                next_progress = time.monotonic() + PROGRESS_INTERVAL
            if now >= next_beat:
                self._attempt(self._beat, client)
                next_beat = max(next_beat + self._interval, time.monotonic())
            wake_at = next_beat
            if self._progress is not None:
                wake_at = min(wake_at, next_progress)
            self._wake.wait(max(0.0, wake_at - time.monotonic()))
            self._wake.clear()

    def _connect(self) -> redis.Redis | None:
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            return redis.Redis.from_url(
                self._url,
                socket_timeout=SOCKET_TIMEOUT,
                socket_connect_timeout=SOCKET_TIMEOUT,
                retry=Retry(NoBackoff(), 0),
                health_check_interval=0,
            )
        except Exception as exc:
            self._warn_failure(exc)
            return None

    def _beat(self, client: redis.Redis) -> None:
        pipe = client.pipeline(transaction=False)
        pipe.setex(self.heartbeat_key, self._ttl, iso_time(time.time()))
        pipe.hset(self.runner_key, mapping=self._info)
        pipe.expire(self.runner_key, self._ttl)
        pipe.execute()

    def _write_progress(self, client: redis.Redis, progress: str) -> None:
        client.set(self.progress_key, progress, ex=RESULT_TTL)

    def _write_final(self, client: redis.Redis, result: str) -> None:
        pipe = client.pipeline(transaction=False)
        with self._lock:
            progress, self._progress = self._progress, None
        if progress is not None:
            pipe.set(self.progress_key, progress, ex=RESULT_TTL)
        pipe.set(self.result_key, result, ex=RESULT_TTL)
        if self.done_key is not None:  # after the result: whoever the push wakes finds it
            pipe.rpush(self.done_key, 1)
            pipe.expire(self.done_key, RESULT_TTL)
        pipe.setex(self.heartbeat_key, max(self._ttl, FINISHED_TTL), iso_time(time.time()))
        pipe.execute()

    def _attempt(self, call: Callable[..., object], *args: object) -> bool:
        try:
            call(*args)
        except Exception as exc:
            self._warn_failure(exc)
            return False
        return True

    def _warn_failure(self, exc: Exception) -> None:
        if isinstance(exc, ImportError):
            detail = "the redis client (redis-py) is not installed"
        else:
            detail = f"{type(exc).__name__}: {exc}"
        self._warn(
            f"warning: Redis unavailable ({detail}); the code runs on, "
            "but heartbeats, progress or the result may be missing from Redis"
        )
