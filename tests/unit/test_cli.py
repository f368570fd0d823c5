"""The `codetask` CLI's pure parts: manifest, language, exit codes, messages, rendering."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from rich.console import Console, RenderableType

from codetask_operator.api import Language
from codetask_operator.cli import manifest, render
from codetask_operator.cli.errors import CRD_MISSING, CliError, Request, describe_api_error
from codetask_operator.cli.main import cli
from codetask_operator.cli.tasks import Stats, Task, exit_code, failure_line

pytestmark = pytest.mark.unit
NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)


def task(name: str = "t", namespace: str = "ns", age: float = 30, **status: Any) -> Task:
    created = (NOW - timedelta(seconds=age)).isoformat().replace("+00:00", "Z")
    metadata = {"name": name, "namespace": namespace, "creationTimestamp": created}
    return Task.of({"metadata": metadata, "status": status})


def text(renderable: RenderableType) -> str:
    out = io.StringIO()
    Console(file=out, width=120, color_system=None).print(renderable)
    return out.getvalue()


@pytest.mark.parametrize(
    ("filename", "code", "language"),
    [
        ("hello.py", "print(1)\n", Language.PYTHON),
        ("app.js", "console.log(1)\n", Language.NODE),
        ("app.mjs", "console.log(1)\n", Language.NODE),
        ("run.sh", "echo hi\n", Language.BASH),
        ("run.bash", "echo hi\n", Language.BASH),
        ("RUN.PY", "print(1)\n", Language.PYTHON),
        ("run.sh", "#!/bin/sh\necho hi\n", Language.SH),
        ("script", "#!/usr/bin/env python3\nprint(1)\n", Language.PYTHON),
        ("script", "#!/usr/bin/python3.11\nprint(1)\n", Language.PYTHON),
        ("script", "#!/usr/bin/env -S node --no-warnings\n", Language.NODE),
        ("tool.py", "#!/usr/bin/perl\n", Language.PYTHON),
    ],
)
def test_language_comes_from_shebang_then_extension(
    filename: str, code: str, language: Language
) -> None:
    assert manifest.detect_language(filename, code) is language


@pytest.mark.parametrize("filename", ["a.rb", "Makefile", "noext"])
def test_unknown_language_says_to_pass_lang(filename: str) -> None:
    with pytest.raises(CliError, match=r"cannot tell the language of .*: pass --lang python\|"):
        manifest.detect_language(filename, "x\n")


@pytest.mark.parametrize(
    ("filename", "prefix"),
    [
        ("hello.py", "hello-"),
        ("dir/Fetch_Data.v2.py", "fetch-data-v2-"),
        ("123.py", "task-123-"),
        ("___.sh", "task-"),
        ("stdin", "stdin-"),
        (f"{'x' * 80}.py", f"{'x' * manifest.NAME_PREFIX_MAX}-"),
    ],
)
def test_generate_name_is_a_dns_label_prefix_from_the_file_stem(filename: str, prefix: str) -> None:
    assert manifest.name_prefix(filename) == prefix


@pytest.mark.parametrize(
    ("options", "metadata", "spec"),
    [
        (
            manifest.RunOptions(),
            {"generateName": "hello-"},
            {"language": "python", "code": "print(1)\n"},
        ),
        (
            manifest.RunOptions(language=Language.SH, name="mine", timeout_seconds=0, retries=2),
            {"name": "mine"},
            {"language": "sh", "code": "print(1)\n", "timeoutSeconds": 0, "retries": 2},
        ),
        (
            manifest.RunOptions(stdin="", env=("A=1", "B=x=y", "C="), args=("-v", "two words")),
            {"generateName": "hello-"},
            {
                "language": "python",
                "code": "print(1)\n",
                "args": ["-v", "two words"],
                "stdin": "",
                "env": [
                    {"name": "A", "value": "1"},
                    {"name": "B", "value": "x=y"},
                    {"name": "C", "value": ""},
                ],
            },
        ),
    ],
)
def test_manifest_sets_only_the_options_given(
    options: manifest.RunOptions, metadata: dict[str, str], spec: dict[str, Any]
) -> None:
    body = manifest.build("hello.py", "print(1)\n", options)
    assert body == {
        "apiVersion": "codetask.dev/v1alpha1",
        "kind": "CodeTask",
        "metadata": metadata,
        "spec": spec,
    }


@pytest.mark.parametrize("pair", ["NOVALUE", "=x"])
def test_env_without_name_and_equals_is_refused(pair: str) -> None:
    with pytest.raises(CliError, match="expected NAME=VALUE"):
        manifest.parse_env([pair])


@pytest.mark.parametrize(
    ("status", "code", "line"),
    [
        ({"phase": "Succeeded", "reason": "Completed", "exitCode": 0}, 0, None),
        ({"phase": "Failed", "reason": "NonZeroExit", "exitCode": 3}, 3, None),
        (
            {"phase": "Failed", "reason": "OOMKilled", "exitCode": 137, "message": "over 48Mi"},
            137,
            "t: Failed (OOMKilled): over 48Mi",
        ),
        (
            {"phase": "Failed", "reason": "ImageError", "message": "no\nsuch   image"},
            1,
            "t: Failed (ImageError): no such image",
        ),
        ({"phase": "Failed", "reason": "Lost", "exitCode": 0}, 1, "t: Failed (Lost)"),
        (
            {"phase": "TimedOut", "reason": "DeadlineExceeded", "message": "too slow"},
            124,
            "t: TimedOut (DeadlineExceeded): too slow",
        ),
        (
            {"phase": "TimedOut", "reason": "DeadlineExceeded", "exitCode": 124},
            124,
            "t: TimedOut (DeadlineExceeded)",
        ),
        ({"phase": "Cancelled", "reason": "Cancelled", "exitCode": 143}, 130, "t: Cancelled"),
        ({"phase": "Cancelled", "reason": "Cancelled"}, 130, "t: Cancelled"),
    ],
)
def test_exit_code_and_reason_line_follow_the_final_status(
    status: dict[str, Any], code: int, line: str | None
) -> None:
    final = task(**status)
    assert exit_code(final.status) == code
    assert failure_line(final) == line


def test_long_failure_message_is_cut_to_one_short_line() -> None:
    line = failure_line(task(phase="Failed", reason="Lost", message="x" * 1000))
    assert line is not None and len(line) < 400 and line.endswith("…") and "\n" not in line


NOT_FOUND = {
    "kind": "Status",
    "message": 'codetasks.codetask.dev "t" not found',
    "reason": "NotFound",
    "details": {"name": "t", "group": "codetask.dev", "kind": "codetasks"},
    "code": 404,
}
NO_NAMESPACE = {
    "kind": "Status",
    "message": 'namespaces "gone" not found',
    "details": {"name": "gone", "kind": "namespaces"},
    "code": 404,
}
FORBIDDEN = {
    "kind": "Status",
    "message": 'codetasks.codetask.dev is forbidden: User "bob" cannot create resource '
    '"codetasks" in API group "codetask.dev" in the namespace "ns"',
    "reason": "Forbidden",
    "code": 403,
}
INVALID = {
    "kind": "Status",
    "message": 'CodeTask.codetask.dev "t" is invalid: spec.timeoutSeconds: Invalid value: 0',
    "reason": "Invalid",
    "details": {
        "causes": [
            {"field": "spec.timeoutSeconds", "message": "Invalid value: 0: should be >= 1"},
            {"field": "spec.retries", "message": "Invalid value: 99: should be <= 10"},
        ]
    },
    "code": 422,
}
WEBHOOK = {
    "kind": "Status",
    "message": 'admission webhook "codetasks.codetask.dev" denied the request: spec.image: '
    "not allowed",
    "code": 400,
}


@pytest.mark.parametrize(
    ("code", "body", "request_", "message"),
    [
        (404, "404 page not found", Request("list", namespace="ns"), CRD_MISSING),
        (404, "404 page not found", Request("create", namespace="ns", name="t"), CRD_MISSING),
        (
            404,
            NOT_FOUND,
            Request("get", namespace="ns", name="t"),
            'CodeTask "t" in namespace "ns" not found',
        ),
        (404, NO_NAMESPACE, Request("create", namespace="gone"), 'namespace "gone" not found'),
        (404, "", Request("get", "pods", "ns", "p"), 'pods "p" in namespace "ns" not found'),
        (
            403,
            FORBIDDEN,
            Request("create", namespace="ns"),
            f"access denied: {FORBIDDEN['message']}",
        ),
        (
            403,
            None,
            Request("list"),
            "access denied: cannot list codetasks.codetask.dev",
        ),
        (
            401,
            "",
            Request("list"),
            "the cluster rejected the kubeconfig's credentials (401 Unauthorized)",
        ),
        (
            409,
            "{}",
            Request("create", namespace="ns", name="t"),
            'CodeTask "t" in namespace "ns" already exists',
        ),
        (
            422,
            INVALID,
            Request("create", namespace="ns"),
            "invalid CodeTask, rejected by the API server: spec.timeoutSeconds: Invalid value: 0: "
            "should be >= 1; spec.retries: Invalid value: 99: should be <= 10",
        ),
        (
            422,
            {"message": "spec: bad"},
            Request("create"),
            "invalid CodeTask, rejected by the API server: spec: bad",
        ),
        (400, WEBHOOK, Request("create"), f"rejected: {WEBHOOK['message']}"),
        (
            500,
            b'{"message": "etcd down"}',
            Request("get", namespace="ns", name="t"),
            'get CodeTask "t" in namespace "ns": 500 etcd down',
        ),
    ],
)
def test_api_errors_become_one_line_that_says_what_to_do(
    code: int, body: Any, request_: Request, message: str
) -> None:
    raw = json.dumps(body) if isinstance(body, dict) else body
    described = describe_api_error(code, raw, "Reason", request_)
    assert described == message
    assert "\n" not in described


def test_crd_missing_message_says_how_to_install() -> None:
    assert "helm install" in CRD_MISSING and "kubectl apply -f crds/" in CRD_MISSING


def test_cli_error_prints_one_prefixed_line_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    error = CliError("it broke")
    error.show()
    assert capsys.readouterr().err == "codetask: it broke\n"
    assert error.exit_code == 2


@pytest.mark.parametrize(
    ("seconds", "age"),
    [(0, "0s"), (59, "59s"), (119, "119s"), (130, "2m10s"), (300, "5m"), (4000, "66m"),
     (20000, "5h"), (200000, "2d"), (800 * 86400, "2y")],
)  # fmt: skip
def test_age_reads_like_kubectl(seconds: float, age: str) -> None:
    assert render.format_age(seconds) == age


@pytest.mark.parametrize(
    ("seconds", "duration"),
    [(None, ""), (0.0123, "0.01s"), (9.5, "9.50s"), (12.34, "12.3s"), (184, "3m04s"),
     (3720, "1h02m")],
)  # fmt: skip
def test_duration_is_short_and_readable(seconds: float | None, duration: str) -> None:
    assert render.format_duration(seconds) == duration


def test_table_has_kubectl_columns_and_one_row_per_task() -> None:
    tasks = [
        task("hello", phase="Succeeded", reason="Completed", exitCode=0, durationSeconds=0.05,
             attempts=1, age=42),
        task("slow", phase="Queued", reason="Queued", queuePosition=2, age=300),
        task("new", age=1),
    ]  # fmt: skip
    lines = text(render.task_table(tasks, all_namespaces=False, now=NOW)).splitlines()
    assert lines[0].split() == ["NAME", "PHASE", "EXIT", "DURATION", "ATTEMPTS", "AGE", "REASON"]
    assert lines[1].split() == ["hello", "Succeeded", "0", "0.05s", "1", "42s", "Completed"]
    assert lines[2].split() == ["slow", "Queued", "5m", "Queued"]
    assert lines[3].split() == ["new", "Pending", "1s"]


def test_table_for_all_namespaces_starts_with_the_namespace() -> None:
    lines = text(render.task_table([task("a", "team-x")], all_namespaces=True, now=NOW))
    assert lines.splitlines()[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert lines.splitlines()[1].split()[:3] == ["team-x", "a", "Pending"]


def test_summary_shows_outcome_fields_and_output_as_written() -> None:
    shown = text(
        render.summary(
            task(
                "hello", phase="Failed", reason="NonZeroExit", exitCode=3, durationSeconds=1.5,
                attempts=2, podName="hello-abc-2-xyz", nodeName="node-1",
                message="the code exited 3", stdout="[bold]not markup[/bold]\n",
                stderr="boom\n", truncated={"stdout": True, "stderr": False},
            ),
            now=NOW,
        )
    )  # fmt: skip
    for expected in ("Failed (NonZeroExit)", "Exit code  3", "1.50s", "Attempts   2",
                     "hello-abc-2-xyz", "node-1", "the code exited 3", "30s",
                     "[bold]not markup[/bold]", "stdout (tail, truncated)", "boom"):  # fmt: skip
        assert expected in shown, (expected, shown)


@pytest.mark.parametrize(
    ("status", "line"),
    [
        ({}, "t  Pending"),
        ({"phase": "Queued", "queuePosition": 3}, "t  Queued  queue position 3"),
        ({"phase": "Pending", "reason": "Scheduled"}, "t  Pending  Scheduled"),
        (
            {"phase": "Running", "reason": "Started",
             "progress": {"percent": 40, "stage": "download", "message": "3/7 files"}},
            "t  Running  Started  40% download: 3/7 files",
        ),
        ({"phase": "Running", "progress": {"stage": "warm-up"}}, "t  Running  warm-up"),
    ],
)  # fmt: skip
def test_wait_status_line_shows_phase_reason_queue_and_progress(
    status: dict[str, Any], line: str
) -> None:
    assert render.status_line(task(**status)).plain == line
    assert render.status_line(task(**status), elapsed=75).plain == f"{line}  75s"


def test_wait_display_shows_the_latest_state_only_when_enabled() -> None:
    for enabled in (True, False):
        out = io.StringIO()
        display = render.WaitDisplay(Console(file=out, force_terminal=enabled), enabled)
        with display:
            display.update({"metadata": {"name": "t"}, "status": {"phase": "Running"}})
            assert render.status_line(task(phase="Running")).plain in display.__rich__().plain
        assert ("Running" in out.getvalue()) is enabled


def test_stats_count_phases_queue_nodes_and_outcomes() -> None:
    tasks = [
        task(phase="Succeeded"), task(phase="Succeeded"), task(phase="Failed"),
        task(phase="TimedOut"), task(phase="Cancelled"), task(phase="Queued"),
        task(phase="Queued"), task(phase="Running", nodeName="n2"),
        task(phase="Running", nodeName="n1"), task(phase="Running", nodeName="n1"), task(),
    ]  # fmt: skip
    stats = Stats.of(tasks)
    assert stats.phases == {"Pending": 1, "Queued": 2, "Running": 3, "Succeeded": 2,
                            "Failed": 1, "TimedOut": 1, "Cancelled": 1}  # fmt: skip
    assert (stats.total, stats.queue_depth) == (11, 2)
    assert list(stats.running_per_node.items()) == [("n1", 2), ("n2", 1)]
    assert (stats.succeeded, stats.failed, stats.cancelled) == (2, 2, 1)
    assert stats.success_rate == 0.5
    assert render.stats_dict(stats)["queueDepth"] == 2
    shown = text(render.stats_view(stats, 'namespace "ns"'))
    assert "queue depth: 2" in shown and "success rate 50%" in shown
    assert "n1" in shown and "Running        3" in shown


def test_stats_of_nothing_has_no_success_rate() -> None:
    assert Stats.of([]).success_rate is None
    assert "success rate" not in text(render.stats_view(Stats.of([]), "x"))


@pytest.mark.parametrize("output", ["json", "yaml"])
def test_dump_drops_managed_fields(output: str) -> None:
    obj = {"metadata": {"name": "t", "managedFields": [{"manager": "x"}]}, "spec": {"code": "é"}}
    dumped = render.dump(obj, output)
    loaded = json.loads(dumped) if output == "json" else yaml.safe_load(dumped)
    assert loaded == {"metadata": {"name": "t"}, "spec": {"code": "é"}}


def test_task_with_a_status_this_cli_cannot_read_is_a_clear_error() -> None:
    with pytest.raises(CliError, match=r"'t' is not one this CLI understands \(status.phase: "):
        Task.of({"metadata": {"name": "t"}, "status": {"phase": "Exploded"}})


@pytest.mark.parametrize(
    ("args", "files", "message"),
    [
        (["run", "missing.py"], {}, "cannot read source file missing.py: No such file"),
        (["run", "a.rb"], {"a.rb": "puts 1"}, "cannot tell the language of a.rb"),
        (["run", "bin.py"], {"bin.py": b"\xff\xfe"}, "cannot read source file bin.py: not UTF-8"),
        (["run", "a.py", "--stdin", "no.txt"], {"a.py": "1"}, "cannot read stdin file no.txt"),
        (["run", "a.py", "--env", "X"], {"a.py": "1"}, "--env 'X': expected NAME=VALUE"),
        (["run", "-", "--stdin", "-"], {}, "FILE and --stdin cannot both be -"),
        (["list", "--kubeconfig", "nope.yaml"], {}, "no kubeconfig found at nope.yaml"),
        (["list", "--kubeconfig", "bad.yaml"], {"bad.yaml": "a: ["}, "invalid kubeconfig bad.yaml"),
    ],
)
def test_local_mistakes_exit_2_with_one_line_before_any_api_call(
    args: list[str],
    files: dict[str, str | bytes],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    for name, content in files.items():
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    result = CliRunner().invoke(cli, args, env={"KUBECONFIG": "nope.yaml"})
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"codetask: {message}"), result.stderr
    assert result.stderr.count("\n") == 1
