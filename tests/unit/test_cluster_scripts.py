"""The local-cluster scripts trust a PID file only while its process is still that component, and
give a component just started time to become itself."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

LIB = Path(__file__).resolve().parents[2] / "hack" / "cluster" / "lib.sh"


def component_pid(state: Path, name: str) -> str | None:
    """What lib.sh's component_pid prints for NAME with STATE as the cluster's state dir."""
    done = subprocess.run(
        ["bash", "-c", f'source "{LIB}" && component_pid "$1"', "-", name],
        env={"PATH": "/usr/bin:/bin", "HOME": str(state), "CODETASK_CLUSTER_STATE": str(state)},
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() if done.returncode == 0 else None


@pytest.fixture
def state(tmp_path: Path) -> Path:
    (tmp_path / "state" / "pids").mkdir(parents=True)
    return tmp_path / "state"


@pytest.fixture
def sleeper(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process whose executable is named kubelet (a copy of sleep)."""
    exe = tmp_path / "bin" / "kubelet"
    exe.parent.mkdir()
    shutil.copy(shutil.which("sleep") or "/bin/sleep", exe)
    proc = subprocess.Popen([str(exe), "60"])
    yield proc
    proc.kill()
    proc.wait()


def test_the_component_itself_is_trusted(state: Path, sleeper: subprocess.Popen[bytes]) -> None:
    (state / "pids" / "kubelet.pid").write_text(f"{sleeper.pid}\n")
    assert component_pid(state, "kubelet") == str(sleeper.pid)


def test_a_reused_pid_is_not_the_component(state: Path) -> None:
    """The stale PID file names a live process that is something else (its number was reused)."""
    with subprocess.Popen(["sleep", "60"]) as other:
        try:
            (state / "pids" / "kubelet.pid").write_text(f"{other.pid}\n")
            assert component_pid(state, "kubelet") is None
        finally:
            other.kill()


@pytest.mark.parametrize("content", ["", "not-a-pid\n", "99999999\n"])
def test_no_process_or_no_number_is_not_the_component(state: Path, content: str) -> None:
    (state / "pids" / "kubelet.pid").write_text(content)
    assert component_pid(state, "kubelet") is None


def test_no_pid_file_is_not_the_component(state: Path) -> None:
    assert component_pid(state, "kubelet") is None


def test_an_exited_component_is_not_trusted(state: Path, sleeper: subprocess.Popen[bytes]) -> None:
    (state / "pids" / "kubelet.pid").write_text(f"{sleeper.pid}\n")
    sleeper.kill()
    sleeper.wait()
    assert component_pid(state, "kubelet") is None


def running_or_die(state: Path) -> subprocess.CompletedProcess[str]:
    """lib.sh's `running_or_die "start kubelet" "" pid_alive kubelet`, STATE the state dir."""
    return subprocess.run(
        ["bash", "-c", f'source "{LIB}" && running_or_die "start kubelet" "" pid_alive kubelet'],
        env={"PATH": "/usr/bin:/bin", "HOME": str(state), "CODETASK_CLUSTER_STATE": str(state)},
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_component_still_on_its_way_to_exec_is_given_time(state: Path, tmp_path: Path) -> None:
    """As just after `setsid CMD &`: the PID is not the component yet (here a shell that execs it
    after 1 s). One look at once says no; running_or_die waits for it."""
    exe = tmp_path / "bin" / "kubelet"
    exe.parent.mkdir()
    shutil.copy(shutil.which("sleep") or "/bin/sleep", exe)
    with subprocess.Popen(["bash", "-c", f'sleep 1; exec "{exe}" 60']) as starting:
        try:
            (state / "pids" / "kubelet.pid").write_text(f"{starting.pid}\n")
            assert component_pid(state, "kubelet") is None
            done = running_or_die(state)
            assert done.returncode == 0, done.stderr
            assert component_pid(state, "kubelet") == str(starting.pid)
        finally:
            starting.kill()


def test_a_component_that_never_runs_fails_its_step(state: Path) -> None:
    (state / "pids" / "kubelet.pid").write_text("99999999\n")
    done = running_or_die(state)
    assert done.returncode == 1
    said = 'FAILED at step "start kubelet": kubelet is not running 5 s after its start'
    assert said in done.stderr
