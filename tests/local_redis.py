"""A redis-server of a test's own, on 127.0.0.1 with a password (unit tests of the runner and of
the operator's Redis side)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass

import pytest
import redis

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
SERVER_OPTIONS = ("--bind", "127.0.0.1", "--save", "", "--appendonly", "no")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RedisServer:
    url: str
    client: redis.Redis
    process: subprocess.Popen[bytes]


def start_redis(password: str | None = "", port: int | None = None) -> RedisServer:
    """A redis-server of the test's own, with a password (a new one unless given; None: none): a
    server that another test session starts on the same port after this one stops is never
    taken for it."""
    if not os.path.exists(REDIS_SERVER):
        pytest.fail("redis-server is missing: apt-get install -y redis-server (make test does)")
    if password == "":
        password = uuid.uuid4().hex
    auth = ("--requirepass", password) if password else ()
    for _ in range(5):
        chosen = port or free_port()
        process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(chosen), *auth, *SERVER_OPTIONS],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(port=chosen, password=password, decode_responses=True)
        if _answers(client, process):
            userinfo = f":{password}@" if password else ""
            return RedisServer(f"redis://{userinfo}127.0.0.1:{chosen}/0", client, process)
        process.kill()
        process.wait()
    pytest.fail("redis-server did not start")


def restart_redis(server: RedisServer) -> RedisServer:
    """The server stopped and started again on its port with its password, empty (as a Redis
    without persistence restarts)."""
    stop_redis(server)
    password = server.client.connection_pool.connection_kwargs.get("password")
    port = server.client.connection_pool.connection_kwargs["port"]
    return start_redis(password, port)


def _answers(client: redis.Redis, process: subprocess.Popen[bytes]) -> bool:
    """True once the server answers; False if it exits first (its port was taken meanwhile)."""
    deadline = time.monotonic() + 10
    while process.poll() is None and time.monotonic() < deadline:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            time.sleep(0.05)
    return False


def stop_redis(server: RedisServer) -> None:
    server.client.close()
    server.process.terminate()
    server.process.wait(10)
