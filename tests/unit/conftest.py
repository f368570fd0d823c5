"""Fixtures of the unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.local_redis import RedisServer, start_redis, stop_redis


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A redis-server of the test's own (tests/local_redis.py), stopped after it."""
    running = start_redis()
    yield running
    stop_redis(running)
