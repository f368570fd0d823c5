"""Redis stopped before tasks start and while they run: every task still finishes with its real
result in status, no task is Lost because Redis is down or came back empty, heartbeats reach status
again once it is back, and the operator and each runner log one warning for the outage.

Redis here is a redis-server of the test's own (stopped and started again on the same port, empty
like a restarted Redis without persistence) and the operator a process of the test's own. The
tasks' code waits for gates, keys in the chaos Redis (never stopped), so that which tasks end while
Redis is down does not depend on timing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from kubernetes import client

from tests.conftest import SESSION
from tests.e2e.conftest import OPERATOR_ENV, free_port
from tests.e2e.tasks import FINAL, Operator, codetask, create, get, runner_pid

TTL = 4
FROZEN = 2.5
"""The running runners are frozen this long as Redis comes back: the operator reads the empty
Redis before they beat again, as it may whenever it sweeps between Redis's return and their next
beat, and must not take the missing heartbeats for lost runners."""
OPERATOR_WARNING = "Redis unreachable"
RUNNER_WARNING = "codetask-runner: warning: Redis unavailable"


@dataclass
class RedisServer:
    """A redis-server on the node's address that the test stops and starts again."""

    host: str
    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    password: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@{self.host}:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                *("--port", str(self.port)),
                *("--bind", f"{self.host} 127.0.0.1"),
                *("--save", ""),
                *("--appendonly", "no"),
                *("--requirepass", self.password),
                *("--dir", str(self.workdir)),
            ],
            stdout=subprocess.DEVNULL,
        )
        end = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(self.url).ping()
                return
            except redis.ConnectionError:
                assert self.proc.poll() is None, "redis-server exited"
                assert time.monotonic() < end, "redis-server did not start"
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None


@pytest.fixture
def redis_server(api_client: client.ApiClient, tmp_path: Path) -> Iterator[RedisServer]:
    node = client.CoreV1Api(api_client).list_node().items[0]
    host = next(a.address for a in node.status.addresses if a.type == "InternalIP")
    server = RedisServer(host, free_port(), tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def gates(redis_url: str) -> Gates:
    return Gates(redis_url)


@pytest.fixture
def redis_operator(
    crd: None, redis_server: RedisServer, api_client: client.ApiClient, tmp_path: Path
) -> Iterator[tuple[str, Operator]]:
    """An operator with Redis heartbeats (interval 1 s, TTL 4 s) serving its own namespace."""
    ns = f"{SESSION}rf-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    env = {
        **os.environ,
        **OPERATOR_ENV,
        "CODETASK_NAMESPACES": ns,
        "CODETASK_REDIS_URL": redis_server.url,
        "CODETASK_HEARTBEAT_INTERVAL_SECONDS": "1",
        "CODETASK_HEARTBEAT_TTL_SECONDS": str(TTL),
        "CODETASK_SWEEP_INTERVAL_SECONDS": "1",
        "CODETASK_HEALTH_PORT": str(free_port()),
        "CODETASK_METRICS_PORT": str(free_port()),
    }
    op = Operator([sys.executable, "-m", "codetask_operator"], env, tmp_path / "operator.log")
    op.start()
    yield ns, op
    op.stop(signal.SIGTERM)
    core.delete_namespace(ns)


GATED = (
    "import os, sys, time, redis\n"
    "gate = redis.Redis.from_url(os.environ['GATE_REDIS'])\n"
    "while not gate.exists(os.environ['GATE']):\n"
    "    time.sleep(0.2)\n"
    "time.sleep(1)\n"
    "print('done', os.environ['CODETASK_NAME'])\n"
    "sys.exit(int(os.environ['EXIT']))\n"
)


@dataclass
class Gates:
    """Keys in another Redis (the chaos one, never stopped) that let tasks go on to their end."""

    url: str
    prefix: str = field(default_factory=lambda: f"gate:{uuid.uuid4().hex[:8]}")

    def create(self, api: client.ApiClient, ns: str, tasks: dict[str, tuple[str, int]]) -> None:
        """Tasks (name: gate, exit code) that print `done NAME` one second after their gate."""
        for name, (gate, exit_code) in tasks.items():
            env = {"GATE_REDIS": self.url, "GATE": f"{self.prefix}:{gate}", "EXIT": str(exit_code)}
            body = codetask(
                name,
                language="python",
                code=GATED,
                env=[{"name": k, "value": v} for k, v in env.items()],
                timeoutSeconds=120,
            )
            create(api, ns, body)

    def open(self, gate: str) -> None:
        redis.Redis.from_url(self.url).set(f"{self.prefix}:{gate}", 1)


def statuses(api: client.ApiClient, ns: str, names: list[str]) -> dict[str, dict[str, Any]]:
    return {name: get(api, ns, name).get("status") or {} for name in names}


def wait_until(what: str, timeout: float, check: Any, show: Any = None) -> float:
    """Poll `check()` until true; seconds it took. `show()` says what was seen, on failure."""
    start = time.monotonic()
    while not check():
        seen = f"; seen: {show()}" if show and time.monotonic() - start >= timeout else ""
        assert time.monotonic() - start < timeout, f"{what}: not within {timeout} s{seen}"
        time.sleep(0.3)
    return time.monotonic() - start


def summary(api: client.ApiClient, ns: str, names: list[str]) -> dict[str, tuple[Any, ...]]:
    keys = ("phase", "reason", "message", "lastHeartbeatTime")
    return {n: tuple(s.get(k) for k in keys) for n, s in statuses(api, ns, names).items()}


def beat_time(st: dict[str, Any]) -> datetime | None:
    raw = st.get("lastHeartbeatTime")
    return datetime.fromisoformat(raw.replace("Z", "+00:00")) if raw else None


def assert_real_results(
    api: client.ApiClient, ns: str, want: dict[str, int], timeout: float
) -> None:
    names = list(want)
    wait_until(
        "all tasks final",
        timeout,
        lambda: all(s.get("phase") in FINAL for s in statuses(api, ns, names).values()),
    )
    got = {
        name: (s["phase"], s.get("exitCode"), s.get("stdout"), s.get("attempts"), s.get("reason"))
        for name, s in statuses(api, ns, names).items()
    }
    expected = {
        name: (
            "Succeeded" if code == 0 else "Failed",
            code,
            f"done {name}\n",
            1,
            "Completed" if code == 0 else "NonZeroExit",
        )
        for name, code in want.items()
    }
    assert got == expected


def runner_warnings(api: client.ApiClient, ns: str, task: str) -> int:
    core = client.CoreV1Api(api)
    pods = core.list_namespaced_pod(ns, label_selector=f"codetask.dev/task={task}").items
    assert len(pods) == 1, [p.metadata.name for p in pods]
    log: str = core.read_namespaced_pod_log(pods[0].metadata.name, ns)
    return log.count(RUNNER_WARNING)


def operator_lines(op: Operator, since: int, text: str) -> list[str]:
    return [line for line in op.log()[since:].splitlines() if text in line]


def test_redis_down_while_tasks_run_loses_nothing_and_heartbeats_resume(
    api_client: client.ApiClient,
    redis_server: RedisServer,
    redis_operator: tuple[str, Operator],
    gates: Gates,
) -> None:
    """Redis killed while 4 tasks run (two end while it is down, one of them exit 3) and started
    again empty after 3 TTLs, the other two runners beating again only 2.5 s later: no task is
    Lost, each ends with its own result, the running ones' lastHeartbeatTime moves past the restart,
    one warning from the operator and one per runner."""
    ns, op = redis_operator
    want = {"short-ok": 0, "short-fail": 3, "long-a": 0, "long-b": 0}
    gates.create(
        api_client, ns, {n: ("short" if "short" in n else "long", c) for n, c in want.items()}
    )
    wait_until(
        "all Running with a heartbeat in status",
        60,
        lambda: all(
            s.get("phase") == "Running" and s.get("lastHeartbeatTime")
            for s in statuses(api_client, ns, list(want)).values()
        ),
        lambda: summary(api_client, ns, list(want)),
    )
    log_start = len(op.log())
    redis_server.stop()
    down = time.monotonic()
    gates.open("short")
    time.sleep(3 * TTL)
    during = statuses(api_client, ns, list(want))
    pids = [runner_pid(ns, name) for name in ("long-a", "long-b")]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        redis_server.start()
        back = datetime.now().astimezone()
        outage = time.monotonic() - down
        back_at = time.monotonic()
        time.sleep(FROZEN)
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    assert {n: s.get("phase") for n, s in during.items() if n.startswith("short")} == {
        "short-ok": "Succeeded",
        "short-fail": "Failed",
    }, "the short tasks should end while Redis is down"
    wait_until(
        "lastHeartbeatTime past the restart",
        3 * TTL,
        lambda: all(
            (t := beat_time(s)) is not None and t >= back.replace(microsecond=0)
            for n, s in statuses(api_client, ns, ["long-a", "long-b"]).items()
        ),
        lambda: summary(api_client, ns, list(want)),
    )
    resumed = time.monotonic() - back_at
    gates.open("long")
    assert_real_results(api_client, ns, want, timeout=60)
    print(
        f"\nRedis down {outage:.1f} s; heartbeats in status again {resumed:.1f} s after it was back"
        f" (runners frozen for the first {FROZEN} s)"
    )
    assert len(operator_lines(op, log_start, OPERATOR_WARNING)) == 1, op.log()[log_start:]
    assert len(operator_lines(op, log_start, "Redis reachable again")) == 1
    assert {name: runner_warnings(api_client, ns, name) for name in want} == dict.fromkeys(want, 1)


def test_redis_down_before_tasks_start_they_finish_and_heartbeats_begin_when_it_returns(
    api_client: client.ApiClient,
    redis_server: RedisServer,
    redis_operator: tuple[str, Operator],
    gates: Gates,
) -> None:
    """Redis killed before 3 tasks are created (one ends exit 3 while it is down), started again
    later: each ends with its own result, the long one's lastHeartbeatTime (the container's start
    until then) comes from its heartbeats once Redis is back, one warning from the operator and one
    per runner."""
    ns, op = redis_operator
    log_start = len(op.log())
    redis_server.stop()
    want = {"quick-ok": 0, "quick-fail": 3, "long": 0}
    gates.create(
        api_client, ns, {n: ("long" if n == "long" else "quick", c) for n, c in want.items()}
    )
    gates.open("quick")
    wait_until(
        "quick tasks final while Redis is down",
        40,
        lambda: all(
            s.get("phase") in FINAL
            for s in statuses(api_client, ns, ["quick-ok", "quick-fail"]).values()
        ),
        lambda: summary(api_client, ns, list(want)),
    )
    wait_until(
        "the long task Running",
        30,
        lambda: get(api_client, ns, "long")["status"].get("phase") == "Running",
        lambda: summary(api_client, ns, list(want)),
    )
    redis_server.start()
    back = datetime.now().astimezone()
    resumed = wait_until(
        "a heartbeat in status",
        3 * TTL,
        lambda: (
            (t := beat_time(get(api_client, ns, "long")["status"])) is not None
            and t >= back.replace(microsecond=0)
        ),
        lambda: summary(api_client, ns, list(want)),
    )
    gates.open("long")
    assert_real_results(api_client, ns, want, timeout=60)
    print(f"\nheartbeats in status {resumed:.1f} s after Redis was back")
    assert len(operator_lines(op, log_start, OPERATOR_WARNING)) == 1, op.log()[log_start:]
    assert {name: runner_warnings(api_client, ns, name) for name in want} == dict.fromkeys(want, 1)
