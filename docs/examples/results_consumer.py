"""Read finished CodeTasks from the results stream with a consumer group; acknowledge each.

    python results_consumer.py redis://:PASSWORD@HOST:6379/0 [GROUP] [CONSUMER]

Several consumers in one group share the entries (each entry goes to one of them); each group gets
every entry. An entry not acknowledged (the consumer died while handling it) stays pending for its
consumer: read it again with id "0" at start-up, as below, before new ones (">").
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

import redis

STREAM = "codetask:results:stream"


def consume(
    client: redis.Redis,
    group: str,
    consumer: str,
    handle: Callable[[dict[str, str]], None],
    block_ms: int | None = 5000,
    rounds: int | None = None,
) -> None:
    """Hand each entry to `handle`, then acknowledge it; forever, or `rounds` reads."""
    try:
        client.xgroup_create(STREAM, group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):  # the group exists already
            raise
    start = "0"  # first what this consumer read and did not acknowledge, then new entries
    while rounds is None or rounds > 0:
        rounds = None if rounds is None else rounds - 1
        replies = client.xreadgroup(group, consumer, {STREAM: start}, count=100, block=block_ms)
        entries = [entry for _, batch in replies for entry in batch]
        if start == "0" and not entries:
            start = ">"
            continue
        for entry_id, fields in entries:
            handle(fields)
            client.xack(STREAM, group, entry_id)


def show(fields: dict[str, str]) -> None:
    exit_code = fields["exitCode"] or "-"
    print(
        f"{fields['namespace']}/{fields['name']} {fields['phase']} ({fields['reason']}) "
        f"exit {exit_code} after {fields['attempts']} attempt(s): "
        f"{json.dumps(fields['stdout'][-200:])}"
    )


if __name__ == "__main__":
    url, group, consumer = [*sys.argv[1:], "codetask-example", "consumer-1"][:3]
    consume(redis.Redis.from_url(url, decode_responses=True), group, consumer, show)
