"""The operator's Redis side against a real redis-server: whether task pods may get Redis at all,
each attempt's own user granted and revoked, and users set again after Redis restarts empty."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
import redis

from codetask_operator import redis_access, results_stream
from codetask_operator.heartbeats import Heartbeats
from codetask_operator.reconcile import Reconciler, Registry, TaskState
from codetask_operator.settings import Settings
from tests.local_redis import RedisServer, restart_redis, start_redis, stop_redis
from tests.unit.test_reconcile import (
    NAME,
    UID,
    FakeKube,
    job_body,
    pod_body,
    result,
    seen,
    settled,
    task,
)

pytestmark = pytest.mark.unit


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


def test_a_finished_task_is_counted_and_in_the_results_stream_once(server: RedisServer) -> None:
    kube = FakeKube()
    beats = Heartbeats(server.url)

    async def scenario() -> None:
        reconciler, state = task(kube, heartbeats=beats)
        seen(state, job_body(), pod_body(phase="Succeeded", result=result("4\n")))
        await reconciler.reconcile(state)
        await reconciler.reconcile(state)  # final already: nothing again
        await asyncio.gather(*reconciler.background)
        await beats.close()

    asyncio.run(scenario())
    assert kube.status["phase"] == "Succeeded"
    entries = [f for _, f in server.client.xrange("codetask:results:stream")]
    assert [(e["name"], e["uid"], e["attempts"], e["reason"], e["stdout"]) for e in entries] == [
        (NAME, UID, "1", "Completed", "4\n")
    ]
    assert server.client.hgetall("codetask:node:node-1:stats") == {"started": "1", "succeeded": "1"}


def test_a_task_seen_finished_after_a_restart_is_published_unless_it_was(
    server: RedisServer,
) -> None:
    """The operator died between a task's final status write and the append: the next operator
    sees the task finished and publishes it from a fresh read, once; one already published
    (its marker) is not appended again."""
    kube = FakeKube()
    beats = Heartbeats(server.url)
    done = {
        "phase": "Succeeded",
        "reason": "Completed",
        "attempts": 1,
        "exitCode": 0,
        "stdout": "4\n",
        "completionTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }
    kube.task = {"metadata": {"name": NAME, "uid": UID}, "status": done}
    server.client.set(results_stream.marker("uid-2"), "1")

    async def scenario() -> None:
        reconciler, state = task(kube, heartbeats=beats)
        state.status = dict(done)
        other = TaskState(uid="uid-2", namespace="ns", name="u", spec={}, status=dict(done))
        reconciler.registry.tasks[other.uid] = other
        await settled(reconciler, reconciler.reconcile(state))
        await settled(reconciler, reconciler.reconcile(other))
        assert reconciler.publisher is not None
        assert set(reconciler.publisher.pending) == {UID, "uid-2"}
        await reconciler.settle_finished()
        assert kube.calls == [], "not out of the watch before the check"
        await reconciler.publisher.flush()
        await reconciler.publisher.flush()
        assert reconciler.publisher.pending == {}
        await reconciler.settle_finished()
        assert kube.calls == [f"label finished codetasks/{NAME}", "label finished codetasks/u"]
        await beats.close()

    asyncio.run(scenario())
    entries = [f for _, f in server.client.xrange("codetask:results:stream")]
    assert [(e["uid"], e["stdout"]) for e in entries] == [(UID, "4\n")]


def test_a_result_redis_could_not_take_is_published_once_it_is_back(server: RedisServer) -> None:
    kube = FakeKube()
    beats = Heartbeats(server.url)
    kube.task = {"metadata": {"name": NAME, "uid": UID}}

    async def scenario() -> None:
        reconciler, state = task(kube, heartbeats=beats)
        stop_redis(server)
        seen(state, job_body(), pod_body(phase="Succeeded", result=result("4\n")))
        await reconciler.reconcile(state)
        await asyncio.gather(*reconciler.background)
        assert reconciler.publisher is not None
        assert set(reconciler.publisher.pending) == {UID}
        kube.task = {"metadata": {"name": NAME, "uid": UID}, "status": dict(kube.status)}
        back = restart_redis(server)
        server.process, server.client = back.process, back.client
        await reconciler.publisher.flush()
        assert reconciler.publisher.pending == {}
        await beats.close()

    asyncio.run(scenario())
    entries = [f for _, f in server.client.xrange("codetask:results:stream")]
    assert [(e["uid"], e["phase"]) for e in entries] == [(UID, "Succeeded")]
