"""The progress protocol: the code appends JSON lines to a file; the runner keeps the latest one.

Example line: ``{"percent": 40, "stage": "download", "message": "3/7 files"}``. All keys are
optional, unknown keys and malformed lines are ignored; a line with none of the known keys is
ignored too.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat

MAX_READ = 65536
"""Bytes read per poll at most; when more was appended, only the newest MAX_READ bytes count."""
MAX_STAGE = 200
MAX_MESSAGE = 1000


def parse_line(line: bytes) -> dict[str, object] | None:
    """The progress fields of one line, or None when it carries none.

    ``percent`` must be a number (clamped to 0..100), ``stage`` and ``message`` strings (cut to
    200 and 1000 characters).
    """
    try:
        value = json.loads(line)
    except ValueError:  # includes UnicodeDecodeError
        return None
    if not isinstance(value, dict):
        return None
    percent = value.get("percent")
    stage = value.get("stage")
    message = value.get("message")
    fields: dict[str, object] = {"percent": None, "stage": None, "message": None}
    if (
        isinstance(percent, int | float)
        and not isinstance(percent, bool)
        and math.isfinite(percent)
    ):
        fields["percent"] = min(100, max(0, percent))
    if isinstance(stage, str):
        fields["stage"] = stage[:MAX_STAGE]
    if isinstance(message, str):
        fields["message"] = message[:MAX_MESSAGE]
    if all(v is None for v in fields.values()):
        return None
    return fields


class ProgressFile:
    """Tails the progress file with bounded reads; survives the file being replaced or truncated."""

    __slots__ = ("_identity", "_offset", "_pending", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        self._identity: tuple[int, int] | None = None
        self._offset = 0
        self._pending = b""

    def create(self) -> None:
        """Create the file empty, so the code may append to it right away."""
        with contextlib.suppress(OSError):
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC))

    def poll(self, final: bool = False) -> dict[str, object] | None:
        """The latest valid progress appended since the last poll, or None.

        ``final``: the code has ended, so an unterminated last line counts as well.
        """
        data, skipped = self._read()
        buffer = self._pending + data
        lines = buffer.split(b"\n")
        self._pending = lines.pop()
        if skipped and lines:
            lines.pop(0)  # a window starting mid-line: its first line is incomplete
        if len(self._pending) > MAX_READ:
            self._pending = b""
        if final and self._pending:
            lines.append(self._pending)
            self._pending = b""
        for line in reversed(lines):
            fields = parse_line(line)
            if fields is not None:
                return fields
        return None

    def _read(self) -> tuple[bytes, bool]:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return b"", False
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return b"", False
            identity = (st.st_dev, st.st_ino)
            if identity != self._identity or st.st_size < self._offset:
                self._identity = identity
                self._offset = 0
                self._pending = b""
            if st.st_size <= self._offset:
                return b"", False
            start = max(self._offset, st.st_size - MAX_READ)
            skipped = start > self._offset
            if skipped:
                self._pending = b""
            data = os.pread(fd, st.st_size - start, start)
            self._offset = start + len(data)
            return data, skipped
        except OSError:
            return b"", False
        finally:
            os.close(fd)
