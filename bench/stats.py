"""Pure: percentiles and summaries of samples."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], p: float) -> float:
    """The `p`-th percentile (0 ≤ p ≤ 100), linear between closest ranks (numpy's default)."""
    if not values:
        raise ValueError("no samples")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is not within [0, 100]")
    ordered = sorted(values)
    if len(ordered) == 1 or p == 100:
        return ordered[-1]
    if p == 0:
        return ordered[0]
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    return ordered[low] + (ordered[low + 1] - ordered[low]) * (rank - low)


def summary(values: Sequence[float], digits: int = 2) -> dict[str, float]:
    """n, min, p50, p95, p99, max and mean, rounded to `digits`."""
    if not values:
        raise ValueError("no samples")
    return {
        "n": len(values),
        "min": round(min(values), digits),
        "p50": round(percentile(values, 50), digits),
        "p95": round(percentile(values, 95), digits),
        "p99": round(percentile(values, 99), digits),
        "max": round(max(values), digits),
        "mean": round(statistics.fmean(values), digits),
    }
