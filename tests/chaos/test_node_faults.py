"""Node faults on the local cluster: the kubelet stopped for 60 s, containerd restarted mid-run.

Each test runs tasks that finish before, during and after the fault, and checks that every one
reports its real result (not Lost) and ran exactly once: the code itself counts its runs with a
Redis INCR per (task, attempt) and records when it finished, so "ran during the outage" and "ran
once" are the code's own word, not the operator's.

The kubelet is frozen with SIGSTOP and resumed with SIGCONT rather than killed and restarted: the
process, its PID file and its command line stay as they are (nothing to restart wrongly on a
shared cluster), a detached watchdog resumes it even if this test dies, and to the control plane it
looks like any kubelet that stops reporting (a hung kubelet, a node cut off from the API server).
containerd is stopped (SIGTERM) and started again by hack/cluster/restart.sh. Each test holds the
cluster disruption lock (tests/chaos/disrupt.py) from its set-up to its clean-up.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from kubernetes import client

from tests.chaos.disrupt import Restart, cluster_disruption, require_local_cluster, restart
from tests.chaos.nodes import own_operator
from tests.e2e.tasks import FINAL, Operator, codetask, create, get, jobs_of

pytestmark = [pytest.mark.long, pytest.mark.timeout(900)]

STATE = Path(os.environ.get("CODETASK_CLUSTER_STATE", "/var/lib/codetask-cluster"))
KUBELET_STOP = 60
TTL = 10
"""Heartbeat TTL of the test operators: far shorter than the outage, so only evidence of a dead
runner can end an attempt early, not the outage outlasting the TTL."""

CODE = (
    "import os, sys, time, redis\n"
    "r = redis.Redis.from_url(os.environ['FAULT_REDIS'])\n"
    "key = 'fault:%s:%s' % (os.environ['CODETASK_NAMESPACE'], os.environ['CODETASK_NAME'])\n"
    "r.incr('%s:runs:%s' % (key, os.environ['CODETASK_ATTEMPT']))\n"
    "while not r.exists(os.environ['FAULT_GO']):\n"
    "    time.sleep(0.2)\n"
    "time.sleep(float(os.environ['FAULT_AFTER']))\n"
    "r.set('%s:finished:%s' % (key, os.environ['CODETASK_ATTEMPT']), time.time())\n"
    "print('done', os.environ['CODETASK_NAME'])\n"
    "sys.exit(int(os.environ['FAULT_EXIT']))\n"
)


@pytest.fixture(autouse=True)
def local_cluster_only() -> None:
    require_local_cluster()


def component_pid(name: str) -> int:
    pid = int((STATE / "pids" / f"{name}.pid").read_text())
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert name.encode() in Path(cmdline[0].decode()).name.encode(), (name, cmdline)
    return pid


@contextlib.contextmanager
def kubelet_stopped(seconds: float) -> Iterator[int]:
    """The kubelet frozen (SIGSTOP) for the block; resumed after it, or by a watchdog after
    `seconds` + 60 if this process dies first."""
    pid = component_pid("kubelet")
    watchdog = subprocess.Popen(
        ["sh", "-c", f"sleep {seconds + 60}; kill -CONT {pid}"],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.kill(pid, signal.SIGSTOP)
    try:
        yield pid
    finally:
        os.kill(pid, signal.SIGCONT)
        watchdog.kill()
        watchdog.wait()


@contextlib.contextmanager
def containerd_restarting(stop_for: float) -> Iterator[list[Restart]]:
    """containerd stopped (SIGTERM: its shims, and so the containers, keep running) and started
    again `stop_for` seconds later by hack/cluster/restart.sh, which runs while the block does; the
    block is entered once containerd is down and left once it is healthy again; then the list
    it was given holds what restart.sh measured."""
    pid = component_pid("containerd")
    done: list[Restart | BaseException] = []
    measured: list[Restart] = []

    def run() -> None:
        try:
            done.append(restart("containerd", stop_for=stop_for))
        except BaseException as exc:  # raised by the caller below
            done.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        end = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists() and not done:
            assert time.monotonic() < end, "containerd did not stop within 30 s"
            time.sleep(0.1)
        yield measured
    finally:
        thread.join()
    if not isinstance(done[0], Restart):
        raise done[0]
    measured.append(done[0])


@dataclass
class Fleet:
    """Operators (with and without Redis) and the tasks they run, each in its own namespace."""

    api: client.ApiClient
    redis_url: str
    tmp: Path
    go: str = field(default_factory=lambda: f"fault:go:{uuid.uuid4().hex[:8]}")
    operators: dict[str, Operator] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    plan: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def operator(self, with_redis: bool) -> str:
        ns, op = own_operator(self.api, self.tmp, self.redis_url if with_redis else None, "n", TTL)
        self.operators[ns] = op
        self.kinds[ns] = "redis" if with_redis else "plain"
        return ns

    def task(self, ns: str, name: str, after: float, exit_code: int) -> None:
        env = {"FAULT_REDIS": self.redis_url, "FAULT_GO": self.go, "FAULT_AFTER": str(after)}
        env["FAULT_EXIT"] = str(exit_code)
        body = codetask(
            name,
            language="python",
            code=CODE,
            env=[{"name": k, "value": v} for k, v in env.items()],
            timeoutSeconds=300,
            retries=1,
            retryPolicy=["Lost"],
            backoffSeconds=1,
        )
        create(self.api, ns, body)
        self.plan[(ns, name)] = {"exit": exit_code}

    def run(self, tasks: dict[str, tuple[float, int]]) -> dict[str, str]:
        """An operator with Redis and one without, each running `tasks` (name: seconds after the
        go, exit code) until all are Running and heartbeats were seen; their namespaces by kind."""
        namespaces = {"redis": self.operator(with_redis=True), "plain": self.operator(False)}
        for ns in namespaces.values():
            for name, (after, exit_code) in tasks.items():
                self.task(ns, name, after, exit_code)
        self.wait_running()
        time.sleep(TTL / 2)
        return namespaces

    def phases(self) -> dict[tuple[str, str], str | None]:
        return {key: (get(self.api, *key).get("status") or {}).get("phase") for key in self.plan}

    def wait_running(self, timeout: float = 90) -> None:
        end = time.monotonic() + timeout
        while (phases := self.phases()) and set(phases.values()) != {"Running"}:
            assert time.monotonic() < end, f"not all Running: {phases}"
            time.sleep(0.5)

    def start(self) -> float:
        """Let the tasks' code go on to its finish; the time it was let go (epoch)."""
        at = time.time()
        redis.Redis.from_url(self.redis_url).set(self.go, 1)
        return at

    def wrong(self) -> list[tuple[Any, ...]]:
        """Tasks whose status, runs or Jobs are not those of one clean run."""
        counts = redis.Redis.from_url(self.redis_url)
        out: list[tuple[Any, ...]] = []
        for (ns, name), want in self.plan.items():
            st = get(self.api, ns, name).get("status") or {}
            phase = "Succeeded" if want["exit"] == 0 else "Failed"
            reason = "Completed" if want["exit"] == 0 else "NonZeroExit"
            got = (st.get("phase"), st.get("reason"), st.get("exitCode"), st.get("attempts"))
            if got != (phase, reason, want["exit"], 1) or st.get("stdout") != f"done {name}\n":
                out.append((ns, name, "status", got, st.get("message"), st.get("history")))
            runs = [int(counts.get(f"fault:{ns}:{name}:runs:{a}") or 0) for a in (1, 2)]
            if runs != [1, 0]:
                out.append((ns, name, "runs per attempt", runs))
            jobs = [
                j.metadata.name
                for j in jobs_of(self.api, ns)
                if j.metadata.owner_references[0].name == name
            ]
            if len(jobs) != 1:
                out.append((ns, name, "jobs", jobs))
        return out

    def finished_at(self, ns: str, name: str) -> float | None:
        raw = redis.Redis.from_url(self.redis_url).get(f"fault:{ns}:{name}:finished:1")
        return float(raw) if raw else None

    def close(self) -> None:
        for ns, op in self.operators.items():
            op.stop(signal.SIGTERM)
            client.CoreV1Api(self.api).delete_namespace(ns)


@pytest.fixture
def fleet(
    api_client: client.ApiClient,
    crd: None,
    redis_url: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Fleet]:
    """The fleet, with the cluster disruption lock held for the whole test: another engineer's
    restart of a component would spoil its assertions as much as its own fault would."""
    with cluster_disruption(f"test_node_faults: {request.node.name}"):
        f = Fleet(api_client, redis_url, tmp_path)
        yield f
        f.close()


def node_ready(api: client.ApiClient) -> str:
    node = client.CoreV1Api(api).list_node().items[0]
    return next(c.status for c in node.status.conditions if c.type == "Ready")


class Timeline:
    """What was observed, as changes: (seconds after the fault began, subject, new value)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.last: dict[str, str] = {}
        self.changes: list[tuple[float, str, str]] = []

    def note(self, subject: str, value: str = "") -> None:
        if self.last.get(subject) != value:
            self.last[subject] = value
            self.changes.append((round(time.monotonic() - self.t0, 1), subject, value))

    def show(self) -> str:
        return "\n".join(f"  {t:6.1f} s  {subject} {value}" for t, subject, value in self.changes)


def observe(fleet: Fleet, timeline: Timeline) -> None:
    timeline.note("node", f"Ready={node_ready(fleet.api)}")
    for (ns, name), phase in fleet.phases().items():
        timeline.note(f"task {name} ({fleet.kinds[ns]})", str(phase))
    for ns, kind in fleet.kinds.items():
        for pod in client.CoreV1Api(fleet.api).list_namespaced_pod(ns).items:
            ready = next((c.status for c in pod.status.conditions or [] if c.type == "Ready"), "")
            states = [
                next(k for k in ("running", "terminated", "waiting") if getattr(c.state, k))
                for c in pod.status.container_statuses or []
            ]
            deleting = " deleting" if pod.metadata.deletion_timestamp else ""
            timeline.note(f"pod {pod.metadata.name} ({kind})", f"Ready={ready} {states}{deleting}")
        for job in jobs_of(fleet.api, ns):
            st = job.status
            counts = f"active={st.active} succeeded={st.succeeded} failed={st.failed}"
            timeline.note(f"job {job.metadata.name} ({kind})", counts)


def test_kubelet_stopped_60s_tasks_report_their_real_results_and_run_once(
    fleet: Fleet,
) -> None:
    """Tasks that finish before the node goes NotReady (5 s into the stop), while it is NotReady
    (50 s) and a minute after the kubelet returns (120 s), with and without Redis: each reports its
    own exit code and output, on its first attempt, with one Job and one run."""
    namespaces = fleet.run({"early": (5, 0), "late": (50, 3), "spans": (120, 0)})
    begun = time.monotonic()
    timeline = Timeline()
    go = resumed = 0.0
    not_ready = None
    try:
        timeline = Timeline()
        with kubelet_stopped(KUBELET_STOP):
            go = fleet.start()
            while time.monotonic() - timeline.t0 < KUBELET_STOP:
                observe(fleet, timeline)
                if not_ready is None and node_ready(fleet.api) != "True":
                    not_ready = time.monotonic() - timeline.t0
                time.sleep(1)
            resumed = time.time()
        timeline.note("kubelet resumed (SIGCONT)")
        end = time.monotonic() + 120
        while time.monotonic() < end:
            observe(fleet, timeline)
            if set(fleet.phases().values()) <= FINAL and node_ready(fleet.api) == "True":
                break
            time.sleep(1)
    finally:
        finished = {
            f"{name} ({kind})": round(at - go, 1)
            for kind, ns in namespaces.items()
            for name in ("early", "late", "spans")
            if (at := fleet.finished_at(ns, name)) is not None
        }
        print(f"\nkubelet stopped {KUBELET_STOP} s; timeline:\n{timeline.show()}")
        print(f"code finished (s after the stop): {finished}; resumed at {resumed - go:.1f} s")
        print(f"test took {time.monotonic() - begun:.0f} s from the stop")
    assert not_ready is not None, "the node never went NotReady: the stop tested nothing"
    assert node_ready(fleet.api) == "True", "node not Ready 120 s after the kubelet resumed"
    for kind, ns in namespaces.items():
        for name in ("early", "late"):
            at = fleet.finished_at(ns, name)
            assert at is not None and at < resumed, f"{name} ({kind}) did not end in the outage"
    assert fleet.wrong() == []


def test_containerd_restarted_tasks_running_across_it_finish_once_with_real_results(
    fleet: Fleet,
) -> None:
    """containerd stopped for 10 s and started again while tasks run: tasks finishing while it is
    down (exit 0 and 3), after it is back, and one created while it is down, all report their own
    result on their first attempt, with one Job and one run each."""
    namespaces = fleet.run({"during": (2, 0), "during-fail": (4, 3), "spans": (20, 0)})
    begun = time.monotonic()
    with containerd_restarting(10) as restarted:
        fleet.start()
        for ns in namespaces.values():
            fleet.task(ns, "created-during", after=0, exit_code=0)
    down = time.monotonic() - begun
    for ns, kind in fleet.kinds.items():
        for name in ("during", "during-fail"):
            at = fleet.finished_at(ns, name)
            assert at is not None and at < restarted[0].started_at, f"{name} ({kind}) not in it"
    end = time.monotonic() + 180
    while not set(fleet.phases().values()) <= FINAL:
        assert time.monotonic() < end, f"not final: {fleet.phases()}"
        time.sleep(1)
    print(
        f"\ncontainerd stopped to healthy {restarted[0].down_seconds:.1f} s (block {down:.1f} s);"
        f" all tasks final {time.monotonic() - begun:.0f} s after the stop"
    )
    assert fleet.wrong() == []
