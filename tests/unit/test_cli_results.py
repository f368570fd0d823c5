"""`codetask results` against a real redis-server holding the operator's results stream."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time

import pytest
from click.testing import CliRunner
from redis import asyncio as aioredis

from codetask_operator.cli import results
from codetask_operator.cli.main import cli
from codetask_operator.results_stream import ResultsStream, entry
from tests.local_redis import RedisServer, free_port

pytestmark = pytest.mark.unit


def publish(server: RedisServer, *names: str) -> None:
    async def main() -> None:
        client = aioredis.Redis.from_url(server.url)
        stream = ResultsStream(client, results.STREAM, 1000, 3600)
        for name in names:
            status = {"phase": "Succeeded", "reason": "Completed", "exitCode": 0, "attempts": 1}
            await stream.publish(f"uid-{name}", entry("ns", name, f"uid-{name}", status))
        await client.aclose()

    asyncio.run(main())


def run(server: RedisServer, *args: str) -> list[str]:
    done = CliRunner().invoke(cli, ["results", "--redis-url", server.url, *args])
    assert done.exit_code == 0, done.output
    return done.output.splitlines()


def test_without_a_group_every_reader_sees_everything(server: RedisServer) -> None:
    publish(server, "a", "b")
    assert run(server) == [
        'ns/a\tSucceeded (Completed)\texit 0\tattempts 1\t""',
        'ns/b\tSucceeded (Completed)\texit 0\tattempts 1\t""',
    ]
    again = [json.loads(line) for line in run(server, "-o", "json")]
    assert [(e["name"], e["uid"]) for e in again] == [("a", "uid-a"), ("b", "uid-b")]
    assert [
        json.loads(line)["name"] for line in run(server, "--since", again[0]["id"], "-o", "json")
    ] == ["b"]


def test_a_group_gets_each_result_once(server: RedisServer) -> None:
    publish(server, "a", "b")
    assert len(run(server, "--group", "g")) == 2
    assert run(server, "--group", "g") == []
    publish(server, "c", "a")  # "a" is in the stream already: nothing added
    assert [line.split("\t")[0] for line in run(server, "--group", "g", "--consumer", "x")] == [
        "ns/c"
    ]
    assert server.client.xpending(results.STREAM, "g")["pending"] == 0


def test_a_consumer_gets_what_it_read_and_did_not_acknowledge_first(server: RedisServer) -> None:
    publish(server, "a", "b")
    server.client.xgroup_create(results.STREAM, "g", id="0")
    server.client.xreadgroup("g", "c1", {results.STREAM: ">"}, count=1)  # read "a", died
    assert [line.split("\t")[0] for line in run(server, "--group", "g", "--consumer", "c1")] == [
        "ns/a",
        "ns/b",
    ]


def test_follow_gives_results_as_they_come(server: RedisServer) -> None:
    publish(server, "a")
    later = threading.Timer(0.3, publish, (server, "b"))
    later.start()
    client = results.connect(server.url)
    got = list(itertools.islice(results.read(client, results.STREAM, True, block_ms=200), 2))
    later.join()
    assert [fields["name"] for _, fields in got] == ["a", "b"]


def test_an_unreachable_redis_is_a_clear_error_without_the_password() -> None:
    start = time.monotonic()
    done = CliRunner().invoke(
        cli, ["results", "--redis-url", f"redis://:sekrit@127.0.0.1:{free_port()}/0"]
    )
    assert done.exit_code != 0
    assert "cannot reach Redis at redis://***@127.0.0.1:" in done.output
    assert "sekrit" not in done.output
    assert time.monotonic() - start < 10
