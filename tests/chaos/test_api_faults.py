"""API server faults (issue #11 item 4): answers of 429/5xx are retried, and a restarted API server
loses nothing.

- `test_api_429_5xx_answers_are_retried` (`make test`): an operator of its own talks to the API
  server through `tests/faultproxy.py`, which answers a seeded share of its requests (writes,
  lists, watches) with 429 (Retry-After: 1), 500 or 503, applies some writes and then answers 500,
  and ends watch streams every few seconds. Set API_FAULT_SEED to replay, API_FAULT_TASKS,
  API_FAULT_RATE to change a run.
- `test_apiserver_restart_with_50_tasks_loses_nothing` (`make chaos` only): the local cluster's
  kube-apiserver is stopped (SIGTERM, SIGKILL after API_RESTART_GRACE s), kept down
  API_RESTART_STOP_FOR s and started again (`hack/cluster/restart.sh`) while 50 tasks run: 30
  sleeping 45 s, 20 quick ones just created.

Both check every task's phase, exit code, stdout and attempts, one Job per attempt, and that the
code ran exactly once per attempt: an INCR on a Redis key per (task, attempt), made by the code.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from kubernetes import client

from tests.chaos.disrupt import cluster_disruption, require_local_cluster, restart
from tests.chaos.test_operator_crashes import COUNT
from tests.conftest import SESSION
from tests.e2e.conftest import OPERATOR_ENV, free_port
from tests.e2e.tasks import FINAL, Operator, codetask, create, get
from tests.faultproxy import WRITE_VERBS, FaultProxy, Upstream

REPO = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("API_FAULT_SEED", str(random.SystemRandom().randrange(10**6))))
FAULT_TASKS = int(os.environ.get("API_FAULT_TASKS", "20"))
FAULT_RATE = float(os.environ.get("API_FAULT_RATE", "0.25"))
MIN_WRITE_FAULTS = 10
"""The fault test fails unless at least this many writes were faulted (about 30 expected)."""
SMALL = {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}}
"""50 pods at the default 100m CPU request would not fit the 2-core node."""


@dataclass(frozen=True)
class Kind:
    """A kind of task and what it must end with. `{name}` in code and stdout is the task's name."""

    code: str
    phase: str
    exit_code: int | None = 0
    stdout: str | None = None
    attempts: int = 1
    language: str = "python"
    counted: bool = True
    """The code INCRs its Redis key (bash tasks do not)."""
    spec: dict[str, Any] = field(default_factory=dict)


KINDS = {
    "ok": Kind(COUNT + "print('ok', '{name}')\n", "Succeeded", stdout="ok {name}\n"),
    "fail": Kind(
        COUNT + "print('failing')\nraise SystemExit(3)\n", "Failed", exit_code=3, stdout="failing\n"
    ),
    "retry": Kind(
        COUNT
        + "n = os.environ['CODETASK_ATTEMPT']\nprint('attempt', n)\nraise SystemExit(n != '2')\n",
        "Succeeded",
        stdout="attempt 2\n",
        attempts=2,
        spec={"retries": 1, "retryPolicy": ["NonZeroExit"], "backoffSeconds": 1},
    ),
    "bash": Kind(
        'echo "bash $CODETASK_NAME"; exit 0\n',
        "Succeeded",
        stdout="bash {name}\n",
        language="bash",
        counted=False,
    ),
    "timeout": Kind(
        COUNT + "print('started', flush=True)\nimport time\ntime.sleep(60)\n",
        "TimedOut",
        exit_code=None,
        spec={"timeoutSeconds": 6},
    ),
    "sleep": Kind(
        COUNT + "import time\ntime.sleep(45)\nprint('slept', '{name}')\n",
        "Succeeded",
        stdout="slept {name}\n",
    ),
}


def own_namespace(api: client.ApiClient, tag: str) -> str:
    """A namespace outside the session operator's `SESSION-*`, served by this test's operator."""
    name = f"{SESSION}{tag}-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(api).create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(name=name, labels={"codetask.dev/test": "true"})
        )
    )
    return name


def own_operator(ns: str, kubeconfig: Path, log_path: Path) -> Operator:
    """An operator process serving only `ns`, reaching the API server through `kubeconfig`."""
    env = {
        **os.environ,
        **OPERATOR_ENV,
        "CODETASK_NAMESPACES": ns,
        "CODETASK_HEALTH_PORT": str(free_port()),
        "CODETASK_METRICS_PORT": str(free_port()),
        "KUBECONFIG": str(kubeconfig),
    }
    return Operator(cmd=[sys.executable, "-m", "codetask_operator"], env=env, log_path=log_path)


def submit(api: client.ApiClient, ns: str, plan: dict[str, str], redis_url: str) -> None:
    for name, kind_name in plan.items():
        kind = KINDS[kind_name]
        body = codetask(
            name,
            language=kind.language,
            code=kind.code.replace("{name}", name),
            env=[{"name": "CHAOS_REDIS", "value": redis_url}],
            resources=SMALL,
            **kind.spec,
        )
        create(api, ns, body)


def statuses(api: client.ApiClient, ns: str) -> dict[str, dict[str, Any]]:
    listed: Any = client.CustomObjectsApi(api).list_namespaced_custom_object(
        "codetask.dev", "v1alpha1", ns, "codetasks"
    )
    items: list[dict[str, Any]] = listed["items"]
    return {t["metadata"]["name"]: t.get("status") or {} for t in items}


def phases(api: client.ApiClient, ns: str) -> dict[str, str | None]:
    return {name: status.get("phase") for name, status in statuses(api, ns).items()}


def wait_until(
    api: client.ApiClient, ns: str, names: set[str], wanted: set[str], timeout: float
) -> set[str]:
    """Wait until every task of `names` is in a phase of `wanted`; the ones that are not."""
    end = time.monotonic() + timeout
    while True:
        now = phases(api, ns)
        left = {n for n in names if now.get(n) not in wanted}
        if not left or time.monotonic() > end:
            return left
        time.sleep(1)


def wrong_results(
    api: client.ApiClient, ns: str, plan: dict[str, str], redis_url: str
) -> list[tuple[Any, ...]]:
    """Every way a task's end differs from its kind's: phase, attempts, exit code, stdout, Jobs
    per attempt, runs of the code per attempt."""
    counts = redis.Redis.from_url(redis_url)
    jobs: dict[str, list[str]] = {}
    for job in client.BatchV1Api(api).list_namespaced_job(ns).items:
        meta: Any = job.metadata
        jobs.setdefault(meta.owner_references[0].name, []).append(meta.name)
    wrong: list[tuple[Any, ...]] = []
    for name, kind_name in plan.items():
        kind = KINDS[kind_name]
        status = get(api, ns, name).get("status") or {}
        got = (status.get("phase"), status.get("attempts"))
        if got != (kind.phase, kind.attempts):
            wrong.append((name, "phase/attempts", got, status.get("reason"), status.get("message")))
        if kind.exit_code is not None and status.get("exitCode") != kind.exit_code:
            wrong.append((name, "exitCode", status.get("exitCode"), status.get("message")))
        if kind.stdout is not None and status.get("stdout") != kind.stdout.replace("{name}", name):
            wrong.append((name, "stdout", status.get("stdout"), status.get("message")))
        suffixes = sorted(int(j.rsplit("-", 1)[1]) for j in jobs.get(name, []))
        if suffixes != list(range(1, kind.attempts + 1)):
            wrong.append((name, "Jobs", sorted(jobs.get(name, []))))
        if kind.counted:
            keys = [f"chaos:{name}:{a}" for a in range(1, kind.attempts + 1)]
            runs = [int(raw) if isinstance(raw := counts.get(key), bytes) else 0 for key in keys]
            # A timeout may stop an attempt before its code ran (the deadline counts pod start-up).
            allowed = ([0], [1]) if kind_name == "timeout" else ([1] * kind.attempts,)
            if runs not in allowed:
                wrong.append((name, "runs per attempt", runs))
    return wrong


@pytest.fixture
def fault_namespace(api_client: client.ApiClient) -> Iterator[str]:
    ns = own_namespace(api_client, "f")
    yield ns
    client.CoreV1Api(api_client).delete_namespace(ns, propagation_policy="Background")


@pytest.mark.timeout(420)
def test_api_429_5xx_answers_are_retried(
    api_client: client.ApiClient,
    crd: None,
    fault_namespace: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    ns = fault_namespace
    upstream = Upstream.from_kubeconfig(REPO / ".cluster/kubeconfig")
    # kopf gives up a watch after 9 failed attempts in a row: at 0.3 that is 2e-5 per watch.
    proxy = FaultProxy(upstream, seed=SEED, rate=FAULT_RATE, watch_rate=0.3)
    print(
        f"API fault seed {SEED} (API_FAULT_SEED to replay): {FAULT_TASKS} tasks, rate {FAULT_RATE}"
    )
    kinds = [k for k in KINDS if k != "sleep"]
    plan = {f"f{i}-{kinds[i % len(kinds)]}": kinds[i % len(kinds)] for i in range(FAULT_TASKS)}
    started = time.monotonic()
    with proxy:
        operator = own_operator(
            ns, proxy.write_kubeconfig(tmp_path / "kubeconfig"), tmp_path / "op.log"
        )
        operator.start()
        try:
            submit(api_client, ns, plan, redis_url)
            left = wait_until(api_client, ns, set(plan), FINAL, timeout=300)
            # What the operator writes after the end (Events, the last status) is faulted too.
            time.sleep(2)
        finally:
            operator.stop()
            report = proxy.report()
            print(report)
    print(f"fault test: {time.monotonic() - started:.0f} s; operator log: {operator.log_path}")
    faults = proxy.faults()
    on_writes = sum(n for (f, verb, _), n in faults.items() if verb in WRITE_VERBS)
    on_watches = sum(
        n for (f, verb, _), n in faults.items() if verb == "watch" and f != "watch-end"
    )
    by_kind = Counter[str]()
    for (f, _, _), n in faults.items():
        by_kind[f] += n
    print(
        f"faults injected: {on_writes} on writes, {on_watches} on watch requests, {dict(by_kind)}"
    )
    failed = operator.log().count('"reconcile failed')
    print(f"operator: {failed} reconcile steps failed (left to the sweeper)")

    assert not left, f"seed {SEED}: not finished: {sorted(left)}\n{report}"
    wrong = wrong_results(api_client, ns, plan, redis_url)
    assert wrong == [], f"seed {SEED}: {wrong[:20]}\n{report}"
    assert on_writes >= MIN_WRITE_FAULTS, f"only {on_writes} faults on writes:\n{report}"
    assert on_watches >= 1, f"no fault on a watch request:\n{report}"
    assert by_kind["500-after"] >= 1, f"no write was applied and then answered 500:\n{report}"


def _first_status_write_after(log_path: Path, after: float) -> float | None:
    """Epoch time of the operator's first status write (its "status <phase>" line) after `after`."""
    for line in log_path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not str(entry.get("message", "")).startswith("status "):
            continue
        at = datetime.fromisoformat(entry["timestamp"]).timestamp()
        if at >= after:
            return at
    return None


@pytest.mark.long
@pytest.mark.timeout(1800)
def test_apiserver_restart_with_50_tasks_loses_nothing(
    api_client: client.ApiClient, crd: None, redis_url: str, tmp_path: Path
) -> None:
    require_local_cluster()
    stop_for = float(os.environ.get("API_RESTART_STOP_FOR", "5"))
    grace = float(os.environ.get("API_RESTART_GRACE", "5"))
    sleepers = {f"s{i}-sleep": "sleep" for i in range(30)}
    quick_kinds = ["ok", "fail", "retry", "bash"]
    quick = {f"q{i}-{quick_kinds[i % 4]}": quick_kinds[i % 4] for i in range(20)}
    plan = {**sleepers, **quick}
    started = time.monotonic()
    ns = own_namespace(api_client, "a")
    try:
        with cluster_disruption("test_api_faults: kube-apiserver restart with 50 tasks"):
            operator = own_operator(ns, REPO / ".cluster/kubeconfig", tmp_path / "op.log")
            operator.start()
            try:
                submit(api_client, ns, sleepers, redis_url)
                not_running = wait_until(api_client, ns, set(sleepers), {"Running"}, timeout=240)
                assert not not_running, f"sleepers not Running: {sorted(not_running)}"
                # The quick ones are in flight (Job creates, pods starting) when the API goes.
                submit(api_client, ns, quick, redis_url)
                print(f"at the stop: {dict(Counter(phases(api_client, ns).values()))}")
                measured = restart("kube-apiserver", stop_for=stop_for, grace=grace)
                left = wait_until(api_client, ns, set(plan), FINAL, timeout=600)
                all_final = time.time()
                wrote = _first_status_write_after(operator.log_path, measured.healthy_at)
            finally:
                operator.stop()
        back = measured.healthy_at
        print(
            f"kube-apiserver down {measured.down_seconds:.1f} s "
            f"(stopped for {measured.started_at - measured.stopped_at:.1f} s, ready "
            f"{measured.healthy_at - measured.started_at:.1f} s after its start); after its "
            f"return: first status write {'none' if wrote is None else f'{wrote - back:.2f} s'}, "
            f"all 50 final {all_final - back:.0f} s; {operator.log().count('reconcile failed')} "
            f"reconcile steps failed; test {time.monotonic() - started:.0f} s; operator log "
            f"{operator.log_path}"
        )
        assert not left, f"not finished: {sorted(left)}"
        assert wrote is not None, "the operator wrote no status after the API server returned"
        wrong = wrong_results(api_client, ns, plan, redis_url)
        assert wrong == [], f"{wrong[:20]}"
        # Their ends were seen only through watches resumed after the restart (the operator
        # reads nothing else): the restart hit running tasks.
        ended_after = [
            name
            for name, status in statuses(api_client, ns).items()
            if name in sleepers
            and datetime.fromisoformat(status["completionTime"]).timestamp() > back
        ]
        print(f"{len(ended_after)} of {len(sleepers)} sleepers finished after the return")
        assert ended_after, "no running task finished after the API server returned"
    finally:
        client.CoreV1Api(api_client).delete_namespace(ns, propagation_policy="Background")
