"""`codetask results`: read the results stream (docs/results.md) from the shell.

Without a group, entries are read from the start (or `--since` an id), and nothing is acknowledged:
any number of readers see everything. With `--group`, entries go to this consumer of the group
once and are acknowledged after they are printed; pending ones it read before and did not
acknowledge come first.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Final

import redis

from codetask_operator.cli.errors import CliError
from codetask_operator.settings import Settings

STREAM: Final[str] = Settings.model_fields["results_stream"].default
"""The operator's default results stream."""
Entry = tuple[str, dict[str, str]]


def connect(url: str) -> redis.Redis:
    try:
        client = redis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=5)
        client.ping()
    except (redis.RedisError, ValueError) as exc:
        raise CliError(f"cannot reach Redis at {_safe(url)}: {exc}") from None
    return client


def _safe(url: str) -> str:
    """The URL without its password."""
    head, at, tail = url.rpartition("@")
    return f"{head.split('//')[0]}//***@{tail}" if at else url


def read(
    client: redis.Redis,
    stream: str,
    follow: bool,
    since: str = "0",
    count: int = 100,
    block_ms: int = 5000,
) -> Iterator[Entry]:
    """Entries after `since`; with `follow`, then new ones as they come (forever)."""
    last = since
    while True:
        entries = _entries(
            client.xread({stream: last}, count=count, block=block_ms if follow else None)
        )
        yield from entries
        if entries:
            last = entries[-1][0]
        elif not follow:
            return


def read_group(
    client: redis.Redis,
    stream: str,
    group: str,
    consumer: str,
    follow: bool,
    handled: Callable[[str], object],
    count: int = 100,
    block_ms: int = 5000,
) -> Iterator[Entry]:
    """This consumer's entries of `group` (created at the stream's start if new): first those it
    read before and did not acknowledge, then new ones; `handled(id)` acknowledges one."""
    try:
        client.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise CliError(f"cannot create group {group!r} on {stream}: {exc}") from None
    start = "0"
    while True:
        block = block_ms if follow and start == ">" else None
        entries = _entries(
            client.xreadgroup(group, consumer, {stream: start}, count=count, block=block)
        )
        for entry in entries:
            yield entry
            handled(entry[0])
        if entries:
            continue
        if start == "0":
            start = ">"
        elif not follow:
            return


def _entries(replies: object) -> list[Entry]:
    """The entries of an XREAD/XREADGROUP reply (one stream): [[name, [(id, fields), ...]]]."""
    if not isinstance(replies, list):
        return []
    return [(str(i), dict(fields or {})) for _, batch in replies for i, fields in batch]


def line(entry: Entry) -> str:
    """One entry as a line: namespace/name, phase (reason), exit code, attempts, stdout's end."""
    _, fields = entry
    exit_code = fields.get("exitCode") or "-"
    out = (fields.get("stdout") or "").rstrip("\n").rsplit("\n", 1)[-1][:80]
    return (
        f"{fields.get('namespace')}/{fields.get('name')}\t{fields.get('phase')}"
        f" ({fields.get('reason')})\texit {exit_code}\tattempts {fields.get('attempts')}"
        f"\t{json.dumps(out)}"
    )


def as_json(entry: Entry) -> str:
    """One entry as a JSON line, with its stream id."""
    entry_id, fields = entry
    return json.dumps({"id": entry_id, **fields}, separators=(",", ":"))
