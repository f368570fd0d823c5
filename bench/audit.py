"""The API server's audit log (hack/cluster/audit-policy.yaml: every write, at Metadata level).

Parsing and counting are pure; `AuditLog` reads what was appended since a mark, across a rotation.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
HTTP_METHOD = {
    "create": "POST",
    "update": "PUT",
    "patch": "PATCH",
    "delete": "DELETE",
    "deletecollection": "DELETE",
}


@dataclass(frozen=True)
class Entry:
    """One completed request."""

    verb: str
    resource: str
    """`resource` or `resource/subresource`, e.g. `codetasks/status`."""
    namespace: str
    name: str
    user: str
    user_agent: str
    code: int
    received: datetime
    completed: datetime

    @property
    def write(self) -> bool:
        return self.verb in WRITE_VERBS


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def parse_line(line: str) -> Entry | None:
    """The entry of a `ResponseComplete` audit event; None for other stages and non-JSON lines."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("stage") != "ResponseComplete":
        return None
    ref = event.get("objectRef") or {}
    resource = ref.get("resource") or event.get("requestURI", "")
    if ref.get("subresource"):
        resource = f"{resource}/{ref['subresource']}"
    return Entry(
        verb=event.get("verb", ""),
        resource=resource,
        namespace=ref.get("namespace") or "",
        name=ref.get("name") or "",
        user=(event.get("user") or {}).get("username", ""),
        user_agent=event.get("userAgent", ""),
        code=int((event.get("responseStatus") or {}).get("code") or 0),
        received=_time(event["requestReceivedTimestamp"]),
        completed=_time(event["stageTimestamp"]),
    )


def parse(lines: Iterable[str], needle: str | None = None) -> Iterator[Entry]:
    """Entries of `lines`; with `needle`, only lines containing it are decoded (fast pre-filter)."""
    for line in lines:
        if needle is not None and needle not in line:
            continue
        entry = parse_line(line)
        if entry is not None:
            yield entry


def count_writes(entries: Iterable[Entry], user: str) -> Counter[str]:
    """Writes by `user`, keyed `verb resource` (e.g. `patch codetasks/status`)."""
    return Counter(f"{e.verb} {e.resource}" for e in entries if e.user == user and e.write)


@dataclass(frozen=True)
class Mark:
    """A position in the audit log: the file's inode and size when marked."""

    inode: int
    offset: int


class AuditLog:
    """The live audit log; `lines_since(mark)` also reads the rotated file the mark points into."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def mark(self) -> Mark:
        """Where the log ends now."""
        st = self.path.stat()
        return Mark(st.st_ino, st.st_size)

    def lines_since(self, mark: Mark) -> Iterator[str]:
        """Every line written after `mark`. Raises if a rotation dropped part of them."""
        st = self.path.stat()
        if st.st_ino == mark.inode and st.st_size < mark.offset:
            raise RuntimeError(f"{self.path} was truncated or replaced since the mark")
        if st.st_ino != mark.inode:
            rotated = self._rotated(mark.inode)
            if rotated is None:
                raise RuntimeError(f"{self.path} rotated twice since the mark: entries were lost")
            yield from self._read(rotated, mark.offset)
            yield from self._read(self.path, 0)
            return
        yield from self._read(self.path, mark.offset)

    def _rotated(self, inode: int) -> Path | None:
        stem = self.path.stem
        for candidate in self.path.parent.glob(f"{stem}-*{self.path.suffix}"):
            if os.stat(candidate).st_ino == inode:
                return candidate
        return None

    @staticmethod
    def _read(path: Path, offset: int) -> Iterator[str]:
        with path.open("rb") as file:
            file.seek(offset)
            for raw in file:
                if raw.endswith(b"\n"):
                    yield raw.decode()
