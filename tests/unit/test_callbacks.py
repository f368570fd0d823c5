"""Completion callbacks: which hosts may be called, the signed CloudEvent, and delivery with
retries against a receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from codetask_operator import admission, callbacks, status
from codetask_operator.settings import Settings

pytestmark = pytest.mark.unit

KEY = "s3cret"
FINAL = {
    "phase": "Succeeded",
    "reason": "Completed",
    "attempts": 1,
    "exitCode": 0,
    "durationSeconds": 0.2,
    "stdout": "4\n",
    "completionTime": status.iso(datetime.now(UTC)),
}


@pytest.mark.parametrize(
    ("url", "allowed", "ok"),
    [
        ("https://hooks.example.com/x", ["hooks.example.com"], True),
        ("https://hooks.example.com/x", ["*.example.com"], True),
        ("https://example.com/x", ["*.example.com"], False),
        ("http://hooks.example.com:8080/x", ["hooks.example.com:8080"], True),
        ("http://hooks.example.com/x", ["hooks.example.com:8080"], False),
        ("https://hooks.example.com/x", ["hooks.example.com:443"], True),
        ("http://10.1.2.3:9000/x", ["10.0.0.0/8"], True),
        ("http://10.1.2.3:9000/x", ["10.1.2.3"], True),
        ("http://169.254.169.254/latest", ["10.0.0.0/8", "*.example.com"], False),
        ("http://10.1.2.3/x", ["10.*"], False),  # addresses only by CIDR, not by name pattern
        ("http://evil.example.org/x", [], False),
    ],
)
def test_only_hosts_the_operator_allows_may_be_called(
    url: str, allowed: list[str], ok: bool
) -> None:
    refused = callbacks.refusal(url, allowed)
    assert (refused is None) == ok, refused
    if not ok:
        assert refused is not None and refused.startswith("spec.callback.url: host ")


def test_admission_refuses_a_callback_naming_the_field() -> None:
    spec = {"language": "python", "code": "1", "callback": {"url": "http://10.0.0.1/x"}}
    off = admission.validate(spec, Settings())
    assert off == ["spec.callback: callbacks are off on this cluster (no chart callbacks.secret)"]
    on = Settings(callback_key=KEY, callback_allowed_hosts=["hooks.example.com"])
    assert admission.validate(spec, on) == [
        "spec.callback.url: host 10.0.0.1:80 is not one the operator may call "
        "(chart value callbacks.allowedHosts)"
    ]
    good = {**spec, "callback": {"url": "https://hooks.example.com/done"}}
    assert admission.validate(good, on) == []
    with_password = {**spec, "callback": {"url": "https://user:pw@hooks.example.com/"}}
    assert admission.validate(with_password, on)[0].startswith("spec.callback.url: ")


def test_the_event_is_a_cloudevent_with_the_tasks_result() -> None:
    event = callbacks.event("ns", "t", "uid-1", FINAL)
    assert {k: event[k] for k in ("specversion", "type", "id", "subject", "time")} == {
        "specversion": "1.0",
        "type": "dev.codetask.task.finished",
        "id": "uid-1",
        "subject": "ns/t",
        "time": FINAL["completionTime"],
    }
    assert event["source"] == "/apis/codetask.dev/v1alpha1/namespaces/ns/codetasks/t"
    data = event["data"]
    assert (data["phase"], data["exitCode"], data["attempts"], data["stdout"]) == (
        "Succeeded",
        0,
        1,
        "4\n",
    )


class Kube:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.records.append(patch["callback"])


def receive(answers: list[int], got: list[tuple[dict[str, Any], str]]) -> web.Application:
    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        expected = "sha256=" + hmac.new(KEY.encode(), body, hashlib.sha256).hexdigest()
        signed = request.headers[callbacks.SIGNATURE_HEADER] == expected
        got.append((json.loads(body), "valid" if signed else "forged"))
        return web.Response(status=answers.pop(0) if answers else 200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    return app


def deliver(
    answers: list[int], retry_seconds: int = 60
) -> tuple[list[tuple[dict[str, Any], str]], list[dict[str, Any]]]:
    """The delivery of a task that finished just now, to a receiver answering `answers`."""
    final = {**FINAL, "completionTime": status.iso(datetime.now(UTC))}
    got: list[tuple[dict[str, Any], str]] = []
    kube = Kube()

    async def main() -> None:
        runner = web.AppRunner(receive(answers, got))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        deliverer = callbacks.Deliverer(kube, ["127.0.0.0/8"], KEY, retry_seconds, 2)
        await deliverer.deliver("ns", "t", "uid-1", f"http://127.0.0.1:{port}/hook", final)
        await runner.cleanup()

    asyncio.run(main())
    return got, kube.records


def test_a_receiver_gets_the_signed_event_once_and_status_says_delivered() -> None:
    got, records = deliver([200])
    assert [(event["id"], signed) for event, signed in got] == [("uid-1", "valid")]
    assert [(r.get("delivered"), r["attempts"]) for r in records] == [(True, 1)]


def test_a_failing_receiver_is_retried_with_backoff_until_it_answers() -> None:
    got, records = deliver([500, 503])
    assert len(got) == 3 and {event["id"] for event, _ in got} == {"uid-1"}
    assert [(r.get("delivered"), r["attempts"], r.get("lastError")) for r in records] == [
        (None, 1, "HTTP 500 Internal Server Error"),
        (None, 2, "HTTP 503 Service Unavailable"),
        (True, 3, None),
    ]


def test_a_receiver_that_keeps_failing_is_given_up_after_the_retry_time() -> None:
    got, records = deliver([500] * 10, retry_seconds=2)
    assert len(got) == 2  # POSTs at 0 s and 1 s; the next (2 s later) would be past 2 s
    assert records[-1] == {
        "attempts": 2,
        "time": records[-1]["time"],
        "lastError": "HTTP 500 Internal Server Error",
        "gaveUp": True,
    }


@pytest.mark.parametrize(
    ("spec", "final", "wanted"),
    [
        ({"callback": {"url": "http://x/"}}, FINAL, True),
        ({}, FINAL, False),
        ({"callback": {"url": "http://x/"}}, {**FINAL, "callback": {"delivered": True}}, False),
        ({"callback": {"url": "http://x/"}}, {**FINAL, "callback": {"gaveUp": True}}, False),
        (
            {"callback": {"url": "http://x/"}},
            {**FINAL, "completionTime": status.iso(datetime.now(UTC) - timedelta(hours=2))},
            False,
        ),
    ],
)
def test_after_a_restart_only_callbacks_not_delivered_within_the_retry_time_are_resumed(
    spec: dict[str, Any], final: dict[str, Any], wanted: bool
) -> None:
    deliverer = callbacks.Deliverer(Kube(), ["x"], KEY, 3600, 2)
    assert deliverer.wants(spec, final, datetime.now(UTC)) is wanted


def test_the_signature_is_hmac_sha256_of_the_body() -> None:
    check: Callable[[bytes], str] = lambda body: callbacks.signature(b"k", body)  # noqa: E731
    assert check(b"{}") == "sha256=" + hmac.new(b"k", b"{}", hashlib.sha256).hexdigest()
