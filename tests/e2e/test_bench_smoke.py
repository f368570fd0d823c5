"""The benchmarks keep working: the whole suite at a tenth of its size, once (`make test`).

No figure is asserted (timings belong to `make bench` on a quiet machine); what is checked is that
every benchmark ran to its end against the chart-installed operator, wrote its result, and that
the table and the plot were made from them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import BENCHMARKS
from tests.conftest import REPO


@pytest.mark.timeout(1200)
def test_every_benchmark_runs_at_a_tenth_of_its_size(kubeconfig: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [
            *(sys.executable, "-m", "bench"),
            *("--scale", "0.1", "--repeat", "1", "--results", str(tmp_path)),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1150,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    results = {p.stem: json.loads(p.read_text()) for p in tmp_path.glob("*.json")}
    assert set(results) == set(BENCHMARKS)
    for name, result in results.items():
        assert result["figures"], name
        assert all(len(f["runs"]) == 1 for f in result["figures"]), name
    assert "| figure | value |" in done.stdout
    assert (tmp_path / "figures.png").stat().st_size > 10_000
