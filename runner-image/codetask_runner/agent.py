"""Agent mode (``CODETASK_MODE=agent``): the runner drives Claude Code headless on the prompt.

The CLI runs as ``claude -p --output-format stream-json --verbose`` plus the task's agent settings,
with the prompt file as its stdin, in the workdir, under the same process handling as code
(process.py: own process group, deadline, SIGTERM, grace, SIGKILL). Its stdout — the stream of
JSON messages — goes to a file that the runner folds as it grows (agent_stream.py) and logs one
line per message; its stderr is captured like code's. Tool permissions are the CLI's own:
``--allowedTools``, ``--disallowedTools``, ``--permission-mode``.
"""

from __future__ import annotations

import json
import os
import shutil

from . import log
from .agent_stream import Stream, StreamReader
from .capture import Tail
from .oom import oom_kills
from .process import StartError, run, which
from .result import (
    AGENT_ERROR,
    AGENT_UNAVAILABLE,
    COMPLETED,
    DEADLINE_EXCEEDED,
    MAX_TURNS,
    OOM_KILLED,
    TERMINATED,
    Outcome,
    from_finished,
    start_error,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from .__main__ import _Session
    from .config import Config
    from .process import Finished, SignalWatch

CLI = "claude"
STREAM_FILE_NAME = ".codetask-agent-stream.jsonl"
"""The CLI's stdout, in the workdir (the only writable place of a read-only root)."""
PERMISSION_MODES = ("default", "acceptEdits", "plan", "dontAsk", "bypassPermissions")
CLI_DEFAULTS = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_AUTOUPDATER": "1",
}
"""Set for the CLI unless the task sets them: a task pod sends no telemetry and never updates."""
API_KEY = "ANTHROPIC_API_KEY"
_CONFIG_PREFIX = "CODETASK_AGENT_"
UNAVAILABLE_STATUSES = frozenset({429, 503, 529})
"""What the API answers for a while: 429 rate limited, 503 unavailable, 529 overloaded."""
UNAVAILABLE_MARKERS = (
    "rate_limit_error",
    "overloaded_error",
    "connection error",
    "connection refused",
    "connectionrefused",
    "econnrefused",
    "econnreset",
    "etimedout",
    "enotfound",
    "eai_again",
    "request timed out",
    "check your internet connection",
)
"""In the CLI's error text when no HTTP status came (lower case): the API's transient error types,
and how the CLI words a connection that was refused, reset, timed out or found no address."""


class AgentConfig:
    """The agent's settings from the environment; ``errors`` lists what was invalid."""

    __slots__ = (
        "allowed_tools",
        "cli",
        "disallowed_tools",
        "errors",
        "files_dir",
        "max_turns",
        "model",
        "permission_mode",
        "prompt_file",
        "system_prompt",
    )

    def __init__(self, environ: Mapping[str, str]) -> None:
        env = environ.get
        self.errors: list[str] = []
        prompt_file = env("CODETASK_PROMPT_FILE", "")
        if not prompt_file:
            self.errors.append("CODETASK_PROMPT_FILE: required in agent mode")
        self.prompt_file = os.path.abspath(prompt_file) if prompt_file else ""
        provider = env(f"{_CONFIG_PREFIX}PROVIDER") or "claude"
        if provider != "claude":
            self.errors.append(f"{_CONFIG_PREFIX}PROVIDER: must be claude, got {provider!r}")
        self.cli = env(f"{_CONFIG_PREFIX}CLI") or CLI
        self.model = env(f"{_CONFIG_PREFIX}MODEL") or None
        self.system_prompt = env(f"{_CONFIG_PREFIX}SYSTEM_PROMPT") or None
        self.allowed_tools = self._tools(env(f"{_CONFIG_PREFIX}ALLOWED_TOOLS", ""), "ALLOWED")
        self.disallowed_tools = self._tools(
            env(f"{_CONFIG_PREFIX}DISALLOWED_TOOLS", ""), "DISALLOWED"
        )
        self.permission_mode = env(f"{_CONFIG_PREFIX}PERMISSION_MODE") or None
        if self.permission_mode is not None and self.permission_mode not in PERMISSION_MODES:
            self.errors.append(
                f"{_CONFIG_PREFIX}PERMISSION_MODE: must be one of {', '.join(PERMISSION_MODES)}, "
                f"got {self.permission_mode!r}"
            )
        self.max_turns: int | None = None
        raw_turns = env(f"{_CONFIG_PREFIX}MAX_TURNS", "").strip()
        if raw_turns:
            if raw_turns.isdigit() and int(raw_turns) >= 1:
                self.max_turns = int(raw_turns)
            else:
                self.errors.append(
                    f"{_CONFIG_PREFIX}MAX_TURNS: must be an integer >= 1, got {raw_turns!r}"
                )
        self.files_dir = env("CODETASK_INPUT_FILES_DIR") or None
        if not env(API_KEY):
            self.errors.append(
                f"{API_KEY}: empty; the operator sets it from spec.agent.apiKeySecretRef: check "
                "that Secret key's value"
            )

    def _tools(self, raw: str, which_: str) -> list[str]:
        if not raw.strip():
            return []
        try:
            value = json.loads(raw)
        except ValueError as exc:
            self.errors.append(f"{_CONFIG_PREFIX}{which_}_TOOLS: not valid JSON ({exc})")
            return []
        if not isinstance(value, list) or not all(
            isinstance(t, str) and t and not t.startswith("-") for t in value
        ):
            self.errors.append(
                f"{_CONFIG_PREFIX}{which_}_TOOLS: must be a JSON array of tool rules"
            )
            return []
        return value


def command(config: Config, agent: AgentConfig, path: str, stream_path: str) -> list[str]:
    """The CLI's argv, wrapped in ``sh`` so its stdout goes to ``stream_path``.

    ``exec`` replaces the shell: the CLI itself leads the process group the runner signals.
    Raises StartError when the agent cannot start.
    """
    errors = config.errors + agent.errors
    if errors:
        raise StartError("invalid input: " + "; ".join(errors))
    executable = which(agent.cli, path) if "/" not in agent.cli else agent.cli
    if executable is None or not os.access(executable, os.X_OK):
        raise StartError(
            f"{agent.cli} (the Claude Code CLI) not found on PATH={path}; agent tasks need "
            "the agent image (runner-image/agent.Dockerfile)"
        )
    shell = which("sh", path)
    if shell is None:
        raise StartError(f"sh not found on PATH={path}; the agent image must provide it")
    try:
        os.close(os.open(agent.prompt_file, os.O_RDONLY | os.O_CLOEXEC))
    except OSError as exc:
        raise StartError(
            f"cannot read the prompt file {agent.prompt_file}: {exc.strerror}"
        ) from None
    argv = [
        shell,
        "-c",
        'exec "$@" >"$0"',
        stream_path,
        executable,
        "--print",
        "--output-format",
        "stream-json",
        "--verbose",
        "--no-session-persistence",
    ]
    if agent.model:
        argv += ["--model", agent.model]
    if agent.permission_mode:
        argv += ["--permission-mode", agent.permission_mode]
    if agent.max_turns is not None:
        argv += ["--max-turns", str(agent.max_turns)]
    if agent.system_prompt:
        argv += ["--append-system-prompt", agent.system_prompt]
    if agent.allowed_tools:
        argv += ["--allowedTools", *agent.allowed_tools]
    if agent.disallowed_tools:
        argv += ["--disallowedTools", *agent.disallowed_tools]
    return argv


def child_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The runner's environment less REDIS_URL, plus the CLI defaults the task did not set."""
    env = dict(environ)
    env.pop("REDIS_URL", None)
    for key, value in CLI_DEFAULTS.items():
        env.setdefault(key, value)
    return env


def copy_input_files(source: str | None, workdir: str) -> list[str]:
    """Copy the input ConfigMap's files (its mount's top-level keys) into the workdir.

    Copies, so the agent may edit them. Raises StartError when ``source`` is set but has none:
    the ConfigMap is mounted optional, so a missing one shows as an empty directory.
    """
    if source is None:
        return []
    try:
        entries = sorted(e.name for e in os.scandir(source) if not e.name.startswith(".."))
    except OSError:
        entries = []
    copied = []
    for name in entries:
        path = os.path.join(source, name)
        if os.path.isfile(path):
            try:
                shutil.copyfile(path, os.path.join(workdir, name))
            except OSError as exc:
                raise StartError(f"cannot copy the input file {name}: {exc.strerror}") from None
            copied.append(name)
    if not copied:
        raise StartError(
            f"no input files in {source}: the ConfigMap named by spec.agent.inputConfigMap is "
            "missing or empty"
        )
    return copied


def _write_out(data: bytes) -> None:
    """To the runner's stdout (the pod log), whole; a closed stdout is not an error."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(1, view) :]
    except OSError:
        return


class _Follower:
    """The ``tick`` of the run: reads new stream lines, logs them, forwards progress."""

    __slots__ = ("reader", "session", "stream")

    def __init__(self, path: str, session: _Session) -> None:
        self.reader = StreamReader(path)
        self.stream = Stream()
        self.session = session

    def __call__(self, final: bool) -> None:
        before = (self.stream.turns, self.stream.tool_calls)
        lines = []
        for raw in self.reader.read(final):
            lines += self.stream.feed(raw)
        if lines:
            _write_out(("\n".join(lines) + "\n").encode(errors="replace"))
        reporter = self.session.reporter
        if reporter is not None and (self.stream.turns, self.stream.tool_calls) != before:
            reporter.progress(
                {
                    "percent": None,
                    "stage": f"turn {self.stream.turns}",
                    "message": self.stream.activity or None,
                }
            )


def error_reason(api_status: object, error: str) -> str:
    """The reason for an error result: AgentUnavailable if the model API turned the agent away for
    now or could not be reached, else AgentError.

    ``api_status`` is the result's ``api_error_status``; when the API answered, its status alone
    decides. Without one, ``error`` (the agent's error text) decides.
    """
    if isinstance(api_status, int):
        return AGENT_UNAVAILABLE if api_status in UNAVAILABLE_STATUSES else AGENT_ERROR
    text = error.lower()
    return AGENT_UNAVAILABLE if any(m in text for m in UNAVAILABLE_MARKERS) else AGENT_ERROR


def outcome(
    stream: Stream,
    finished: Finished,
    *,
    timeout: float | None,
    grace: float,
    oom_killed: bool,
    output_limit: int,
) -> Outcome:
    """Reason, exit code, message and output of an agent run (runner-image/README.md)."""
    base = from_finished(finished, timeout=timeout, grace=grace, oom_killed=oom_killed)
    status = base.exit_code
    final = stream.final
    error = stream.error_text()
    if base.reason in (DEADLINE_EXCEEDED, TERMINATED, OOM_KILLED):
        reason, code, message = base.reason, status, base.message
    elif final is not None and final.get("subtype") == "error_max_turns":
        reason, code = MAX_TURNS, status or 1
        message = f"the agent used its maxTurns ({stream.turns} turns) without finishing"
    elif final is not None and (final.get("is_error") or final.get("subtype") != "success"):
        reason, code = error_reason(final.get("api_error_status"), error), status or 1
        subtype = final.get("subtype")
        kind = "" if subtype == "success" else f" ({subtype})"
        message = f"the agent reported an error{kind}: {error or 'see stderr'}"
    elif final is not None and status == 0:
        reason, code, message = COMPLETED, 0, ""
    elif final is not None:
        reason, code = AGENT_ERROR, status
        message = f"the agent finished but {base.message}"
    else:
        reason, code = AGENT_ERROR, status or 1
        message = f"the agent ended without a result ({base.message or 'exit 0'}); see stderr"
    stdout = Tail(output_limit)
    stdout.feed(stream.answer().encode())
    stderr = Tail(output_limit)
    stderr.feed(finished.stderr.data)
    stderr.total = finished.stderr.total
    if error:
        separator = b"\n" if stderr.total and not finished.stderr.data.endswith(b"\n") else b""
        stderr.feed(separator + error.encode() + b"\n")
    return Outcome(
        reason=reason,
        exit_code=code,
        signal=base.signal,
        message=message,
        started_at=base.started_at,
        finished_at=base.finished_at,
        duration=base.duration,
        stdout=stdout,
        stderr=stderr,
        agent=stream.report(),
    )


def run_agent(config: Config, watch: SignalWatch, session: _Session) -> Outcome:
    """Run the agent to the end; the outcome to report."""
    agent = AgentConfig(os.environ)
    stream_path = os.path.join(config.workdir, STREAM_FILE_NAME)
    follower = _Follower(stream_path, session)
    ooms_before = oom_kills()
    try:
        argv = command(config, agent, os.environ.get("PATH", os.defpath), stream_path)
        copy_input_files(agent.files_dir, config.workdir)
        try:
            os.close(os.open(stream_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC))
        except OSError as exc:
            raise StartError(f"cannot create {stream_path}: {exc.strerror}") from None
        session.claim(watch)
        finished = run(
            argv,
            child_environment(os.environ),
            workdir=config.workdir,
            stdin_path=agent.prompt_file,
            deadline=config.deadline,
            grace=config.grace,
            output_limit=config.output_limit,
            watch=watch,
            on_started=session.started,
            tick=follower,
        )
    except StartError as exc:
        log.say(str(exc))
        return start_error(str(exc), config.output_limit)
    ooms_after = oom_kills()
    return outcome(
        follower.stream,
        finished,
        timeout=config.timeout,
        grace=config.grace,
        oom_killed=ooms_before is not None and ooms_after is not None and ooms_after > ooms_before,
        output_limit=config.output_limit,
    )
