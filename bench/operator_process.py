"""The operator under test as a child process: start, measure (/proc, /metrics), stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bench.cluster import Identity
from bench.profile import cpu_seconds

LOCAL_CLUSTER_ENV = {
    "CODETASK_IMAGE_PULL_POLICY": "Never",
    "CODETASK_POD_DNS_POLICY": "Default",
    "CODETASK_LOG_FORMAT": "json",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Operator:
    """`python -m bench.launcher` (= `python -m codetask_operator`, optionally without pods)."""

    identity: Identity
    namespaces: str
    log_path: Path
    no_pods: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)
    health_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self, timeout: float = 60) -> float:
        """Start and wait for /healthz; returns the seconds that took."""
        env = {
            **os.environ,
            **LOCAL_CLUSTER_ENV,
            "KUBECONFIG": str(self.identity.kubeconfig),
            "CODETASK_NAMESPACES": self.namespaces,
            "CODETASK_HEALTH_PORT": str(self.health_port),
            "CODETASK_METRICS_PORT": str(self.metrics_port),
            "BENCH_NO_PODS": "1" if self.no_pods else "",
            **self.extra_env,
        }
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.launcher"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator exited: {self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.health_port}/healthz", timeout=1
                ):
                    return time.monotonic() - started
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"operator not healthy after {timeout}s; log: {self.log_path}")

    def exit_code(self) -> int | None:
        """The exit code once the process has ended, else None."""
        return self.proc.poll() if self.proc else None

    def last_error(self) -> str:
        """The last line of its log that names an error (or the last line)."""
        lines = self.log_path.read_text(errors="replace").splitlines() or [""]
        hits = [line for line in lines if "Error" in line or "error" in line]
        return (hits or lines)[-1][-600:]

    @property
    def pid(self) -> int:
        assert self.proc is not None, "operator not started"
        return self.proc.pid

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def memory_mb(self) -> dict[str, float]:
        """VmRSS (now) and VmHWM (peak) from /proc/PID/status, in MB (10^6 bytes)."""
        fields: dict[str, float] = {}
        try:
            text = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:  # reaped
            return fields
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = round(int(value.split()[0]) * 1024 / 1e6, 1)
        return fields

    def cpu_seconds(self) -> float:
        """User + system CPU time so far."""
        return cpu_seconds(self.pid)

    def samples(self) -> list[tuple[str, dict[str, str], float]]:
        """Every sample on /metrics: (name, labels, value)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        return [
            (s.name, dict(s.labels), s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]

    def api_writes(self) -> dict[str, float]:
        """`codetask_api_writes_total`, keyed `verb resource`."""
        return {
            f"{labels['verb']} {labels['resource']}": value
            for name, labels, value in self.samples()
            if name == "codetask_api_writes_total"
        }
