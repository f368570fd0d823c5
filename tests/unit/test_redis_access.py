"""Per-attempt Redis credentials: deterministic, scoped to one attempt, never the operator's own."""

from __future__ import annotations

import pytest

from codetask_operator import redis_access

pytestmark = pytest.mark.unit

SECRET = b"k" * 32


def test_the_password_is_stable_per_attempt_and_differs_between_attempts() -> None:
    first = redis_access.password(SECRET, "ns", "uid-1", 1)
    assert first == redis_access.password(SECRET, "ns", "uid-1", 1)  # a restarted operator
    others = {
        redis_access.password(SECRET, "ns", "uid-1", 2),
        redis_access.password(SECRET, "ns", "uid-2", 1),
        redis_access.password(SECRET, "other", "uid-1", 1),
        redis_access.password(b"another secret", "ns", "uid-1", 1),
    }
    assert first not in others and len(others) == 4


def test_the_rules_allow_only_the_attempts_keys_and_the_runners_commands() -> None:
    prefix = redis_access.prefix("ns", "t", "uid-1", 3)
    rules = redis_access.acl_rules(prefix, "pw")
    assert prefix == "codetask:ns:t:uid-1:3"
    assert rules[:2] == ["reset", "on"]  # from nothing: setting them twice is the same
    assert [r for r in rules if r.startswith("~")] == ["~codetask:ns:t:uid-1:3:*"]
    assert "-@all" in rules and "resetchannels" in rules
    granted = {r[1:] for r in rules if r.startswith("+")}
    assert granted == set(redis_access.RUNNER_COMMANDS)
    assert not granted & {"get", "del", "keys", "scan", "acl", "flushall", "config", "eval"}


@pytest.mark.parametrize(
    ("operator_url", "expected"),
    [
        ("redis://:op-secret@10.0.0.7:6379/0", "redis://task:pw@10.0.0.7:6379/0"),
        ("redis://admin:op-secret@redis:6380/2", "redis://task:pw@redis:6380/2"),
        ("rediss://redis.example:6379", "rediss://task:pw@redis.example:6379"),
    ],
)
def test_the_task_url_carries_the_attempts_user_not_the_operators(
    operator_url: str, expected: str
) -> None:
    url = redis_access.task_url(operator_url, "task", "pw")
    assert url == expected and "op-secret" not in url


def test_the_secret_is_derived_from_the_operators_password_unless_set() -> None:
    derived = redis_access.secret(None, "redis://:op-secret@redis:6379/0")
    assert derived == redis_access.secret(None, "redis://:op-secret@other:1/0")
    assert derived != redis_access.secret(None, "redis://:another@redis:6379/0")
    assert b"op-secret" not in derived
    assert redis_access.secret("explicit", "redis://:op-secret@redis:6379/0") == b"explicit"
