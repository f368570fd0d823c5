"""Disrupting the shared local cluster (restarting its API server, kubelet, containerd) safely.

Several engineers and test runs share one cluster per machine. `cluster_disruption()` holds an
exclusive `flock` on `LOCK_FILE` so that two never stop cluster components at once; hold it around
everything whose assertions a second disruption would spoil. `restart()` runs
`hack/cluster/restart.sh` under that lock; run by hand, the script takes the same lock itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LOCK_FILE = Path("/tmp/codetask-cluster-disrupt.lock")
RESTART = REPO / "hack/cluster/restart.sh"
_held = False


def require_local_cluster() -> None:
    """Skip the test unless the cluster is this machine's local one (whose processes we restart)."""
    backend_file = REPO / ".cluster/backend"
    backend = backend_file.read_text().strip() if backend_file.exists() else "none"
    if backend != "local":
        pytest.skip(f"needs the local cluster back end to restart its processes; it is {backend!r}")


@contextlib.contextmanager
def cluster_disruption(what: str, wait: float = 1800) -> Iterator[None]:
    """Hold the machine-wide disruption lock (exclusive) for the block, waiting up to `wait` s.

    `what` is written into the lock file so that a waiter can say whom it waits for. With
    CODETASK_DISRUPT_LOCK_HELD=1 (`flock -x LOCK_FILE env CODETASK_DISRUPT_LOCK_HELD=1 pytest ...`)
    the caller holds it already."""
    global _held
    if os.environ.get("CODETASK_DISRUPT_LOCK_HELD") == "1":
        _held = True
        try:
            yield
        finally:
            _held = False
        return
    with LOCK_FILE.open("a+") as lock:
        end = time.monotonic() + wait
        said = False
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not said:
                    lock.seek(0)
                    print(
                        f"waiting for {LOCK_FILE}, held by: {lock.read().strip()}", file=sys.stderr
                    )
                    said = True
                if time.monotonic() > end:
                    raise TimeoutError(f"{LOCK_FILE} still held after {wait}s") from None
                time.sleep(1)
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}: {what} (since {time.strftime('%H:%M:%S')})\n")
        lock.flush()
        _held = True
        try:
            yield
        finally:
            _held = False
            lock.seek(0)
            lock.truncate()
            lock.flush()
            fcntl.flock(lock, fcntl.LOCK_UN)


@dataclass(frozen=True)
class Restart:
    """What `hack/cluster/restart.sh` measured (epoch seconds)."""

    component: str
    old_pid: int
    new_pid: int
    stopped_at: float
    started_at: float
    healthy_at: float

    @property
    def down_seconds(self) -> float:
        return self.healthy_at - self.stopped_at


def restart(
    component: str,
    stop_for: float = 0,
    signal: str = "TERM",
    grace: float = 30,
    timeout: float = 120,
) -> Restart:
    """Stop `component` of the local cluster, start it again as it ran, wait until healthy.

    Only inside `cluster_disruption()`."""
    assert _held, "restart() only inside cluster_disruption()"
    done = subprocess.run(
        [
            str(RESTART),
            component,
            "--stop-for",
            str(stop_for),
            "--signal",
            signal,
            "--grace",
            str(grace),
            "--timeout",
            str(timeout),
        ],
        env={**os.environ, "CODETASK_DISRUPT_LOCK_HELD": "1"},
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    fields = dict(item.split("=", 1) for item in done.stdout.split())
    return Restart(
        component=fields["component"],
        old_pid=int(fields["old_pid"]),
        new_pid=int(fields["new_pid"]),
        stopped_at=float(fields["stopped_at"]),
        started_at=float(fields["started_at"]),
        healthy_at=float(fields["healthy_at"]),
    )
