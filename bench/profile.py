"""Where the time goes: py-spy samples of the operator, CPU seconds of every process involved."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CLUSTER_PIDS = Path(os.environ.get("CODETASK_CLUSTER_STATE", "/var/lib/codetask-cluster")) / "pids"
COMPONENTS = (
    "kube-apiserver",
    "etcd",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "containerd",
)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def component_cpu() -> dict[str, float]:
    """CPU seconds so far of the local cluster's processes (those whose PID file exists)."""
    out = {}
    for name in COMPONENTS:
        with contextlib.suppress(OSError, ValueError):
            out[name] = cpu_seconds(int((CLUSTER_PIDS / f"{name}.pid").read_text()))
    return out


class CpuMeter:
    """CPU seconds the cluster, the given processes and this one spent from creation to `stop`."""

    def __init__(self, pids: Mapping[str, int | None]) -> None:
        """`pids`: the processes to count besides the cluster's and this one, by name (None: not
        found)."""
        self.pids = {**pids, "benchmark client": os.getpid()}
        self._before = self._now()

    def _now(self) -> dict[str, float]:
        out = component_cpu()
        for name, pid in self.pids.items():
            if pid is not None:
                with contextlib.suppress(OSError):  # it exited
                    out[name] = cpu_seconds(pid)
        return out

    def stop(self) -> dict[str, float]:
        after = self._now()
        return {k: round(after[k] - self._before[k], 2) for k in after if k in self._before}


BUCKETS = (
    ("kopf index handlers", ("index_resource (kopf",)),
    ("Event posting by kopf", ("_poster_worker (kopf", "post_event (kopf")),
    ("operator: API calls (kubernetes_asyncio, aiohttp)", ("Kube.",)),
    (
        "operator: its own logic",
        tuple(
            f"(codetask_operator/{m}.py)"
            for m in ("handlers", "reconcile", "status", "jobs", "admission", "api", "lifecycle")
        ),
    ),
    ("kopf: per-event processing", ("process_resource_event (kopf",)),
    ("kopf: watch streams", ("watcher (kopf", "continuous_watch (kopf", "infinite_watch (kopf")),
)
"""Where a sample goes: the first bucket with a frame containing one of its markers."""


def buckets(folded: str) -> dict[str, int]:
    """Samples per BUCKETS entry (the rest under `other`), from py-spy's folded output."""
    out: dict[str, int] = {name: 0 for name, _ in BUCKETS}
    out["other"] = 0
    for line in folded.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        name = next(
            (name for name, markers in BUCKETS if any(m in stack for m in markers)), "other"
        )
        out[name] += int(count)
    return out


def _etcd_requests() -> dict[str, tuple[float, float]]:
    """(seconds, count) the API server spent in etcd requests so far, by `operation type`."""
    from prometheus_client.parser import text_string_to_metric_families

    from bench.cluster import KUBECONFIG, kubectl

    text = subprocess.run(
        [kubectl(), "--kubeconfig", str(KUBECONFIG), "get", "--raw", "/metrics"],
        capture_output=True,
        text=True,
    ).stdout
    out: dict[str, tuple[float, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "etcd_request_duration_seconds":
            continue
        for sample in family.samples:
            key = f"{sample.labels.get('operation')} {sample.labels.get('type')}"
            total, count = out.get(key, (0.0, 0.0))
            if sample.name.endswith("_sum"):
                out[key] = (sample.value, count)
            elif sample.name.endswith("_count"):
                out[key] = (total, sample.value)
    return out


class EtcdMeter:
    """Mean latency of the API server's etcd requests between creation and `stop`."""

    def __init__(self) -> None:
        self._before = _etcd_requests()

    def stop(self, least: int = 50) -> dict[str, dict[str, float]]:
        """`operation type` → requests and mean ms, for those with at least `least` requests."""
        out = {}
        for key, (total, count) in _etcd_requests().items():
            total0, count0 = self._before.get(key, (0.0, 0.0))
            if count - count0 >= least:
                n = count - count0
                out[key] = {"requests": n, "mean_ms": round(1000 * (total - total0) / n, 1)}
        return out


def summarize(folded: str, top: int = 15) -> dict[str, Any]:
    """py-spy's raw (folded) output → samples, and the busiest frames by self and total samples."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in folded.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in dict.fromkeys(frames):  # each frame once per stack, in a stable order
            total[frame] += n
    return {
        "samples": samples,
        "buckets": buckets(folded),
        "self": own.most_common(top),
        "total": total.most_common(top),
    }


def _py_spy() -> str | None:
    return shutil.which("py-spy") or next(
        (str(p) for p in [Path(sys.executable).parent / "py-spy"] if p.exists()), None
    )


@contextlib.contextmanager
def record(pid: int, path: Path, enabled: bool) -> Iterator[dict[str, Any]]:
    """py-spy samples `pid` while the block runs (if `enabled`); the dict gets the summary."""
    summary: dict[str, Any] = {}
    exe = _py_spy() if enabled else None
    if enabled and exe is None:
        summary["error"] = "py-spy is not installed (.venv/bin/pip install py-spy)"
    if exe is None:
        yield summary
        return
    argv = [exe, "record", "--pid", str(pid), "--format", "raw", "--output", str(path)]
    proc = subprocess.Popen(
        [*argv, "--rate", "100", "--nolineno", "--gil"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield summary
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        if path.exists():
            summary.update(summarize(path.read_text()), file=str(path))


def pod_pid(pod_uid: str, marker: str) -> int | None:
    """The process of the pod whose command line contains `marker` (cgroupfs names the pod's
    cgroup `pod<uid>`, systemd `pod<uid with _>`)."""
    names = (f"pod{pod_uid}", f"pod{pod_uid.replace('-', '_')}")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cgroup = (proc / "cgroup").read_text()
            if not any(n in cgroup for n in names):
                continue
            if marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                return int(proc.name)
        except OSError:
            continue
    return None
