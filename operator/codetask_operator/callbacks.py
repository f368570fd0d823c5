"""Completion callbacks: a finished task's CloudEvent, POSTed to its spec.callback.url.

The event is CloudEvents 1.0 in structured JSON mode (`application/cloudevents+json`), type
`dev.codetask.task.finished`, id the task's uid (a receiver that got it already can tell), data the
task's result as in the results stream. The body is signed: `X-Codetask-Signature: sha256=<hex
HMAC-SHA256 of the body>` with the operator's callback key. Only hosts the operator allows are
called, checked at admission and again before each POST. Delivery retries with backoff (1 s
doubling to 60 s) until a 2xx or `callbackRetrySeconds` after the end; it runs in the background and
never holds a reconcile. A 2xx is recorded in status.callback; an operator that dies between the
two POSTs again once (at least once: receivers dedupe by id).
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import hmac
import ipaddress
import json
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp

from codetask_operator import api, status
from codetask_operator.results_stream import result

log = logging.getLogger(__name__)

EVENT_TYPE: Final = "dev.codetask.task.finished"
SIGNATURE_HEADER: Final = "X-Codetask-Signature"
MAX_DELAY: Final = 60.0
CONCURRENCY: Final = 16
"""POSTs in flight at once."""


def refusal(url: str, allowed: Sequence[str]) -> str | None:
    """Why `url` may not be called with the hosts `allowed` (settings.callback_allowed_hosts), or
    None. Names are matched as written (`*.example.com`: subdomains); IP addresses by CIDR."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return f"spec.callback.url: bad port in {url!r}"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for rule in allowed:
        rule = rule.strip().lower()
        if address is not None:
            try:
                if address in ipaddress.ip_network(rule, strict=False):
                    return None
            except ValueError:
                pass
            continue
        name, _, rule_port = rule.partition(":")
        if fnmatch.fnmatchcase(host, name) and (not rule_port or rule_port == str(port)):
            return None
    return (
        f"spec.callback.url: host {host}:{port} is not one the operator may call "
        "(chart value callbacks.allowedHosts)"
    )


def event(namespace: str, name: str, uid: str, final: Mapping[str, Any]) -> dict[str, Any]:
    """The task's CloudEvent, its data the task's result (results_stream.result)."""
    return {
        "specversion": "1.0",
        "type": EVENT_TYPE,
        "source": f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{namespace}/{api.PLURAL}/{name}",
        "subject": f"{namespace}/{name}",
        "id": uid,
        "time": final.get("completionTime") or status.iso(datetime.now(UTC)),
        "datacontenttype": "application/json",
        "data": result(namespace, name, uid, final),
    }


def signature(key: bytes, body: bytes) -> str:
    """The signature header's value: `sha256=` and the hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def delay(attempt: int) -> float:
    """Seconds before POST number `attempt + 1`: 1, 2, 4, ... up to MAX_DELAY."""
    return float(min(MAX_DELAY, 2 ** max(0, attempt - 1)))


class Deliverer:
    """POSTs finished tasks' events in the background and records each delivery in status."""

    def __init__(
        self, kube: Any, allowed: Sequence[str], key: str, retry_seconds: int, timeout: float
    ) -> None:
        self.kube = kube
        self.allowed = list(allowed)
        self.key = key.encode()
        self.retry = timedelta(seconds=retry_seconds)
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.slots = asyncio.Semaphore(CONCURRENCY)
        self.active: set[str] = set()
        """uids being delivered: a task is delivered by one coroutine at a time."""

    def wants(self, spec: Mapping[str, Any], final: Mapping[str, Any], now: datetime) -> bool:
        """Whether a finished task's callback is still to be delivered."""
        if not (spec.get("callback") or {}).get("url"):
            return False
        done = final.get("callback") or {}
        if done.get("delivered") or done.get("gaveUp"):
            return False
        ended = status.parse_time(final.get("completionTime"))
        return ended is None or now - ended < self.retry

    async def deliver(
        self, namespace: str, name: str, uid: str, url: str, final: Mapping[str, Any]
    ) -> None:
        """POST until a 2xx or the retry time is over; status.callback after each POST."""
        if uid in self.active:
            return
        self.active.add(uid)
        try:
            await self._deliver(namespace, name, uid, url, final)
        finally:
            self.active.discard(uid)

    async def _deliver(
        self, namespace: str, name: str, uid: str, url: str, final: Mapping[str, Any]
    ) -> None:
        body = json.dumps(event(namespace, name, uid, final), separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/cloudevents+json",
            SIGNATURE_HEADER: signature(self.key, body),
        }
        ended = status.parse_time(final.get("completionTime")) or datetime.now(UTC)
        attempts = int((final.get("callback") or {}).get("attempts") or 0)
        while True:
            now = datetime.now(UTC)
            error = refusal(url, self.allowed)
            if error is None:
                attempts += 1
                error = await self._post(url, body, headers)
            record: dict[str, Any] = {"attempts": attempts, "time": status.iso(now)}
            if error is None:
                await self._record(namespace, name, {**record, "delivered": True})
                return
            record["lastError"] = error[:1024]
            wait = delay(attempts)
            if now + timedelta(seconds=wait) - ended > self.retry:
                record["gaveUp"] = True
                await self._record(namespace, name, record)
                log.warning("callback of %s/%s not delivered: %s", namespace, name, error)
                return
            await self._record(namespace, name, record)
            await asyncio.sleep(wait)

    async def _post(self, url: str, body: bytes, headers: Mapping[str, str]) -> str | None:
        """None on a 2xx, else what went wrong."""
        async with self.slots:
            try:
                async with (
                    aiohttp.ClientSession(timeout=self.timeout) as session,
                    session.post(url, data=body, headers=headers, allow_redirects=False) as resp,
                ):
                    if 200 <= resp.status < 300:
                        return None
                    return f"HTTP {resp.status} {resp.reason or ''}".strip()
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    async def _record(self, namespace: str, name: str, record: dict[str, Any]) -> None:
        try:
            await self.kube.patch_status(namespace, name, {"callback": record})
        except Exception as exc:  # the task may be gone; the delivery itself is what counts
            log.info("callback status of %s/%s not written: %s", namespace, name, exc)
