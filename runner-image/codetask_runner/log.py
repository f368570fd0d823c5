"""The runner's own messages: one line each on stderr, prefixed ``codetask-runner:``.

They go to the runner's stderr only, never into the captured tail of the code's stderr.
"""

from __future__ import annotations

import _thread  # threading would cost ~3 ms at start-up; a plain lock is all we need
import os

PREFIX = "codetask-runner: "

_lock = _thread.allocate_lock()
_at_line_start = True


def forwarded_stderr(chunk: bytes) -> None:
    """Note whether the code's stderr, as forwarded so far, ends a line."""
    global _at_line_start
    if chunk:
        _at_line_start = chunk.endswith(b"\n")


def say(message: str) -> None:
    """Write one message line, starting a new line if the code's stderr left one open."""
    global _at_line_start
    line = f"{'' if _at_line_start else chr(10)}{PREFIX}{message}\n".encode(errors="replace")
    with _lock:
        _at_line_start = True
        try:
            os.write(2, line)
        except OSError:
            return  # no stderr left to tell


class Once:
    """Says a message the first time only: one warning for a whole class of failures."""

    __slots__ = ("_lock", "said")

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
        self.said = False

    def __call__(self, message: str) -> None:
        with self._lock:
            if self.said:
                return
            self.said = True
        say(message)
