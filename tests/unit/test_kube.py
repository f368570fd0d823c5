"""The operator's API client: which failures are retried and how long it waits, credentials from a
service account, and retries against a real HTTP server that fails on purpose."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kopf
import pytest
from aiohttp import web

from codetask_operator import kube

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("status", "headers", "attempt", "expected"),
    [
        (429, {"Retry-After": "3"}, 1, (3.0, 3.0)),
        (429, {"Retry-After": "600"}, 1, (kube.MAX_RETRY_AFTER, kube.MAX_RETRY_AFTER)),
        (429, {}, 1, (0.15, 0.25)),
        (503, {}, 2, (0.375, 0.625)),
        (500, {"Retry-After": "soon"}, 3, (0.75, 1.25)),
        (None, {}, 4, (1.5, 2.5)),
        (504, {}, len(kube.RETRY_BACKOFF), (6.0, 10.0)),
        (503, {}, len(kube.RETRY_BACKOFF) + 1, None),
        (400, {}, 1, None),
        (404, {}, 1, None),
        (409, {}, 1, None),
        (422, {"Retry-After": "1"}, 1, None),
    ],
)
def test_retry_delay_retries_only_transient_failures_with_growing_backoff(
    status: int | None,
    headers: dict[str, str],
    attempt: int,
    expected: tuple[float, float] | None,
) -> None:
    delay = kube.retry_delay(status, headers, attempt, random.Random(7))
    if expected is None:
        assert delay is None
    else:
        assert delay is not None
        assert expected[0] <= delay <= expected[1]


def test_in_cluster_credentials_use_the_service_environment_not_dns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "token").write_text("tok\n")
    (tmp_path / "namespace").write_text("codetask-system")
    (tmp_path / "ca.crt").write_text("")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    info = kube.in_cluster(tmp_path)
    assert info is not None
    assert (info.server, info.token, info.default_namespace) == (
        "https://10.0.0.1:443",
        "tok",
        "codetask-system",
    )
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    info = kube.in_cluster(tmp_path)
    assert info is not None and info.server == "https://[fd00::1]:443"
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    assert kube.in_cluster(tmp_path) is None


class FlakyServer:
    """An HTTP server whose first `failures` answers to each path are the given status."""

    def __init__(self, status: int, failures: int, headers: dict[str, str] | None = None) -> None:
        self.status, self.failures, self.headers = status, failures, headers or {}
        self.seen: list[tuple[str, str, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        self.seen.append((request.method, request.path, body))
        if len(self.seen) <= self.failures:
            return web.json_response({"kind": "Status"}, status=self.status, headers=self.headers)
        return web.json_response({"ok": len(self.seen)})


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


async def _call(server: FlakyServer, method: str = "PATCH") -> dict[str, Any]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client = kube.ApiClient(kopf.ConnectionInfo(server=f"http://127.0.0.1:{port}"))
    try:
        return await client.request(method, "/apis/x/v1/things/a", {"status": {"phase": "Running"}})
    finally:
        await client.close()
        await runner.cleanup()


def test_a_503_then_success_is_retried_with_the_same_body(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kube, "RETRY_BACKOFF", (0.01, 0.01, 0.01))
    server = FlakyServer(503, failures=2)
    assert loop.run_until_complete(_call(server)) == {"ok": 3}
    assert [s[2] for s in server.seen] == [{"status": {"phase": "Running"}}] * 3


def test_429_waits_for_retry_after(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = FlakyServer(429, failures=1, headers={"Retry-After": "1"})
    started = loop.time()
    assert loop.run_until_complete(_call(server)) == {"ok": 2}
    assert loop.time() - started >= 1.0


def test_persistent_5xx_gives_up_with_the_status(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kube, "RETRY_BACKOFF", (0.01, 0.01))
    server = FlakyServer(500, failures=100)
    with pytest.raises(kube.ApiError) as caught:
        loop.run_until_complete(_call(server))
    assert caught.value.status == 500
    assert len(server.seen) == 3


def test_a_4xx_is_not_retried(loop: asyncio.AbstractEventLoop) -> None:
    server = FlakyServer(422, failures=100)
    with pytest.raises(kube.ApiError) as caught:
        loop.run_until_complete(_call(server))
    assert caught.value.status == 422
    assert len(server.seen) == 1
