"""Prometheus metrics on /metrics (prometheus-client)."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import Counter, Histogram, start_http_server
from prometheus_client.core import REGISTRY, GaugeMetricFamily
from prometheus_client.registry import Collector

JOBS_CREATED = Counter("codetask_jobs_created", "Jobs created (one per attempt).")
FINISHED = Counter(
    "codetask_tasks_finished", "Tasks that reached a final phase.", ["phase", "reason"]
)
DURATION = Histogram(
    "codetask_task_duration_seconds",
    "Run time of finished tasks' last attempt.",
    ["phase"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
RETRIES = Counter("codetask_retries", "Attempts that failed and were retried.")
RECONCILE_ERRORS = Counter("codetask_reconcile_errors", "Reconciliations that raised.")
API_WRITES = Counter("codetask_api_writes", "API writes the operator made.", ["verb", "resource"])
API_RETRIES = Counter(
    "codetask_api_retries", "API calls retried, by the status that caused it.", ["status"]
)


class PhaseCollector(Collector):
    """Tasks by phase, counted from the operator's view at scrape time."""

    def __init__(self, phases: Callable[[], Iterable[str | None]]) -> None:
        self._phases = phases

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("codetask_tasks", "CodeTasks by phase.", labels=["phase"])
        for phase, count in sorted(Tally(p or "New" for p in self._phases()).items()):
            family.add_metric([phase], count)
        yield family


_serving: list[int] = []


def serve(port: int, phases: Callable[[], Iterable[str | None]]) -> None:
    """Start the /metrics server and register the phase gauge, once (kopf retries a failed
    start-up handler, which calls this again)."""
    if _serving:
        return
    REGISTRY.register(PhaseCollector(phases))
    start_http_server(port)
    _serving.append(port)
