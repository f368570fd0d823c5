"""The result document (docs/runner-contract.md, "Output: the result") and its 4096-byte fit.

Encoded here rather than with ``json``: importing ``json`` compiles its regular expressions, a few
milliseconds at every start-up, and the result is written after the code ended, when every
millisecond adds to the task's run time.
"""

from __future__ import annotations

import time

from .capture import Tail
from .config import deadline_margin

TYPE_CHECKING = False  # typing costs ~10 ms at start-up; mypy still reads the block below
if TYPE_CHECKING:
    from .process import Finished

SIGKILL = 9

MAX_BYTES = 4096
"""Kubernetes keeps at most this much of a container's termination message."""
MAX_MESSAGE = 512

EXIT_DEADLINE = 124
EXIT_TERMINATED = 143
EXIT_START_ERROR = 127

COMPLETED = "Completed"
NON_ZERO_EXIT = "NonZeroExit"
DEADLINE_EXCEEDED = "DeadlineExceeded"
TERMINATED = "Terminated"
START_ERROR = "StartError"
OOM_KILLED = "OOMKilled"
MAX_TURNS = "MaxTurns"
AGENT_ERROR = "AgentError"
AGENT_UNAVAILABLE = "AgentUnavailable"


class Outcome:
    """Everything the result says, before it is encoded."""

    __slots__ = (
        "agent",
        "duration",
        "exit_code",
        "finished_at",
        "message",
        "reason",
        "signal",
        "started_at",
        "stderr",
        "stdout",
    )

    def __init__(
        self,
        *,
        reason: str,
        exit_code: int,
        signal: int | None,
        message: str,
        started_at: float,
        finished_at: float,
        duration: float,
        stdout: Tail,
        stderr: Tail,
        agent: dict[str, object] | None = None,
    ) -> None:
        self.reason = reason
        self.exit_code = exit_code
        self.signal = signal
        self.message = message
        self.started_at = started_at
        self.finished_at = finished_at
        self.duration = duration
        self.stdout = stdout
        self.stderr = stderr
        self.agent = agent
        """Agent mode: turns, tool calls, usage, cost (docs/runner-contract.md)."""

    @property
    def succeeded(self) -> bool:
        return self.reason == COMPLETED


def from_finished(
    finished: Finished, *, timeout: float | None, grace: float, oom_killed: bool = False
) -> Outcome:
    """Name how the code ended: reason, exit code and a message for humans.

    `oom_killed`: the container's OOM-kill counter rose while the code ran.
    """
    sig = finished.signal
    killed = f", SIGKILL after the {grace:g}s grace" if finished.killed else ""
    if finished.stopped == "deadline":
        reason, code = DEADLINE_EXCEEDED, EXIT_DEADLINE
        margin = deadline_margin(timeout or 0.0)
        message = (
            f"timeout of {timeout:g}s exceeded (the runner stops the code {margin:g}s early "
            f"so that this result is reported){killed}"
        )
    elif finished.stopped == "terminated":
        reason, code = TERMINATED, EXIT_TERMINATED
        name = _signal_name(finished.stop_signal or 15)
        message = f"the runner received {name} and stopped the code{killed}"
    elif sig == SIGKILL and oom_killed:
        reason, code = OOM_KILLED, 128 + sig
        message = "the code exceeded the memory limit and was killed by the kernel's OOM killer"
    elif sig is not None:
        reason, code = NON_ZERO_EXIT, 128 + sig
        message = f"killed by signal {sig} ({_signal_name(sig)})"
    elif finished.exit_status:
        reason, code = NON_ZERO_EXIT, finished.exit_status
        message = f"exited with code {code}"
    else:
        reason, code, message = COMPLETED, 0, ""
    return Outcome(
        reason=reason,
        exit_code=code,
        signal=sig,
        message=message,
        started_at=finished.started_at,
        finished_at=finished.finished_at,
        duration=finished.duration,
        stdout=finished.stdout,
        stderr=finished.stderr,
    )


def start_error(message: str, output_limit: int) -> Outcome:
    """The outcome when the code never ran."""
    now = time.time()
    return Outcome(
        reason=START_ERROR,
        exit_code=EXIT_START_ERROR,
        signal=None,
        message=message,
        started_at=now,
        finished_at=now,
        duration=0.0,
        stdout=Tail(output_limit),
        stderr=Tail(output_limit),
    )


def document(outcome: Outcome) -> dict[str, object]:
    """The full result, with tails up to the output limit (the Redis copy)."""
    return _document(
        outcome,
        outcome.stdout.text(),
        outcome.stderr.text(),
        outcome.stdout.truncated,
        outcome.stderr.truncated,
    )


def encode(doc: dict[str, object]) -> bytes:
    """Compact UTF-8 JSON: what ``json.dumps(doc, ensure_ascii=False, separators=(",", ":"))``
    gives, for the types a result holds (dict with str keys, list, str, int, float, bool, None)."""
    return _json(doc).encode()


_ESCAPES = {code: f"\\u{code:04x}" for code in range(0x20)} | {
    ord('"'): '\\"',
    ord("\\"): "\\\\",
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
    ord("\b"): "\\b",
    ord("\f"): "\\f",
}
"""JSON's escapes with ``ensure_ascii=False``: quote, backslash and the control characters."""


def _json(value: object) -> str:
    if isinstance(value, str):
        return f'"{value.translate(_ESCAPES)}"'
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        if value != value:
            return "NaN"
        if value in (float("inf"), float("-inf")):
            return "Infinity" if value > 0 else "-Infinity"
        return float.__repr__(value)
    if isinstance(value, dict):
        items = []
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"keys must be str, not {type(key).__name__}")
            items.append(f"{_json(key)}:{_json(item)}")
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_json(item) for item in value) + "]"
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def encode_fitted(outcome: Outcome, limit: int = MAX_BYTES) -> bytes:
    """The result in at most ``limit`` bytes: tails shortened from their start as needed.

    The budget left after the fixed fields is shared fairly: a stream that needs less than half
    keeps all of it and the other stream gets the rest; otherwise each gets half.
    """
    out, err = outcome.stdout.text(), outcome.stderr.text()
    out_cut, err_cut = outcome.stdout.truncated, outcome.stderr.truncated
    fixed = len(encode(_document(outcome, "", "", False, False)))
    budget = max(0, limit - fixed)
    while True:
        out_need, err_need = _cost(out), _cost(err)
        if out_need + err_need > budget:
            half = budget // 2
            if out_need <= half:
                err_budget, out_budget = budget - out_need, out_need
            elif err_need <= half:
                out_budget, err_budget = budget - err_need, err_need
            else:
                out_budget, err_budget = half, budget - half
            fitted_out, fitted_err = _suffix(out, out_budget), _suffix(err, err_budget)
            out_cut = out_cut or len(fitted_out) < len(out)
            err_cut = err_cut or len(fitted_err) < len(err)
            out, err = fitted_out, fitted_err
        data = encode(_document(outcome, out, err, out_cut, err_cut))
        if len(data) <= limit or budget == 0:
            return data
        budget = max(0, budget - (len(data) - limit))  # never expected: a safety net


def _document(
    outcome: Outcome, stdout: str, stderr: str, out_cut: bool, err_cut: bool
) -> dict[str, object]:
    doc: dict[str, object] = {
        "v": 1,
        "exitCode": outcome.exit_code,
        "signal": outcome.signal,
        "reason": outcome.reason,
        "message": outcome.message[:MAX_MESSAGE],
        "startedAt": iso_time(outcome.started_at),
        "finishedAt": iso_time(outcome.finished_at),
        "durationSeconds": round(outcome.duration, 3),
        "stdout": stdout,
        "stderr": stderr,
        "stdoutBytes": outcome.stdout.total,
        "stderrBytes": outcome.stderr.total,
        "truncated": {"stdout": out_cut, "stderr": err_cut},
    }
    if outcome.agent is not None:
        doc["agent"] = outcome.agent
    return doc


def iso_time(epoch: float) -> str:
    """``2026-11-23T12:00:00.050000Z``."""
    micros = int(epoch * 1_000_000)
    seconds, fraction = divmod(micros, 1_000_000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(seconds))}.{fraction:06d}Z"


_SHORT_ESCAPES = frozenset('"\\\n\r\t\b\f')


def _char_cost(char: str) -> int:
    """Bytes ``char`` takes inside a JSON string encoded as by ``encode``."""
    if char in _SHORT_ESCAPES:
        return 2
    code = ord(char)
    if code < 0x20:
        return 6
    return 1 if code < 0x80 else 2 if code < 0x800 else 3 if code < 0x10000 else 4


def _cost(text: str) -> int:
    return len(_json(text).encode()) - 2


def _suffix(text: str, budget: int) -> str:
    """The longest end of ``text`` that fits ``budget`` encoded bytes."""
    used = 0
    start = len(text)
    while start > 0:
        cost = _char_cost(text[start - 1])
        if used + cost > budget:
            break
        used += cost
        start -= 1
    return text[start:]


def _signal_name(number: int) -> str:
    import signal  # only for a message: its enums cost ~2 ms of start-up

    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
