"""The runner's claim of its attempt (codetask_runner/claim.py) against a real redis-server, as
the attempt's own ACL user; and two runners of one attempt: the second does not run the code."""

from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path

import pytest
import redis

from codetask_operator import redis_access
from codetask_runner.__main__ import CLAIM_WAIT
from codetask_runner.claim import ClaimError, claim
from tests.local_redis import RedisServer, free_port
from tests.unit.test_runner import Runner

pytestmark = pytest.mark.unit


def attempt_user(server: RedisServer, db: int = 0) -> tuple[str, str]:
    """An attempt's URL (its own user, as the operator grants it) and key prefix."""
    uid = uuid.uuid4().hex
    prefix = redis_access.prefix("ns", "t", uid, 1)
    user, password = redis_access.user(uid, 1), uuid.uuid4().hex
    server.client.execute_command("ACL", "SETUSER", user, *redis_access.acl_rules(prefix, password))
    url = redis_access.task_url(server.url, user, password)
    return url.rsplit("/", 1)[0] + f"/{db}", prefix


@pytest.mark.parametrize("db", [0, 3])
def test_the_first_claim_wins_and_a_second_pod_is_refused(server: RedisServer, db: int) -> None:
    url, prefix = attempt_user(server, db)
    assert claim(url, f"{prefix}:claim", "pod-a") is True
    assert claim(url, f"{prefix}:claim", "pod-b") is False
    assert claim(url, f"{prefix}:claim", "pod-a") is False  # restartPolicy Never: no second run
    admin = redis.Redis.from_url(server.url.rsplit("/", 1)[0] + f"/{db}", decode_responses=True)
    assert admin.get(f"{prefix}:claim") == "pod-a"
    assert 0 < admin.ttl(f"{prefix}:claim") <= 86400


@pytest.mark.parametrize(
    ("make_url", "says"),
    [
        (lambda url, prefix: f"redis://127.0.0.1:{free_port()}/0", "refused"),
        (lambda url, prefix: url.replace("@", "x@", 1), "WRONGPASS"),
        (lambda url, prefix: url.replace("redis://", "http://", 1), "scheme"),
    ],
    ids=["unreachable", "wrong password", "not redis"],
)
def test_redis_that_cannot_say_is_a_claim_error(
    server: RedisServer, make_url: object, says: str
) -> None:
    url, prefix = attempt_user(server)
    with pytest.raises(ClaimError, match=says):
        claim(make_url(url, prefix), f"{prefix}:claim", "pod-a")  # type: ignore[operator]


def test_a_key_outside_the_attempts_prefix_is_refused(server: RedisServer) -> None:
    url, _ = attempt_user(server)
    with pytest.raises(ClaimError, match="NOPERM"):
        claim(url, "codetask:other:claim", "pod-a")


def test_an_unresponsive_redis_is_a_claim_error_within_the_timeout() -> None:
    with socket.socket() as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(1)
        with pytest.raises(ClaimError, match="timed out"):
            claim(f"redis://127.0.0.1:{blackhole.getsockname()[1]}/0", "k", "pod-a")


def test_a_second_runner_of_the_same_attempt_does_not_run_the_code(
    tmp_path: Path, server: RedisServer
) -> None:
    url, prefix = attempt_user(server)
    marker = tmp_path / "runs"
    code = f"open({str(marker)!r}, 'a').write('ran\\n')\n"
    env = {"REDIS_URL": url, "CODETASK_REDIS_PREFIX": prefix}
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    first = Runner(tmp_path / "first", code, POD_NAME="pod-a", **env).run()
    second = Runner(tmp_path / "second", code, POD_NAME="pod-b", **env).run()

    assert first.result["reason"] == "Completed" and first.runner_lines == []
    assert second.result["reason"] == "StartError"
    assert "claimed by another pod" in second.result["message"]
    assert marker.read_text() == "ran\n"
    # The attempt's result in Redis stays the first runner's: the second reports only in its pod.
    stored = server.client.get(f"{prefix}:result")
    assert stored is not None and '"Completed"' in stored


def test_a_pod_started_after_its_attempts_user_was_revoked_does_not_run_the_code(
    tmp_path: Path, server: RedisServer
) -> None:
    """The operator deletes an attempt's user when it ends the attempt: a replacement pod started
    after that waits CLAIM_WAIT for the user, then does not run."""
    url, prefix = attempt_user(server)
    server.client.execute_command("ACL", "DELUSER", url.split("//")[1].split(":")[0])
    marker = tmp_path / "runs"
    code = f"open({str(marker)!r}, 'a').write('ran\\n')\n"
    result = Runner(tmp_path, code, REDIS_URL=url, CODETASK_REDIS_PREFIX=prefix).run()

    assert result.result["reason"] == "StartError"
    assert "refused" in result.result["message"] and "not run" in result.result["message"]
    assert CLAIM_WAIT <= result.seconds < CLAIM_WAIT + 3
    assert not marker.exists()


def test_a_user_granted_while_the_runner_waits_lets_the_code_run(
    tmp_path: Path, server: RedisServer
) -> None:
    """Redis was down at the attempt's start, or restarted empty: the operator grants the user
    again within its sweep, and the code runs once."""
    uid = uuid.uuid4().hex
    prefix = redis_access.prefix("ns", "t", uid, 1)
    user, password = redis_access.user(uid, 1), uuid.uuid4().hex
    url = redis_access.task_url(server.url, user, password)
    marker = tmp_path / "runs"
    code = f"open({str(marker)!r}, 'a').write('ran\\n')\n"
    runner = Runner(tmp_path, code, REDIS_URL=url, CODETASK_REDIS_PREFIX=prefix).start()
    time.sleep(1.5)
    assert not marker.exists()
    server.client.execute_command("ACL", "SETUSER", user, *redis_access.acl_rules(prefix, password))
    result = runner.wait()

    assert result.result["reason"] == "Completed", result.result
    assert marker.read_text() == "ran\n"
