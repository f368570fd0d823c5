"""Leader election with a coordination.k8s.io/v1 Lease: one replica acts, the others wait.

A replica takes the Lease when it is free, already its own, or expired. Expiry is judged on this
replica's own clock, counted from when it first saw the holder's latest renewal (a new
resourceVersion), so clocks of other machines are never compared. The holder renews every renew
period with a PUT carrying the resourceVersion it read, so of two writers one gets 409 Conflict.
A holder that finds the Lease taken, or has not renewed it for `lease duration - renew period`,
exits the process at once: it stops acting before any other replica may see the Lease expire.
A holder that stops normally clears the holder, and a standby takes over at its next read.

The Helm chart creates the Lease (so uninstalling removes it); run elsewhere, the first replica
creates it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, NoReturn

from codetask_operator.kube import ApiClient, ApiError
from codetask_operator.settings import Settings

log = logging.getLogger("codetask.leader")
RETRY_SECONDS: Final = 1.0
"""Delay after a failed API call before the next attempt."""
POLL_SECONDS: Final = 2.0
"""A standby reads the Lease at least this often (or every renew period, if shorter): the sooner it
sees the holder's last renewal, the sooner it may count that renewal as expired."""
MIN_WAIT_SECONDS: Final = 0.1


@dataclass(frozen=True)
class Observation:
    """A version of the Lease and when (this process's monotonic clock) it was first seen."""

    resource_version: str
    at: float


def observe(previous: Observation | None, resource_version: str, now: float) -> Observation:
    """The observation after reading `resource_version` at `now`: unchanged if it is the same."""
    if previous is not None and previous.resource_version == resource_version:
        return previous
    return Observation(resource_version, now)


def may_take(spec: Mapping[str, Any], identity: str, seen_at: float, now: float) -> bool:
    """Whether `identity` may write itself as holder: the Lease is free, ours, or expired."""
    holder = spec.get("holderIdentity")
    if not holder or holder == identity:
        return True
    return now >= seen_at + (spec.get("leaseDurationSeconds") or 0)


def wait_seconds(spec: Mapping[str, Any], seen_at: float, now: float, poll: float) -> float:
    """How long a standby waits before reading the Lease again: until expiry, at most `poll`."""
    expires_in = seen_at + (spec.get("leaseDurationSeconds") or 0) - now
    return max(MIN_WAIT_SECONDS, min(poll, expires_in))


def stamp(now: datetime) -> str:
    """`now` as a Kubernetes MicroTime."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def claimed(spec: Mapping[str, Any], identity: str, duration: int, now: datetime) -> dict[str, Any]:
    """The Lease spec with `identity` as holder, renewed at `now`; `spec` is {} for a new Lease."""
    ours = spec.get("holderIdentity") == identity
    transitions = spec.get("leaseTransitions") or 0
    return {
        **spec,
        "holderIdentity": identity,
        "leaseDurationSeconds": duration,
        "acquireTime": spec.get("acquireTime") if ours else stamp(now),
        "renewTime": stamp(now),
        "leaseTransitions": transitions if ours or not spec else transitions + 1,
    }


def released(spec: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """The Lease spec with no holder, so a standby takes it without waiting for expiry."""
    return {
        **{k: v for k, v in spec.items() if k != "holderIdentity"},
        "renewTime": stamp(now),
    }


class LeaseHeld(Exception):
    """Another replica holds the Lease and it has not expired."""

    def __init__(self, holder: str, wait: float) -> None:
        super().__init__(holder)
        self.holder, self.wait = holder, wait


_TRANSIENT: Final = (ApiError, TimeoutError)


def _exit(message: str) -> NoReturn:
    log.critical("%s: exiting so that no two replicas act", message)  # emit() flushes
    os._exit(1)


class Elector:
    """Acquires the Lease, then keeps it until the process ends or loses it."""

    def __init__(self, api_client: ApiClient, config: Settings) -> None:
        assert config.lease_namespace, "settings require it with leader election"
        self.identity = f"{config.pod_name}-{secrets.token_hex(3)}"
        self.name, self.namespace = config.lease_name, config.lease_namespace
        self.duration = config.lease_duration_seconds
        self.period = config.renew_period_seconds
        self.poll = min(self.period, POLL_SECONDS)
        self.held = False
        self.decided = asyncio.Event()
        """Set once the Lease is ours, or once `stand_down` gave up waiting for it."""
        self._standing_down = False
        self._api = api_client
        self._path = f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases"
        self._seen: Observation | None = None
        self._last: Mapping[str, Any] = {}
        """The Lease spec last read: a Lease deleted under us still binds until it would expire."""
        self._deadline = float("inf")

    @property
    def leading(self) -> bool:
        """Whether this replica holds the Lease and is not stopping: it may act."""
        return self.held and not self._standing_down

    def stand_down(self) -> None:
        """Stop waiting for the Lease (the process is stopping); no effect once it is ours."""
        if not self.held:
            self._standing_down = True
            self.decided.set()

    async def hold(self) -> None:
        """Wait until the Lease is ours (or `stand_down`), then renew it forever, or exit."""
        try:
            await self._hold()
        except Exception:
            log.exception("leader election failed")
            _exit(f"lease {self.namespace}/{self.name} is in an unknown state")

    async def _hold(self) -> None:
        log.info("waiting for lease %s/%s as %s", self.namespace, self.name, self.identity)
        while not self.held:
            if self._standing_down:
                return
            try:
                await self._take()
                self.held = True
            except LeaseHeld as held:
                await asyncio.sleep(held.wait)
            except _TRANSIENT as exc:
                self._warn(exc)
                await asyncio.sleep(RETRY_SECONDS)
        log.info("acquired lease %s/%s as %s", self.namespace, self.name, self.identity)
        self.decided.set()
        threading.Thread(target=self._watchdog, name="lease-watchdog", daemon=True).start()
        while True:
            await asyncio.sleep(self.period)
            while True:
                try:
                    await self._take()
                    break
                except LeaseHeld as held:
                    _exit(f"lease {self.namespace}/{self.name} was taken by {held.holder}")
                except _TRANSIENT as exc:
                    self._warn(exc)
                    await asyncio.sleep(RETRY_SECONDS)

    async def release(self) -> None:
        """Give the Lease up if it is ours, so a standby takes over at once."""
        self._deadline = float("inf")
        if not self.held:
            return
        try:
            lease = await self._read()
            if lease and lease["spec"].get("holderIdentity") == self.identity:
                lease["spec"] = released(lease["spec"], datetime.now(UTC))
                await self._replace(lease)
                log.info("released lease %s/%s", self.namespace, self.name)
        except _TRANSIENT as exc:
            self._warn(exc)

    async def _take(self) -> None:
        """Create, take over or renew the Lease once; LeaseHeld if another replica has it."""
        started = time.monotonic()
        lease = await self._read()
        now = datetime.now(UTC)
        if lease is not None:
            self._seen = observe(self._seen, lease["metadata"]["resourceVersion"], started)
            self._last = lease["spec"]
        if self._seen and not may_take(self._last, self.identity, self._seen.at, started):
            wait = wait_seconds(self._last, self._seen.at, started, self.poll)
            raise LeaseHeld(self._last["holderIdentity"], wait)
        if lease is None:
            spec = claimed({}, self.identity, self.duration, now)
            await self._create({"metadata": {"name": self.name}, "spec": spec})
        else:
            lease["spec"] = claimed(lease["spec"], self.identity, self.duration, now)
            await self._replace(lease)
        # The write landed after `started`, so others see the Lease expire no earlier than this.
        self._deadline = started + self.duration - self.period

    def _warn(self, exc: Exception) -> None:
        if not (isinstance(exc, ApiError) and exc.status == 409):  # another writer won
            log.warning("lease %s/%s: %r", self.namespace, self.name, exc)

    def _watchdog(self) -> None:
        """Exit once the Lease may expire unrenewed, even if the event loop is stuck."""
        while True:
            time.sleep(MIN_WAIT_SECONDS)
            if time.monotonic() >= self._deadline:
                _exit(f"could not renew lease {self.namespace}/{self.name} in time")

    async def _read(self) -> dict[str, Any] | None:
        try:
            return await self._call("GET", f"{self._path}/{self.name}")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def _create(self, body: dict[str, Any]) -> None:
        await self._call("POST", self._path, body)

    async def _replace(self, lease: dict[str, Any]) -> None:
        await self._call("PUT", f"{self._path}/{self.name}", lease)

    async def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        # No retries inside a call: the loops above retry within the Lease's own deadlines.
        return await self._api.request(method, path, body, timeout=self.period, retry=False)
