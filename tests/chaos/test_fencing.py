"""Fencing between attempts and verdicts that need proof (issue #20, "Done when" on a real cluster).

Each test breaks one assumption the operator could make about what it cannot see, and checks the
property that must hold anyway:

- `test_redis_blocked_from_one_pod_never_runs_two_attempts_at_once`: a silent heartbeat from a pod
  that looks healthy is no proof its code stopped;
- `test_job_watch_held_then_relisted_loses_and_repeats_nothing`: a Job missing from a stalled watch
  is no proof it is gone, and a re-list (410 Gone) strands nothing;
- `test_task_deleted_during_backoff_gets_no_next_job`: a deleted task stays deleted;
- `test_cancel_after_the_code_finished_keeps_the_result`: cancel never throws a result away;
- `test_pod_refused_by_quota_reports_why_and_ends_on_time`: a pod the cluster refuses to create
  ends the task with the cluster's words, on time.

Runs are counted by the task code itself, in a Redis of the test's own that no fault touches (as in
test_operator_crashes), never by the operator's status. `make chaos` only (about 2 minutes).
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from kubernetes import client, watch

from tests.chaos.test_api_faults import own_namespace
from tests.chaos.test_operator_crashes import COUNT
from tests.chaos.test_redis_faults import RedisServer, wait_until
from tests.e2e.conftest import OPERATOR_ENV, free_port
from tests.e2e.tasks import (
    FINAL,
    GROUP,
    PLURAL,
    VERSION,
    Operator,
    codetask,
    create,
    get,
    runner_pid,
)
from tests.faultproxy import FaultProxy, Upstream

pytestmark = pytest.mark.long
REPO = Path(__file__).resolve().parents[2]
SMALL = {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}}
LABEL_TASK, LABEL_ATTEMPT = "codetask.dev/task", "codetask.dev/attempt"


# --- shared helpers ---------------------------------------------------------------------------


def status_of(api: client.ApiClient, ns: str, name: str) -> dict[str, Any]:
    return get(api, ns, name).get("status") or {}


class StatusLog:
    """Every distinct (phase, reason, attempts, message) the tasks showed, polled every 0.2 s in a
    thread: what a failing assertion prints, and what the report says the operator did."""

    def __init__(self, api: client.ApiClient, ns: str, names: list[str]) -> None:
        self.api, self.ns, self.names = api, ns, names
        self.seen: dict[str, list[tuple[Any, ...]]] = {n: [] for n in names}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StatusLog:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        custom = client.CustomObjectsApi(self.api)
        while not self._stop.wait(0.2):
            try:
                items = custom.list_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL)
            except client.ApiException:
                continue
            for item in items["items"]:
                name, st = item["metadata"]["name"], item.get("status") or {}
                row = (st.get("phase"), st.get("reason"), st.get("attempts"), st.get("message"))
                if name in self.seen and (not self.seen[name] or self.seen[name][-1] != row):
                    self.seen[name].append(row)

    def reasons(self, name: str) -> list[Any]:
        return [row[1] for row in self.seen[name]]

    def show(self, name: str) -> str:
        return "\n".join(f"    {row}" for row in self.seen[name])


def jobs_by_attempt(api: client.ApiClient, ns: str, task: str) -> list[str]:
    jobs = client.BatchV1Api(api).list_namespaced_job(ns, label_selector=f"{LABEL_TASK}={task}")
    return sorted(j.metadata.labels.get(LABEL_ATTEMPT, "?") for j in jobs.items)


def pod_phases(api: client.ApiClient, ns: str, task: str) -> list[str]:
    pods = client.CoreV1Api(api).list_namespaced_pod(ns, label_selector=f"{LABEL_TASK}={task}")
    return [p.status.phase for p in pods.items]


def node_address(api: client.ApiClient) -> str:
    node = client.CoreV1Api(api).list_node().items[0]
    address: str = next(a.address for a in node.status.addresses if a.type == "InternalIP")
    return address


@pytest.fixture
def own_ns(api_client: client.ApiClient, crd: None) -> Iterator[str]:
    """A namespace outside the session operator's `SESSION-*`, for an operator of the test's own."""
    ns = own_namespace(api_client, "fn")
    yield ns
    client.CoreV1Api(api_client).delete_namespace(ns, propagation_policy="Background")


def own_operator(ns: str, kubeconfig: str | Path, log_path: Path, **env: str) -> Operator:
    """An operator process serving only `ns` (not started), with extra CODETASK_* settings."""
    return Operator(
        cmd=[sys.executable, "-m", "codetask_operator"],
        env={
            **os.environ,
            **OPERATOR_ENV,
            "CODETASK_NAMESPACES": ns,
            "CODETASK_HEALTH_PORT": str(free_port()),
            "CODETASK_METRICS_PORT": str(free_port()),
            "KUBECONFIG": str(kubeconfig),
            **env,
        },
        log_path=log_path,
    )


# --- 1. Redis unreachable from one task pod only ----------------------------------------------

TTL = 4
FENCED = """\
import os, signal, time, redis
r = redis.Redis.from_url(os.environ['CHAOS_REDIS'])
key, attempt, gate = os.environ['RUN_KEY'], os.environ['CODETASK_ATTEMPT'], os.environ['GATE']
start = time.time()
r.incr(f'{key}:runs:{attempt}')
r.hset(f'{key}:start', attempt, start)
term = []
signal.signal(signal.SIGTERM, lambda *_: term.append(time.time()))
while True:
    now = time.time()
    r.set(f'{key}:alive:{attempt}', now, px=1000)
    r.hset(f'{key}:seen', attempt, now)
    if term:
        r.hset(f'{key}:term', attempt, term[0])
    for alive in r.scan_iter(f'{key}:alive:*'):
        other, seen = alive.decode().rsplit(':', 1)[1], r.get(alive)
        if other != attempt and seen is not None and float(seen) > start:
            r.rpush(f'{key}:overlaps', f'attempt {attempt} saw attempt {other} alive at {now:.3f}')
    if now >= start + 2 and r.exists(gate):
        break
    time.sleep(0.2)
r.hset(f'{key}:end', attempt, time.time())
print('done attempt', attempt)
"""
"""Records its run (start, last seen every 0.2 s, end, SIGTERM) under RUN_KEY in the chaos Redis
and an `alive` key per attempt (1 s TTL) holding the last time it was seen; any other attempt's
`alive` refreshed after this run started is an overlap, recorded. A SIGTERM is noted, not obeyed:
the code uses its grace period, as code that cleans up does, and dies when the runner kills it."""


@dataclass(frozen=True)
class Run:
    attempt: str
    start: float
    last: float
    """Its end, or for a run that was killed the last time it was seen (at most 0.2 s early)."""
    ended: bool
    term: float | None


def runs_of(chaos: redis.Redis, key: str) -> dict[str, Run]:
    def floats(field: str) -> dict[str, float]:
        raw: dict[bytes, bytes] = chaos.hgetall(f"{key}:{field}")  # type: ignore[assignment]
        return {k.decode(): float(v) for k, v in raw.items()}

    start, seen, end, term = (floats(f) for f in ("start", "seen", "end", "term"))
    return {
        a: Run(a, start[a], end.get(a, seen.get(a, start[a])), a in end, term.get(a))
        for a in sorted(start)
    }


def overlapping(runs: dict[str, Run]) -> list[tuple[str, str, float]]:
    """Pairs of runs alive at the same time, with how long (seconds, at least)."""
    return [
        (a.attempt, b.attempt, round(min(a.last, b.last) - max(a.start, b.start), 2))
        for a, b in itertools.combinations(runs.values(), 2)
        if a.start < b.last and b.start < a.last
    ]


@pytest.fixture
def heartbeat_redis(api_client: client.ApiClient, tmp_path: Path) -> Iterator[RedisServer]:
    """The operator's and runners' Redis, on the node's address, apart from the chaos Redis."""
    server = RedisServer(node_address(api_client), free_port(), tmp_path)
    server.start()
    yield server
    server.stop()


def iptables_in(pid: int, *rule: str) -> subprocess.CompletedProcess[str]:
    """iptables in the network namespace of process `pid` (a task pod's)."""
    return subprocess.run(
        ["nsenter", "-t", str(pid), "-n", "iptables", *rule], capture_output=True, text=True
    )


def connects_from(pid: int, host: str, port: int) -> bool:
    """Whether a TCP connection from `pid`'s network namespace to host:port succeeds within 1 s."""
    probe = f"import socket; socket.create_connection(({host!r}, {port}), timeout=1).close()"
    done = subprocess.run(
        ["nsenter", "-t", str(pid), "-n", sys.executable, "-c", probe], capture_output=True
    )
    return done.returncode == 0


@pytest.mark.timeout(240)
def test_redis_blocked_from_one_pod_never_runs_two_attempts_at_once(
    api_client: client.ApiClient,
    own_ns: str,
    kubeconfig: str,
    heartbeat_redis: RedisServer,
    redis_url: str,
    tmp_path: Path,
) -> None:
    """Proves: when Redis is unreachable from one task pod only (iptables DROP in that pod's network
    namespace, 3x the heartbeat TTL) while its pod stays Running and Ready, the task's code never
    runs in two attempts at the same time — by the code's own records (an attempt that saw another
    attempt alive after it started; start/last-seen intervals), not by status — and the task ends
    with its own result (Succeeded, stdout of its last attempt, that attempt's code ran once) or
    Failed/Lost; each attempt ran at most once, no Job beyond its attempts; a second task running
    beside it the whole time is untouched (Succeeded, attempt 1). Fails when a silent heartbeat
    alone starts the next attempt while the previous pod's code still runs."""
    ns, chaos = own_ns, redis.Redis.from_url(redis_url)
    prefix = f"fence:{ns}"
    gate = f"{prefix}:gate"
    op = own_operator(
        ns,
        kubeconfig,
        tmp_path / "operator.log",
        CODETASK_REDIS_URL=heartbeat_redis.url,
        CODETASK_HEARTBEAT_INTERVAL_SECONDS="1",
        CODETASK_HEARTBEAT_TTL_SECONDS=str(TTL),
        CODETASK_SWEEP_INTERVAL_SECONDS="1",
    )
    op.start()
    started = time.monotonic()
    try:
        names = ["victim", "control"]
        for name in names:
            env = {"CHAOS_REDIS": redis_url, "RUN_KEY": f"{prefix}:{name}", "GATE": gate}
            body = codetask(
                name,
                language="python",
                code=FENCED,
                env=[{"name": k, "value": v} for k, v in env.items()],
                retries=1,
                retryPolicy=["Lost"],
                backoffSeconds=1,
                timeoutSeconds=120,
                resources=SMALL,
            )
            create(api_client, ns, body)
        with StatusLog(api_client, ns, names) as seen:
            wait_until(
                "both Running with a heartbeat in status, the victim's code started",
                60,
                lambda: (
                    all(
                        (s := status_of(api_client, ns, n)).get("phase") == "Running"
                        and s.get("lastHeartbeatTime")
                        for n in names
                    )
                    and chaos.hexists(f"{prefix}:victim:start", "1")
                ),
                lambda: seen.seen,
            )
            pid = runner_pid(ns, "victim")
            host, port = heartbeat_redis.host, heartbeat_redis.port
            rule = ("OUTPUT", "-p", "tcp", "-d", host, "--dport", str(port), "-j", "DROP")
            assert connects_from(pid, host, port), "the victim's pod cannot reach Redis before"
            added = iptables_in(pid, "-I", *rule)
            assert added.returncode == 0, f"iptables in the pod's netns: {added.stderr}"
            blocked_at = time.monotonic()
            try:
                assert not connects_from(pid, host, port), "the DROP rule did not block Redis"
                beat_keys = f"codetask:{ns}:victim:*:1:heartbeat"  # attempt 1's own keys
                hb = redis.Redis.from_url(heartbeat_redis.url)
                assert hb.keys(beat_keys), "attempt 1 never beat"
                wait_until(
                    "the victim's heartbeat key expired (the fault took effect)",
                    TTL + 3,
                    lambda: not hb.keys(beat_keys),
                )
                time.sleep(max(0.0, blocked_at + 3 * TTL - time.monotonic()))  # the outage
            finally:
                iptables_in(pid, "-D", *rule)  # fails once the pod is gone: nothing to undo
            chaos.set(gate, 1)
            wait_until(
                "both final",
                90,
                lambda: all(status_of(api_client, ns, n).get("phase") in FINAL for n in names),
                lambda: seen.seen,
            )
        victim, control = (status_of(api_client, ns, n) for n in names)
        runs = {n: runs_of(chaos, f"{prefix}:{n}") for n in names}
        counts = {
            n: {a: int(chaos.get(f"{prefix}:{n}:runs:{a}") or 0) for a in runs[n]} for n in names
        }
        overlaps = [o.decode() for o in chaos.lrange(f"{prefix}:victim:overlaps", 0, -1)]
        print(
            f"\nfencing under a per-pod Redis block: test {time.monotonic() - started:.0f} s; "
            f"victim went through:\n{seen.show('victim')}\nvictim runs: {runs['victim']}"
        )
        table = f"runs: {runs['victim']}\nstatuses seen:\n{seen.show('victim')}"
        both = overlapping(runs["victim"])
        assert both == [], f"two attempts ran at once (attempts, seconds): {both}\n{table}"
        assert overlaps == [], f"{len(overlaps)} times an attempt saw another: {overlaps[:2]}"
        assert all(n <= 1 for n in counts["victim"].values()), (counts, table)
        attempts = int(victim.get("attempts") or 0)
        jobs = jobs_by_attempt(api_client, ns, "victim")  # a stopped attempt's Job may be gone
        assert set(jobs) <= {str(a) for a in range(1, attempts + 1)}, (jobs, table)
        got = (victim.get("phase"), victim.get("reason"))
        if got[0] == "Succeeded":
            assert victim.get("stdout") == f"done attempt {attempts}\n", table
            assert counts["victim"].get(str(attempts)) == 1, (counts, table)
        else:
            assert got == ("Failed", "Lost"), f"victim ended {got}: {victim.get('message')}"
        assert (
            control.get("phase"),
            control.get("attempts"),
            control.get("stdout"),
            counts["control"],
        ) == ("Succeeded", 1, "done attempt 1\n", {"1": 1}), seen.show("control")
    finally:
        op.stop(signal.SIGTERM)


# --- 2. The Job watch held, then cut with 410 Gone ---------------------------------------------

HOLD = 30.0
GATED = (
    COUNT + "import time\n"
    "while not redis.Redis.from_url(os.environ['CHAOS_REDIS']).exists(os.environ['GATE']):\n"
    "    time.sleep(0.2)\n"
    "print('done', os.environ['CODETASK_NAME'])\n"
)
"""INCRs chaos:NAME:ATTEMPT, waits for its gate (a key in the chaos Redis), prints `done NAME`."""


@pytest.mark.timeout(240)
def test_job_watch_held_then_relisted_loses_and_repeats_nothing(
    api_client: client.ApiClient, own_ns: str, redis_url: str, tmp_path: Path
) -> None:
    """Proves: with the operator's Job watch held for 30 s (connection open, no events: a stalled
    watch) and then cut and answered with 410 Gone (kopf lists again), while 6 tasks run — 3
    started before the hold, 3 created during it (their Jobs never reach the operator's cache until
    the re-list), and 3 of the 6 ending during the hold — no task is Lost, each ends Succeeded on
    attempt 1 with its stdout, each one's code ran exactly once (its own INCR), one Job each, and
    all are final within 60 s of the re-list. Fails when a Job missing from the cache is taken for
    gone, or when a task's end is missed after the re-list (stranded)."""
    ns, chaos = own_ns, redis.Redis.from_url(redis_url)
    gates = {g: f"gate:{ns}:{g}" for g in ("early", "late")}
    before = {"pre-early-a": "early", "pre-early-b": "early", "pre-late": "late"}
    during = {"hold-early": "early", "hold-late-a": "late", "hold-late-b": "late"}
    plan = {**before, **during}

    def submit(tasks: dict[str, str]) -> None:
        for name, gate in tasks.items():
            env = {"CHAOS_REDIS": redis_url, "GATE": gates[gate]}
            body = codetask(
                name,
                language="python",
                code=GATED,
                env=[{"name": k, "value": v} for k, v in env.items()],
                timeoutSeconds=180,
                resources=SMALL,
            )
            create(api_client, ns, body)

    def code_started(names: dict[str, str]) -> bool:
        return all(chaos.exists(f"chaos:{n}:1") for n in names)

    def phases() -> dict[str, Any]:
        """Phase of each task of the plan (None before it exists)."""
        listed = client.CustomObjectsApi(api_client).list_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL
        )
        now = {t["metadata"]["name"]: (t.get("status") or {}).get("phase") for t in listed["items"]}
        return {n: now.get(n) for n in plan}

    proxy = FaultProxy(Upstream.from_kubeconfig(REPO / ".cluster/kubeconfig"), seed=0, rate=0.0)
    proxy.faulting = False  # no random faults: only the hold and the 410 below
    started = time.monotonic()
    with proxy:
        op = own_operator(ns, proxy.write_kubeconfig(tmp_path / "kubeconfig"), tmp_path / "op.log")
        op.start()
        try:
            with StatusLog(api_client, ns, list(plan)) as seen:
                submit(before)
                wait_until(
                    "the first 3 Running, their code started",
                    60,
                    lambda: code_started(before) and all(phases()[n] == "Running" for n in before),
                    phases,
                )
                proxy.hold("jobs")
                held_at = time.monotonic()
                wait_until(
                    "the Job watch held",
                    5,
                    lambda: proxy.faults()[("held", "watch", "jobs")] >= 1,
                    proxy.report,
                )
                submit(during)
                wait_until(
                    "the code of the 3 created during the hold started",
                    60,
                    lambda: code_started(during),
                )
                chaos.set(gates["early"], 1)
                early = [n for n, g in plan.items() if g == "early"]
                wait_until(
                    "the early tasks' pods Succeeded, during the hold",
                    HOLD - (time.monotonic() - held_at),
                    lambda: all(pod_phases(api_client, ns, n) == ["Succeeded"] for n in early),
                )
                time.sleep(max(0.0, held_at + HOLD - time.monotonic()))  # the rest of the hold
                during_hold = phases()
                lists = proxy.requests()[("list", "jobs")]
                proxy.release("jobs", expire=True)
                relisted_at = time.monotonic()
                wait_until(
                    "the next Job watch answered 410, and the Jobs listed again",
                    15,
                    lambda: (
                        proxy.faults()[("410", "watch", "jobs")] >= 1
                        and proxy.requests()[("list", "jobs")] > lists
                    ),
                    proxy.report,
                )
                chaos.set(gates["late"], 1)
                left = set(plan)
                end = relisted_at + 60
                while left and time.monotonic() < end:
                    left = {n for n, p in phases().items() if p not in FINAL}
                    time.sleep(0.5)
                final_after = time.monotonic() - relisted_at
        finally:
            op.stop(signal.SIGTERM)
            report = proxy.report()
    print(
        f"\nJob watch held {HOLD:.0f} s, then 410: test {time.monotonic() - started:.0f} s, all "
        f"final {final_after:.1f} s after the re-list; phases at the end of the hold: "
        f"{during_hold}\n{report}"
    )
    history = "\n".join(f"  {n}:\n{seen.show(n)}" for n in plan)
    assert not left, f"stranded: {sorted(left)}\n{history}\n{report}"
    lost = [n for n in plan if "Lost" in seen.reasons(n)]
    assert lost == [], f"Lost: {lost}\n{history}"
    wrong: list[tuple[Any, ...]] = []
    for name in plan:
        st = status_of(api_client, ns, name)
        got = (st.get("phase"), st.get("attempts"), st.get("stdout"), st.get("reason"))
        if got != ("Succeeded", 1, f"done {name}\n", "Completed"):
            wrong.append((name, got, st.get("message")))
        runs = int(chaos.get(f"chaos:{name}:1") or 0), int(chaos.get(f"chaos:{name}:2") or 0)
        if runs != (1, 0):
            wrong.append((name, "runs of attempts 1, 2", runs))
        if (jobs := jobs_by_attempt(api_client, ns, name)) != ["1"]:
            wrong.append((name, "Jobs by attempt", jobs))
    assert wrong == [], f"{wrong}\n{history}"


# --- 3. A CodeTask deleted during its retry backoff --------------------------------------------


@pytest.mark.timeout(180)
def test_task_deleted_during_backoff_gets_no_next_job(
    api_client: client.ApiClient, namespace: str, operator: Operator
) -> None:
    """Proves: a task deleted while it waits to retry (attempt 1 ended NonZeroExit, backoff 10 s)
    never gets a Job for attempt 2: a watch on the namespace's Jobs, from before the delete until
    10 s past the retry's due time, sees no Job of attempt 2 or later (its creation is caught even
    if the garbage collector deletes it at once). Fails when a deleted task's retry timer still
    creates its next Job."""
    ns = namespace
    body = codetask(
        "doomed",
        language="bash",
        code="echo failing; exit 1\n",
        retries=2,
        retryPolicy=["NonZeroExit"],
        backoffSeconds=10,
        resources=SMALL,
    )
    create(api_client, ns, body)
    wait_until(
        "attempt 1 ended, reason Retrying",
        60,
        lambda: status_of(api_client, ns, "doomed").get("reason") == "Retrying",
        lambda: status_of(api_client, ns, "doomed"),
    )
    due_raw = status_of(api_client, ns, "doomed")["nextAttemptTime"]
    due = datetime.fromisoformat(due_raw.replace("Z", "+00:00"))
    batch = client.BatchV1Api(api_client)
    since = batch.list_namespaced_job(ns).metadata.resource_version
    client.CustomObjectsApi(api_client).delete_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, "doomed"
    )
    deleted = datetime.now(UTC)
    assert deleted < due, f"deleted at {deleted}, after the retry was due ({due_raw})"
    watch_for = (due - deleted).total_seconds() + 10
    seen: list[tuple[str, str, str | None]] = []
    stream = watch.Watch()
    end = time.monotonic() + watch_for
    while (left := end - time.monotonic()) > 0:
        for event in stream.stream(
            batch.list_namespaced_job,
            ns,
            resource_version=since,
            timeout_seconds=max(1, int(left)),
            _request_timeout=left + 10,
        ):
            job: Any = event["object"]
            since = job.metadata.resource_version
            attempt = (job.metadata.labels or {}).get(LABEL_ATTEMPT)
            seen.append((event["type"], job.metadata.name, attempt))
            if time.monotonic() > end:
                stream.stop()
    later = [s for s in seen if s[2] != "1"]
    print(f"\nwatched Jobs {watch_for:.1f} s after the delete: {seen}")
    assert later == [], f"Jobs of a later attempt after the task was deleted: {later}"
    with pytest.raises(client.ApiException) as gone:
        get(api_client, ns, "doomed")
    assert gone.value.status == 404


# --- 4. Cancel after the code finished while the operator was down ----------------------------


@pytest.mark.timeout(180)
def test_cancel_after_the_code_finished_keeps_the_result(
    api_client: client.ApiClient, own_ns: str, kubeconfig: str, tmp_path: Path
) -> None:
    """Proves: a task whose code finished (exit 0) while the operator was down, and which was then
    cancelled (spec.cancel=true) before the operator came back, ends Succeeded with its stdout and
    exit code: the result that exists stands. Fails when the cancel is applied without first
    reading how the attempt ended (the task ends Cancelled, its output lost)."""
    ns = own_ns
    op = own_operator(ns, kubeconfig, tmp_path / "operator.log")
    op.start()
    try:
        line = f"finished before the cancel {uuid.uuid4().hex[:6]}"
        code = f"import time\ntime.sleep(4)\nprint({line!r})\n"
        create(api_client, ns, codetask("late-cancel", language="python", code=code))
        wait_until(
            "Running",
            60,
            lambda: status_of(api_client, ns, "late-cancel").get("phase") == "Running",
        )
        op.stop(signal.SIGKILL)
        wait_until(
            "the pod Succeeded",
            30,
            lambda: pod_phases(api_client, ns, "late-cancel") == ["Succeeded"],
            lambda: pod_phases(api_client, ns, "late-cancel"),
        )
        assert status_of(api_client, ns, "late-cancel").get("phase") == "Running"
        client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, "late-cancel", {"spec": {"cancel": True}}
        )
        op.start()
        wait_until(
            "final",
            60,
            lambda: status_of(api_client, ns, "late-cancel").get("phase") in FINAL,
        )
        st = status_of(api_client, ns, "late-cancel")
        got = (st.get("phase"), st.get("reason"), st.get("exitCode"), st.get("stdout"))
        assert got == ("Succeeded", "Completed", 0, f"{line}\n"), st.get("message")
    finally:
        op.stop(signal.SIGTERM)


# --- 5. A pod the cluster refuses to create ---------------------------------------------------

QUOTA_WORDS = "exceeded quota"
"""What the API server says when the Job controller's pod create is refused by a ResourceQuota."""
TIMEOUT = 20


def no_pod_message(message: str) -> bool:
    return QUOTA_WORDS in message or re.search(r"\bno pod\b", message, re.IGNORECASE) is not None


@pytest.mark.timeout(120)
def test_pod_refused_by_quota_reports_why_and_ends_on_time(
    api_client: client.ApiClient, namespace: str, operator: Operator
) -> None:
    """Proves: in a namespace whose ResourceQuota allows no pods, a task (timeoutSeconds 20) shows
    within 30 s of its creation phase Pending, reason FailedCreate and a message carrying the
    cluster's words ("exceeded quota"), and is final within timeoutSeconds + 10 s: TimedOut,
    reason DeadlineExceeded, the message saying no pod could be created. Fails when such a task
    stays Pending without saying why, or never times out (a Job that never got a pod has no
    startTime, so Kubernetes' own deadline never runs)."""
    ns = namespace
    core = client.CoreV1Api(api_client)
    core.create_namespaced_resource_quota(
        ns,
        client.V1ResourceQuota(
            metadata=client.V1ObjectMeta(name="no-pods"),
            spec=client.V1ResourceQuotaSpec(hard={"pods": "0"}),
        ),
    )

    def quota_ready() -> bool:
        quota = core.read_namespaced_resource_quota("no-pods", ns)
        return bool(quota.status and quota.status.hard)

    # Until the quota controller has filled in its status, pods are refused with other words.
    wait_until("the quota in force", 30, quota_ready)
    create(
        api_client,
        ns,
        codetask("refused", language="python", code="print('never')\n", timeoutSeconds=TIMEOUT),
    )
    created = time.monotonic()
    told: list[dict[str, Any]] = []

    def failed_create() -> bool:
        st = status_of(api_client, ns, "refused")
        if st.get("reason") == "FailedCreate" and QUOTA_WORDS in (st.get("message") or ""):
            told.append(st)
        return bool(told)

    with StatusLog(api_client, ns, ["refused"]) as seen:
        said = wait_until(
            "reason FailedCreate with the quota message",
            30,
            failed_create,
            lambda: seen.show("refused"),
        )
        wait_until(
            "final",
            max(0.0, created + TIMEOUT + 10 - time.monotonic()),
            lambda: status_of(api_client, ns, "refused").get("phase") in FINAL,
            lambda: seen.show("refused"),
        )
    st = status_of(api_client, ns, "refused")
    print(
        f"\nquota refusal: FailedCreate {said:.1f} s after creation, final "
        f"{time.monotonic() - created:.1f} s after; went through:\n{seen.show('refused')}"
    )
    assert told[0].get("phase") == "Pending", told[0]
    assert (st.get("phase"), st.get("reason")) == ("TimedOut", "DeadlineExceeded"), st
    assert no_pod_message(st.get("message") or ""), st.get("message")
