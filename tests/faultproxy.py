"""A fault-injecting reverse proxy in front of a Kubernetes API server, for tests.

A client (the operator) gets a kubeconfig pointing at the proxy: plain http on 127.0.0.1, no
credentials. The proxy forwards every request to the real API server with the credentials of a
kubeconfig (client certificate or token) and streams answers back unchanged, watch streams chunk by
chunk as they arrive. With a seeded RNG it answers a fraction of requests itself instead:

- `429 TooManyRequests` with `Retry-After: 1`, or `500`/`503`, before forwarding (the API server
  never sees the request);
- for writes, also `500` after forwarding: the write happened but the client is told it failed
  (an overloaded API server or a gateway timing out), so a retry must be idempotent;
- a watch stream is ended after a few seconds (at an event boundary), as API servers do, so watches
  are re-established, and faulted, throughout a run.

On demand (`hold`, `release`), independent of the seeded faults: a resource's watch streams deliver
nothing while they are held, their connections kept open (a stalled watch), and on release they are
cut; the next watch request then gets, if asked, the API server's answer to a resource version it
no longer has (an ERROR event with code 410), so the client lists again.

Every request and every fault is counted by (verb, resource), verbs as in the audit log: get, list,
watch, create, update, patch, delete.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import ssl
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web
from yarl import URL

WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "content-length",
        "upgrade",
        "host",
        "te",
        "trailer",
    }
)
_REASONS = {429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable"}


@dataclass(frozen=True)
class Upstream:
    """The real API server and how to authenticate to it."""

    server: str
    ssl_context: ssl.SSLContext | None
    token: str | None = None

    @classmethod
    def from_kubeconfig(cls, path: Path) -> Upstream:
        """The current context's server and user (client certificate or token) of `path`."""
        config: dict[str, Any] = yaml.safe_load(path.read_text())
        context_name = config["current-context"]
        context = _named(config["contexts"], context_name)["context"]
        cluster = _named(config["clusters"], context["cluster"])["cluster"]
        user = _named(config["users"], context["user"])["user"] or {}
        server: str = cluster["server"]
        if not server.startswith("https://"):
            return cls(server, None, user.get("token"))
        ctx = ssl.create_default_context()
        if "certificate-authority-data" in cluster:
            ctx.load_verify_locations(
                cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
            )
        elif "certificate-authority" in cluster:
            ctx.load_verify_locations(cafile=cluster["certificate-authority"])
        if cluster.get("insecure-skip-tls-verify"):
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if "client-certificate-data" in user:
            # The ssl module loads keys from files only: a private directory, gone after loading.
            with tempfile.TemporaryDirectory() as tmp:
                cert, key = Path(tmp, "client.crt"), Path(tmp, "client.key")
                cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
                key.write_bytes(base64.b64decode(user["client-key-data"]))
                ctx.load_cert_chain(cert, key)
        elif "client-certificate" in user:
            ctx.load_cert_chain(user["client-certificate"], user["client-key"])
        return cls(server, ctx, user.get("token"))


def _named(items: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(item for item in items if item["name"] == name)


def classify(method: str, path: str, query: dict[str, str]) -> tuple[str, str]:
    """(verb, resource) of a request, e.g. ("patch", "codetasks/status"), ("watch", "pods").

    Non-resource paths (/version, /apis) are their own resource, with verb get."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"]:
        rest = parts[2:]
    elif parts[:1] == ["apis"]:
        rest = parts[3:]
    else:
        return method.lower(), path
    if not rest:
        return method.lower(), path
    watch = query.get("watch") in ("1", "true")
    if rest[0] == "watch":
        watch, rest = True, rest[1:]
    if rest[0] == "namespaces" and len(rest) > 2:
        rest = rest[2:]
    resource = rest[0] + "".join(f"/{sub}" for sub in rest[2:])
    collection = len(rest) == 1
    verb = {
        "GET": "watch" if watch else ("list" if collection else "get"),
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "deletecollection" if collection else "delete",
    }.get(method, method.lower())
    return verb, resource


class FaultProxy:
    """The proxy, serving from its own thread and event loop; use as a context manager."""

    def __init__(
        self,
        upstream: Upstream,
        *,
        seed: int,
        rate: float,
        watch_rate: float | None = None,
        after_share: float = 1 / 3,
        watch_seconds: tuple[float, float] = (2.0, 6.0),
    ) -> None:
        """`rate`: the fraction of requests answered with a fault (`watch_rate` for watches and
        lists, default `rate`); `after_share`: of the faults on writes, the share applied first
        and then answered 500; `watch_seconds`: a watch stream ends after a random time in this
        range."""
        self.upstream = upstream
        self.seed = seed
        self.rate = rate
        self.watch_rate = rate if watch_rate is None else watch_rate
        self.after_share = after_share
        self.watch_seconds = watch_seconds
        self.faulting = True
        """Faults are injected only while this is true (forwarding goes on regardless)."""
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._holds: dict[str, int] = {}
        """Held resources and the number of their hold."""
        self._hold_count = 0
        self._expire_next: set[str] = set()
        self._requests: Counter[tuple[str, str]] = Counter()
        self._faults: Counter[tuple[str, str, str]] = Counter()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def write_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig for clients of the proxy: plain http, no credentials."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "faultproxy", "cluster": {"server": self.url}}],
            "users": [{"name": "anonymous", "user": {}}],
            "contexts": [
                {"name": "faultproxy", "context": {"cluster": "faultproxy", "user": "anonymous"}}
            ],
            "current-context": "faultproxy",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    def hold(self, resource: str) -> None:
        """Hold the watch streams of `resource` (e.g. "jobs"), the open ones and those that open
        later: from their next event boundary on, nothing is delivered and the connection stays
        open, until `release`."""
        with self._lock:
            self._hold_count += 1
            self._holds[resource] = self._hold_count

    def release(self, resource: str, *, expire: bool = False) -> None:
        """Cut the held watch streams of `resource`; with `expire`, answer the next watch request
        for it as the API server answers one whose resource version it no longer has (HTTP 200,
        one ERROR event with code 410 "too old resource version"), so the client lists again."""
        with self._lock:
            self._holds.pop(resource, None)
            if expire:
                self._expire_next.add(resource)

    def _hold_of(self, resource: str) -> int | None:
        with self._lock:
            return self._holds.get(resource)

    def _take_expiry(self, resource: str) -> bool:
        with self._lock:
            if resource not in self._expire_next:
                return False
            self._expire_next.discard(resource)
            return True

    def requests(self) -> Counter[tuple[str, str]]:
        """Requests received, by (verb, resource)."""
        with self._lock:
            return Counter(self._requests)

    def faults(self) -> Counter[tuple[str, str, str]]:
        """Faults injected, by (kind, verb, resource); kind is "429", "500", "503" (answered
        before forwarding), "500-after" (a write applied, then answered 500) or "watch-end"; on
        demand also "held" (a watch stream held), "cut" (a held one ended on release) and "410"
        (a watch answered with 410 Gone)."""
        with self._lock:
            return Counter(self._faults)

    def report(self) -> str:
        """Requests and faults per (verb, resource), one line each."""
        requests, faults = self.requests(), self.faults()
        lines = [f"fault proxy seed {self.seed}, rate {self.rate}, watch rate {self.watch_rate}"]
        for key in sorted(requests):
            mine = {k[0]: n for k, n in faults.items() if k[1:] == key}
            lines.append(f"  {key[0]:>8} {key[1]:<28} {requests[key]:>5} requests, faults {mine}")
        return "\n".join(lines)

    def _count(self, key: tuple[str, str], fault: str | None = None) -> None:
        with self._lock:
            if fault is None:
                self._requests[key] += 1
            else:
                self._faults[(fault, *key)] += 1

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(
            auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a client gone mid-watch ends the upstream watch too.
        self._runner = web.AppRunner(
            app, handle_signals=False, shutdown_timeout=1, handler_cancellation=True
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def _draw_fault(self, verb: str) -> str | None:
        """The fault for this request, if any (drawn from the seeded RNG)."""
        if not self.faulting:
            return None
        rate = self.watch_rate if verb in ("watch", "list") else self.rate
        if self._rng.random() >= rate:
            return None
        if verb in WRITE_VERBS and self._rng.random() < self.after_share:
            return "500-after"
        return self._rng.choice(["429", "500", "503"])

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        key = classify(request.method, request.path, dict(request.query))
        self._count(key)
        if key[0] == "watch" and self._take_expiry(key[1]):
            self._count(key, "410")
            return await _expired_watch(request, key)
        fault = self._draw_fault(key[0])
        if fault is not None and fault != "500-after":
            self._count(key, fault)
            return _status_answer(int(fault), f"injected by the fault proxy ({key})")
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        if self.upstream.token:
            headers["Authorization"] = f"Bearer {self.upstream.token}"
        body = await request.read()
        url = URL(self.upstream.server + request.raw_path, encoded=True)
        async with self._session.request(
            request.method,
            url,
            headers=headers,
            data=body or None,
            ssl=self.upstream.ssl_context or False,
            allow_redirects=False,
        ) as upstream:
            if fault == "500-after":
                await upstream.read()
                self._count(key, fault)
                return _status_answer(500, f"applied, then failed by the fault proxy ({key})")
            return await self._stream(request, upstream, key)

    async def _stream(
        self, request: web.Request, upstream: aiohttp.ClientResponse, key: tuple[str, str]
    ) -> web.StreamResponse:
        """Copy the answer as it arrives; a watch ends after `watch_seconds` at an event end."""
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for name, value in upstream.headers.items():
            if name.lower() not in _HOP_BY_HOP:
                response.headers.add(name, value)
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        else:
            response.enable_chunked_encoding()
        await response.prepare(request)
        watching = key[0] == "watch" and upstream.status == 200
        end = self._loop.time() + (self._rng.uniform(*self.watch_seconds) if watching else 0)
        at_boundary = True
        held: int | None = None
        """The hold this stream is in: from an event boundary on, what arrives is dropped."""
        try:
            while True:
                hold = self._hold_of(key[1]) if watching else None
                if held is None and hold is not None and at_boundary:
                    held = hold
                    self._count(key, "held")
                if held is not None and hold != held:
                    self._count(key, "cut")
                    break
                if watching and self.faulting and hold is None:
                    remaining = end - self._loop.time()
                    if remaining <= 0 and at_boundary:
                        self._count(key, "watch-end")
                        break
                    try:
                        chunk = await asyncio.wait_for(
                            upstream.content.readany(), timeout=max(remaining, 0.5)
                        )
                    except TimeoutError:
                        continue
                elif watching:
                    # Short reads: a hold or a release takes effect while no event arrives.
                    try:
                        chunk = await asyncio.wait_for(upstream.content.readany(), timeout=0.2)
                    except TimeoutError:
                        continue
                else:
                    chunk = await upstream.content.readany()
                if not chunk:
                    break
                if held is None:
                    await response.write(chunk)
                    at_boundary = chunk.endswith(b"\n")
            await response.write_eof()
        except (ConnectionResetError, aiohttp.ClientError):
            pass  # the client went away, or the API server did: the stream just ends
        return response


async def _expired_watch(request: web.Request, key: tuple[str, str]) -> web.StreamResponse:
    """A watch whose resource version is too old, as the API server answers it: 200, then one
    ERROR event carrying a 410 Status, then the end of the stream."""
    response = web.StreamResponse(status=200)
    response.content_type = "application/json"
    response.enable_chunked_encoding()
    await response.prepare(request)
    since = request.query.get("resourceVersion", "")
    status = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f"too old resource version: {since} (injected by the fault proxy, {key})",
        "reason": "Expired",
        "code": 410,
    }
    await response.write(json.dumps({"type": "ERROR", "object": status}).encode() + b"\n")
    await response.write_eof()
    return response


def _status_answer(code: int, message: str) -> web.Response:
    """A metav1.Status error as the API server sends it."""
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": _REASONS[code],
        "code": code,
    }
    headers = {}
    if code == 429:
        body["details"] = {"retryAfterSeconds": 1}
        headers["Retry-After"] = "1"
    return web.Response(
        status=code, text=json.dumps(body), content_type="application/json", headers=headers
    )
