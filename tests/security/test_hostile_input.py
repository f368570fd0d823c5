"""Malformed and hostile manifests: each is refused by `kubectl apply` naming the field, or ends
Failed/InvalidSpec with a message naming it and no Job; the operator keeps working throughout."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.e2e.tasks import Operator, codetask, create, jobs_of, wait_for

OK = {"language": "python", "code": "print(1)"}

# (id, spec, the field the refusal must name)
HOSTILE: list[tuple[str, Any, str]] = [
    ("timeout-zero", {**OK, "timeoutSeconds": 0}, "timeoutSeconds"),
    ("timeout-huge", {**OK, "timeoutSeconds": 10**9}, "timeoutSeconds"),
    ("timeout-string", {**OK, "timeoutSeconds": "soon"}, "timeoutSeconds"),
    ("timeout-float", {**OK, "timeoutSeconds": 1.5}, "timeoutSeconds"),
    ("language-unknown", {**OK, "language": "cobol"}, "language"),
    ("language-number", {**OK, "language": 3}, "language"),
    ("retries-negative", {**OK, "retries": -1}, "retries"),
    ("retries-too-many", {**OK, "retries": 11}, "retries"),
    (
        "retry-policy-invalid-spec",
        {**OK, "retries": 1, "retryPolicy": ["InvalidSpec"]},
        "retryPolicy",
    ),
    ("retry-policy-unknown", {**OK, "retryPolicy": ["Whatever"]}, "retryPolicy"),
    ("backoff-zero", {**OK, "backoffSeconds": 0}, "backoffSeconds"),
    ("output-limit-negative", {**OK, "outputLimitBytes": -1}, "outputLimitBytes"),
    ("output-limit-huge", {**OK, "outputLimitBytes": 10**7}, "outputLimitBytes"),
    ("code-too-big", {**OK, "code": "#" * (128 * 1024 + 1)}, "code"),
    ("stdin-too-big", {**OK, "stdin": "x" * (64 * 1024 + 1)}, "stdin"),
    (
        "code-and-stdin-too-big-in-utf8",
        {**OK, "code": "é" * 100_000, "stdin": "é" * 60_000},
        "spec",
    ),
    ("env-thousands", {**OK, "env": [{"name": f"V{i}", "value": "x"} for i in range(2000)]}, "env"),
    ("env-reserved", {**OK, "env": [{"name": "CODETASK_TIMEOUT_SECONDS", "value": "9"}]}, "env"),
    ("env-home", {**OK, "env": [{"name": "HOME", "value": "/"}]}, "env"),
    ("env-bad-name", {**OK, "env": [{"name": "1 bad", "value": "x"}]}, "env"),
    (
        "env-duplicate",
        {**OK, "env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]},
        "env",
    ),
    ("memory-nonsense", {**OK, "resources": {"limits": {"memory": "lots"}}}, "memory"),
    ("cpu-negative", {**OK, "resources": {"limits": {"cpu": "-1"}}}, "cpu"),
    (
        "request-over-limit",
        {**OK, "resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}},
        "memory",
    ),
    ("code-and-command", {**OK, "command": ["true"], "image": "codetask-runner:dev"}, "spec"),
    ("no-code-no-command", {"timeoutSeconds": 5}, "spec"),
    ("command-without-image", {"command": ["true"]}, "image"),
    ("image-not-allowed", {"command": ["true"], "image": "evil.example/miner:latest"}, "image"),
    ("code-without-language", {"code": "print(1)"}, "language"),
    ("labels-reserved", {**OK, "labels": {"codetask.dev/task": "x"}}, "labels"),
    ("labels-bad-value", {**OK, "labels": {"team": "not a label value!"}}, "labels"),
    ("priority-huge", {**OK, "priority": 10**6}, "priority"),
    ("unknown-field-only", {"bogus": True}, "spec"),
    ("args-not-strings", {**OK, "args": [{"nested": "object"}]}, "args"),
]


def submit(
    kubeconfig: str, namespace: str, name: str, spec: Any
) -> subprocess.CompletedProcess[str]:
    """`kubectl create` (no last-applied annotation: the limits tested are the API's own)."""
    manifest = yaml.safe_dump(codetask(name, **spec) if isinstance(spec, dict) else spec)
    return subprocess.run(
        [
            "kubectl",
            "--kubeconfig",
            kubeconfig,
            "-n",
            namespace,
            "create",
            "--validate=false",
            "-f",
            "-",
        ],
        input=manifest,
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize(("case", "spec", "field"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_manifest_is_refused_naming_the_field(
    api_client: client.ApiClient,
    kubeconfig: str,
    namespace: str,
    operator: Operator,
    case: str,
    spec: Any,
    field: str,
) -> None:
    done = submit(kubeconfig, namespace, "bad", spec)
    if done.returncode != 0:
        assert field in done.stderr, done.stderr
    else:
        status = wait_for(api_client, namespace, "bad", timeout=30)["status"]
        assert (status["phase"], status["reason"]) == ("Failed", "InvalidSpec"), status
        assert field in status["message"], status["message"]
        assert not jobs_of(api_client, namespace)
    assert operator.proc is not None and operator.proc.poll() is None, "the operator died"


def test_names_at_the_length_limit_and_unicode_everywhere_still_work(
    api_client: client.ApiClient, namespace: str, operator: Operator
) -> None:
    name = "x" * 253
    code = "# ünïcödé ✓ 漢字 🚀\nprint('ünïcödé ✓ 漢字 🚀')\n"
    create(
        api_client,
        namespace,
        codetask(
            name,
            language="python",
            code=code,
            prompt="🚀 ✓",
            env=[{"name": "GREETING", "value": "héllo 漢字"}],
        ),
    )
    status = wait_for(api_client, namespace, name)["status"]
    assert status["phase"] == "Succeeded", status
    assert status["stdout"] == "ünïcödé ✓ 漢字 🚀\n"


def test_a_good_task_succeeds_after_all_the_hostile_ones(
    api_client: client.ApiClient, namespace: str, operator: Operator
) -> None:
    create(api_client, namespace, codetask("good", **OK))
    assert wait_for(api_client, namespace, "good")["status"]["phase"] == "Succeeded"
