"""The operator's Redis side against a real redis-server: whether task pods may get Redis at all,
each attempt's own user granted and revoked, and users set again after Redis restarts empty."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
import redis

from codetask_operator import redis_access
from codetask_operator.heartbeats import Heartbeats
from codetask_operator.reconcile import Reconciler, Registry, TaskState
from codetask_operator.settings import Settings
from tests.local_redis import RedisServer, restart_redis, start_redis, stop_redis
from tests.unit.test_reconcile import NAME, UID, FakeKube, job_body, pod_body, result, seen, task

pytestmark = pytest.mark.unit


@pytest.fixture
def server() -> Iterator[RedisServer]:
    running = start_redis()
    yield running
    stop_redis(running)


def test_task_pods_get_redis_only_from_a_redis_that_needs_a_password(server: RedisServer) -> None:
    async def access(url: str) -> tuple[bool, str | None]:
        beats = Heartbeats(url)
        try:
            return await beats.task_access(), beats.isolation
        finally:
            await beats.close()

    assert asyncio.run(access(server.url)) == (True, "")
    open_server = start_redis(password=None)
    try:
        allowed, why = asyncio.run(access(open_server.url))
    finally:
        stop_redis(open_server)
    assert not allowed and why and "no password" in why


def test_an_attempts_user_writes_its_keys_until_revoked(server: RedisServer) -> None:
    prefix = redis_access.prefix("ns", "t", "uid", 1)
    task = redis.Redis.from_url(redis_access.task_url(server.url, "u", "pw"))

    async def scenario() -> None:
        beats = Heartbeats(server.url)
        assert await beats.grant("u", redis_access.acl_rules(prefix, "pw"))
        task.setex(f"{prefix}:heartbeat", 10, "2026-12-05T00:00:00Z")
        assert (await beats.read([prefix]) or {})[prefix].heartbeat == "2026-12-05T00:00:00Z"
        await beats.revoke(["u"])
        await beats.close()

    asyncio.run(scenario())
    # Redis drops the deleted user's open connection: the next command finds it reset, or (if the
    # client noticed first and connected again) is refused at AUTH. Either way nothing is written,
    # and a new connection is refused. (CI once saw the reset where AUTH's refusal was expected.)
    with pytest.raises((redis.AuthenticationError, redis.ConnectionError)):
        task.setex(f"{prefix}:heartbeat", 10, "x")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(redis_access.task_url(server.url, "u", "pw")).setex(
            f"{prefix}:heartbeat", 10, "x"
        )
    assert server.client.get(f"{prefix}:heartbeat") == "2026-12-05T00:00:00Z"


def test_users_of_attempts_under_way_are_set_again_after_redis_restarts_empty(
    server: RedisServer,
) -> None:
    state = TaskState(uid="uid", namespace="ns", name="t", spec={"code": "x"})
    state.status = {"phase": "Running", "reason": "Started", "jobName": "t-1", "attempts": 2}
    user = redis_access.user("uid", 2)
    servers = [server]

    async def scenario() -> None:
        beats = Heartbeats(server.url)
        registry = Registry()
        registry.tasks["uid"] = state
        settings = Settings(redis_url=server.url)
        reconciler = Reconciler(None, settings, registry, heartbeats=beats)  # type: ignore[arg-type]
        await reconciler.check_heartbeats()  # this server's run_id
        await reconciler._redis_access(state, 2)
        servers.append(restart_redis(server))
        assert servers[-1].client.acl_getuser(user) is None  # gone with the restart
        await reconciler.check_heartbeats()  # the old connection fails: Redis is down
        await reconciler.check_heartbeats()  # back, another run_id: every user set again
        await beats.close()

    try:
        asyncio.run(scenario())
        restarted = servers[-1]
        assert restarted.client.acl_getuser(user) is not None
        secret = redis_access.secret(None, server.url)
        password = redis_access.password(secret, "ns", "uid", 2)  # the pod still holds it
        task = redis.Redis.from_url(redis_access.task_url(server.url, user, password))
        assert task.setex(f"{state.redis_prefix(2)}:heartbeat", 5, "x")
    finally:
        if len(servers) > 1:
            server.process, server.client = servers[-1].process, servers[-1].client


def test_an_ended_attempt_is_counted_and_listed_once_by_the_operator(server: RedisServer) -> None:
    kube = FakeKube()
    beats = Heartbeats(server.url)

    async def scenario() -> None:
        reconciler, state = task(kube)
        reconciler.heartbeats = beats
        seen(state, job_body(), pod_body(phase="Succeeded", result=result("4\n")))
        await reconciler.reconcile(state)
        await reconciler.reconcile(state)  # final already: nothing again
        await asyncio.gather(*reconciler.background)
        await beats.close()

    asyncio.run(scenario())
    assert kube.status["phase"] == "Succeeded"
    entries = [json.loads(e) for e in server.client.lrange("codetask:results", 0, -1)]
    assert [(e["name"], e["uid"], e["attempt"], e["reason"]) for e in entries] == [
        (NAME, UID, 1, "Completed")
    ]
    assert server.client.hgetall("codetask:node:node-1:stats") == {"started": "1", "succeeded": "1"}
