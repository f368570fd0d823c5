"""Entry point: ``python3 -m codetask_runner`` runs the code described by the environment.

Exits with the result's ``exitCode``. Imports beyond the bare minimum happen after the code has
been started, so they overlap with the code's own start-up instead of delaying it.
"""

from __future__ import annotations

import os
import time

from . import log
from .config import INTERPRETERS, PROGRESS_FILE_NAME, WARM_INBOX, Config
from .oom import oom_kills
from .process import (
    SignalWatch,
    StartError,
    ensure_standard_fds,
    run,
    runs_as_this_python,
    which,
)

CLAIM_WAIT = 10.0
"""How long Redis may refuse the attempt's user before the runner takes it as revoked (seconds):
the operator sets users again within its sweep interval after Redis comes back."""

TYPE_CHECKING = False  # typing costs ~10 ms at start-up; mypy still reads the block below
if TYPE_CHECKING:
    from .heartbeat import Reporter
    from .progress import ProgressFile
    from .result import Outcome


def command(config: Config, path: str) -> list[str]:
    """``INTERPRETER CODEFILE ARGS...``; raises StartError when it cannot work."""
    if config.errors:
        raise StartError("invalid input: " + "; ".join(config.errors))
    interpreter = INTERPRETERS[config.language]
    executable = which(interpreter, path)
    if executable is None:
        raise StartError(
            f"{interpreter} (for language {config.language}) not found on PATH={path}; "
            "the runner image must provide it"
        )
    try:
        os.close(os.open(config.code_file, os.O_RDONLY | os.O_CLOEXEC))
    except OSError as exc:
        raise StartError(f"cannot read the code file {config.code_file}: {exc.strerror}") from None
    return [executable, config.code_file, *config.args]


def child_environment(config: Config, progress_file: str) -> dict[str, str]:
    """The runner's environment, less REDIS_URL, plus CODETASK_PROGRESS_FILE.

    Python runs unbuffered unless PYTHONUNBUFFERED is set, so ``kubectl logs -f`` is live.
    """
    env = dict(os.environ)
    env.pop("REDIS_URL", None)
    env["CODETASK_PROGRESS_FILE"] = progress_file
    if config.language == "python":
        env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class _Session:
    """The optional parts around the run: Redis reporting and progress polling."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.reporter: Reporter | None = None
        self.progress: ProgressFile | None = None
        self.progress_path = os.path.join(config.workdir, PROGRESS_FILE_NAME)
        self.warn = log.Once()
        """The run's one Redis warning, whatever fails first."""
        self.claimed_elsewhere = False
        """Another pod runs this attempt: its keys in Redis are that pod's to write."""

    def prepare(self) -> None:
        """Before the start: create the progress file the code may append to."""
        if self.config.redis_url:
            from .progress import ProgressFile

            self.progress = ProgressFile(self.progress_path)
            self.progress.create()

    def claim(self, watch: SignalWatch) -> None:
        """Before the start: claim the attempt (claim.py). StartError when another pod has it, or
        when Redis refuses the attempt's user for CLAIM_WAIT seconds (revoked: the attempt is
        over), or when stopped while waiting."""
        config = self.config
        if not config.redis_url:
            return
        from .claim import ClaimError, UserRefused, claim

        give_up = time.monotonic() + CLAIM_WAIT
        while True:
            try:
                ours = claim(config.redis_url, f"{config.redis_prefix}:claim", config.pod)
                break
            except UserRefused as exc:
                if watch.stop_signals or time.monotonic() > give_up:
                    raise StartError(
                        f"Redis refused attempt {config.attempt}'s user ({exc}) for "
                        f"{CLAIM_WAIT:.0f}s: revoked, the attempt is over; not run"
                    ) from None
                time.sleep(0.5)
            except ClaimError as exc:
                self.warn(
                    f"warning: Redis unavailable (claim: {exc}); the code runs unclaimed, and "
                    "heartbeats, progress or the result may be missing from Redis"
                )
                return
        if not ours:
            self.claimed_elsewhere = True
            raise StartError(
                f"attempt {config.attempt} was claimed by another pod already; "
                "not run a second time"
            )

    def started(self, pid: int) -> None:
        """Right after the start: begin heartbeats; load what the end will need."""
        from . import result  # noqa: F401  (what the end needs, loaded while the code starts)

        if self.config.redis_url:
            from .heartbeat import Reporter

            self.reporter = Reporter(self.config, self.warn)
            self.reporter.start(pid)

    def tick(self, final: bool) -> None:
        """Forward the latest progress line, if any."""
        if self.progress is not None and self.reporter is not None:
            fields = self.progress.poll(final)
            if fields is not None:
                self.reporter.progress(fields)

    def finish(self, outcome: Outcome) -> None:
        """The full result to Redis (unless another pod has the attempt: its result stays)."""
        if not self.config.redis_url or self.claimed_elsewhere:
            return
        from .heartbeat import Reporter
        from .result import document, encode

        if self.reporter is None:
            self.reporter = Reporter(self.config, self.warn)
        self.reporter.finish(encode(document(outcome)).decode())


def main() -> int:
    """Run the code (or the agent), write the result, return the exit code.

    A warm pod first waits for its task (warm.py): none came, it returns 0 and writes no result.
    """
    ensure_standard_fds()
    watch = SignalWatch()
    warm = WARM_INBOX in os.environ
    problem: str | None = None
    if warm:
        from .warm import take_task

        try:
            if not take_task(watch):
                return 0
        except StartError as exc:
            problem = str(exc)
    config = Config(os.environ, warm=warm)
    session = _Session(config)
    if problem is not None:
        outcome = _start_error(problem, config)
    elif config.mode == "agent":
        from .agent import run_agent

        outcome = run_agent(config, watch, session)
    else:
        outcome = _run_code(config, watch, session)
    from .result import encode_fitted

    try:
        with open(config.result_path, "wb") as file:
            file.write(encode_fitted(outcome))
    except OSError as exc:
        log.say(f"warning: cannot write the result to {config.result_path}: {exc.strerror}")
    session.finish(outcome)
    return outcome.exit_code


def _run_code(config: Config, watch: SignalWatch, session: _Session) -> Outcome:
    ooms_before = oom_kills()
    try:
        argv = command(config, os.environ.get("PATH", os.defpath))
        session.claim(watch)
        session.prepare()
        finished = run(
            argv,
            child_environment(config, session.progress_path),
            workdir=config.workdir,
            stdin_path=config.stdin_file,
            deadline=config.deadline,
            grace=config.grace,
            output_limit=config.output_limit,
            watch=watch,
            on_started=session.started,
            tick=session.tick if session.progress is not None else None,
            fork_python=config.language == "python" and runs_as_this_python(argv[0]),
        )
    except StartError as exc:
        outcome = _start_error(str(exc), config)
    else:
        from .result import from_finished

        ooms_after = oom_kills()
        oom_killed = ooms_before is not None and ooms_after is not None and ooms_after > ooms_before
        outcome = from_finished(
            finished, timeout=config.timeout, grace=config.grace, oom_killed=oom_killed
        )
    return outcome


def _start_error(message: str, config: Config) -> Outcome:
    from .result import start_error

    log.say(message)
    return start_error(message, config.output_limit)


if __name__ == "__main__":
    os._exit(main())  # no interpreter teardown: a Redis thread stuck on a socket cannot hold us
