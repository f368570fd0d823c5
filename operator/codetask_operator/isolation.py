"""Keeps the task NetworkPolicies (network_policy.py) in each namespace before a Job starts there.

A namespace is checked (read, created or corrected) before its first Job and again before a Job
once RECHECK seconds have passed. A deleted task, and any event of the namespace itself (served by
glob: namespace_discovery), make it be checked again, so a namespace deleted and created anew never
inherits a check of the old one. (Serving all namespaces, or namespaces by name, kopf's watches of
CodeTasks outlive a namespace: its unfinished tasks' DELETED events come. Served by name, no
namespace event comes: a namespace holding only finished tasks, deleted and made anew, keeps the
old check until RECHECK.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final

from codetask_operator import network_policy
from codetask_operator.kube import ApiError, Kube
from codetask_operator.settings import Settings

RECHECK: Final = 60.0
"""Seconds a namespace's check holds: a policy deleted or edited by hand is put back then."""


class Isolation:
    """The namespaces whose policies are known to be in place, and since when."""

    def __init__(
        self, kube: Kube, settings: Settings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.clock = clock
        self.checked: dict[str, float] = {}
        self.locks: dict[str, asyncio.Lock] = {}

    async def ensure(self, namespace: str) -> str | None:
        """None once the namespace's task policies are in place as they should be (or the
        operator keeps none); otherwise why not, as the API server said it."""
        if not self.settings.network_policy:
            return None
        async with self.locks.setdefault(namespace, asyncio.Lock()):
            checked = self.checked.get(namespace)
            if checked is not None and self.clock() - checked < RECHECK:
                return None
            try:
                await self._check(namespace)
            except ApiError as exc:
                return f"its NetworkPolicies in {namespace} cannot be written: {exc.message}"
            self.checked[namespace] = self.clock()
            return None

    def forget(self, namespace: str) -> None:
        """Check the namespace again before its next Job."""
        self.checked.pop(namespace, None)

    async def _check(self, namespace: str) -> None:
        wanted = network_policy.manifests(
            self.settings.network_policy_name, namespace, self.settings.task_egress
        )
        for policy in wanted:
            name = policy["metadata"]["name"]
            existing = await self.kube.get_policy(namespace, name)
            if existing is None:
                await self.kube.create_policy(policy)
            elif network_policy.drifted(existing, policy):
                await self.kube.replace_policy_spec(namespace, name, policy["spec"])
