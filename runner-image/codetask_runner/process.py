"""The code's process: start it in its own process group, stream and capture its output, stop it.

One thread, one ``poll`` loop over the two output pipes and a signal wake-up pipe, so the deadline,
SIGTERM to the runner and the code's exit are all noticed within a loop turn.
"""

from __future__ import annotations

import os
import select
import sys
import time

from . import log
from .capture import Tail

TYPE_CHECKING = False  # typing costs ~10 ms at start-up; mypy still reads the block below
if TYPE_CHECKING:
    import signal as _signal
    from collections.abc import Callable, Mapping
    from types import CodeType, FrameType
else:
    import _signal  # signal.py wraps it in enums: ~2 ms of start-up for names we do not need

TICK_SECONDS = 0.5
"""How often ``tick`` runs while the code runs (progress polling)."""
DRAIN_SECONDS = 0.5
"""After the code's main process exited and its group was killed, how long to wait for EOF on
the pipes: only a process that left the group (``setsid``) can hold them open that long."""
_CHUNK = 65536
_MAX_POLL_MS = 1000
_RESET_SIGNALS = (
    _signal.SIGPIPE,
    _signal.SIGXFSZ,
    _signal.SIGINT,
    _signal.SIGQUIT,
    _signal.SIGTERM,
    _signal.SIGHUP,
)
_STOP_SIGNAL_NAMES: dict[int, str] = {_signal.SIGTERM: "SIGTERM", _signal.SIGINT: "SIGINT"}


class StartError(Exception):
    """The code could not be started; the message says why and what to check."""


class SignalWatch:
    """Catches SIGTERM/SIGINT (stop requests) and SIGCHLD, waking the poll loop through a pipe.

    Created first thing at start-up, so a SIGTERM that arrives early is not lost.
    """

    __slots__ = ("_write_fd", "stop_signals", "wake_fd")

    def __init__(self) -> None:
        self.wake_fd, self._write_fd = os.pipe()
        os.set_blocking(self.wake_fd, False)
        os.set_blocking(self._write_fd, False)
        self.stop_signals: list[int] = []
        _signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        _signal.signal(_signal.SIGTERM, self._on_stop)
        _signal.signal(_signal.SIGINT, self._on_stop)
        _signal.signal(_signal.SIGCHLD, self._on_child)

    @property
    def fds(self) -> tuple[int, int]:
        """The wake-up pipe's two ends."""
        return self.wake_fd, self._write_fd

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop_signals.append(signum)

    def _on_child(self, signum: int, frame: FrameType | None) -> None:
        """Only here so that SIGCHLD writes to the wake-up pipe."""

    def drain(self) -> None:
        """Empty the wake-up pipe."""
        try:
            while os.read(self.wake_fd, 512):
                pass
        except BlockingIOError:
            pass


class Finished:
    """How the code ended, and what it wrote."""

    __slots__ = (
        "duration",
        "exit_status",
        "finished_at",
        "killed",
        "signal",
        "started_at",
        "stderr",
        "stdout",
        "stop_signal",
        "stopped",
    )

    def __init__(self, stdout: Tail, stderr: Tail, started_at: float) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self.started_at = started_at
        """Wall-clock time (epoch seconds) when the code was started."""
        self.finished_at = started_at
        self.duration = 0.0
        self.exit_status: int | None = None
        """Exit status when the code exited by itself."""
        self.signal: int | None = None
        """The signal that ended the code, if one did."""
        self.stopped: str | None = None
        """Why the runner stopped the code: ``"deadline"``, ``"terminated"`` or None."""
        self.stop_signal: int | None = None
        """The signal that asked the runner to stop (SIGTERM or SIGINT)."""
        self.killed = False
        """True when SIGKILL was needed because the grace period ran out."""


def which(name: str, path: str) -> str | None:
    """The executable ``name`` on ``path`` (like ``shutil.which``, without its import cost)."""
    for directory in path.split(os.pathsep):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def ensure_standard_fds() -> None:
    """Open /dev/null on any of fds 0-2 that is closed, so pipes never land there."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def run(
    argv: list[str],
    env: Mapping[str, str],
    *,
    workdir: str,
    stdin_path: str | None,
    deadline: float | None,
    grace: float,
    output_limit: int,
    watch: SignalWatch,
    on_started: Callable[[int], None] | None = None,
    tick: Callable[[bool], None] | None = None,
    fork_python: bool = False,
) -> Finished:
    """Run ``argv`` to the end and return how it ended.

    ``deadline`` is in seconds from the start; ``tick(final)`` runs every ``TICK_SECONDS`` while
    the code runs and once with ``final=True`` after it ended. With ``fork_python`` (``argv`` is
    ``[PYTHON3, CODEFILE, ARGS...]`` and ``runs_as_this_python(PYTHON3)``) a fork of the runner
    runs the code instead of a new interpreter (pychild.py). Raises StartError when the code
    cannot be started.
    """
    fork = watch.fds if fork_python else None
    pid, out_fd, err_fd = _start(argv, env, workdir, stdin_path, fork)
    finished = Finished(Tail(output_limit), Tail(output_limit), time.time())
    started = time.monotonic()
    if on_started is not None:
        on_started(pid)
    _Supervisor(pid, out_fd, err_fd, finished, watch, started, deadline, grace, tick).loop()
    if tick is not None:
        tick(True)
    return finished


def runs_as_this_python(executable: str) -> bool:
    """True when ``executable`` is the interpreter running the runner, and the runner was started
    without interpreter options (``-X``, ``-u``, ``-I``...): a fork of the runner is then that
    interpreter as ``executable CODEFILE`` would start, less its start-up."""
    options = sys.orig_argv[1:2]
    return (
        bool(options)
        and (options[0] in ("-m", "-c") or not options[0].startswith("-"))
        and os.path.dirname(executable) == os.path.dirname(sys.executable)
        and os.path.realpath(executable) == os.path.realpath(sys.executable)
        and None not in (sys.stdin, sys.stdout, sys.stderr)
    )


def _start(
    argv: list[str],
    env: Mapping[str, str],
    workdir: str,
    stdin_path: str | None,
    fork: tuple[int, ...] | None,
) -> tuple[int, int, int]:
    """Start the code; ``fork``: fork a Python child instead, closing these fds of the runner's."""
    try:
        stdin_fd = os.open(stdin_path or os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise StartError(f"cannot open the stdin file {stdin_path}: {exc.strerror}") from None
    try:
        os.chdir(workdir)
    except OSError as exc:
        os.close(stdin_fd)
        raise StartError(f"cannot enter the workdir {workdir}: {exc.strerror}") from None
    code = None
    if fork is not None:
        from . import pychild

        code = pychild.compile_code(argv[1])
    out_fd, out_w = os.pipe()
    err_fd, err_w = os.pipe()
    try:
        if code is not None and fork is not None:
            stdio = (stdin_fd, out_w, err_w)
            pid = _fork_python(code, argv, dict(env), stdio, (*fork, *stdio, out_fd, err_fd))
        else:
            pid = os.posix_spawn(
                argv[0],
                argv,
                env,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, stdin_fd, 0),
                    (os.POSIX_SPAWN_DUP2, out_w, 1),
                    (os.POSIX_SPAWN_DUP2, err_w, 2),
                ],
                setsid=True,
                setsigdef=_RESET_SIGNALS,
            )
    except OSError as exc:
        for fd in (out_fd, err_fd):
            os.close(fd)
        raise StartError(f"cannot start {argv[0]}: {exc.strerror}") from None
    finally:
        for fd in (stdin_fd, out_w, err_w):
            os.close(fd)
    return pid, out_fd, err_fd


def _fork_python(
    code: CodeType,
    argv: list[str],
    env: dict[str, str],
    stdio: tuple[int, int, int],
    runner_fds: tuple[int, ...],
) -> int:
    """Fork; the child does what the spawn does (new session, ``stdio`` on fds 0-2, the runner's
    own descriptors closed as exec closes them), then runs ``code`` in this interpreter
    (pychild.py) and never returns here."""
    import gc

    from . import pychild

    gc.freeze()  # the runner's objects: never the code's garbage, never traversed (nor copied)
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            for target, fd in enumerate(stdio):
                os.dup2(fd, target)
            for fd in runner_fds:
                os.close(fd)
            pychild.run(code, argv, env)
        finally:
            os._exit(127)
    return pid


def _signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _write_all(fd: int, data: bytes) -> bool:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError:
        return False
    return True


class _Supervisor:
    """The poll loop of one run; state that lives only as long as the code does."""

    def __init__(
        self,
        pid: int,
        out_fd: int,
        err_fd: int,
        finished: Finished,
        watch: SignalWatch,
        started: float,
        deadline: float | None,
        grace: float,
        tick: Callable[[bool], None] | None,
    ) -> None:
        self.pid = pid
        self.finished = finished
        self.watch = watch
        self.started = started
        self.grace = grace
        self.tick = tick
        self.tails = {out_fd: finished.stdout, err_fd: finished.stderr}
        self.sinks = {out_fd: 1, err_fd: 2}
        self.poller = select.poll()
        for fd in (out_fd, err_fd, watch.wake_fd):
            self.poller.register(fd, select.POLLIN)
        self.deadline_at = None if deadline is None else started + deadline
        self.kill_at: float | None = None
        self.exited_at: float | None = None
        self.next_tick = started + TICK_SECONDS
        self.signals_seen = 0

    def loop(self) -> None:
        while True:
            self._wait_and_read()
            now = time.monotonic()
            if self.exited_at is None:
                self._handle_stop_requests(now)
                if self.tick is not None and now >= self.next_tick:
                    self.tick(False)
                    self.next_tick = time.monotonic() + TICK_SECONDS
                self._check_children(now)
            if self.exited_at is not None and (
                not self.tails or now >= self.exited_at + DRAIN_SECONDS
            ):
                break
        for fd in self.tails:
            os.close(fd)
        _reap_all()

    def _wait_and_read(self) -> None:
        wake_at = [self.kill_at]
        if self.exited_at is None:
            wake_at += [self.deadline_at if self.finished.stopped is None else None]
            wake_at += [self.next_tick if self.tick is not None else None]
        else:
            wake_at += [self.exited_at + DRAIN_SECONDS]
        times = [t for t in wake_at if t is not None]
        timeout = _MAX_POLL_MS
        if times:
            timeout = min(timeout, max(0, int((min(times) - time.monotonic()) * 1000) + 1))
        for fd, _ in self.poller.poll(timeout):
            if fd == self.watch.wake_fd:
                self.watch.drain()
                continue
            tail = self.tails.get(fd)
            if tail is None:
                continue
            chunk = os.read(fd, _CHUNK)
            if not chunk:
                self.poller.unregister(fd)
                os.close(fd)
                del self.tails[fd]
                continue
            tail.feed(chunk)
            sink = self.sinks.get(fd)
            if sink is not None and not _write_all(sink, chunk):
                del self.sinks[fd]  # our own stdout/stderr is gone: keep capturing
            if sink == 2:
                log.forwarded_stderr(chunk)

    def _handle_stop_requests(self, now: float) -> None:
        finished = self.finished
        requests = self.watch.stop_signals
        if len(requests) > self.signals_seen:
            self.signals_seen = len(requests)
            if finished.stopped is None:
                finished.stopped = "terminated"
                finished.stop_signal = requests[0]
                name = _STOP_SIGNAL_NAMES[requests[0]]
                log.say(f"received {name}: stopping the code (SIGTERM to its process group)")
                self._stop(now)
            elif finished.stopped == "terminated" and self.kill_at is not None:
                log.say("asked again: killing the code's process group now")
                self.kill_at = now
        if finished.stopped is None and self.deadline_at is not None and now >= self.deadline_at:
            finished.stopped = "deadline"
            log.say(
                f"deadline reached after {now - self.started:.1f}s: "
                "stopping the code (SIGTERM to its process group)"
            )
            self._stop(now)
        if self.kill_at is not None and now >= self.kill_at:
            if self.grace > 0:
                log.say(f"grace of {self.grace:g}s over: sending SIGKILL")
            _signal_group(self.pid, _signal.SIGKILL)
            finished.killed = True
            self.kill_at = None

    def _stop(self, now: float) -> None:
        _signal_group(self.pid, _signal.SIGTERM)
        self.kill_at = now + self.grace

    def _check_children(self, now: float) -> None:
        """Notice the main process's exit without reaping it, and reap orphans adopted as PID 1."""
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, flags)
            except ChildProcessError:
                return
            if info is None:
                return
            if info.si_pid != self.pid:
                _reap(info.si_pid)
                continue
            # Still a zombie, so its process group id cannot have been reused: kill the group
            # so background processes the code left behind never keep the pod alive.
            _signal_group(self.pid, _signal.SIGKILL)
            _, status = os.waitpid(self.pid, 0)
            code = os.waitstatus_to_exitcode(status)
            finished = self.finished
            if code < 0:
                finished.signal = -code
            else:
                finished.exit_status = code
            finished.duration = now - self.started
            finished.finished_at = finished.started_at + finished.duration
            self.exited_at = now
            self.kill_at = None
            return


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        return


def _reap_all() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
