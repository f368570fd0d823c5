"""Completion callbacks on the real cluster: a receiver run by the test gets each task's signed
CloudEvent once, also after it was down for 30 s; one that keeps answering 500 is retried, then the
failure is in status.callback."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.e2e.conftest import free_port, namespace_operator
from tests.e2e.tasks import codetask, create, get, wait_for

KEY = "e2e-callback-key"


@contextmanager
def receiver(port: int, answer: int, got: list[tuple[str, bool]]) -> Iterator[None]:
    """An HTTP receiver on 127.0.0.1:`port` (the operator runs on this host) recording each
    event's id and whether its signature is valid, answering `answer`."""

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            expected = "sha256=" + hmac.new(KEY.encode(), body, hashlib.sha256).hexdigest()
            got.append((json.loads(body)["id"], self.headers["X-Codetask-Signature"] == expected))
            self.send_response(answer)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def calling_operator(
    api_client: client.ApiClient, tmp_path: Path, retry_seconds: int
) -> Iterator[str]:
    settings = {
        "CODETASK_CALLBACK_KEY": KEY,
        "CODETASK_CALLBACK_ALLOWED_HOSTS": "127.0.0.1",
        "CODETASK_CALLBACK_RETRY_SECONDS": str(retry_seconds),
    }
    ns, op = namespace_operator(api_client, tmp_path / "op.log", "b", settings)
    try:
        yield ns
    finally:
        op.stop(signal.SIGTERM)
        client.CoreV1Api(api_client).delete_namespace(ns)


def test_each_task_reaches_the_receiver_once_also_after_it_was_down_30_seconds(
    api_client: client.ApiClient, crd: None, tmp_path: Path
) -> None:
    """The receiver gets the first task's event, is stopped for 30 s while two more tasks end,
    then started again: it gets theirs, each once, signed."""
    port = free_port()
    got: list[tuple[str, bool]] = []
    with calling_operator(api_client, tmp_path, 600) as ns:
        url = f"http://127.0.0.1:{port}/hook"

        def run(name: str) -> str:
            task = codetask(name, language="python", code="print(1)", callback={"url": url})
            create(api_client, ns, task)
            uid: str = wait_for(api_client, ns, name)["metadata"]["uid"]
            return uid

        def received(count: int, within: float) -> None:
            end = time.monotonic() + within
            while len(got) < count:
                assert time.monotonic() < end, got
                time.sleep(0.5)

        with receiver(port, 200, got):
            first = run("a")
            received(1, 30)
        down = time.monotonic()
        later = [run("b"), run("c")]
        time.sleep(max(0.0, 30 - (time.monotonic() - down)))  # down: POSTs fail and back off
        with receiver(port, 200, got):
            received(3, 60)  # the next POST comes within 32 s (1, 2, 4, ... s apart)
            time.sleep(3)  # nothing more comes
        assert sorted(got) == sorted((uid, True) for uid in [first, *later])
        for name in ("b", "c"):
            done = get(api_client, ns, name)["status"]["callback"]
            assert done["delivered"] is True and done["attempts"] >= 2, done
            assert "lastError" in done  # from the POSTs while it was down


def test_a_receiver_answering_500_is_retried_then_the_failure_is_in_status(
    api_client: client.ApiClient, crd: None, tmp_path: Path
) -> None:
    port = free_port()
    got: list[tuple[str, bool]] = []
    with calling_operator(api_client, tmp_path, 5) as ns, receiver(port, 500, got):
        url = f"http://127.0.0.1:{port}/hook"
        create(
            api_client, ns, codetask("t", language="python", code="print(1)", callback={"url": url})
        )
        wait_for(api_client, ns, "t")
        end = time.monotonic() + 30
        while not ((get(api_client, ns, "t")["status"].get("callback") or {}).get("gaveUp")):
            assert time.monotonic() < end, get(api_client, ns, "t")["status"].get("callback")
            time.sleep(0.5)
        done = get(api_client, ns, "t")["status"]["callback"]
        assert done["lastError"] == "HTTP 500 Internal Server Error", done
        assert done["attempts"] == len(got) >= 3, (done, got)
        assert not done.get("delivered")
