"""The runner as a real process: the image's entry point with the contract's environment.

Each test starts the runner like the pod does (env in, result file and exit code out), with a
temp dir as workdir and a temp file as CODETASK_RESULT_PATH. Redis tests use a real redis-server.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from codetask_operator import redis_access
from tests.local_redis import RedisServer, free_port, start_redis, stop_redis

pytestmark = pytest.mark.unit

RUNNER_SOURCE = Path(__file__).resolve().parents[2] / "runner-image"
ENTRY = RUNNER_SOURCE / "bin/codetask-runner"
RESULT_LIMIT = 4096


@dataclass
class Run:
    """What one runner process did."""

    exit_code: int
    result: dict[str, Any]
    result_bytes: bytes
    stdout: str
    stderr: str
    seconds: float

    @property
    def runner_lines(self) -> list[str]:
        """The runner's own messages on its stderr."""
        return [line for line in self.stderr.splitlines() if line.startswith("codetask-runner:")]


class Runner:
    """One runner process, started the way the pod starts it."""

    def __init__(
        self,
        tmp_path: Path,
        code: str | bytes,
        language: str = "python",
        *,
        options: tuple[str, ...] = (),
        **env: str,
    ) -> None:
        self.dir = tmp_path
        self.options = options  # the runner's own interpreter options (python -u -m ...)
        self.workdir = tmp_path / "work"
        self.workdir.mkdir(exist_ok=True)
        code_file = tmp_path / "code"  # no extension, like /codetask/input/code
        code_file.write_bytes(code.encode() if isinstance(code, str) else code)
        self.result_path = tmp_path / "result.json"
        self.out_path = tmp_path / "runner.out"
        self.err_path = tmp_path / "runner.err"
        python_bin = os.path.dirname(sys.executable)
        self.env = {
            "PATH": f"{python_bin}:/usr/local/bin:/usr/bin:/bin",
            "PYTHONPATH": str(RUNNER_SOURCE),
            "LANG": "C.UTF-8",
            "HOME": str(self.workdir),
            "TMPDIR": str(self.workdir),
            "CODETASK_NAMESPACE": "tests",
            "CODETASK_NAME": "task",
            "CODETASK_ATTEMPT": "1",
            "POD_NAME": "task-pod",
            "NODE_NAME": "node-a",
            "CODETASK_LANGUAGE": language,
            "CODETASK_CODE_FILE": str(code_file),
            "CODETASK_ARGS": "[]",
            "CODETASK_TIMEOUT_SECONDS": "30",
            "CODETASK_OUTPUT_LIMIT_BYTES": "16384",
            "CODETASK_GRACE_SECONDS": "5",
            "CODETASK_WORKDIR": str(self.workdir),
            "CODETASK_RESULT_PATH": str(self.result_path),
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> Runner:
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.started = time.monotonic()
            self.process = subprocess.Popen(
                [sys.executable, *self.options, str(ENTRY)],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=self.dir,
            )
        return self

    def output(self) -> str:
        """The runner's stdout so far (the code's stdout, forwarded live)."""
        return self.out_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            assert time.monotonic() < deadline, f"runner never printed {text!r}"
            time.sleep(0.02)

    def wait(self, timeout: float = 30.0) -> Run:
        assert self.process is not None
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail(f"runner still running after {timeout}s")
        seconds = time.monotonic() - self.started
        data = self.result_path.read_bytes() if self.result_path.exists() else b""
        return Run(
            exit_code=self.process.returncode,
            result=json.loads(data) if data else {},
            result_bytes=data,
            stdout=self.output(),
            stderr=self.err_path.read_text(errors="replace"),
            seconds=seconds,
        )

    def run(self, timeout: float = 30.0) -> Run:
        return self.start().wait(timeout)

    def peak_rss_kb(self) -> int:
        """The runner's peak resident memory so far (VmHWM: its own, since its exec)."""
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(
            next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]
        )


def run(tmp_path: Path, code: str | bytes, language: str = "python", **env: str) -> Run:
    return Runner(tmp_path, code, language, **env).run()


def process_gone(pid: int, timeout: float = 3.0) -> bool:
    """True once ``pid`` no longer runs (gone, or a zombie waiting for init)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return True
        time.sleep(0.02)
    return False


def read_pid(path: Path, timeout: float = 5.0) -> int:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < deadline, f"{path} never written"
        time.sleep(0.02)
    return int(path.read_text().strip())


# --- the code and how it ended ---------------------------------------------------------------

LANGUAGE_CASES = [
    pytest.param("python", "import sys\nprint(2 + 2)\n", id="python"),
    pytest.param("bash", 'declare -a a=(4); echo "${a[0]}"\n', id="bash"),
    pytest.param("sh", "echo $((2 + 2))\n", id="sh"),
    pytest.param(
        "node",
        "console.log(2 + 2)\n",
        id="node",
        marks=pytest.mark.skipif(shutil.which("node") is None, reason="node not on PATH"),
    ),
]


@pytest.mark.parametrize(("language", "code"), LANGUAGE_CASES)
def test_each_language_runs_to_completed_with_its_stdout(
    tmp_path: Path, language: str, code: str
) -> None:
    result = run(tmp_path, code, language)

    assert result.exit_code == 0, result.stderr
    assert result.result["v"] == 1
    assert result.result["reason"] == "Completed"
    assert result.result["exitCode"] == 0
    assert result.result["signal"] is None
    assert result.result["message"] == ""
    assert result.result["stdout"] == "4\n"
    assert result.result["stdoutBytes"] == 2
    assert result.result["truncated"] == {"stdout": False, "stderr": False}
    assert result.stdout == "4\n"  # streamed through to the runner's own stdout
    assert result.runner_lines == []
    assert result.result["durationSeconds"] >= 0
    assert result.result["startedAt"].endswith("Z") and result.result["finishedAt"].endswith("Z")


def test_exit_3_reports_nonzero_exit_with_exit_code_3(tmp_path: Path) -> None:
    result = run(tmp_path, "echo before; exit 3\n", "bash")

    assert result.exit_code == 3
    assert result.result["reason"] == "NonZeroExit"
    assert result.result["exitCode"] == 3
    assert result.result["signal"] is None
    assert result.result["stdout"] == "before\n"
    assert "3" in result.result["message"]


def test_code_killed_by_signal_reports_the_signal_and_exit_128_plus_n(tmp_path: Path) -> None:
    result = run(tmp_path, "kill -KILL $$\n", "bash")

    assert result.result["reason"] == "NonZeroExit"
    assert result.result["signal"] == 9
    assert result.result["exitCode"] == 137
    assert result.exit_code == 137


def test_stderr_only_output_stays_in_stderr_and_leaves_stdout_empty(tmp_path: Path) -> None:
    code = "import sys\nsys.stderr.write('only on stderr\\n')\n"
    result = run(tmp_path, code)

    assert result.result["stdout"] == ""
    assert result.result["stdoutBytes"] == 0
    assert result.result["stderr"] == "only on stderr\n"
    assert result.result["stderrBytes"] == len("only on stderr\n")
    assert result.stdout == ""
    assert "only on stderr" in result.stderr


def test_stdin_file_and_args_reach_the_code(tmp_path: Path) -> None:
    stdin = tmp_path / "stdin"
    stdin.write_text("line one\nline two\n")
    code = "import sys\nprint(sys.argv[1:])\nprint(sys.stdin.read().splitlines())\n"
    result = run(
        tmp_path,
        code,
        CODETASK_STDIN_FILE=str(stdin),
        CODETASK_ARGS=json.dumps(["--flag", "two words", "ünï"]),
    )

    assert result.result["reason"] == "Completed", result.stderr
    assert result.result["stdout"] == ("['--flag', 'two words', 'ünï']\n['line one', 'line two']\n")


def test_without_stdin_file_the_code_reads_empty_stdin(tmp_path: Path) -> None:
    result = run(tmp_path, "import sys\nprint(repr(sys.stdin.read()))\n")

    assert result.result["stdout"] == "''\n"


def test_code_runs_in_workdir_with_progress_file_and_without_redis_url(tmp_path: Path) -> None:
    code = (
        "import os\n"
        "print(os.getcwd())\n"
        "print(os.environ['CODETASK_PROGRESS_FILE'])\n"
        "print(os.environ.get('REDIS_URL'))\n"
    )
    result = run(tmp_path, code, REDIS_URL="redis://127.0.0.1:1/0")
    cwd, progress_file, redis_url = result.result["stdout"].splitlines()

    workdir = tmp_path / "work"
    assert Path(cwd) == workdir
    assert Path(progress_file).parent == workdir
    assert redis_url == "None"


# --- output capture ---------------------------------------------------------------------------


# The code waits for the test to look at the runner's memory before it exits.
HOLD = 'while [ ! -e "$CODETASK_WORKDIR/go" ]; do sleep 0.01; done\n'


def _peak_rss_once_streamed(runner: Runner, size: int) -> int:
    deadline = time.monotonic() + 10
    while runner.out_path.stat().st_size < size:
        assert time.monotonic() < deadline, "output never fully streamed"
        time.sleep(0.01)
    peak = runner.peak_rss_kb()
    (runner.workdir / "go").touch()
    return peak


def test_ten_megabytes_of_output_keep_the_tail_flag_truncation_and_bounded_memory(
    tmp_path: Path,
) -> None:
    (tmp_path / "small").mkdir()
    small = Runner(tmp_path / "small", f"echo hi\n{HOLD}", "bash").start()
    baseline_kb = _peak_rss_once_streamed(small, 3)
    small.wait()
    (tmp_path / "big").mkdir()
    size = 10 * 1024 * 1024
    code = f"head -c {size} /dev/zero | tr '\\0' x\nprintf END\n{HOLD}"
    runner = Runner(tmp_path / "big", code, "bash").start()
    peak_kb = _peak_rss_once_streamed(runner, size + 3)
    big = runner.wait()

    assert peak_kb < 60 * 1024
    assert peak_kb - baseline_kb < 4 * 1024, (baseline_kb, peak_kb)
    assert big.result["reason"] == "Completed", big.stderr
    assert big.result["stdoutBytes"] == size + 3
    assert big.result["truncated"]["stdout"] is True
    assert big.result["stdout"].endswith("xxxEND")
    assert len(big.result_bytes) <= RESULT_LIMIT
    assert len(big.stdout) == size + 3  # all of it was streamed through


def test_invalid_utf8_is_replaced_and_crashes_nothing(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "sys.stdout.buffer.write(b'ok \\xff\\xfe bad \\xc3\\x28 end\\n')\n"
        "sys.stderr.buffer.write(b'\\x00\\x01\\x80 binary\\n')\n"
    )
    result = run(tmp_path, code)

    assert result.result["reason"] == "Completed", result.stderr
    assert result.result["stdout"] == "ok \ufffd\ufffd bad \ufffd( end\n"
    assert result.result["stderr"] == "\x00\x01\ufffd binary\n"
    assert result.result["stdoutBytes"] == len(b"ok \xff\xfe bad \xc3\x28 end\n")


def test_tail_cut_inside_a_multibyte_character_leaves_no_garbage(tmp_path: Path) -> None:
    # 3-byte characters, limit 1000: the kept 1000 bytes start inside a character
    code = "print('€' * 2000, end='')\n"
    result = run(tmp_path, code, CODETASK_OUTPUT_LIMIT_BYTES="1000")

    assert result.result["truncated"]["stdout"] is True
    assert set(result.result["stdout"]) == {"€"}


def test_huge_output_on_both_streams_keeps_the_result_within_4096_bytes(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "for i in range(20000):\n"
        "    print(f'out {i} \"quoted\" \\\\ tab\\t €', flush=False)\n"
        "    print(f'err {i} \\x01 ünïcödé', file=sys.stderr)\n"
        "print('LAST-OUT')\n"
        "print('LAST-ERR', file=sys.stderr)\n"
    )
    result = run(tmp_path, code, CODETASK_OUTPUT_LIMIT_BYTES="100000")

    assert len(result.result_bytes) <= RESULT_LIMIT
    assert len(result.result_bytes) > RESULT_LIMIT - 200  # the budget is used, not wasted
    doc = result.result
    assert doc["truncated"] == {"stdout": True, "stderr": True}
    assert doc["stdout"].endswith("LAST-OUT\n")
    assert doc["stderr"].endswith("LAST-ERR\n")
    # shared fairly: neither stream is starved
    assert len(doc["stdout"]) > 1000
    assert len(doc["stderr"]) > 1000


def test_small_stderr_is_kept_whole_when_stdout_is_huge(tmp_path: Path) -> None:
    code = "import sys\nprint('x' * 100000)\nprint('the error', file=sys.stderr)\n"
    result = run(tmp_path, code)

    assert result.result["stderr"] == "the error\n"
    assert result.result["truncated"] == {"stdout": True, "stderr": False}
    assert len(result.result_bytes) <= RESULT_LIMIT


# --- process group, deadline, signals ---------------------------------------------------------


def test_background_child_dies_with_the_group_after_a_normal_exit(tmp_path: Path) -> None:
    code = 'sleep 1000 &\necho $! > "$CODETASK_WORKDIR/bg.pid"\necho done\n'
    result = run(tmp_path, code, "bash")

    assert result.result["reason"] == "Completed"
    assert result.seconds < 5
    assert process_gone(read_pid(tmp_path / "work" / "bg.pid"))


def test_deadline_stops_a_busy_loop_within_two_seconds_with_exit_124(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        "print('spinning', flush=True)\nwhile True:\n    pass\n",
        CODETASK_TIMEOUT_SECONDS="2",
    )

    assert result.exit_code == 124
    assert result.result["reason"] == "DeadlineExceeded"
    assert result.result["exitCode"] == 124
    assert result.result["signal"] == signal.SIGTERM
    assert 1.5 <= result.result["durationSeconds"] < 2.0
    assert result.seconds < 2.5
    assert result.result["stdout"] == "spinning\n"
    # the runner says why, on its stderr only: never inside the code's captured stderr
    assert any("deadline" in line for line in result.runner_lines)
    assert "codetask-runner" not in result.result["stderr"]


def test_deadline_sends_sigkill_after_grace_when_the_code_ignores_sigterm(tmp_path: Path) -> None:
    code = "trap '' TERM\nwhile :; do sleep 0.05; done\n"
    result = run(tmp_path, code, "bash", CODETASK_TIMEOUT_SECONDS="1", CODETASK_GRACE_SECONDS="0.5")

    assert result.result["reason"] == "DeadlineExceeded"
    assert result.exit_code == 124
    assert result.result["signal"] == signal.SIGKILL
    assert "SIGKILL" in result.result["message"]
    assert result.seconds < 2.5


def test_sigterm_mid_run_reports_terminated_writes_result_and_kills_the_group(
    tmp_path: Path,
) -> None:
    code = 'sleep 1000 &\necho $! > "$CODETASK_WORKDIR/bg.pid"\necho started\nwait\n'
    runner = Runner(tmp_path, code, "bash").start()
    runner.wait_for_output("started")  # also proves the output is streamed live
    background = read_pid(tmp_path / "work" / "bg.pid")
    assert runner.process is not None
    sent = time.monotonic()
    runner.process.send_signal(signal.SIGTERM)
    result = runner.wait()

    assert time.monotonic() - sent < 1.5
    assert result.exit_code == 143
    assert result.result["reason"] == "Terminated"
    assert result.result["exitCode"] == 143
    assert result.result["stdout"] == "started\n"
    assert process_gone(background)


def test_sigint_is_handled_like_sigterm(tmp_path: Path) -> None:
    runner = Runner(tmp_path, "echo started\nsleep 1000\n", "bash").start()
    runner.wait_for_output("started")
    assert runner.process is not None
    runner.process.send_signal(signal.SIGINT)
    result = runner.wait()

    assert result.result["reason"] == "Terminated"
    assert result.exit_code == 143
    assert "SIGINT" in result.result["message"]


def test_sigterm_ignored_by_the_code_is_followed_by_sigkill_after_grace(tmp_path: Path) -> None:
    code = "trap '' TERM\necho started\nwhile :; do sleep 0.05; done\n"
    runner = Runner(tmp_path, code, "bash", CODETASK_GRACE_SECONDS="0.5").start()
    runner.wait_for_output("started")
    assert runner.process is not None
    runner.process.send_signal(signal.SIGTERM)
    result = runner.wait()

    assert result.result["reason"] == "Terminated"
    assert result.result["signal"] == signal.SIGKILL
    assert result.result["durationSeconds"] >= 0.4
    assert result.exit_code == 143


# --- python: run in a fork of the runner, as python3 spawned would run it -----------------------

# A runner started with interpreter options spawns python3 (the fork would carry the options);
# -u changes nothing the code sees (its environment has PYTHONUNBUFFERED=1 either way).
SPAWN = ("-u",)
ARGS = json.dumps(["--flag", "two words"])
ADDRESS = re.compile("0x[0-9a-f]+")  # object addresses in reprs differ from run to run
WHICH_PATH = "print(open('/proc/self/cmdline', 'rb').read().split(b'\\0')[1:-1])\n"

SAME_AS_PYTHON3 = [
    pytest.param(
        "import __main__, sys\n"
        "print(__main__.__file__ if hasattr(__main__, '__file__') else None)\n"
        "print(sys.argv, sys.orig_argv[1:], __name__, __main__ is sys.modules['__main__'])\n"
        "print(list(globals()))\n"
        "print(type(__loader__).__name__, __loader__.name, __loader__.path)\n"
        "print(__spec__, __package__, __cached__, __doc__, __annotations__)\n"
        "print(sys.path[0] == __import__('os').path.dirname(__file__))\n"
        "print([m for m in sys.modules if m.startswith('codetask_runner')])\n",
        {"CODETASK_ARGS": ARGS},
        id="main-module-argv-path",
    ),
    pytest.param(
        "def f(x: int) -> 'str': pass\nprint(f.__annotations__)\n",
        {},
        id="no-future-flags-of-the-runner",
    ),
    pytest.param(
        "def inner():\n    return 1 / 0\n\ndef outer():\n    inner()\n\nprint('before')\nouter()\n",
        {},
        id="traceback",
    ),
    pytest.param(
        "try:\n    {}['k']\nexcept KeyError as e:\n    raise ValueError('bad') from e\n",
        {},
        id="chained-traceback",
    ),
    pytest.param("import sys\nprint('x')\nsys.exit(3)\n", {}, id="sys-exit-3"),
    pytest.param("exit()\n", {}, id="exit"),
    pytest.param("quit(4)\n", {}, id="quit-4"),
    pytest.param("raise SystemExit('msg')\n", {}, id="systemexit-message"),
    pytest.param("import sys\nsys.exit(263)\n", {}, id="sys-exit-263"),
    pytest.param("import sys\nsys.exit(-1)\n", {}, id="sys-exit-minus-1"),
    pytest.param("import sys\nsys.exit(2 ** 70)\n", {}, id="sys-exit-huge"),
    pytest.param("import sys\nsys.exit(True)\n", {}, id="sys-exit-true"),
    pytest.param("print('a')\nraise KeyboardInterrupt\n", {}, id="keyboardinterrupt"),
    pytest.param("import os\nos._exit(7)\n", {}, id="os-exit"),
    pytest.param("import os\nprint('x', flush=True)\nos.kill(os.getpid(), 9)\n", {}, id="killed"),
    pytest.param(
        "import sys\n"
        "def hook(kind, value, tb):\n"
        "    print('hooked', kind.__name__, tb.tb_frame.f_code.co_name, tb.tb_next)\n"
        "sys.excepthook = hook\n"
        "raise RuntimeError('x')\n",
        {},
        id="excepthook",
    ),
    pytest.param(
        "import threading, time\n"
        "def late():\n    time.sleep(0.3)\n    print('late thread done', flush=True)\n"
        "def forever():\n    time.sleep(1000)\n"
        "threading.Thread(target=late).start()\n"
        "threading.Thread(target=forever, daemon=True).start()\n"
        "print('main done')\n",
        {},
        id="threads-left-running",
    ),
    pytest.param(
        "import os, sys\n"
        "pid = os.fork()\n"
        "if pid == 0:\n    print('in the fork', flush=True)\n    sys.exit(5)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "print('fork exited', os.waitstatus_to_exitcode(status))\n",
        {},
        id="os-fork",
    ),
    pytest.param(
        "import sys\nprint(repr(sys.stdin.read()))\ninput()\n",
        {},
        id="stdin-empty-then-eof",
    ),
    pytest.param(
        "import atexit, __main__\n"
        "atexit.register(lambda: print('atexit', hasattr(__main__, '__file__')))\n"
        "atexit.register(lambda: 1 / 0)\n"
        "class A:\n    def __del__(self):\n        print('del at exit')\n"
        "a = A()\n"
        "f = open('unclosed.txt', 'w')\n"
        "f.write('flushed at exit')\n",
        {},
        id="atexit-del-and-module-teardown",
    ),
    pytest.param(
        "import atexit, __main__, sys\n"
        "atexit.register(lambda: print('atexit', hasattr(__main__, '__file__')))\n"
        "sys.exit(0)\n",
        {},
        id="atexit-after-sys-exit",
    ),
    pytest.param(
        "import os, signal, sys\n"
        "print([str(signal.getsignal(s)) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE,"
        " signal.SIGXFSZ, signal.SIGCHLD, signal.SIGHUP, signal.SIGQUIT)])\n"
        "print(signal.set_wakeup_fd(-1), sorted(os.listdir('/proc/self/fd')))\n"
        "print(os.getsid(0) == os.getpid())\n"
        "print(list(os.environ) == list(os.environb), 'REDIS_URL' in os.environ)\n"
        "print([k for k in os.environ if k.startswith(('CODETASK_PROGRESS', 'PYTHONUNBUF'))])\n"
        "for s in (sys.stdin, sys.stdout, sys.stderr):\n"
        "    print(s, s.line_buffering, s.write_through, s.errors, type(s.buffer).__name__)\n"
        "print(sys.stdout is sys.__stdout__, sys.stdin is sys.__stdin__)\n",
        {"REDIS_URL": "redis://127.0.0.1:1/0"},
        id="signals-fds-environ-streams",
    ),
    pytest.param(
        "import sys\n"
        "for s in (sys.stdin, sys.stdout, sys.stderr):\n"
        "    print(s, s.line_buffering, s.write_through, type(s.buffer).__name__)\n",
        {"PYTHONUNBUFFERED": ""},
        id="buffered-streams",
    ),
    pytest.param("print(1 is 1)\n", {}, id="compile-time-warning"),
    pytest.param("print('x'\n", {}, id="syntax-error"),
    pytest.param(b"\xef\xbb\xbfprint('bom')\n", {}, id="utf8-bom"),
    pytest.param(b"# -*- coding: latin-1 -*-\nprint('\xe9')\n", {}, id="coding-cookie"),
    pytest.param(b"print('\xff')\n", {}, id="invalid-utf8"),
    pytest.param(
        "import warnings\nwarnings.warn('careful')\nprint('after')\n", {}, id="runtime-warning"
    ),
]


@pytest.mark.parametrize(("code", "env"), SAME_AS_PYTHON3)
def test_python_in_a_fork_of_the_runner_ends_as_python3_spawned(
    tmp_path: Path, code: str | bytes, env: dict[str, str]
) -> None:
    forked = run(tmp_path, code, **env)
    forked_file = _read_and_remove(tmp_path / "work" / "unclosed.txt")
    spawned = Runner(tmp_path, code, options=SPAWN, **env).run()
    spawned_file = _read_and_remove(tmp_path / "work" / "unclosed.txt")

    def seen(r: Run) -> tuple[object, ...]:
        doc = r.result
        out, err = (ADDRESS.sub("0x?", doc[k]) for k in ("stdout", "stderr"))
        return (r.exit_code, doc["reason"], doc["signal"], out, err)

    assert seen(forked) == seen(spawned)
    assert forked_file == spawned_file
    assert forked.runner_lines == spawned.runner_lines


def _read_and_remove(path: Path) -> str | None:
    if not path.exists():
        return None
    text = path.read_text()
    path.unlink()
    return text


def test_python_runs_in_a_fork_of_the_runner_unless_the_runner_has_interpreter_options(
    tmp_path: Path,
) -> None:
    code_file = str(tmp_path / "code")
    forked = run(tmp_path, WHICH_PATH)
    spawned = Runner(tmp_path, WHICH_PATH, options=SPAWN).run()
    spawned_x = Runner(tmp_path, WHICH_PATH, options=("-X", "importtime")).run()

    assert forked.result["stdout"] == f"[{bytes(ENTRY)!r}]\n"  # the runner's command line
    assert spawned.result["stdout"] == f"[{code_file.encode()!r}]\n"
    assert spawned_x.result["stdout"] == spawned.result["stdout"]
    assert "import time" not in spawned_x.result["stderr"]  # the option did not reach the code


def test_python_on_path_that_is_not_the_runners_interpreter_is_spawned(tmp_path: Path) -> None:
    other = tmp_path / "bin"
    other.mkdir()
    (other / "python3").symlink_to(sys.executable)
    result = run(tmp_path, WHICH_PATH, PATH=f"{other}:/usr/bin:/bin")

    assert result.result["stdout"] == f"[{str(tmp_path / 'code').encode()!r}]\n"


def test_forked_python_is_stopped_with_its_group_at_the_deadline(tmp_path: Path) -> None:
    code = (
        "import os, signal, subprocess, time\n"
        "child = subprocess.Popen(['sleep', '1000'])\n"
        "open(os.environ['CODETASK_WORKDIR'] + '/bg.pid', 'w').write(str(child.pid))\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('started', flush=True)\n"
        "while True:\n    time.sleep(0.05)\n"
    )
    result = run(tmp_path, code, CODETASK_TIMEOUT_SECONDS="1", CODETASK_GRACE_SECONDS="0.3")

    assert result.result["reason"] == "DeadlineExceeded"
    assert result.result["signal"] == signal.SIGKILL
    assert result.result["stdout"] == "started\n"
    assert process_gone(read_pid(tmp_path / "work" / "bg.pid"))


def test_sigterm_to_the_runner_stops_forked_python_and_reports_terminated(tmp_path: Path) -> None:
    runner = Runner(tmp_path, "import time\nprint('started', flush=True)\ntime.sleep(1000)\n")
    runner.start().wait_for_output("started")
    assert runner.process is not None
    runner.process.send_signal(signal.SIGTERM)
    result = runner.wait()

    assert result.exit_code == 143
    assert result.result["reason"] == "Terminated"
    assert result.result["signal"] == signal.SIGTERM


# --- start errors -----------------------------------------------------------------------------


def test_missing_interpreter_reports_start_error_with_exit_127(tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    result = run(tmp_path, "print(1)\n", "python", PATH=str(empty))

    assert result.exit_code == 127
    assert result.result["reason"] == "StartError"
    assert result.result["exitCode"] == 127
    assert "python3" in result.result["message"] and "not found" in result.result["message"]
    assert len(result.runner_lines) == 1


def test_unreadable_code_file_reports_start_error(tmp_path: Path) -> None:
    result = run(tmp_path, "", CODETASK_CODE_FILE=str(tmp_path / "no-such-file"))

    assert result.exit_code == 127
    assert result.result["reason"] == "StartError"
    assert "no-such-file" in result.result["message"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CODETASK_LANGUAGE", "cobol"),
        ("CODETASK_ARGS", "not json"),
        ("CODETASK_ARGS", '{"a": 1}'),
        ("CODETASK_TIMEOUT_SECONDS", "soon"),
        ("CODETASK_OUTPUT_LIMIT_BYTES", "-1"),
    ],
)
def test_invalid_input_reports_start_error_naming_the_variable(
    tmp_path: Path, variable: str, value: str
) -> None:
    result = run(tmp_path, "print(1)\n", **{variable: value})

    assert result.exit_code == 127
    assert result.result["reason"] == "StartError"
    assert variable in result.result["message"]


def test_missing_stdin_file_reports_start_error(tmp_path: Path) -> None:
    result = run(tmp_path, "print(1)\n", CODETASK_STDIN_FILE=str(tmp_path / "nope"))

    assert result.result["reason"] == "StartError"
    assert "stdin" in result.result["message"]


# --- Redis ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = start_redis()
    yield server
    stop_redis(server)


def _names() -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    return {"CODETASK_NAMESPACE": f"ns-{suffix}", "CODETASK_NAME": "t", "NODE_NAME": suffix}


def test_heartbeat_and_runner_hash_live_with_ttl_while_the_code_runs(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    names = _names()
    prefix = f"codetask:{names['CODETASK_NAMESPACE']}:t"
    runner = Runner(
        tmp_path,
        "echo started\nsleep 1.5\n",
        "bash",
        REDIS_URL=redis_server.url,
        CODETASK_HEARTBEAT_INTERVAL="0.2",
        CODETASK_ATTEMPT="2",
        **names,
    ).start()
    runner.wait_for_output("started")
    client = redis_server.client
    deadline = time.monotonic() + 3
    while not client.exists(f"{prefix}:heartbeat"):
        assert time.monotonic() < deadline, "no heartbeat"
        time.sleep(0.05)
    first = client.get(f"{prefix}:heartbeat")
    ttl = client.ttl(f"{prefix}:heartbeat")
    info = client.hgetall(f"{prefix}:runner")
    runner_ttl = client.ttl(f"{prefix}:runner")
    time.sleep(0.5)
    later = client.get(f"{prefix}:heartbeat")
    result = runner.wait()

    assert 0 < ttl <= 30
    assert 0 < runner_ttl <= 30
    assert later != first  # beats keep coming every 0.2 s
    assert info["pod"] == "task-pod"
    assert info["node"] == names["NODE_NAME"]
    assert info["attempt"] == "2"
    assert int(info["pid"]) > 0
    assert info["started"].endswith("Z")
    assert result.result["reason"] == "Completed"
    assert result.runner_lines == []


def test_heartbeat_outlives_the_ttl_after_the_end_so_a_finished_runner_is_not_lost(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    names = _names()
    result = run(tmp_path, "print('hi')\n", REDIS_URL=redis_server.url, **names)
    key = f"codetask:{names['CODETASK_NAMESPACE']}:t:heartbeat"

    assert result.exit_code == 0
    assert redis_server.client.get(key)
    assert 30 < redis_server.client.ttl(key) <= 300


def test_full_result_lands_in_redis(tmp_path: Path, redis_server: RedisServer) -> None:
    names = _names()
    code = "import sys\nprint('o' * 10000)\nprint('e' * 10000, file=sys.stderr)\nsys.exit(2)\n"
    result = run(tmp_path, code, REDIS_URL=redis_server.url, **names)
    client = redis_server.client
    stored = json.loads(client.get(f"codetask:{names['CODETASK_NAMESPACE']}:t:result") or "")

    assert result.exit_code == 2
    assert len(result.result_bytes) <= RESULT_LIMIT
    # the Redis copy keeps the tails up to the output limit, not the 4096-byte fit
    assert stored["stdout"] == "o" * 10000 + "\n"
    assert stored["stderr"] == "e" * 10000 + "\n"
    assert stored["truncated"] == {"stdout": False, "stderr": False}
    assert stored["reason"] == "NonZeroExit" and stored["exitCode"] == 2
    assert 0 < client.ttl(f"codetask:{names['CODETASK_NAMESPACE']}:t:result") <= 86400
    assert result.runner_lines == []


def test_start_error_is_stored_in_redis(tmp_path: Path, redis_server: RedisServer) -> None:
    names = _names()
    result = run(tmp_path, "", "cobol", REDIS_URL=redis_server.url, **names)
    stored = redis_server.client.get(f"codetask:{names['CODETASK_NAMESPACE']}:t:result")

    assert result.result["reason"] == "StartError"
    assert stored is not None and json.loads(stored)["reason"] == "StartError"


def test_the_runner_needs_only_its_attempts_keys_and_commands(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Run as the attempt's own ACL user (the operator's rules): every write lands, no warning;
    that user can touch nothing else."""
    names = _names()
    ns, uid = names["CODETASK_NAMESPACE"], uuid.uuid4().hex
    prefix = redis_access.prefix(ns, "t", uid, 1)
    user, password = redis_access.user(uid, 1), uuid.uuid4().hex
    redis_server.client.execute_command(
        "ACL", "SETUSER", user, *redis_access.acl_rules(prefix, password)
    )
    url = redis_access.task_url(redis_server.url, user, password)
    code = 'echo \'{"percent": 50}\' >> "$CODETASK_PROGRESS_FILE"\nsleep 0.4\necho done\n'
    result = run(
        tmp_path,
        code,
        "bash",
        REDIS_URL=url,
        CODETASK_REDIS_PREFIX=prefix,
        CODETASK_HEARTBEAT_INTERVAL="0.1",
        **names,
    )
    client = redis_server.client

    assert result.result["reason"] == "Completed" and result.runner_lines == []
    assert json.loads(client.get(f"{prefix}:result") or "")["stdout"] == "done\n"
    assert client.get(f"{prefix}:heartbeat") and client.hgetall(f"{prefix}:runner")
    assert json.loads(client.get(f"{prefix}:progress") or "")["percent"] == 50
    task = redis.Redis.from_url(url, decode_responses=True)
    for call in (
        lambda: task.set(f"codetask:{ns}:other:{uid}:1:result", "forged"),
        lambda: task.get(f"{prefix}:result"),
        lambda: task.delete(f"{prefix}:heartbeat"),
        lambda: task.keys("*"),
        lambda: task.xadd("codetask:results:stream", {"uid": "forged"}),
        lambda: task.set(f"codetask:published:{uid}", "1"),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            call()
    task.close()


def test_latest_valid_progress_line_is_forwarded_to_redis(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    names = _names()
    key = f"codetask:{names['CODETASK_NAMESPACE']}:t:progress"
    code = (
        'p() { echo "$1" >> "$CODETASK_PROGRESS_FILE"; }\n'
        'p \'{"percent": 10, "stage": "download", "message": "1/7 files"}\'\n'
        "sleep 1.2\n"
        "echo mid\n"
        "sleep 0.3\n"
        "p 'not json at all'\n"
        'p \'{"percent": 60, "stage": "train", "extra": [1, 2]}\'\n'
        "p '{\"unknown\": true}'\n"
        "p '[1, 2, 3]'\n"
        "sleep 1.2\n"
    )
    runner = Runner(tmp_path, code, "bash", REDIS_URL=redis_server.url, **names).start()
    runner.wait_for_output("mid")
    during = json.loads(redis_server.client.get(key) or "{}")
    result = runner.wait()
    final = json.loads(redis_server.client.get(key) or "{}")

    assert result.result["reason"] == "Completed", result.stderr
    assert during["percent"] == 10 and during["stage"] == "download"
    assert during["message"] == "1/7 files"
    assert final == {
        "percent": 60,
        "stage": "train",
        "message": None,
        "time": final["time"],
    }
    assert final["time"].endswith("Z")
    assert 0 < redis_server.client.ttl(key) <= 86400


def test_progress_written_at_the_very_end_still_lands(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    names = _names()
    code = (
        "import json, os\n"
        "with open(os.environ['CODETASK_PROGRESS_FILE'], 'a') as f:\n"
        "    for i in range(101):\n"
        "        f.write(json.dumps({'percent': i}) + '\\n')\n"
    )
    run(tmp_path, code, REDIS_URL=redis_server.url, **names)
    stored = redis_server.client.get(f"codetask:{names['CODETASK_NAMESPACE']}:t:progress")

    assert stored is not None and json.loads(stored)["percent"] == 100


def test_progress_writes_are_rate_limited_to_one_per_second(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    names = _names()
    code = (
        "import json, os, time\n"
        "for i in range(60):\n"
        "    with open(os.environ['CODETASK_PROGRESS_FILE'], 'a') as f:\n"
        "        f.write(json.dumps({'percent': i}) + '\\n')\n"
        "    time.sleep(0.05)\n"
    )
    client = redis_server.client
    before = client.info("commandstats").get("cmdstat_set", {}).get("calls", 0)
    result = run(tmp_path, code, REDIS_URL=redis_server.url, **names)
    after = client.info("commandstats").get("cmdstat_set", {}).get("calls", 0)
    stored = json.loads(client.get(f"codetask:{names['CODETASK_NAMESPACE']}:t:progress") or "{}")

    assert result.seconds < 5
    # 3 s of updates every 50 ms, polled every 0.5 s: the claim, ≤ 3 timed progress writes, the
    # last progress and the result at the end (without the limit: 6 timed writes)
    assert after - before <= 6
    assert stored["percent"] == 59


def test_unreachable_redis_costs_one_warning_and_no_delay(tmp_path: Path) -> None:
    code = "import time\ntime.sleep(0.6)\nprint('ok')\n"
    (tmp_path / "plain").mkdir()
    (tmp_path / "dead").mkdir()
    plain = Runner(tmp_path / "plain", code).run()
    dead = Runner(
        tmp_path / "dead",
        code,
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        CODETASK_HEARTBEAT_INTERVAL="0.1",
    ).run()

    assert dead.exit_code == 0
    assert dead.result["reason"] == "Completed"
    assert dead.result["stdout"] == "ok\n"
    assert len(dead.runner_lines) == 1
    assert "warning" in dead.runner_lines[0] and "Redis" in dead.runner_lines[0]
    assert dead.seconds - plain.seconds < 1.5


def test_unresponsive_redis_delays_the_run_by_about_a_second_and_a_quarter_at_most(
    tmp_path: Path,
) -> None:
    """The claim waits 0.25 s before the start, the final writes 1 s before the exit."""
    code = "print('ok')\n"
    with socket.socket() as blackhole:  # accepts connections (backlog), never answers
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(64)
        url = f"redis://127.0.0.1:{blackhole.getsockname()[1]}/0"
        (tmp_path / "plain").mkdir()
        (tmp_path / "stuck").mkdir()
        plain = Runner(tmp_path / "plain", code).run()
        stuck = Runner(tmp_path / "stuck", code, REDIS_URL=url).run()

    assert stuck.result["reason"] == "Completed"
    assert stuck.result_bytes  # the result was written before waiting on Redis
    assert len(stuck.runner_lines) <= 1
    assert stuck.seconds - plain.seconds < 1.75


def test_redis_dying_mid_run_warns_once_and_the_result_still_lands(tmp_path: Path) -> None:
    server = start_redis()
    try:
        names = _names()
        runner = Runner(
            tmp_path,
            "echo started\nsleep 1.5\necho done\n",
            "bash",
            REDIS_URL=server.url,
            CODETASK_HEARTBEAT_INTERVAL="0.1",
            **names,
        ).start()
        runner.wait_for_output("started")
        time.sleep(0.3)
        assert server.client.exists(f"codetask:{names['CODETASK_NAMESPACE']}:t:heartbeat")
    finally:
        stop_redis(server)
    result = runner.wait()

    assert result.exit_code == 0
    assert result.result["stdout"] == "started\ndone\n"
    assert len(result.runner_lines) == 1
    password = server.url.split("@")[0].rpartition(":")[2]
    assert password not in result.runner_lines[0]  # the warning does not leak the URL's secret
    assert result.seconds < 3.5
