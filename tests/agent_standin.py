"""A local stand-in for the Anthropic Messages API, so tests drive the real agent CLI.

No network here reaches the model's API. The stand-in answers `POST /v1/messages` the way the API
does, with `stream: true` as server-sent events, so the Claude Code CLI in a task pod runs its real
code path (HTTP client, SSE parsing, agent loop, permission checks, stream-json output) against
scripted model turns.

Wire format, from the Messages API streaming documentation
(platform.claude.com/docs/en/build-with-claude/streaming): `message_start` (a Message with empty
content and the input usage), per content block `content_block_start`, `content_block_delta`
(`text_delta`, or `input_json_delta` with partial JSON for a `tool_use` block) and
`content_block_stop`, then `message_delta` (stop_reason, cumulative output usage) and
`message_stop`; `ping` may come at any time. Each event is `event: NAME` plus `data: JSON`.
Errors are `{"type": "error", "error": {"type": ..., "message": ...}}` with the HTTP status.

Each test gets its own script under a path prefix: `ANTHROPIC_BASE_URL=<standin.url(token)>`
makes the CLI call `<prefix>/v1/messages`, and the stand-in records every request per prefix.
`python -m tests.agent_standin --answer TEXT` serves one fixed answer for trying things by hand.
"""

from __future__ import annotations

import argparse
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

INPUT_TOKENS = 42
"""Input tokens the stand-in reports per model turn."""
OUTPUT_TOKENS = 7
"""Output tokens the stand-in reports per model turn."""


@dataclass(frozen=True)
class Turn:
    """One scripted model turn: text, a tool call, both, an endless answer, or an API error."""

    text: str = ""
    tool: str | None = None
    tool_input: dict[str, Any] = field(default_factory=dict)
    endless: bool = False
    """Stream text deltas every half second until the client goes away."""
    error: tuple[int, str, str] | None = None
    """(HTTP status, error type, message): answer with an API error instead."""


Script = Callable[[dict[str, Any]], Turn]
"""The request body → the turn to answer it with."""


def tool_results(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The tool_result blocks of the request's last (user) message."""
    content = body["messages"][-1].get("content")
    if not isinstance(content, list):
        return []
    return [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]


def result_text(block: dict[str, Any]) -> str:
    """A tool_result block's content as text."""
    content = block.get("content")
    if isinstance(content, list):
        return "\n".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
    return str(content or "")


def answer(text: str) -> Script:
    """Always answer `text`."""
    return lambda body: Turn(text=text)


def tool_then_answer(tool: str, tool_input: dict[str, Any], then: str) -> Script:
    """Call `tool` first; once its result comes back, answer `then` with `{result}` and
    `{is_error}` filled in from that result."""

    def script(body: dict[str, Any]) -> Turn:
        results = tool_results(body)
        if not results:
            return Turn(text="Let me run that.", tool=tool, tool_input=tool_input)
        first = results[0]
        return Turn(
            text=then.format(result=result_text(first), is_error=bool(first.get("is_error")))
        )

    return script


def tool_forever(tool: str, tool_input: dict[str, Any]) -> Script:
    """Call `tool` on every turn (for maxTurns)."""
    return lambda body: Turn(tool=tool, tool_input=tool_input)


def endless() -> Script:
    """An answer that never ends (for timeouts and cancellation)."""
    return lambda body: Turn(endless=True)


def api_error(status: int, kind: str, message: str) -> Script:
    """Refuse every request, e.g. 401 authentication_error for a bad key."""
    return lambda body: Turn(error=(status, kind, message))


@dataclass
class Recorded:
    """A request the stand-in received."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class StandIn:
    """The stand-in server: `start()`, register scripts, `stop()`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._scripts: dict[str, Script] = {}
        self._requests: dict[str, list[Recorded]] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.stopping = threading.Event()
        self.server = ThreadingHTTPServer((host, port), _handler(self))
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> StandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()

    def script(self, script: Script) -> str:
        """Register `script`; returns the base URL (ANTHROPIC_BASE_URL) that selects it."""
        token = uuid.uuid4().hex[:12]
        with self._lock:
            self._scripts[token] = script
            self._requests[token] = []
        return f"{self.address}/{token}"

    def requests(self, base_url: str) -> list[Recorded]:
        """What the clients of `base_url` sent, in order."""
        with self._lock:
            return list(self._requests[base_url.rsplit("/", 1)[1]])

    def messages_requests(self, base_url: str) -> list[Recorded]:
        """The Messages API calls among them."""
        return [r for r in self.requests(base_url) if r.path.startswith("/v1/messages")]

    def _route(self, path: str) -> tuple[Script | None, list[Recorded] | None, str]:
        token, _, rest = path.lstrip("/").partition("/")
        with self._lock:
            return self._scripts.get(token), self._requests.get(token), "/" + rest

    def next_id(self, prefix: str) -> str:
        return f"{prefix}_standin{next(self._ids):06d}"


def _handler(standin: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                body = {}
            script, log, path = standin._route(self.path)
            if log is not None:
                log.append(Recorded(method, path, dict(self.headers.items()), body))
            if script is None:
                self._json(404, _error("not_found_error", f"no script for {self.path}"))
            elif method == "POST" and path.startswith("/v1/messages/count_tokens"):
                self._json(200, {"input_tokens": INPUT_TOKENS})
            elif method == "POST" and path.startswith("/v1/messages"):
                self._messages(script(body), body)
            else:
                self._json(404, _error("not_found_error", f"{method} {path} is not served"))

        def _json(self, status: int, doc: dict[str, Any]) -> None:
            data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("request-id", standin.next_id("req"))
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _messages(self, turn: Turn, body: dict[str, Any]) -> None:
            if turn.error is not None:
                status, kind, message = turn.error
                self._json(status, _error(kind, message))
                return
            message_id = standin.next_id("msg")
            model = str(body.get("model") or "claude-standin")
            if not body.get("stream"):
                self._json(200, _message(message_id, model, turn, standin))
                return
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("cache-control", "no-cache")
            self.send_header("request-id", standin.next_id("req"))
            self.send_header("connection", "close")
            self.end_headers()
            self.close_connection = True
            try:
                for event in _events(message_id, model, turn, standin):
                    self.wfile.write(event)
                    self.wfile.flush()
            except OSError:
                return  # the client went away (e.g. the agent was stopped)

    return Handler


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _blocks(turn: Turn, standin: StandIn) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if turn.text:
        blocks.append({"type": "text", "text": turn.text})
    if turn.tool:
        blocks.append(
            {
                "type": "tool_use",
                "id": standin.next_id("toolu"),
                "name": turn.tool,
                "input": turn.tool_input,
            }
        )
    return blocks


def _message(message_id: str, model: str, turn: Turn, standin: StandIn) -> dict[str, Any]:
    """The non-streaming answer (the CLI falls back to it when a stream fails)."""
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": _blocks(turn, standin),
        "stop_reason": "tool_use" if turn.tool else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": OUTPUT_TOKENS},
    }


def _events(message_id: str, model: str, turn: Turn, standin: StandIn) -> Any:
    """The SSE events of one streamed answer, in the documented order."""
    start = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": 1},
    }
    yield _sse("message_start", {"type": "message_start", "message": start})
    yield _sse("ping", {"type": "ping"})
    if turn.endless:
        yield _sse(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        )
        while not standin.stopping.is_set():
            delta = {"type": "text_delta", "text": "still thinking… "}
            yield _sse(
                "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
            )
            time.sleep(0.5)
        return
    for index, block in enumerate(_blocks(turn, standin)):
        if block["type"] == "text":
            first = {"type": "text", "text": ""}
            text = block["text"]
            deltas = [
                {"type": "text_delta", "text": text[i : i + 16]} for i in range(0, len(text), 16)
            ]
        else:
            first = {**block, "input": {}}
            partial = json.dumps(block["input"])
            deltas = [
                {"type": "input_json_delta", "partial_json": partial[i : i + 16]}
                for i in range(0, len(partial), 16)
            ]
        yield _sse(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": first},
        )
        for delta in deltas:
            yield _sse(
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": delta},
            )
        yield _sse("content_block_stop", {"type": "content_block_stop", "index": index})
    stop = {"stop_reason": "tool_use" if turn.tool else "end_turn", "stop_sequence": None}
    yield _sse(
        "message_delta",
        {"type": "message_delta", "delta": stop, "usage": {"output_tokens": OUTPUT_TOKENS}},
    )
    yield _sse("message_stop", {"type": "message_stop"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--answer", default="Hello from the stand-in.")
    args = parser.parse_args()
    standin = StandIn(args.host, args.port).start()
    print(f"ANTHROPIC_BASE_URL={standin.script(answer(args.answer))}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        standin.stop()


if __name__ == "__main__":
    main()
