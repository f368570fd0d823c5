"""`make bench`'s plot: each figure of the recorded results beside its baseline, run by run."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

FILE = "figures.png"


def write(results: list[dict[str, Any]], path: Path) -> Path:
    """One panel per figure that has a baseline: the figure's value and its baseline in each of
    the repeated runs (a line each), so spread and ratio show together."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (result["name"], fig)
        for result in results
        for fig in result["figures"]
        if fig.get("baseline") is not None
    ]
    cols = 3
    rows = max(1, math.ceil(len(panels) / cols))
    figure, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.2 * rows), squeeze=False)
    for ax, (bench, fig) in zip(axes.flat, panels, strict=False):
        runs = fig.get("runs") or [{"value": fig["value"], "baseline": fig["baseline"]}]
        x = list(range(1, len(runs) + 1))
        ax.plot(x, [r["value"] for r in runs], "o-", label=fig["name"])
        ax.plot(x, [r["baseline"] for r in runs], "s--", label=fig["baseline_name"])
        ax.set_title(f"{bench}: {fig['name']}", fontsize=9)
        ax.set_xlabel("run")
        ax.set_ylabel(fig["unit"])
        ax.set_xticks(x)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
