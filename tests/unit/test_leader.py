"""Leader election's decisions: when a Lease may be taken, how long to wait, what is written."""

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from codetask_operator import leader

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 23, 13, 0, 5, 123456, tzinfo=UTC)
ME, OTHER = "op-7d9-a1b2c3", "op-4f2-d4e5f6"


def held(holder: str | None = OTHER, duration: int | None = 10, **more: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {**more}
    if holder is not None:
        spec["holderIdentity"] = holder
    if duration is not None:
        spec["leaseDurationSeconds"] = duration
    return spec


def test_a_new_resource_version_is_observed_now_and_a_repeated_one_keeps_its_time() -> None:
    first = leader.observe(None, "100", now=50.0)
    assert first == leader.Observation("100", 50.0)
    assert leader.observe(first, "100", now=58.0) is first
    assert leader.observe(first, "101", now=58.0) == leader.Observation("101", 58.0)


@pytest.mark.parametrize(
    ("spec", "seen_at", "now", "expected"),
    [
        (held(holder=None), 100.0, 100.0, True),
        (held(holder=""), 100.0, 100.0, True),
        (held(holder=ME), 100.0, 100.0, True),
        (held(), 100.0, 100.0, False),
        (held(), 100.0, 109.9, False),
        (held(), 100.0, 110.0, True),
        (held(duration=None), 100.0, 100.0, True),
        (held(duration=30), 100.0, 110.0, False),
    ],
    ids=[
        "no-holder",
        "empty-holder",
        "ours",
        "just-renewed",
        "not-yet-expired",
        "expired-on-our-clock",
        "no-duration",
        "holder-chose-longer-duration",
    ],
)
def test_may_take_only_a_free_own_or_expired_lease(
    spec: dict[str, Any], seen_at: float, now: float, expected: bool
) -> None:
    assert leader.may_take(spec, ME, seen_at, now) is expected


@pytest.mark.parametrize(
    ("seen_at", "now", "poll", "expected"),
    [
        (100.0, 100.0, 2.0, 2.0),
        (100.0, 108.5, 2.0, 1.5),
        (100.0, 110.0, 2.0, leader.MIN_WAIT_SECONDS),
        (100.0, 130.0, 2.0, leader.MIN_WAIT_SECONDS),
    ],
)
def test_a_standby_reads_again_at_expiry_or_after_one_poll_interval(
    seen_at: float, now: float, poll: float, expected: float
) -> None:
    assert leader.wait_seconds(held(), seen_at, now, poll) == pytest.approx(expected)


def test_stamp_is_a_utc_micro_time() -> None:
    assert leader.stamp(NOW) == "2026-11-23T13:00:05.123456Z"
    assert leader.stamp(NOW.astimezone(timezone(timedelta(hours=2)))) == leader.stamp(NOW)


def test_claiming_a_new_lease_writes_holder_duration_times_and_no_transition() -> None:
    assert leader.claimed({}, ME, 15, NOW) == {
        "holderIdentity": ME,
        "leaseDurationSeconds": 15,
        "acquireTime": "2026-11-23T13:00:05.123456Z",
        "renewTime": "2026-11-23T13:00:05.123456Z",
        "leaseTransitions": 0,
    }


def test_renewing_our_lease_keeps_acquire_time_and_transitions() -> None:
    ours = held(ME, 15, acquireTime="2026-11-23T12:00:00.000000Z", leaseTransitions=3)
    spec = leader.claimed(ours, ME, 15, NOW)
    assert spec["acquireTime"] == "2026-11-23T12:00:00.000000Z"
    assert spec["renewTime"] == "2026-11-23T13:00:05.123456Z"
    assert spec["leaseTransitions"] == 3


@pytest.mark.parametrize("previous", [OTHER, None], ids=["expired", "holderless"])
def test_taking_over_counts_a_transition_and_restarts_acquire_time(previous: str | None) -> None:
    spec = held(previous, 10, acquireTime="2026-11-23T12:00:00.000000Z", leaseTransitions=3)
    taken = leader.claimed(spec, ME, 15, NOW)
    assert taken["holderIdentity"] == ME
    assert taken["leaseDurationSeconds"] == 15
    assert taken["acquireTime"] == "2026-11-23T13:00:05.123456Z"
    assert taken["leaseTransitions"] == 4


def test_releasing_clears_the_holder_so_a_standby_may_take_it_at_once() -> None:
    spec = leader.released(held(ME, 15, leaseTransitions=2), NOW)
    assert "holderIdentity" not in spec
    assert (spec["leaseTransitions"], spec["renewTime"]) == (2, "2026-11-23T13:00:05.123456Z")
    assert leader.may_take(spec, OTHER, seen_at=100.0, now=100.0)
