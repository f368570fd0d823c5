"""A watch in a background thread that records when each object was seen in which state."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import watch

Obj = dict[str, Any]


def name_of(obj: Obj) -> str:
    return str(obj["metadata"]["name"])


def always(_: Obj) -> bool:
    return True


class Watcher:
    """Watches one list call (e.g. the Jobs of a namespace) from the moment it starts.

    Every ADDED/MODIFIED object is kept with the `time.perf_counter()` it arrived at, under
    `key(obj)` (its name unless told otherwise), so a state that passed before anyone asked for it
    is still found.
    """

    def __init__(
        self, list_call: Callable[..., Any], *args: Any, key: Callable[[Obj], str] = name_of
    ) -> None:
        self._list = list_call
        self._args = args
        self._key = key
        self._cond = threading.Condition()
        self._history: dict[str, list[tuple[float, Obj]]] = {}
        self._firsts: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._rv = ""
        self.errors: list[str] = []

    def start(self) -> Watcher:
        self._relist()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def first(
        self, key: str, predicate: Callable[[Obj], bool] = always, timeout: float = 60
    ) -> float:
        """When the object `key` was first seen matching `predicate`; waits up to `timeout`."""

        def found() -> float | None:
            return next((t for t, obj in self._history.get(key, []) if predicate(obj)), None)

        with self._cond:
            if not self._cond.wait_for(lambda: found() is not None, timeout):
                raise TimeoutError(f"{key} not seen as expected within {timeout}s")
            at = found()
            assert at is not None
            return at

    def wait_count(self, n: int, timeout: float) -> float:
        """When the `n`-th distinct object was first seen; waits up to `timeout`."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._firsts) >= n, timeout):
                raise TimeoutError(f"{len(self._firsts)} of {n} objects seen within {timeout}s")
            return self._firsts[n - 1]

    def _relist(self) -> None:
        listing = json.loads(self._list(*self._args, _preload_content=False).data)
        self._rv = listing["metadata"]["resourceVersion"]

    def _run(self) -> None:
        while not self._stop.is_set():
            stream: Any = watch.Watch()  # type: ignore[no-untyped-call]
            try:
                for event in stream.stream(
                    self._list,
                    *self._args,
                    resource_version=self._rv,
                    timeout_seconds=10,
                    allow_watch_bookmarks=True,
                    deserialize=False,
                ):
                    self._on(event, time.perf_counter())
                    if self._stop.is_set():
                        stream.stop()
            except Exception as exc:  # a broken or expired stream: go on from now
                self.errors.append(repr(exc))
                time.sleep(0.2)
                with contextlib.suppress(Exception):
                    self._relist()

    def _on(self, event: Obj, now: float) -> None:
        obj = event.get("object") or {}
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if rv:
            self._rv = rv
        if event.get("type") not in ("ADDED", "MODIFIED"):
            return
        key = self._key(obj)
        with self._cond:
            if key not in self._history:
                self._history[key] = []
                self._firsts.append(now)
            self._history[key].append((now, obj))
            self._cond.notify_all()
