"""Figures, the machine they were measured on, and how they are written and shown."""

from __future__ import annotations

import json
import os
import platform
import statistics
import threading
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Figure:
    """One measured figure beside its baseline and target."""

    name: str
    value: float
    unit: str
    baseline: float | None
    baseline_name: str
    target: str
    met: bool | None
    """None: the figure has no target of its own (context for another)."""
    runs: list[dict[str, Any]] = field(default_factory=list)
    """With repeated runs: each run's value, baseline, ratio and met; the fields above are then
    the medians (the ratio: of the runs' own ratios) and met in every run."""

    @property
    def ratio(self) -> float | None:
        if self.runs:
            ratios = [r["ratio"] for r in self.runs if r["ratio"] is not None]
            return round(statistics.median(ratios), 2) if ratios else None
        if not self.baseline:
            return None
        return round(self.value / self.baseline, 2)

    def line(self) -> str:
        ratio = f"{self.ratio:.2f}x" if self.ratio is not None else "-"
        base = f"{self.baseline:g} {self.unit} ({self.baseline_name})" if self.baseline else "-"
        verdict = {True: "MET", False: "MISSED", None: ""}[self.met]
        return (
            f"  {self.name:<34} {self.value:>10g} {self.unit:<7} ratio {ratio:<7} "
            f"baseline {base}; target {self.target} {verdict}"
        )


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class LoadSampler:
    """The machine's load while a benchmark runs (others share the machine and cluster)."""

    def __init__(self, interval: float = 2.0) -> None:
        self.interval = interval
        self.start_load = os.getloadavg()
        self.start_cpu = _cpu_times()
        self.max_load1 = self.start_load[0]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.max_load1 = max(self.max_load1, os.getloadavg()[0])

    def finish(self) -> dict[str, Any]:
        self._stop.set()
        busy0, total0 = self.start_cpu
        busy1, total1 = _cpu_times()
        end = os.getloadavg()
        return {
            "loadavg_start": [round(x, 2) for x in self.start_load],
            "loadavg_end": [round(x, 2) for x in end],
            "load1_max": round(max(self.max_load1, end[0]), 2),
            "cpu_busy_percent": round(100 * (busy1 - busy0) / max(1, total1 - total0), 1),
        }


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def sources() -> dict[str, Any]:
    """Which code was measured: git HEAD and a digest of the operator and runner sources as they
    were on disk (others may be editing the working tree)."""
    import hashlib
    import subprocess

    repo = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    files = sorted(
        [
            *repo.glob("operator/codetask_operator/**/*.py"),
            *repo.glob("runner-image/codetask_runner/*.py"),
        ]
    )
    for path in files:
        digest.update(path.relative_to(repo).as_posix().encode() + b"\0" + path.read_bytes())
    head = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(repo), "status", "--porcelain", "operator", "runner-image"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {"git_head": head, "uncommitted_changes": bool(dirty), "sha256": digest.hexdigest()[:16]}


def machine(kubernetes_version: str | None) -> dict[str, Any]:
    """Cores, CPU, kernel and the versions that decide the figures."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "kubernetes": kubernetes_version,
        "kopf": _version("kopf"),
        "kubernetes_asyncio": _version("kubernetes-asyncio"),
        "kubernetes_client": _version("kubernetes"),
        "sources": sources(),
    }


@dataclass
class Result:
    """One benchmark's figures and details, as written to `results/<name>.json`."""

    name: str
    figures: list[Figure]
    details: dict[str, Any]
    method: str
    machine: dict[str, Any] = field(default_factory=dict)
    load: dict[str, Any] = field(default_factory=dict)
    date: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    seconds: float = 0.0
    scale: float = 1.0
    variant: dict[str, str] = field(default_factory=dict)
    """Operator environment of a variant run (proposed changes); empty for the operator as is."""

    def write(self, results: Path = RESULTS, tag: str = "") -> Path:
        """`results/NAME.json`, or `results/variants/NAME.TAG.json` for a tagged variant run."""
        folder = results / "variants" if tag else results
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / (f"{self.name}.{tag}.json" if tag else f"{self.name}.json")
        data = asdict(self)
        for fig, raw in zip(self.figures, data["figures"], strict=True):
            raw["ratio"] = fig.ratio
        path.write_text(json.dumps(data, indent=2) + "\n")
        return path

    def show(self) -> str:
        load = self.load
        head = (
            f"{self.name}: {self.seconds:.0f}s, {self.machine.get('cores')} cores, "
            f"Kubernetes {self.machine.get('kubernetes')}, kopf {self.machine.get('kopf')}, "
            f"Python {self.machine.get('python')}; load {load.get('loadavg_start')} → "
            f"{load.get('loadavg_end')} (max {load.get('load1_max')}), "
            f"CPU busy {load.get('cpu_busy_percent')}%"
            + (f", scale {self.scale}" if self.scale != 1 else "")
        )
        return "\n".join([head, *(f.line() for f in self.figures)])


def combine(results: list[Result]) -> Result:
    """Repeated runs of one benchmark as one result: each figure's median with every run kept
    (`Figure.runs`), the details and load of each run."""
    first = results[0]
    figures = []
    for i, fig in enumerate(first.figures):
        same = [r.figures[i] for r in results]
        baselines = [f.baseline for f in same if f.baseline is not None]
        figures.append(
            Figure(
                fig.name,
                round(statistics.median(f.value for f in same), 2),
                fig.unit,
                round(statistics.median(baselines), 2) if baselines else None,
                fig.baseline_name,
                fig.target,
                None if fig.met is None else all(f.met for f in same),
                [
                    {"value": f.value, "baseline": f.baseline, "ratio": f.ratio, "met": f.met}
                    for f in same
                ],
            )
        )
    return Result(
        first.name,
        figures,
        {"runs": [r.details for r in results]},
        first.method,
        machine=first.machine,
        load={
            "runs": [r.load for r in results],
            "load1_max": max(r.load.get("load1_max", 0) for r in results),
        },
        date=first.date,
        seconds=round(sum(r.seconds for r in results), 1),
        scale=first.scale,
        variant=first.variant,
    )


def _spread(values: list[float], text: str) -> str:
    """`text` (the median) with the runs' range, when there are several."""
    if len(values) < 2:
        return text
    return f"{text} ({min(values):g}\N{EN DASH}{max(values):g})"


def markdown_table(results: list[dict[str, Any]]) -> str:
    """The README table: figure (median of the runs, their range), baseline, ratio (median of the
    runs' own ratios, their range), target, in how many runs it was met, highest load."""
    rows = [
        "| figure | value | baseline (same run) | ratio | target | met | load (1 min, max) |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        load = result.get("load", {}).get("load1_max", "?")
        for f in result["figures"]:
            runs = f.get("runs") or []
            value = _spread([r["value"] for r in runs], f"{f['value']:g}") + f" {f['unit']}"
            base = "-"
            if f["baseline"]:
                base = _spread(
                    [r["baseline"] for r in runs if r["baseline"] is not None], f"{f['baseline']:g}"
                )
                base = f"{base} {f['unit']} ({f['baseline_name']})"
            ratio = "-"
            if f.get("ratio") is not None:
                ratios = [r["ratio"] for r in runs if r["ratio"] is not None]
                ratio = _spread(ratios, f"{f['ratio']:.2f}") + "x"
            if f["met"] is None:
                met = "-"
            elif runs:
                hits = sum(bool(r["met"]) for r in runs)
                met = f"{hits}/{len(runs)}" if hits == len(runs) else f"**{hits}/{len(runs)}**"
            else:
                met = {True: "yes", False: "**no**"}[f["met"]]
            rows.append(
                f"| {f['name']} | {value} | {base} | {ratio} | {f['target']} | {met} | {load} |"
            )
    return "\n".join(rows)
