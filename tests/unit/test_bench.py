"""The benchmarks' pure helpers: percentiles, audit-log parsing and counting, profile summaries."""

from __future__ import annotations

import json
import os
import statistics
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench import audit, dispatch, etcd
from bench.operator_process import with_launcher
from bench.profile import buckets, summarize
from bench.report import Figure, Result, combine, markdown_table
from bench.stats import percentile, summary

pytestmark = pytest.mark.unit

USER = "system:serviceaccount:bench-1-system:codetask-operator"


def event(verb: str, resource: str, user: str = USER, **extra: object) -> dict[str, object]:
    ref: dict[str, object] = {"resource": resource, "namespace": "bench-1-x", "name": "t1"}
    if "/" in resource:
        ref["resource"], ref["subresource"] = resource.split("/")
    return {
        "kind": "Event",
        "stage": "ResponseComplete",
        "verb": verb,
        "user": {"username": user},
        "userAgent": "kopf/1.45.2",
        "objectRef": ref,
        "responseStatus": {"code": 201},
        "requestReceivedTimestamp": "2026-11-23T13:46:35.124872Z",
        "stageTimestamp": "2026-11-23T13:46:35.128004Z",
        **extra,
    }


def test_percentiles_interpolate_between_ranks_like_the_statistics_module() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(values, 50) == 3.0
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 5.0
    assert percentile(values, 25) == 2.0
    assert percentile([1.0, 2.0], 95) == pytest.approx(1.95)
    assert percentile([7.0], 99) == 7.0


@given(st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=60), st.integers(1, 99))
def test_percentile_agrees_with_statistics_quantiles_inclusive(values: list[float], p: int) -> None:
    expected = statistics.quantiles(values, n=100, method="inclusive")[p - 1]
    assert percentile(values, p) == pytest.approx(expected, rel=1e-9, abs=1e-6)


def test_percentile_refuses_no_samples_and_out_of_range() -> None:
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 50)
    with pytest.raises(ValueError, match="not within"):
        percentile([1.0], 101)


def test_summary_gives_count_and_rounded_percentiles() -> None:
    s = summary([float(v) for v in range(1, 101)], digits=1)
    assert s["n"] == 100
    assert (s["min"], s["p50"], s["max"], s["mean"]) == (1.0, 50.5, 100.0, 50.5)
    assert s["p99"] == 99.0


def test_audit_line_gives_verb_resource_subresource_user_and_microsecond_times() -> None:
    entry = audit.parse_line(json.dumps(event("patch", "codetasks/status")))
    assert entry is not None
    assert (entry.verb, entry.resource, entry.namespace, entry.name) == (
        "patch",
        "codetasks/status",
        "bench-1-x",
        "t1",
    )
    assert entry.user == USER and entry.code == 201 and entry.write
    assert (entry.completed - entry.received).total_seconds() == pytest.approx(0.003132)
    assert entry.received == datetime.fromisoformat("2026-11-23T13:46:35.124872+00:00")


def test_audit_lines_of_other_stages_or_not_json_are_skipped() -> None:
    started = {**event("create", "jobs"), "stage": "ResponseStarted"}
    assert audit.parse_line(json.dumps(started)) is None
    assert audit.parse_line("not json\n") is None
    assert audit.parse_line("[1, 2]") is None


def test_counting_takes_only_the_users_writes_events_included() -> None:
    lines = [
        json.dumps(event("create", "jobs")),
        json.dumps(event("patch", "codetasks/status")),
        json.dumps(event("patch", "codetasks/status")),
        json.dumps(event("create", "events")),
        json.dumps(event("get", "jobs")),
        json.dumps(event("create", "codetasks", user="codetask-admin")),
        json.dumps(event("delete", "jobs", user="system:serviceaccount:kube-system:gc")),
    ]
    counts = audit.count_writes(audit.parse(lines), USER)
    assert counts == {"create jobs": 1, "patch codetasks/status": 2, "create events": 1}


def test_the_needle_skips_lines_before_decoding_them() -> None:
    lines = [json.dumps(event("create", "jobs")), "{broken but skipped"]
    assert len(list(audit.parse(lines, needle="bench-1-x"))) == 1
    assert list(audit.parse(lines, needle="elsewhere")) == []


def test_audit_log_reads_only_what_came_after_the_mark(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_text("old\n")
    log = audit.AuditLog(path)
    mark = log.mark()
    with path.open("a") as f:
        f.write("new 1\nnew 2\npartial")
    assert list(log.lines_since(mark)) == ["new 1\n", "new 2\n"]


def test_audit_log_follows_a_rotation_into_the_rotated_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_text("old\n")
    log = audit.AuditLog(path)
    mark = log.mark()
    with path.open("a") as f:
        f.write("before rotation\n")
    os.rename(path, tmp_path / "audit-2026-11-23T13-00-00.000.log")
    path.write_text("after rotation\n")
    assert list(log.lines_since(mark)) == ["before rotation\n", "after rotation\n"]


def test_audit_log_refuses_when_the_marked_file_is_gone(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_text("old\n")
    log = audit.AuditLog(path)
    mark = log.mark()
    with path.open() as still_open:  # keeps the inode from being reused by the new file
        path.unlink()
        path.write_text("new\n")
        with pytest.raises(RuntimeError, match="rotated twice"):
            list(log.lines_since(mark))
        assert still_open.read() == "old\n"


def test_audit_log_refuses_when_the_file_shrank(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_text("old line\n")
    log = audit.AuditLog(path)
    mark = log.mark()
    path.write_text("new\n")
    with pytest.raises(RuntimeError, match="truncated"):
        list(log.lines_since(mark))


def test_profile_summary_counts_self_and_total_samples_per_frame() -> None:
    folded = "\n".join(
        [
            "main (a.py);loop (b.py);handler (c.py) 7",
            "main (a.py);loop (b.py) 2",
            "main (a.py);loop (b.py);handler (c.py);json (d.py) 1",
            "garbage",
        ]
    )
    s = summarize(folded, top=3)
    assert s["samples"] == 10
    assert s["self"] == [("handler (c.py)", 7), ("loop (b.py)", 2), ("json (d.py)", 1)]
    assert s["total"][:2] == [("main (a.py)", 10), ("loop (b.py)", 10)]


def test_profile_buckets_put_each_sample_in_the_first_matching_bucket() -> None:
    root = "main (codetask_operator/__main__.py);process_resource_event (kopf/x.py)"
    folded = "\n".join(
        [
            f"{root};index_resource (kopf/y.py) 3",
            f"{root};reconcile (codetask_operator/reconcile.py);Kube.create_job (k.py) 5",
            f"{root};reconcile (codetask_operator/reconcile.py) 2",
            f"{root} 4",
            "main (codetask_operator/__main__.py);select (selectors.py) 1",
        ]
    )
    b = buckets(folded)
    assert b["kopf index handlers"] == 3
    assert b["operator: API calls (kubernetes_asyncio, aiohttp)"] == 5
    assert b["operator: its own logic"] == 2
    assert b["kopf: per-event processing"] == 4
    assert b["other"] == 1


def _result(value: float, baseline: float, met: bool) -> Result:
    figure = Figure("dispatch p50", value, "ms", baseline, "raw Job", "≤ 1.5x raw", met)
    return Result("dispatch", [figure], {"n": value}, "how")


def test_repeated_runs_give_medians_every_run_and_met_only_when_met_in_each() -> None:
    combined = combine([_result(6, 4, True), _result(9, 5, False), _result(7, 5, True)])
    (fig,) = combined.figures
    assert (fig.value, fig.baseline, fig.met) == (7, 5, False)
    assert [r["ratio"] for r in fig.runs] == [1.5, 1.8, 1.4]
    assert fig.ratio == 1.5, "the median of the runs' own ratios, not median over median"
    assert combined.details == {"runs": [{"n": 6}, {"n": 9}, {"n": 7}]}


def test_the_table_shows_each_figures_spread_and_in_how_many_runs_it_was_met(
    tmp_path: Path,
) -> None:
    path = combine([_result(6, 4, True), _result(9, 5, False), _result(7, 5, True)]).write(tmp_path)
    row = markdown_table([json.loads(path.read_text())]).splitlines()[2]
    assert row.startswith(
        "| dispatch p50 | 7 (6\N{EN DASH}9) ms | 5 (4\N{EN DASH}5) ms (raw Job) |"
    )
    assert "| 1.50 (1.4\N{EN DASH}1.8)x |" in row and "| **2/3** |" in row


def test_the_launcher_runs_the_chart_operator_with_the_extra_env_and_one_replica() -> None:
    deployment = {
        "kind": "Deployment",
        "spec": {
            "replicas": 0,
            "template": {
                "spec": {"containers": [{"name": "operator", "env": [{"name": "A", "value": "x"}]}]}
            },
        },
    }
    launched = with_launcher(deployment, {"A": "bench", "BENCH_NO_PODS": "1"})
    assert launched["spec"]["replicas"] == 1
    pod = launched["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["/opt/venv/bin/python", "-m", "bench.launcher"]
    assert {e["name"]: e["value"] for e in container["env"]} == {
        "A": "bench",
        "PYTHONPATH": "/opt/bench",
        "BENCH_NO_PODS": "1",
    }
    assert pod["volumes"] == [{"name": "bench-launcher", "configMap": {"name": "bench-launcher"}}]


def test_dispatch_rotates_who_goes_first() -> None:
    """Every way once per iteration; over len(WAYS) iterations each way is first once."""
    rounds = [dispatch.order(i) for i in range(len(dispatch.WAYS))]
    assert all(sorted(r) == sorted(dispatch.WAYS) for r in rounds)
    assert sorted(r[0] for r in rounds) == sorted(dispatch.WAYS)
    assert dispatch.order(len(dispatch.WAYS)) == dispatch.order(0)


def test_etcd_weight_counts_a_runs_objects_its_jobs_pods_and_events_about_them() -> None:
    stored = {
        "codetask.dev/codetasks": {"e001": 900, "e0010": 5},
        "jobs": {"e001-1": 300, "raw-001": 250},
        "pods": {"e001-1-x7k2p": 2000, "raw-001-abcde": 1900},
        "events": {"e001.17f0": 200, "e001-1-x7k2p.17f1": 250, "e0010.1": 7, "raw-001.1": 9},
    }
    assert etcd.weight(stored, ["e001", "e001-1"]) == {
        "codetask.dev/codetasks": 900,
        "jobs": 300,
        "pods": 2000,
        "events": 450,
    }
    assert etcd.weight(stored, ["raw-001"])["pods"] == 1900
