"""Runner settings, read once from the environment (docs/runner-contract.md, "Inputs")."""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing costs ~10 ms at start-up; mypy still reads the block below
if TYPE_CHECKING:
    from collections.abc import Mapping

INTERPRETERS = {"python": "python3", "node": "node", "bash": "bash", "sh": "sh"}
"""Language → interpreter, looked up on PATH and run as ``INTERPRETER CODEFILE ARGS...``."""

MODES = ("code", "agent")
PROGRESS_FILE_NAME = ".codetask-progress"
"""The progress file in the workdir; the code gets its path as CODETASK_PROGRESS_FILE."""
DEFAULT_RESULT_PATH = "/dev/termination-log"
DEFAULT_OUTPUT_LIMIT = 16384
DEFAULT_GRACE = 5.0
DEFAULT_HEARTBEAT_INTERVAL = 10.0
DEFAULT_HEARTBEAT_TTL = 30.0
WARM_INBOX = "CODETASK_WARM_INBOX"
"""Set in a warm pod: the Redis list its task comes from (warm.py)."""


def deadline_margin(timeout: float) -> float:
    """How much earlier than ``timeout`` the runner stops the code: 10 %, within [0.1 s, 1 s].

    Never more than half the timeout, so tiny timeouts still leave the code most of its time.
    """
    return min(1.0, max(0.1, timeout * 0.1), timeout / 2)


def workdir(environ: Mapping[str, str]) -> str:
    """The code's working directory: CODETASK_WORKDIR, else the current one."""
    return os.path.abspath(environ.get("CODETASK_WORKDIR") or os.getcwd())


class Config:
    """Everything the runner reads from its environment; ``errors`` lists what was invalid."""

    __slots__ = (
        "args",
        "attempt",
        "code_file",
        "errors",
        "grace",
        "heartbeat_interval",
        "heartbeat_ttl",
        "language",
        "mode",
        "name",
        "namespace",
        "node",
        "output_limit",
        "pod",
        "redis_prefix",
        "redis_url",
        "result_path",
        "stdin_file",
        "timeout",
        "warm",
        "workdir",
    )

    def __init__(self, environ: Mapping[str, str], *, warm: bool = False) -> None:
        env = environ.get
        self.warm = warm
        """A warm pod's run (warm.py): the result in Redis comes with a `{prefix}:done` notice."""
        self.errors: list[str] = []
        self.namespace = env("CODETASK_NAMESPACE") or "default"
        self.name = env("CODETASK_NAME") or "unnamed"
        self.attempt = int(self._number(environ, "CODETASK_ATTEMPT", 1, minimum=1, integer=True))
        self.pod = env("POD_NAME") or os.uname().nodename
        self.node = env("NODE_NAME") or "unknown"
        self.mode = env("CODETASK_MODE") or "code"  # agent: see agent.py
        self.language = env("CODETASK_LANGUAGE", "")
        code_file = env("CODETASK_CODE_FILE", "")
        if self.mode not in MODES:
            self.errors.append(
                f"CODETASK_MODE: must be one of {', '.join(MODES)}, got {self.mode!r}"
            )
        elif self.mode == "code":
            if self.language not in INTERPRETERS:
                self.errors.append(
                    f"CODETASK_LANGUAGE: must be one of {', '.join(INTERPRETERS)}, "
                    f"got {self.language!r}"
                )
            if not code_file:
                self.errors.append("CODETASK_CODE_FILE: required")
        self.code_file = os.path.abspath(code_file) if code_file else ""
        stdin_file = env("CODETASK_STDIN_FILE")
        self.stdin_file = os.path.abspath(stdin_file) if stdin_file else None
        self.args = self._args(env("CODETASK_ARGS", ""))
        timeout = env("CODETASK_TIMEOUT_SECONDS", "").strip()
        self.timeout: float | None = (
            self._number(environ, "CODETASK_TIMEOUT_SECONDS", 0, minimum=0, exclusive=True)
            if timeout
            else None
        )
        self.output_limit = int(
            self._number(
                environ,
                "CODETASK_OUTPUT_LIMIT_BYTES",
                DEFAULT_OUTPUT_LIMIT,
                minimum=0,
                integer=True,
            )
        )
        self.grace = self._number(environ, "CODETASK_GRACE_SECONDS", DEFAULT_GRACE, minimum=0)
        self.workdir = workdir(environ)
        self.result_path = os.path.abspath(env("CODETASK_RESULT_PATH") or DEFAULT_RESULT_PATH)
        self.redis_url = env("REDIS_URL") or None
        self.redis_prefix = env("CODETASK_REDIS_PREFIX") or f"codetask:{self.namespace}:{self.name}"
        self.heartbeat_interval = self._number(
            environ,
            "CODETASK_HEARTBEAT_INTERVAL",
            DEFAULT_HEARTBEAT_INTERVAL,
            minimum=0,
            exclusive=True,
        )
        self.heartbeat_ttl = self._number(
            environ, "CODETASK_HEARTBEAT_TTL", DEFAULT_HEARTBEAT_TTL, minimum=0, exclusive=True
        )

    @property
    def deadline(self) -> float | None:
        """Seconds after the code starts at which the runner stops it (None: no deadline)."""
        return None if self.timeout is None else self.timeout - deadline_margin(self.timeout)

    def _number(
        self,
        environ: Mapping[str, str],
        key: str,
        default: float,
        *,
        minimum: float,
        exclusive: bool = False,
        integer: bool = False,
    ) -> float:
        raw = environ.get(key, "").strip()
        if not raw:
            return default
        kind = "an integer" if integer else "a number"
        bound = f"> {minimum:g}" if exclusive else f">= {minimum:g}"
        try:
            value = float(int(raw)) if integer else float(raw)
        except ValueError:
            value = float("nan")
        if not (value > minimum or (not exclusive and value == minimum)) or value == float("inf"):
            self.errors.append(f"{key}: must be {kind} {bound}, got {raw!r}")
            return default
        return value

    def _args(self, raw: str) -> tuple[str, ...]:
        if raw.strip() in ("", "[]"):
            return ()
        import json  # only when there are arguments: json costs a few ms at start-up

        try:
            value = json.loads(raw)
        except ValueError as exc:
            self.errors.append(f"CODETASK_ARGS: not valid JSON ({exc})")
            return ()
        if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
            self.errors.append("CODETASK_ARGS: must be a JSON array of strings")
            return ()
        return tuple(value)
