"""Claude Code's stream-json output (tests/recordings/) → the result's agent report, log lines
and reason."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from codetask_runner import agent, result
from codetask_runner.agent_stream import Stream, StreamReader
from codetask_runner.capture import Tail
from codetask_runner.process import Finished
from tests.recordings import RECORDED

pytestmark = pytest.mark.unit


def lines(name: str, drop_result: bool = False) -> list[bytes]:
    return [
        json.dumps(m).encode()
        for m in RECORDED[name]
        if not (drop_result and m.get("type") == "result")
    ]


def fold(name: str, drop_result: bool = False) -> tuple[Stream, list[str]]:
    stream = Stream()
    logged = [line for raw in lines(name, drop_result) for line in stream.feed(raw)]
    return stream, logged


# --- the report -------------------------------------------------------------------------------


def test_answer_reports_final_text_turns_usage_and_cost() -> None:
    stream, _ = fold("answer")
    assert stream.answer() == "The answer is 42."
    assert stream.error_text() == ""
    assert stream.report() == {
        "model": "claude-opus-5-5",
        "sessionId": "1e0536b3-a04a-44cf-bf74-cedf84673cd0",
        "turns": 1,
        "toolCalls": 0,
        "deniedToolCalls": 0,
        "deniedTools": [],
        "usage": {
            "inputTokens": 42,
            "outputTokens": 7,
            "cacheReadInputTokens": 0,
            "cacheCreationInputTokens": 0,
        },
        "costUsd": 0.000308,
    }


@pytest.mark.parametrize("name", ["permission_denied", "disallowed"])
def test_a_refused_tool_call_is_reported_once(name: str) -> None:
    """Refused by a permission check (a system message, then permission_denials in the result),
    or asked for a tool the session does not offer (disallowedTools): one denied call each."""
    stream, logged = fold(name)
    report = stream.report()
    assert (report["toolCalls"], report["deniedToolCalls"], report["deniedTools"]) == (
        1,
        1,
        ["Bash"],
    )
    assert report["turns"] == 2
    assert any(line.startswith("agent: tool call Bash denied: ") for line in logged), logged
    assert any(line.startswith("agent: tool result Bash (error): ") for line in logged), logged


def test_max_turns_and_api_errors_keep_the_agents_words() -> None:
    stream, _ = fold("max_turns")
    assert (stream.final or {})["subtype"] == "error_max_turns"
    assert stream.report()["turns"] == 2 and stream.report()["toolCalls"] == 1
    stream, _ = fold("api_error")
    assert stream.error_text() == "Invalid API key · Fix external API key"
    assert stream.answer() == ""  # the CLI's own (synthetic) message is not the model's answer
    assert stream.report()["costUsd"] == 0.0


def test_a_stopped_run_reports_what_its_messages_show() -> None:
    """No result line (deadline, SIGTERM): turns are the model messages seen, usage their sum."""
    stream, _ = fold("permission_denied", drop_result=True)
    report = stream.report()
    assert (report["turns"], report["toolCalls"], report["deniedToolCalls"]) == (2, 1, 1)
    assert report["usage"] == {"inputTokens": 84, "outputTokens": 2}
    assert report["costUsd"] is None
    assert stream.answer().startswith("The tool said: Output redirection")


def test_log_has_one_line_per_message_part() -> None:
    _, logged = fold("answer")
    assert logged == [
        "agent: started: model claude-opus-5-5, permission mode default, 22 tools, "
        "session 1e0536b3-a04a-44cf-bf74-cedf84673cd0",
        "agent: The answer is 42.",
        "agent: finished: success, 1 turns, 0 tool calls (0 denied), 42 input and 7 output "
        "tokens, cost $0.000308",
    ]


def test_every_log_line_carries_the_prefix() -> None:
    text = {"type": "text", "text": "Two lines:\nthe second."}
    result = {"type": "tool_result", "tool_use_id": "t1", "content": "a\nb", "is_error": False}
    stream = Stream()
    said = stream.feed(
        json.dumps({"type": "assistant", "message": {"id": "m1", "content": [text]}}).encode()
    )
    said += stream.feed(
        json.dumps({"type": "user", "message": {"role": "user", "content": [result]}}).encode()
    )
    assert said == ["agent: Two lines:", "agent: the second.", "agent: tool result ? (ok): a b"]


def test_api_retries_are_logged() -> None:
    retry = {
        "type": "system",
        "subtype": "api_retry",
        "attempt": 1,
        "max_retries": 10,
        "retry_delay_ms": 554,
        "error_status": 529,
        "error": "overloaded",
    }
    assert Stream().feed(json.dumps(retry).encode()) == [
        "agent: API error 529 (overloaded): retry 1 of 10 in 554 ms"
    ]


@given(st.lists(st.binary(max_size=200), max_size=20))
def test_any_bytes_are_taken_without_error(chunks: list[bytes]) -> None:
    stream = Stream()
    for chunk in chunks:
        stream.feed(chunk)
    assert stream.report()["turns"] == 0 or stream.final is not None


@pytest.mark.parametrize(
    "line",
    [b"not json", b"[1, 2]", b'{"type": "stream_event"}', b'{"type": "assistant", "message": 3}'],
)
def test_unknown_or_malformed_lines_are_skipped(line: bytes) -> None:
    stream = Stream()
    stream.feed(line)
    for raw in lines("answer"):
        stream.feed(raw)
    assert stream.answer() == "The answer is 42."


# --- reading the stream file ------------------------------------------------------------------


def test_reader_returns_whole_lines_as_the_file_grows(tmp_path: Path) -> None:
    path = tmp_path / "stream.jsonl"
    reader = StreamReader(str(path))
    assert reader.read() == []  # not there yet
    path.write_bytes(b'{"a": 1}\n{"b"')
    assert reader.read() == [b'{"a": 1}']
    with path.open("ab") as file:
        file.write(b': 2}\n{"c": 3}')
    assert reader.read() == [b'{"b": 2}']
    assert reader.read(final=True) == [b'{"c": 3}']


def test_reader_drops_an_over_long_line_and_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(StreamReader, "CHUNK", 8)
    monkeypatch.setattr(StreamReader, "LINE_LIMIT", 16)
    path = tmp_path / "stream.jsonl"
    path.write_bytes(b"x" * 100 + b"\nshort\n")
    assert StreamReader(str(path)).read() == [b"short"]


# --- reason, exit code and output -------------------------------------------------------------


def finished(
    exit_status: int | None = 0,
    stopped: str | None = None,
    sig: int | None = None,
    stderr: bytes = b"",
) -> Finished:
    done = Finished(Tail(1000), Tail(1000), 1_700_000_000.0)
    done.exit_status = exit_status
    done.stopped = stopped
    done.signal = sig
    done.stop_signal = signal.SIGTERM if stopped == "terminated" else None
    done.stderr.feed(stderr)
    done.duration = 2.5
    return done


@pytest.mark.parametrize(
    ("name", "drop_result", "done", "reason", "exit_code"),
    [
        ("answer", False, finished(0), "Completed", 0),
        ("max_turns", False, finished(1), "MaxTurns", 1),
        ("api_error", False, finished(1), "AgentError", 1),
        ("rate_limited", False, finished(1), "AgentUnavailable", 1),
        ("unreachable", False, finished(1), "AgentUnavailable", 1),
        ("answer", True, finished(0), "AgentError", 1),
        ("answer", True, finished(None, sig=signal.SIGSEGV), "AgentError", 139),
        ("answer", False, finished(2), "AgentError", 2),
        ("answer", True, finished(None, "deadline", signal.SIGTERM), "DeadlineExceeded", 124),
        ("answer", True, finished(None, "terminated", signal.SIGTERM), "Terminated", 143),
    ],
    ids=[
        "answer",
        "max-turns",
        "api-error",
        "rate-limited",
        "unreachable",
        "no-result",
        "crashed",
        "exit-after-result",
        "deadline",
        "sigterm",
    ],
)
def test_how_the_agent_ended_names_the_reason(
    name: str, drop_result: bool, done: Finished, reason: str, exit_code: int
) -> None:
    stream, _ = fold(name, drop_result)
    outcome = agent.outcome(stream, done, timeout=10, grace=5, oom_killed=False, output_limit=1000)
    assert (outcome.reason, outcome.exit_code) == (reason, exit_code)
    assert outcome.agent == stream.report()
    assert bool(outcome.message) == (reason != "Completed")


@pytest.mark.parametrize(
    ("api_status", "error", "reason"),
    [
        (429, "API Error: Request rejected (429) · this may be temporary", "AgentUnavailable"),
        (529, "API Error: Repeated 529 Overloaded errors", "AgentUnavailable"),
        (503, "API Error: 503 upstream connect error", "AgentUnavailable"),
        (None, 'API Error: 529 {"error":{"type":"overloaded_error"}}', "AgentUnavailable"),
        (None, 'API Error: 429 {"error":{"type":"rate_limit_error"}}', "AgentUnavailable"),
        (None, "API Error: Connection error.", "AgentUnavailable"),
        (None, "API Error: Unable to connect to API (ConnectionRefused)", "AgentUnavailable"),
        (None, "API Error: Unable to connect to API (ECONNREFUSED)", "AgentUnavailable"),
        (None, "API Error: Unable to connect to API (ETIMEDOUT)", "AgentUnavailable"),
        (None, "API Error: Unable to connect to API (ENOTFOUND)", "AgentUnavailable"),
        (None, "API Error: Request timed out.", "AgentUnavailable"),
        (None, "Unable to connect to API. Check your internet connection", "AgentUnavailable"),
        (401, "Invalid API key · Fix external API key", "AgentError"),
        (400, "API Error: 400 Your credit balance is too low", "AgentError"),
        (403, "API Error: 403 permission_error", "AgentError"),
        (500, "API Error: 500 Internal server error", "AgentError"),
        (401, "API Error: Connection error.", "AgentError"),
        (None, "Unable to connect to API: SSL certificate verification failed.", "AgentError"),
        (None, "Reached maximum number of turns (1)", "AgentError"),
        (None, "", "AgentError"),
    ],
)
def test_only_a_busy_or_unreachable_api_is_agent_unavailable(
    api_status: int | None, error: str, reason: str
) -> None:
    """The HTTP status decides when the API answered; the CLI's wording when it did not."""
    assert agent.error_reason(api_status, error) == reason


def test_output_is_the_answer_and_errors_go_to_stderr_after_the_clis_own() -> None:
    stream, _ = fold("answer")
    ok = agent.outcome(stream, finished(0), timeout=10, grace=5, oom_killed=False, output_limit=99)
    assert (ok.stdout.text(), ok.stderr.text()) == ("The answer is 42.", "")
    stream, _ = fold("api_error")
    failed = agent.outcome(
        stream,
        finished(1, stderr=b"warning"),
        timeout=10,
        grace=5,
        oom_killed=False,
        output_limit=99,
    )
    assert failed.stderr.text() == "warning\nInvalid API key · Fix external API key\n"
    assert failed.message == "the agent reported an error: Invalid API key · Fix external API key"


def test_result_with_the_agent_report_fits_4096_bytes() -> None:
    stream, _ = fold("permission_denied")
    outcome = agent.outcome(
        stream, finished(0), timeout=10, grace=5, oom_killed=False, output_limit=100_000
    )
    outcome.stdout.feed(b"x" * 10_000)
    data = result.encode_fitted(outcome)
    doc: dict[str, Any] = json.loads(data)
    assert len(data) <= result.MAX_BYTES
    assert doc["agent"]["deniedTools"] == ["Bash"]
    assert doc["truncated"]["stdout"] is True
