"""Warm pods: a runner started ahead of demand waits for its one task in Redis, then runs it.

The operator creates the pod with ``CODETASK_WARM_INBOX`` (a list key) and ``REDIS_URL`` (the pod's
own Redis user, allowed only ``codetask:warm:<token>:*``); it pushes the task there as JSON:
``{"env": {NAME: VALUE, ...}, "code": str, "stdin": str | null}``, the environment a cold pod's
runner would have been given. The runner applies it (the warm credential gone first: the code may
read the runner's environment) and carries on as a cold runner (__main__.py). With no task within
``CODETASK_WARM_IDLE_SECONDS`` it exits 0 without a result, and the operator replaces the pod.

Waits over claim.py's plain RESP connection: redis-py costs about 100 ms to import.
"""

from __future__ import annotations

import json  # ~1.5 ms: paid while idle, not once the task has come
import os
import time

from . import log
from .config import WARM_INBOX, workdir
from .process import StartError

TYPE_CHECKING = False  # typing costs ~10 ms at start-up; mypy still reads the block below
if TYPE_CHECKING:
    from collections.abc import Mapping, MutableMapping
    from typing import TypeGuard

    from .claim import Connection
    from .process import SignalWatch

WARM_URL = "REDIS_URL"
WARM_IDLE = "CODETASK_WARM_IDLE_SECONDS"
DEFAULT_IDLE = 3600
SLICE = 1
"""Seconds per BLPOP: a stop signal ends the wait within this (the push itself returns at once)."""
LATE_REPLY = 1.0
"""How late Redis may answer a BLPOP turn before its connection is taken as dead (and a payload
it popped meanwhile lost): generous, the wait's only cost is noticing a dead Redis later."""
RETRY_DELAYS = (0.1, 1.0)
"""First and longest pause between connection attempts while Redis is down or refuses the user."""
INPUT_DIR = ".codetask-input"
"""In the workdir: the task's code and stdin files."""
CODE_FILE = "CODETASK_CODE_FILE"
STDIN_FILE = "CODETASK_STDIN_FILE"
RESERVED = frozenset(
    {
        "POD_NAME",
        "NODE_NAME",
        WARM_INBOX,
        "CODETASK_RESULT_PATH",
        "CODETASK_WORKDIR",
        "HOME",
        "TMPDIR",
        CODE_FILE,
        STDIN_FILE,
    }
)
"""Names the payload may not set: the pod's own values stay (the input files are the runner's)."""
SHAPE = 'a JSON object {"env": {NAME: VALUE, ...}, "code": str, "stdin": str | null}'


class Task:
    """One warm pod's task, as the operator pushed it."""

    __slots__ = ("code", "env", "stdin")

    def __init__(self, env: dict[str, str], code: bytes, stdin: bytes | None) -> None:
        self.env = env
        self.code = code
        self.stdin = stdin


def take_task(watch: SignalWatch) -> bool:
    """Wait for this pod's task and apply it to ``os.environ`` and the workdir.

    Returns False, with one line said, when the idle time ended or a stop signal came first.
    Raises StartError when the payload cannot be run."""
    _preload()
    inbox = os.environ.pop(WARM_INBOX)
    url = os.environ.pop(WARM_URL, "")
    idle = _idle_seconds(os.environ.pop(WARM_IDLE, ""))
    _scrub_initial_environment((WARM_INBOX, WARM_URL, WARM_IDLE))
    payload = _receive(url, inbox, idle, watch)
    if payload is None:
        why = f"signal {watch.stop_signals[0]}" if watch.stop_signals else f"{idle}s passed"
        log.say(f"warm pod: {why} before a task came; exiting without a result")
        return False
    task = parse(payload)
    apply_environment(os.environ, task.env)
    os.environ.pop(STDIN_FILE, None)
    os.environ.update(write_inputs(task, workdir(os.environ)))
    return True


def _preload() -> None:
    """Load now, while idle, what the run needs after the task comes: redis-py (about 100 ms,
    which would delay the result's write) and the runner's own modules for the end."""
    import contextlib

    from . import heartbeat, progress, result  # noqa: F401

    with contextlib.suppress(ImportError):
        import redis  # noqa: F401


def parse(payload: str) -> Task:
    """The task in ``payload``; StartError saying what is wrong with it."""
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise StartError(f"warm task payload: not valid JSON ({exc}); expected {SHAPE}") from None
    if not isinstance(doc, dict):
        raise StartError(f"warm task payload: expected {SHAPE}, got {type(doc).__name__}")
    env, code, stdin = doc.get("env"), doc.get("code"), doc.get("stdin")
    if not isinstance(env, dict) or not all(
        _is_text(name) and _is_text(value) for name, value in env.items()
    ):
        raise StartError("warm task payload: env must be an object of strings")
    bad = sorted(name for name, value in env.items() if _bad_variable(name, value))
    if bad:
        raise StartError(
            f"warm task payload: env: not a variable (empty name, '=' or NUL): {', '.join(bad)}"
        )
    if not _is_text(code):
        raise StartError("warm task payload: code must be a string")
    if stdin is not None and not _is_text(stdin):
        raise StartError("warm task payload: stdin must be a string or null")
    return Task(env, code.encode(), None if stdin is None else stdin.encode())


def apply_environment(environ: MutableMapping[str, str], env: Mapping[str, str]) -> None:
    """Set ``env`` in ``environ``, but for the RESERVED names."""
    environ.update((name, value) for name, value in env.items() if name not in RESERVED)


def write_inputs(task: Task, workdir: str) -> dict[str, str]:
    """Write the code (and stdin) as read-only files under ``workdir``; their variables."""
    directory = os.path.join(workdir, INPUT_DIR)
    files = {CODE_FILE: ("code", task.code)}
    if task.stdin is not None:
        files[STDIN_FILE] = ("stdin", task.stdin)
    try:
        os.mkdir(directory, 0o700)
        paths = {name: _write_read_only(directory, *file) for name, file in files.items()}
        os.chmod(directory, 0o555)
    except OSError as exc:
        raise StartError(f"cannot write the task's input to {directory}: {exc.strerror}") from None
    return paths


def _is_text(value: object) -> TypeGuard[str]:
    """A string UTF-8 can carry (JSON can also carry lone surrogates, which it cannot)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _bad_variable(name: str, value: str) -> bool:
    return not name or "=" in name or "\0" in name or "\0" in value


def _write_read_only(directory: str, name: str, data: bytes) -> str:
    path = os.path.join(directory, name)
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444), "wb") as f:
        f.write(data)
    return path


def _idle_seconds(raw: str) -> int:
    """CODETASK_WARM_IDLE_SECONDS, an integer ≥ 1; the default (with a warning) when invalid."""
    if not raw.strip():
        return DEFAULT_IDLE
    try:
        seconds = int(raw)
    except ValueError:
        seconds = 0
    if seconds < 1:
        log.say(f"warning: {WARM_IDLE}: must be an integer >= 1, got {raw!r}; using {DEFAULT_IDLE}")
        return DEFAULT_IDLE
    return seconds


def _receive(url: str, inbox: str, idle: int, watch: SignalWatch) -> str | None:
    """The payload from ``inbox``; None when ``idle`` seconds pass or a stop signal comes first.

    Reconnects while Redis is down or refuses the pod's user (not granted yet), with a short
    backoff and one warning."""
    from .claim import TIMEOUT, ClaimError, Connection

    end = time.monotonic() + idle
    warn = log.Once()
    delay = RETRY_DELAYS[0]
    while not watch.stop_signals and time.monotonic() < end:
        try:
            with Connection(url, TIMEOUT) as redis:
                redis.authenticate()
                delay = RETRY_DELAYS[0]
                return _pop(redis, inbox, end, watch)
        except ClaimError as exc:
            warn(f"warning: warm pod: cannot wait on {inbox} (REDIS_URL: {exc}); retrying")
            time.sleep(max(0.0, min(delay, end - time.monotonic())))
            delay = min(2 * delay, RETRY_DELAYS[1])
    return None


def _pop(redis: Connection, inbox: str, end: float, watch: SignalWatch) -> str | None:
    """BLPOP ``inbox`` in SLICE-second turns until a payload, ``end`` or a stop signal comes.

    A turn is never abandoned: a payload Redis has popped for it is not lost."""
    while not watch.stop_signals and time.monotonic() < end:
        reply = redis.call(["BLPOP", inbox, str(SLICE)], wait=SLICE + LATE_REPLY)
        if isinstance(reply, list):
            return str(reply[-1])
    return None


def _scrub_initial_environment(names: tuple[str, ...]) -> None:
    """Blank ``names`` in the environment block the process started with.

    Unsetting a variable leaves its bytes there, and ``/proc/PID/environ`` shows that block: the
    runner's to the code, its own to a forked Python child (pychild.py). Best effort: a kernel
    that refuses leaves them, with a warning."""
    prefixes = tuple(f"{name}=".encode() for name in names)
    try:
        with open("/proc/self/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        start, end = int(fields[47]), int(fields[48])  # env_start, env_end: fields 50 and 51
        mem = os.open("/proc/self/mem", os.O_RDWR | os.O_CLOEXEC)
        try:
            offset = start
            for entry in os.pread(mem, end - start, start).split(b"\0"):
                if entry.startswith(prefixes):
                    os.pwrite(mem, bytes(len(entry)), offset)
                offset += len(entry) + 1
        finally:
            os.close(mem)
    except (OSError, IndexError, ValueError) as exc:
        log.say(f"warning: warm pod: cannot blank the warm credential in /proc/self/environ: {exc}")
