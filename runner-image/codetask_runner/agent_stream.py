"""Claude Code's ``stream-json`` output, folded into what the result reports, and logged.

``claude -p --output-format stream-json --verbose`` writes one JSON message per line: ``system``
(subtype ``init`` first, then e.g. ``api_retry`` or ``permission_denied``), ``assistant`` (the
model's text and tool calls), ``user`` (tool results), and last ``result`` (final text, turns,
usage, cost, ``permission_denials``). Unknown types and fields are ignored, so a newer CLI that
adds some still parses. Without a ``result`` line (the run was stopped) the report is what the
messages so far show.

Every log line starts with ``agent: ``: one per line of the model's text, one per tool call,
tool result (newlines folded), denial and API retry, and one each for the start and the end.
"""

from __future__ import annotations

import json

LOG_PREFIX = "agent: "
TEXT_LIMIT = 4000
"""Characters of one assistant text block in the log."""
DETAIL_LIMIT = 500
"""Characters of a tool call's input or a tool result in the log."""
DENIED_NAMES_KEEP = 16
NAME_LIMIT = 64
USAGE_KEYS = (
    ("input_tokens", "inputTokens"),
    ("output_tokens", "outputTokens"),
    ("cache_read_input_tokens", "cacheReadInputTokens"),
    ("cache_creation_input_tokens", "cacheCreationInputTokens"),
)
SYNTHETIC_MODEL = "<synthetic>"
"""The model name of messages the CLI makes up itself (e.g. to show an API error)."""


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _compact(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _count(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return int(value)


def _usage(raw: object) -> dict[str, int]:
    if not isinstance(raw, dict):
        return {}
    usage = {}
    for key, name in USAGE_KEYS:
        count = _count(raw.get(key))
        if count is not None:
            usage[name] = count
    return usage


def _content_text(content: object) -> str:
    """A tool result's content: a string, or a list of blocks of which the text ones count."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(block.get("text", ""))
            for block in content
            if isinstance(block, dict) and block.get("type") == "text"
        )
    return ""


class Stream:
    """The agent's messages so far: what the result will report."""

    __slots__ = (
        "_activity",
        "_assistant_ids",
        "_denied_ids",
        "_usage_by_message",
        "denied_names",
        "denied_tool_calls",
        "final",
        "last_text",
        "model",
        "permission_mode",
        "session_id",
        "tool_calls",
        "tool_names",
        "tools",
        "unparsed",
    )

    def __init__(self) -> None:
        self.model: str | None = None
        self.session_id: str | None = None
        self.permission_mode: str | None = None
        self.tools: frozenset[str] | None = None
        """The tools the session offers the model (from ``init``); None until known."""
        self.tool_calls = 0
        self.tool_names: dict[str, str] = {}
        """Tool-use id → tool name, for the denials and results that refer to it."""
        self.denied_tool_calls = 0
        self.denied_names: list[str] = []
        self.last_text = ""
        """The latest text the model wrote (what a stopped run had said last)."""
        self._activity = ""
        self.final: dict[str, object] | None = None
        """The ``result`` message, once it came."""
        self.unparsed = 0
        self._assistant_ids: set[str] = set()
        self._denied_ids: set[str] = set()
        self._usage_by_message: dict[str, dict[str, int]] = {}

    @property
    def turns(self) -> int:
        """Turns as the agent counts them, or the model messages seen so far."""
        reported = _count((self.final or {}).get("num_turns"))
        return reported if reported is not None else len(self._assistant_ids)

    @property
    def activity(self) -> str:
        """A short progress line: the latest tool call or text."""
        return _cut(self._activity.strip().replace("\n", " "), 200)

    def feed(self, line: bytes) -> list[str]:
        """Take one line of the stream; returns the log lines it makes (possibly none)."""
        line = line.strip()
        if not line:
            return []
        try:
            message = json.loads(line)
        except ValueError:  # includes UnicodeDecodeError
            self.unparsed += 1
            return [f"{LOG_PREFIX}unparsed output: {_cut(line.decode(errors='replace'), 200)}"]
        if not isinstance(message, dict):
            self.unparsed += 1
            return []
        kind = message.get("type")
        if kind == "system":
            return self._system(message)
        if kind == "assistant":
            return self._assistant(message)
        if kind == "user":
            return self._user(message)
        if kind == "result":
            return self._result(message)
        return []

    def _deny(self, tool_use_id: object, name: object) -> bool:
        key = str(tool_use_id) if tool_use_id else f"#{self.denied_tool_calls}"
        if key in self._denied_ids:
            return False
        self._denied_ids.add(key)
        self.denied_tool_calls += 1
        label = _cut(str(name or self.tool_names.get(key) or "?"), NAME_LIMIT)
        if label not in self.denied_names and len(self.denied_names) < DENIED_NAMES_KEEP:
            self.denied_names.append(label)
        return True

    def _system(self, message: dict[str, object]) -> list[str]:
        subtype = message.get("subtype")
        if subtype == "init":
            self.model = str(message.get("model") or "") or None
            self.session_id = str(message.get("session_id") or "") or None
            self.permission_mode = str(message.get("permissionMode") or "") or None
            tools = message.get("tools")
            if isinstance(tools, list):
                self.tools = frozenset(str(t) for t in tools)
            return [
                f"{LOG_PREFIX}started: model {self.model}, permission mode "
                f"{self.permission_mode}, {len(self.tools or ())} tools, session {self.session_id}"
            ]
        if subtype == "permission_denied":
            name = message.get("tool_name")
            if not self._deny(message.get("tool_use_id"), name):
                return []
            reason = _cut(_one_line(str(message.get("message") or "")), DETAIL_LIMIT)
            return [f"{LOG_PREFIX}tool call {name} denied: {reason}"]
        if subtype == "api_retry":
            return [
                f"{LOG_PREFIX}API error {message.get('error_status')} "
                f"({message.get('error')}): retry {message.get('attempt')} of "
                f"{message.get('max_retries')} in {message.get('retry_delay_ms')} ms"
            ]
        return []

    def _assistant(self, message: dict[str, object]) -> list[str]:
        body = message.get("message")
        if not isinstance(body, dict):
            return []
        synthetic = body.get("model") == SYNTHETIC_MODEL
        message_id = str(body.get("id") or "")
        if not synthetic and message_id:
            self._assistant_ids.add(message_id)
            usage = _usage(body.get("usage"))
            if usage:
                self._usage_by_message[message_id] = usage
        lines = []
        for block in body.get("content") or []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text":
                text = str(block.get("text") or "")
                if not synthetic:
                    self.last_text = self._activity = text
                label = "error: " if synthetic else ""
                shown = _cut(text, TEXT_LIMIT).splitlines() or [""]
                lines += [f"{LOG_PREFIX}{label}{part}" for part in shown]
            elif block.get("type") == "tool_use":
                self.tool_calls += 1
                name = str(block.get("name") or "?")
                self.tool_names[str(block.get("id") or "")] = name
                detail = _cut(_compact(block.get("input")), DETAIL_LIMIT)
                lines.append(f"{LOG_PREFIX}tool call {name} {detail}")
                self._activity = f"{name} {detail}"
                if self.tools is not None and name not in self.tools:
                    # Not offered to the model (disallowedTools or not enabled): the CLI
                    # refuses it without a permission_denied message.
                    self._deny(block.get("id"), name)
                    lines.append(f"{LOG_PREFIX}tool call {name} denied: not an enabled tool")
        return lines

    def _user(self, message: dict[str, object]) -> list[str]:
        body = message.get("message")
        if not isinstance(body, dict) or not isinstance(body.get("content"), list):
            return []
        lines = []
        for block in body["content"]:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                name = self.tool_names.get(str(block.get("tool_use_id") or ""), "?")
                state = "error" if block.get("is_error") else "ok"
                text = _cut(_one_line(_content_text(block.get("content"))), DETAIL_LIMIT)
                lines.append(f"{LOG_PREFIX}tool result {name} ({state}): {text}")
        return lines

    def _result(self, message: dict[str, object]) -> list[str]:
        self.final = message
        denials = message.get("permission_denials")
        for denial in denials if isinstance(denials, list) else []:
            if isinstance(denial, dict):
                self._deny(denial.get("tool_use_id"), denial.get("tool_name"))
        usage = self.usage()
        cost = message.get("total_cost_usd")
        return [
            f"{LOG_PREFIX}finished: {message.get('subtype')}"
            f"{' (error)' if message.get('is_error') else ''}, {self.turns} turns, "
            f"{self.tool_calls} tool calls ({self.denied_tool_calls} denied), "
            f"{usage.get('inputTokens', 0)} input and {usage.get('outputTokens', 0)} output "
            f"tokens, cost ${cost if isinstance(cost, int | float) else '?'}"
        ]

    def usage(self) -> dict[str, int]:
        """Token usage: the agent's total, or the sum over the model messages seen so far."""
        if self.final is not None and isinstance(self.final.get("usage"), dict):
            return _usage(self.final["usage"])
        total: dict[str, int] = {}
        for usage in self._usage_by_message.values():
            for name, count in usage.items():
                total[name] = total.get(name, 0) + count
        return total

    def report(self) -> dict[str, object]:
        """The result's ``agent`` object (docs/runner-contract.md)."""
        report: dict[str, object] = {
            "model": _cut(self.model, 256) if self.model else None,
            "sessionId": _cut(self.session_id, 128) if self.session_id else None,
            "turns": self.turns,
            "toolCalls": self.tool_calls,
            "deniedToolCalls": self.denied_tool_calls,
            "deniedTools": list(self.denied_names),
            "usage": self.usage() or None,
            "costUsd": None,
        }
        cost = (self.final or {}).get("total_cost_usd")
        if isinstance(cost, int | float) and not isinstance(cost, bool) and cost >= 0:
            report["costUsd"] = round(float(cost), 6)
        return report

    def error_text(self) -> str:
        """What the agent said went wrong: the result's text (when an error) or its errors."""
        final = self.final or {}
        errors = final.get("errors")
        if isinstance(errors, list) and errors:
            return "; ".join(str(e) for e in errors)
        if final.get("is_error") and isinstance(final.get("result"), str):
            return str(final["result"])
        return ""

    def answer(self) -> str:
        """The final text of a successful run, else the latest text the model wrote."""
        final = self.final or {}
        if final.get("subtype") == "success" and not final.get("is_error"):
            result = final.get("result")
            if isinstance(result, str):
                return result
        return self.last_text


class StreamReader:
    """Reads the stream file as the CLI appends to it: whole lines, bounded memory per line."""

    __slots__ = ("_offset", "_pending", "_skipping", "path")

    CHUNK = 1 << 20
    LINE_LIMIT = 16 << 20
    """A longer line is dropped, so memory stays bounded."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._offset = 0
        self._pending = b""
        self._skipping = False

    def read(self, final: bool = False) -> list[bytes]:
        """The complete lines appended since the last read (and, if ``final``, the last one)."""
        lines: list[bytes] = []
        try:
            with open(self.path, "rb") as file:
                file.seek(self._offset)
                while chunk := file.read(self.CHUNK):
                    self._offset += len(chunk)
                    lines += self._split(chunk)
        except OSError:
            pass
        if final and self._pending and not self._skipping:
            lines.append(self._pending)
            self._pending = b""
        return lines

    def _split(self, chunk: bytes) -> list[bytes]:
        parts = (self._pending + chunk).split(b"\n")
        self._pending = parts.pop()
        if self._skipping and parts:
            parts.pop(0)  # the rest of an over-long line
            self._skipping = False
        if len(self._pending) > self.LINE_LIMIT:
            self._pending = b""
            self._skipping = True
        return parts
