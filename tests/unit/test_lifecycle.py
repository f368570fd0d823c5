"""Retry decisions, TTL and admission by priority under running-task limits."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from codetask_operator import lifecycle
from codetask_operator.api import BACKOFF_CAP_SECONDS, CodeTaskSpec, Reason

pytestmark = pytest.mark.unit


def spec(**fields: object) -> CodeTaskSpec:
    return CodeTaskSpec.model_validate({"language": "python", "code": "pass", **fields})


@pytest.mark.parametrize(
    ("fields", "attempts", "reason", "retries"),
    [
        ({"retries": 2, "retryPolicy": ["NonZeroExit"]}, 1, Reason.NON_ZERO_EXIT, True),
        ({"retries": 2, "retryPolicy": ["NonZeroExit"]}, 2, Reason.NON_ZERO_EXIT, True),
        ({"retries": 2, "retryPolicy": ["NonZeroExit"]}, 3, Reason.NON_ZERO_EXIT, False),
        ({"retries": 2, "retryPolicy": ["NonZeroExit"]}, 1, Reason.OOM_KILLED, False),
        # Without retryPolicy, a failed run is retried (as Jobs, Argo, Tekton and BullMQ do)...
        ({"retries": 2}, 1, Reason.LOST, True),
        ({"retries": 2}, 1, Reason.NON_ZERO_EXIT, True),
        ({"retries": 2}, 1, Reason.OOM_KILLED, True),
        ({"retries": 2}, 1, Reason.TERMINATED, True),
        ({"retries": 2}, 1, Reason.AGENT_UNAVAILABLE, True),
        # ... but not a timeout, an image or config error, or what the agent itself reported.
        ({"retries": 2}, 1, Reason.DEADLINE_EXCEEDED, False),
        ({"retries": 2}, 1, Reason.IMAGE_ERROR, False),
        ({"retries": 2}, 1, Reason.AGENT_ERROR, False),
        ({"retries": 0}, 1, Reason.LOST, False),
        ({"retries": 0}, 1, Reason.NON_ZERO_EXIT, False),
        # retryPolicy narrows it.
        ({"retries": 2, "retryPolicy": ["Lost"]}, 1, Reason.NON_ZERO_EXIT, False),
        ({"retries": 5, "retryPolicy": ["Lost"]}, 1, Reason.INVALID_SPEC, False),
    ],
)
def test_retry_only_for_listed_reasons_while_retries_remain(
    fields: dict[str, object], attempts: int, reason: Reason, retries: bool
) -> None:
    delay = lifecycle.retry_delay(spec(**fields), attempts, reason, random.Random(1))
    assert (delay is not None) == retries


@given(st.integers(min_value=1, max_value=600), st.integers(min_value=0, max_value=2**32))
def test_backoff_grows_with_each_attempt_until_the_cap(base: int, seed: int) -> None:
    s = spec(retries=10, retryPolicy=["NonZeroExit"], backoffSeconds=base)
    rng = random.Random(seed)
    delays = [lifecycle.retry_delay(s, n, Reason.NON_ZERO_EXIT, rng) for n in range(1, 11)]
    assert all(d is not None and 0 < d <= BACKOFF_CAP_SECONDS for d in delays)
    for earlier, later in itertools.pairwise(delays):
        assert later is not None and earlier is not None
        assert later > earlier or later == BACKOFF_CAP_SECONDS


def test_expires_at() -> None:
    done = datetime(2026, 1, 1, tzinfo=UTC)
    assert lifecycle.expires_at(done, 60) == datetime(2026, 1, 1, 0, 1, tzinfo=UTC)
    assert lifecycle.expires_at(done, None) is None
    assert lifecycle.expires_at(None, 60) is None


def c(uid: str, ns: str = "a", priority: int = 0, created: str = "1", running: bool = False):  # type: ignore[no-untyped-def]
    return lifecycle.Candidate(uid, ns, priority, created, running)


@pytest.mark.parametrize(
    ("candidates", "max_running", "per_ns", "admit", "positions"),
    [
        ([c("x"), c("y")], 0, 0, ["x", "y"], {}),
        ([c("r1", running=True), c("r2", running=True), c("x")], 2, 0, [], {"x": 1}),
        ([c("r1", running=True), c("x", created="2"), c("y", created="1")], 2, 0, ["y"], {"x": 1}),
        (
            [c("low", priority=1), c("high", priority=5, created="9"), c("mid", priority=3)],
            1,
            0,
            ["high"],
            {"mid": 1, "low": 2},
        ),
        ([c("r", "a", running=True), c("x", "a"), c("y", "b", created="2")], 0, 1, ["y"], {"x": 1}),
        ([c("r", "a", running=True), c("x", "a"), c("y", "b", created="2")], 2, 1, ["y"], {"x": 1}),
        ([c("b", created="1"), c("a", created="1")], 1, 0, ["a"], {"b": 1}),
    ],
)
def test_admission_fills_slots_by_priority_then_age(
    candidates: list[lifecycle.Candidate],
    max_running: int,
    per_ns: int,
    admit: list[str],
    positions: dict[str, int],
) -> None:
    decision = lifecycle.admit(candidates, max_running, per_ns)
    assert (decision.admit, decision.positions) == (admit, positions)


@given(
    st.lists(st.tuples(st.sampled_from("abc"), st.integers(-3, 3), st.booleans()), max_size=30),
    st.integers(0, 5),
    st.integers(0, 3),
)
def test_admission_never_exceeds_the_limits(
    tasks: list[tuple[str, int, bool]], max_running: int, per_ns: int
) -> None:
    candidates = [
        c(f"u{i}", ns, prio, str(i), running) for i, (ns, prio, running) in enumerate(tasks)
    ]
    decision = lifecycle.admit(candidates, max_running, per_ns)
    started = [x for x in candidates if x.running or x.uid in decision.admit]
    already = sum(x.running for x in candidates)
    if max_running:
        assert len(started) <= max(max_running, already)
    if per_ns:
        for ns in "abc":
            running_here = sum(x.running for x in candidates if x.namespace == ns)
            assert sum(x.namespace == ns for x in started) <= max(per_ns, running_here)
    assert set(decision.admit).isdisjoint(decision.positions)
    assert sorted(decision.positions.values()) == list(range(1, len(decision.positions) + 1))


def at(second: int) -> datetime:
    return datetime(2026, 12, 5, 10, 0, tzinfo=UTC) + timedelta(seconds=second)


@pytest.mark.parametrize(
    ("finished", "keep", "deleted"),
    [
        ([], 3, []),
        ([("a", at(0))], 0, []),  # 0: no limit
        ([("a", at(1)), ("b", at(0))], 2, []),
        ([("a", at(60)), ("b", at(0)), ("c", at(120)), ("d", at(-1))], 2, ["d", "b"]),
        ([("a", at(0)), ("b", None)], 1, ["b"]),  # no time: oldest
        ([("b", at(0)), ("a", at(0))], 1, ["a"]),  # tie: uid
        ([("a", at(1) + timedelta(milliseconds=1)), ("b", at(1))], 1, ["b"]),
    ],
)
def test_beyond_keep_deletes_the_oldest_finished_first(
    finished: list[tuple[str, datetime | None]], keep: int, deleted: list[str]
) -> None:
    assert lifecycle.beyond_keep(finished, keep) == deleted
