"""kopf's namespace observer, run for real with its two listings faked: a namespace created between
them is served once `namespace_discovery.install` has run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import kopf
import pytest
from kopf._cogs.structs import references
from kopf._core.reactor import observation

from codetask_operator import namespace_discovery

pytestmark = pytest.mark.unit

NAMESPACES_RESOURCE = references.Resource("", "v1", "namespaces", namespaced=False)


def namespace(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": {"phase": "Active"}}


def observe(monkeypatch: pytest.MonkeyPatch, first: list[str], second: list[str]) -> set[Any]:
    """The namespaces kopf serves after its first listing saw `first` and its watch's own listing
    (events of type None) saw `second`."""

    async def fetch_objs(**_: Any) -> AsyncIterator[tuple[list[dict[str, Any]], str]]:
        yield [namespace(n) for n in first], "1"

    async def watcher(*, processor: Any, **_: Any) -> None:
        for name in second:
            await processor(raw_event={"type": None, "object": namespace(name)})
        raise asyncio.CancelledError  # the watch would go on; the test stops here

    monkeypatch.setattr(observation.fetching, "fetch_objs", fetch_objs)
    monkeypatch.setattr(observation.queueing, "watcher", watcher)

    async def run() -> set[Any]:
        insights = references.Insights()
        await insights.backbone.fill(resources=[NAMESPACES_RESOURCE])
        with pytest.raises(asyncio.CancelledError):
            await observation.namespace_observer(
                clusterwide=False,
                namespaces=["team-*"],
                insights=insights,
                settings=kopf.OperatorSettings(),
            )
        return insights.namespaces

    return asyncio.run(run())


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    kopf_own = observation.process_discovered_namespace_event
    monkeypatch.setattr(observation, "process_discovered_namespace_event", kopf_own)
    namespace_discovery.install()
    yield


@pytest.mark.parametrize(
    ("first", "second", "served"),
    [
        ([], ["team-a"], {"team-a"}),  # created between the two listings: kopf alone misses it
        (["team-a"], ["team-a", "team-b"], {"team-a", "team-b"}),
        (["team-a", "other"], ["team-a", "other"], {"team-a"}),  # not matching the glob
        ([], [], set()),
    ],
)
def test_a_namespace_in_either_listing_is_served(
    installed: None,
    monkeypatch: pytest.MonkeyPatch,
    first: list[str],
    second: list[str],
    served: set[str],
) -> None:
    assert observe(monkeypatch, first, second) == served


def test_kopf_alone_misses_a_namespace_created_between_its_listings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The gap `install` closes; fails once kopf serves such a namespace itself (then drop it)."""
    assert observe(monkeypatch, [], ["team-a"]) == set()


def test_listeners_hear_of_every_namespace_event(
    installed: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A namespace deleted and created anew while its tasks' DELETED events never came: its
    isolation check is forgotten (the listener is `Isolation.forget`)."""
    heard: list[str] = []
    monkeypatch.setattr(namespace_discovery, "_listeners", [])
    namespace_discovery.on_change(heard.append)
    namespace_discovery.on_change(heard.append)  # once only

    async def events() -> None:
        insights = references.Insights()
        gone = {**namespace("team-a"), "metadata": {"name": "team-a", "deletionTimestamp": "x"}}
        for event in (
            {"type": None, "object": namespace("team-a")},
            {"type": "MODIFIED", "object": gone},
            {"type": "DELETED", "object": gone},
            {"type": "ADDED", "object": namespace("team-a")},
            {"type": "ADDED", "object": namespace("other")},
        ):
            await namespace_discovery.process_namespace_event(
                raw_event=event, namespaces=["team-*"], insights=insights
            )
        assert insights.namespaces == {"team-a"}

    asyncio.run(events())
    assert heard == ["team-a", "team-a", "team-a", "team-a", "other"]
