"""The results stream against a real redis-server: each task's entry appended once, whatever
publishes it again; consumers read it with a consumer group and acknowledge."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest
from redis import asyncio as aioredis

from codetask_operator import results_stream
from codetask_operator.results_stream import ResultsStream, entry
from tests.local_redis import RedisServer

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[2] / "docs/examples/results_consumer.py"

STATUS = {
    "phase": "Succeeded",
    "reason": "Completed",
    "message": "",
    "attempts": 2,
    "exitCode": 0,
    "durationSeconds": 0.5,
    "startTime": "2026-12-05T10:00:00Z",
    "completionTime": "2026-12-05T10:00:01Z",
    "stdout": "4\n",
    "stderr": "",
    "truncated": {"stdout": False, "stderr": False},
}


def test_an_entry_is_the_final_status_in_strings() -> None:
    fields = entry("ns", "t", "uid-1", STATUS)
    assert fields == {
        "v": "1",
        "namespace": "ns",
        "name": "t",
        "uid": "uid-1",
        "attempts": "2",
        "phase": "Succeeded",
        "reason": "Completed",
        "message": "",
        "exitCode": "0",
        "durationSeconds": "0.5",
        "startTime": "2026-12-05T10:00:00Z",
        "completionTime": "2026-12-05T10:00:01Z",
        "stdout": "4\n",
        "stderr": "",
        "truncated": '{"stderr":false,"stdout":false}',
        "agent": "null",
    }


def test_an_entry_without_an_exit_code_or_duration_says_so_with_empty_strings() -> None:
    fields = entry("ns", "t", "u", {"phase": "Failed", "reason": "InvalidSpec"})
    assert (fields["exitCode"], fields["durationSeconds"], fields["attempts"]) == ("", "", "0")


def test_a_task_is_appended_once_however_often_it_is_published(server: RedisServer) -> None:
    async def scenario() -> tuple[list[bool], list[str], int]:
        client = aioredis.Redis.from_url(server.url)
        stream = ResultsStream(client, "codetask:results:stream", 1000, 3600)
        fields = entry("ns", "t", "uid-1", STATUS)
        # Two operators around a change of leader, and a retry: concurrently and after.
        first = await asyncio.gather(*(stream.publish("uid-1", fields) for _ in range(5)))
        again = await stream.publish("uid-1", fields)
        other = await stream.publish("uid-2", entry("ns", "u", "uid-2", STATUS))
        missing = await stream.unpublished(["uid-1", "uid-2", "uid-3"])
        ttl = await client.ttl(results_stream.marker("uid-1"))
        await client.aclose()
        return [*first, again, other], missing, ttl

    published, missing, ttl = asyncio.run(scenario())
    assert sorted(published) == [False] * 5 + [True] * 2
    assert missing == ["uid-3"]
    assert 3500 < ttl <= 3600
    stored = server.client.xrange("codetask:results:stream")
    assert [(f["uid"], f["name"]) for _, f in stored] == [("uid-1", "t"), ("uid-2", "u")]


def test_consumers_in_a_group_each_get_an_entry_once_and_acknowledge_it(
    server: RedisServer,
) -> None:
    async def publish() -> None:
        client = aioredis.Redis.from_url(server.url)
        stream = ResultsStream(client, "s", 1000, 3600)
        for n in range(6):
            await stream.publish(f"uid-{n}", entry("ns", f"t{n}", f"uid-{n}", STATUS))
        await client.aclose()

    consumer = server.client
    consumer.xgroup_create("s", "g", id="0", mkstream=True)
    asyncio.run(publish())
    seen: list[str] = []
    for name in ("a", "b", "a", "b"):
        for _, entries in consumer.xreadgroup("g", name, {"s": ">"}, count=2):
            for entry_id, fields in entries:
                seen.append(fields["uid"])
                consumer.xack("s", "g", entry_id)
    assert sorted(seen) == [f"uid-{n}" for n in range(6)]
    assert consumer.xpending("s", "g")["pending"] == 0


def test_the_stream_keeps_about_maxlen_entries(server: RedisServer) -> None:
    async def publish() -> None:
        client = aioredis.Redis.from_url(server.url)
        stream = ResultsStream(client, "s", 100, 3600)
        for n in range(1000):
            await stream.publish(f"uid-{n}", entry("ns", "t", f"uid-{n}", STATUS))
        await client.aclose()

    asyncio.run(publish())
    assert 100 <= server.client.xlen("s") < 300  # MAXLEN ~: trimmed by whole macro nodes


def test_the_documented_consumer_gets_each_entry_once_across_a_restart(
    server: RedisServer,
) -> None:
    """docs/examples/results_consumer.py: a consumer that died before acknowledging gets its
    pending entry again at start-up, then the new ones; nothing twice once acknowledged."""
    spec = importlib.util.spec_from_file_location("results_consumer", EXAMPLE)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)

    async def publish(uids: list[str]) -> None:
        client = aioredis.Redis.from_url(server.url)
        stream = ResultsStream(client, example.STREAM, 1000, 3600)
        for uid in uids:
            await stream.publish(uid, entry("ns", "t", uid, STATUS))
        await client.aclose()

    asyncio.run(publish(["a", "b"]))
    got: list[str] = []

    def dies_on_b(fields: dict[str, str]) -> None:
        if fields["uid"] == "b":
            raise RuntimeError("consumer died")
        got.append(fields["uid"])

    with pytest.raises(RuntimeError):
        example.consume(server.client, "g", "c1", dies_on_b, block_ms=None, rounds=3)
    asyncio.run(publish(["c", "a"]))  # "a" again: already in the stream, nothing added
    example.consume(server.client, "g", "c1", lambda f: got.append(f["uid"]), None, rounds=4)
    assert got == ["a", "b", "c"]
    assert server.client.xpending(example.STREAM, "g")["pending"] == 0
