"""Warm pods' runner (codetask_runner/warm.py): started ahead of its task, it waits on its inbox in
a real redis-server as the pod's own ACL user, then runs the one task pushed there as the attempt's
user; and the pure parts (the payload, the environment, the input files) table-driven."""

from __future__ import annotations

import json
import os
import signal
import stat
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis

from codetask_operator import redis_access
from codetask_runner.process import StartError
from codetask_runner.warm import RESERVED, Task, apply_environment, parse, write_inputs
from tests.local_redis import RedisServer, free_port, start_redis, stop_redis
from tests.unit.test_runner import Runner

pytestmark = pytest.mark.unit

POD_ENV = (
    "PATH",
    "PYTHONPATH",
    "LANG",
    "HOME",
    "TMPDIR",
    "POD_NAME",
    "NODE_NAME",
    "CODETASK_WORKDIR",
    "CODETASK_RESULT_PATH",
)
"""What a warm pod's own environment has before its task (test_runner.Runner's values)."""


class WarmUser:
    """A warm pod's Redis user: only its own `codetask:warm:<token>:*` keys, only BLPOP."""

    def __init__(self, server_url: str) -> None:
        token = uuid.uuid4().hex
        self.inbox = f"codetask:warm:{token}:inbox"
        self.name, self.password = f"codetask-warm-{token}", uuid.uuid4().hex
        self.url = redis_access.task_url(server_url, self.name, self.password)
        self.rules = [
            "reset",
            "on",
            f">{self.password}",
            f"~codetask:warm:{token}:*",
            "resetchannels",
            "-@all",
            "+blpop",
        ]

    def grant(self, client: redis.Redis) -> WarmUser:
        client.execute_command("ACL", "SETUSER", self.name, *self.rules)
        return self


class AttemptUser:
    """An attempt's Redis user as the operator grants it, plus RPUSH for the `:done` notice."""

    def __init__(self, server_url: str) -> None:
        uid = uuid.uuid4().hex
        self.prefix = redis_access.prefix("ns", "t", uid, 1)
        self.name, self.password = redis_access.user(uid, 1), uuid.uuid4().hex
        self.url = redis_access.task_url(server_url, self.name, self.password)

    def grant(self, client: redis.Redis) -> AttemptUser:
        rules = [*redis_access.acl_rules(self.prefix, self.password), "+rpush"]
        client.execute_command("ACL", "SETUSER", self.name, *rules)
        return self


def payload(attempt: AttemptUser | None, code: str, stdin: str | None = None, **env: str) -> str:
    """The task as the operator pushes it: what a cold pod's env would carry, code and stdin."""
    task_env = {
        "CODETASK_NAMESPACE": "ns",
        "CODETASK_NAME": "t",
        "CODETASK_ATTEMPT": "1",
        "CODETASK_LANGUAGE": "python",
        "CODETASK_ARGS": "[]",
        "CODETASK_TIMEOUT_SECONDS": "30",
        "CODETASK_OUTPUT_LIMIT_BYTES": "16384",
        "CODETASK_GRACE_SECONDS": "5",
    }
    if attempt is not None:
        task_env |= {"REDIS_URL": attempt.url, "CODETASK_REDIS_PREFIX": attempt.prefix}
    return json.dumps({"env": task_env | env, "code": code, "stdin": stdin})


def warm_runner(tmp_path: Path, warm: WarmUser, idle: str = "60") -> Runner:
    """A runner with a warm pod's environment: no task in it, the warm user's URL and inbox."""
    runner = Runner(tmp_path, "")
    runner.env = {name: runner.env[name] for name in POD_ENV} | {
        "REDIS_URL": warm.url,
        "CODETASK_WARM_INBOX": warm.inbox,
        "CODETASK_WARM_IDLE_SECONDS": idle,
    }
    return runner


def wait_until_waiting(client: redis.Redis, timeout: float = 10.0) -> None:
    """Until a client (the runner) is blocked in BLPOP."""
    deadline = time.monotonic() + timeout
    while not client.info("clients")["blocked_clients"]:
        assert time.monotonic() < deadline, "the runner never waited on its inbox"
        time.sleep(0.01)


def test_a_pushed_task_runs_once_and_its_result_lands_in_the_file_and_in_redis(
    tmp_path: Path, server: RedisServer
) -> None:
    warm = WarmUser(server.url).grant(server.client)
    attempt = AttemptUser(server.url).grant(server.client)
    marker = tmp_path / "runs"
    code = (
        "import os, sys, time\n"
        "print(repr(time.time()), flush=True)\n"
        f"open({str(marker)!r}, 'a').write('ran\\n')\n"
        "print(sys.stdin.read(), os.environ['GREETING'])\n"
    )
    runner = warm_runner(tmp_path, warm).start()
    wait_until_waiting(server.client)
    pushed_at = time.time()
    server.client.rpush(warm.inbox, payload(attempt, code, stdin="hello", GREETING="hi"))
    result = runner.wait()

    started_at = float(result.stdout.splitlines()[0])
    print(f"\nRPUSH to the code's first line: {(started_at - pushed_at) * 1000:.1f} ms")
    assert result.exit_code == 0, result.stderr
    assert result.result["reason"] == "Completed"
    assert result.stdout.splitlines()[1:] == ["hello hi"]
    assert result.runner_lines == []
    assert marker.read_text() == "ran\n"
    stored = json.loads(server.client.get(f"{attempt.prefix}:result") or "{}")
    assert stored["reason"] == "Completed" and stored["stdout"] == result.result["stdout"]
    assert server.client.get(f"{attempt.prefix}:claim") == "task-pod"
    assert server.client.lrange(f"{attempt.prefix}:done", 0, -1) == ["1"]
    assert 0 < server.client.ttl(f"{attempt.prefix}:done") <= 86400


def test_the_done_notice_wakes_an_operator_that_then_finds_the_result(
    tmp_path: Path, server: RedisServer
) -> None:
    warm = WarmUser(server.url).grant(server.client)
    attempt = AttemptUser(server.url).grant(server.client)
    operator = redis.Redis.from_url(server.url, decode_responses=True)
    seen: dict[str, object] = {}

    def notice() -> None:
        seen["done"] = operator.blpop([f"{attempt.prefix}:done"], 30)
        seen["result"] = operator.get(f"{attempt.prefix}:result")

    waiter = threading.Thread(target=notice)
    waiter.start()
    runner = warm_runner(tmp_path, warm).start()
    server.client.rpush(warm.inbox, payload(attempt, "print('out')\n"))
    result = runner.wait()
    waiter.join(30)
    operator.close()

    assert result.result["reason"] == "Completed"
    assert seen["done"] == (f"{attempt.prefix}:done", "1")
    assert json.loads(str(seen["result"]))["stdout"] == "out\n"


@pytest.mark.parametrize("with_attempt_redis", [True, False], ids=["attempt-redis", "no-redis"])
@pytest.mark.parametrize(
    ("language", "code"),
    [
        (
            "python",
            "import os\n"
            "print(sorted(os.environ.items()))\n"
            "for path in ('/proc/self/environ', f'/proc/{os.getppid()}/environ'):\n"
            "    print(path, open(path, 'rb').read())\n",
        ),
        ("sh", "env; cat /proc/self/environ; echo; cat /proc/$PPID/environ; echo\n"),
    ],
    ids=["python", "sh"],
)
def test_the_warm_credential_never_reaches_the_code(
    tmp_path: Path, server: RedisServer, language: str, code: str, with_attempt_redis: bool
) -> None:
    """The code reads its environment and /proc/*/environ of itself and of the runner (a forked
    Python child's /proc/self/environ is the runner's start-up block)."""
    warm = WarmUser(server.url).grant(server.client)
    attempt = AttemptUser(server.url).grant(server.client) if with_attempt_redis else None
    runner = warm_runner(tmp_path, warm).start()
    server.client.rpush(
        warm.inbox, payload(attempt, code, CODETASK_LANGUAGE=language, GREETING="hi")
    )
    result = runner.wait()

    assert result.result["reason"] == "Completed", result.result
    seen = result.stdout  # forwarded whole; the result's tail is cut to 4096 bytes
    assert "GREETING" in seen and seen.count("POD_NAME=task-pod") >= 2  # it did read them
    assert warm.password not in seen and warm.inbox not in seen
    assert "CODETASK_WARM" not in seen
    assert attempt is None or attempt.password not in seen
    assert "REDIS_URL" not in seen


def test_no_task_within_the_idle_time_exits_0_without_a_result(
    tmp_path: Path, server: RedisServer
) -> None:
    warm = WarmUser(server.url).grant(server.client)
    result = warm_runner(tmp_path, warm, idle="1").run()

    assert result.exit_code == 0
    assert not (tmp_path / "result.json").exists()
    assert len(result.runner_lines) == 1 and "1s passed" in result.runner_lines[0]


def test_sigterm_while_waiting_exits_0_without_a_result(
    tmp_path: Path, server: RedisServer
) -> None:
    warm = WarmUser(server.url).grant(server.client)
    runner = warm_runner(tmp_path, warm, idle="600").start()
    wait_until_waiting(server.client)
    assert runner.process is not None
    signalled = time.monotonic()
    runner.process.send_signal(signal.SIGTERM)
    result = runner.wait(timeout=10)

    print(f"\nSIGTERM to exit: {(time.monotonic() - signalled) * 1000:.0f} ms")
    assert result.exit_code == 0
    assert not (tmp_path / "result.json").exists()
    assert result.runner_lines == [
        "codetask-runner: warm pod: signal 15 before a task came; exiting without a result"
    ]


@pytest.mark.parametrize(
    ("pushed", "says"),
    [
        ("print(1)", "not valid JSON"),
        ('["print(1)"]', "got list"),
        ('{"env": {"CODETASK_LANGUAGE": "python"}}', "code must be a string"),
        ('{"env": {"CODETASK_ATTEMPT": 1}, "code": "print(1)"}', "env must be an object"),
    ],
    ids=["not-json", "not-an-object", "no-code", "env-not-strings"],
)
def test_a_malformed_payload_is_a_start_error_not_a_crash(
    tmp_path: Path, server: RedisServer, pushed: str, says: str
) -> None:
    warm = WarmUser(server.url).grant(server.client)
    runner = warm_runner(tmp_path, warm).start()
    server.client.rpush(warm.inbox, pushed)
    result = runner.wait()

    assert result.exit_code == 127
    assert result.result["reason"] == "StartError"
    assert says in result.result["message"]
    assert "Traceback" not in result.stderr


def test_a_task_pushed_before_the_runner_waits_is_taken(
    tmp_path: Path, server: RedisServer
) -> None:
    warm = WarmUser(server.url).grant(server.client)
    server.client.rpush(warm.inbox, payload(None, "print('early')\n"))
    result = warm_runner(tmp_path, warm).run()

    assert result.result["reason"] == "Completed"
    assert result.result["stdout"] == "early\n"


@pytest.mark.parametrize("trouble", ["redis-down", "user-not-granted"])
def test_a_runner_that_cannot_reach_its_inbox_at_start_keeps_trying_and_takes_its_task(
    tmp_path: Path, server: RedisServer, trouble: str
) -> None:
    port = free_port() if trouble == "redis-down" else None
    url = server.url if port is None else f"redis://127.0.0.1:{port}/0"
    warm = WarmUser(url)
    runner = warm_runner(tmp_path, warm).start()
    time.sleep(1.5)  # a few refused connections or AUTHs
    later = start_redis(port=port) if port is not None else None
    try:
        admin = server.client if later is None else later.client
        warm.grant(admin)
        attempt = AttemptUser(url if later is None else later.url).grant(admin)
        admin.rpush(warm.inbox, payload(attempt, "print('delivered')\n"))
        result = runner.wait()
    finally:
        if later is not None:
            stop_redis(later)

    assert result.result["reason"] == "Completed", result.result
    assert result.result["stdout"] == "delivered\n"
    assert len(result.runner_lines) == 1 and "retrying" in result.runner_lines[0]


# --- the pure parts -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pushed", "env", "code", "stdin"),
    [
        ('{"env": {"A": "1"}, "code": "print(1)", "stdin": null}', {"A": "1"}, b"print(1)", None),
        ('{"env": {}, "code": "", "stdin": "in"}', {}, b"", b"in"),
        ('{"env": {}, "code": "x"}', {}, b"x", None),
        ('{"env": {"A": ""}, "code": "\\u00e9", "later": 1}', {"A": ""}, "é".encode(), None),
    ],
    ids=["stdin-null", "stdin", "stdin-absent", "unknown-keys-ignored"],
)
def test_a_payload_of_the_right_shape_is_a_task(
    pushed: str, env: dict[str, str], code: bytes, stdin: bytes | None
) -> None:
    task = parse(pushed)

    assert (task.env, task.code, task.stdin) == (env, code, stdin)


@pytest.mark.parametrize(
    ("pushed", "says"),
    [
        ("", "not valid JSON"),
        ('{"env": {}, "code": "x"', "not valid JSON"),
        ("[" * 100_000, "not valid JSON"),
        ('"code"', "got str"),
        ("null", "got NoneType"),
        ('{"code": "x"}', "env must be an object of strings"),
        ('{"env": ["A=1"], "code": "x"}', "env must be an object of strings"),
        ('{"env": {"A": null}, "code": "x"}', "env must be an object of strings"),
        ('{"env": {"A": "\\ud800"}, "code": "x"}', "env must be an object of strings"),
        ('{"env": {"A=B": "1"}, "code": "x"}', "not a variable (empty name, '=' or NUL): A=B"),
        ('{"env": {"": "1"}, "code": "x"}', "not a variable"),
        ('{"env": {"A": "a\\u0000b"}, "code": "x"}', "not a variable (empty name, '=' or NUL): A"),
        ('{"env": {}}', "code must be a string"),
        ('{"env": {}, "code": ["x"]}', "code must be a string"),
        ('{"env": {}, "code": "\\udc00"}', "code must be a string"),
        ('{"env": {}, "code": "x", "stdin": 0}', "stdin must be a string or null"),
    ],
)
def test_a_malformed_payload_says_what_is_wrong(pushed: str, says: str) -> None:
    with pytest.raises(StartError, match="warm task payload") as raised:
        parse(pushed)

    assert says in str(raised.value)


@pytest.mark.parametrize(
    ("pod", "task", "expected"),
    [
        ({"PATH": "/bin"}, {"A": "1", "PATH": "/x"}, {"PATH": "/x", "A": "1"}),
        ({}, {"REDIS_URL": "redis://attempt"}, {"REDIS_URL": "redis://attempt"}),
        *(({name: "pod"}, {name: "task"}, {name: "pod"}) for name in sorted(RESERVED)),
        *(({}, {name: "task"}, {}) for name in sorted(RESERVED)),
    ],
)
def test_the_task_sets_its_environment_but_not_the_pods_own_names(
    pod: dict[str, str], task: dict[str, str], expected: dict[str, str]
) -> None:
    apply_environment(pod, task)

    assert pod == expected


@pytest.mark.parametrize("stdin", [b"input\n", None], ids=["stdin", "no-stdin"])
def test_the_code_and_stdin_become_read_only_files_in_the_workdir(
    tmp_path: Path, stdin: bytes | None
) -> None:
    variables = write_inputs(Task({}, b"print(1)\n", stdin), str(tmp_path))

    directory = tmp_path / ".codetask-input"
    expected = {"CODETASK_CODE_FILE": str(directory / "code")}
    if stdin is not None:
        expected["CODETASK_STDIN_FILE"] = str(directory / "stdin")
    assert variables == expected
    assert Path(variables["CODETASK_CODE_FILE"]).read_bytes() == b"print(1)\n"
    if stdin is not None:
        assert Path(variables["CODETASK_STDIN_FILE"]).read_bytes() == stdin
    assert stat.S_IMODE(directory.stat().st_mode) == 0o555
    assert {stat.S_IMODE(os.stat(path).st_mode) for path in variables.values()} == {0o444}


def test_input_files_that_cannot_be_written_are_a_start_error(tmp_path: Path) -> None:
    (tmp_path / ".codetask-input").mkdir()  # one task per pod: never there before

    with pytest.raises(StartError, match="cannot write the task's input"):
        write_inputs(Task({}, b"", None), str(tmp_path))
