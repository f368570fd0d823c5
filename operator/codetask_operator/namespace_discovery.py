"""kopf's discovery of served namespaces, without its start-up gap (kopf 1.45.2).

With globs among `namespaces` (names only: no discovery, see __main__), kopf lists the cluster's
namespaces once, then starts a watch on them, which lists them again and marks that second
listing's events as type None; its handler for namespace events skips type None as "already seen
in the first listing". A served
namespace created between the two listings is in neither view: kopf never watches its CodeTasks,
Jobs or pods until the namespace itself changes (its deletion, in a chaos run: a task waited 60 s
with no status). `install` makes the listing's events count as additions too; adding a namespace
kopf already serves changes nothing.

Listeners (`on_change`) hear of every namespace event kopf's observer gets: a namespace deleted or
created anew, also when its tasks' DELETED events never come (kopf stops a namespace's watches as
soon as the namespace terminates).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kopf._core.reactor import observation

_listeners: list[Callable[[str], None]] = []


def on_change(listener: Callable[[str], None]) -> None:
    """Call `listener(name)` on every event of a namespace (listed, added, changed, deleted)."""
    if listener not in _listeners:
        _listeners.append(listener)


async def process_namespace_event(
    *, raw_event: Any, namespaces: Any, insights: Any, **_: Any
) -> None:
    """kopf's `process_discovered_namespace_event`, listed namespaces included."""
    for listener in _listeners:
        listener(raw_event["object"]["metadata"]["name"])
    async with insights.revised:
        observation.revise_namespaces(
            raw_events=[raw_event], insights=insights, namespaces=namespaces
        )
        insights.revised.notify_all()


def install() -> None:
    """Replace kopf's handler; `namespace_observer` looks it up at each start of its watch."""
    observation.process_discovered_namespace_event = process_namespace_event
