"""Admission: every bad spec is refused with a message naming its field; good specs pass."""

from typing import Any

import pytest

from codetask_operator import admission, api
from codetask_operator.settings import Settings

pytestmark = pytest.mark.unit

SETTINGS = Settings.model_validate({"allowed_images": ["busybox:*", "registry.local/tools/*"]})
CODE = {"language": "python", "code": "print(1)"}
IMAGE = {"image": "busybox:1.36", "command": ["sh", "-c", "echo hi"]}
KEY = {"name": "model-key", "key": "api-key"}
AGENT = {"prompt": "Fix the failing test.", "agent": {"apiKeySecretRef": KEY}}


def code(**fields: Any) -> dict[str, Any]:
    return {**CODE, **fields}


def agent(**fields: Any) -> dict[str, Any]:
    return {**AGENT, "agent": {**AGENT["agent"], **fields}}


@pytest.mark.parametrize(
    "spec",
    [
        CODE,
        code(stdin="", args=["-v"], env=[{"name": "A", "value": ""}]),
        code(resources={"requests": {"cpu": "500m", "memory": 1073741824}, "limits": {"cpu": 1}}),
        code(labels={"team": "ml", "example.com/tier": "batch"}),
        code(retries=3, retryPolicy=["NonZeroExit", "OOMKilled"], cancel=True),
        code(code="é" * 64 * 1024, stdin="x" * 60 * 1024),
        IMAGE,
        {"image": "registry.local/tools/jq:1", "command": ["jq"], "args": ["."]},
        AGENT,
        {
            **agent(
                model="claude-sonnet-4-5",
                allowedTools=["Read", "Edit", "Bash(npm test:*)", "mcp__github__get_issue"],
                disallowedTools=["WebFetch"],
                permissionMode="acceptEdits",
                maxTurns=20,
                systemPrompt="Be brief.",
                inputConfigMap="repo-files",
            ),
            "env": [{"name": "ANTHROPIC_BASE_URL", "value": "http://gateway:8080"}],
            "timeoutSeconds": 600,
        },
    ],
    ids=lambda spec: (
        ",".join(sorted(spec)) + ("+" + ",".join(sorted(spec["agent"])) if "agent" in spec else "")
    ),
)
def test_good_specs_pass(spec: dict[str, Any]) -> None:
    assert admission.validate(spec, SETTINGS) == []


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (code(timeoutSeconds=0), "spec.timeoutSeconds: must be ≥ 1"),
        (code(timeoutSeconds=86401), "spec.timeoutSeconds: must be ≤ 86400"),
        (code(language="ruby"), "spec.language: must be one of"),
        (code(retries=11), "spec.retries: must be ≤ 10"),
        (code(retryPolicy=["InvalidSpec"]), "spec.retryPolicy[0]: InvalidSpec is never retried"),
        (code(outputLimitBytes=10**6), "spec.outputLimitBytes: must be ≤ 262144"),
        (code(env=[{"value": "x"}]), "spec.env[0].name: required"),
        (code(resources={"limits": {"cpu": "lots"}}), "spec.resources.limits.cpu: 'lots' is not"),
        ({}, "spec.code: required (with spec.language), or spec.command with spec.image"),
        ({**CODE, **IMAGE}, "spec.code: set either code or command, not both"),
        ({"code": "print(1)"}, "spec.language: required with spec.code"),
        (code(image="python:3"), "spec.image: only used with spec.command"),
        ({"command": ["true"]}, "spec.image: required with spec.command"),
        ({**IMAGE, "image": "evil.io/miner"}, "spec.image: 'evil.io/miner' is not allowed"),
        ({**IMAGE, "language": "sh"}, "spec.language: only used with spec.code"),
        ({**IMAGE, "stdin": "x"}, "spec.stdin: only used with spec.code"),
        (
            code(env=[{"name": "CODETASK_NAME", "value": "x"}]),
            "spec.env[0].name: CODETASK_NAME is reserved",
        ),
        (code(env=[{"name": "HOME", "value": "/"}]), "spec.env[0].name: HOME is reserved"),
        (
            code(env=[{"name": "REDIS_URL", "value": "x"}]),
            "spec.env[0].name: REDIS_URL is reserved",
        ),
        (
            code(env=[{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]),
            "spec.env[1].name: A is already set by spec.env[0]",
        ),
        (
            code(
                env=[
                    {
                        "name": "A",
                        "value": "1",
                        "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}},
                    }
                ]
            ),
            "spec.env[0]: set value or valueFrom, not both",
        ),
        (code(env=[{"name": "A", "valueFrom": {}}]), "spec.env[0].valueFrom: set exactly one of"),
        (
            code(resources={"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}),
            "spec.resources.requests.memory: 2Gi exceeds the limit 1Gi",
        ),
        (
            code(resources={"limits": {"cpu": 0}}),
            "spec.resources.limits.cpu: must be greater than 0",
        ),
        (code(code="é" * 100 * 1024), "spec.code: code and stdin take 204817 bytes"),
        (code(args=["\u0001" * 4096] * 2), "spec.args: 49160 bytes as JSON; at most 32768"),
        (code(labels={"codetask.dev/task": "x"}), "spec.labels: 'codetask.dev/task' is reserved"),
        (code(labels={"job-name": "x"}), "spec.labels: 'job-name' is reserved"),
        (code(labels={"bad key": "x"}), "spec.labels: 'bad key' is not a valid label key"),
        (
            code(labels={"Example.com/x": "y"}),
            "spec.labels: 'Example.com/x' is not a valid label key",
        ),
        ({"agent": AGENT["agent"]}, "spec.prompt: required with spec.agent"),
        ({**AGENT, "prompt": "  \n"}, "spec.prompt: required with spec.agent"),
        ({"prompt": "x", "agent": {}}, "spec.agent.apiKeySecretRef: required"),
        (agent(apiKeySecretRef={"name": "k"}), "spec.agent.apiKeySecretRef.key: required"),
        ({**AGENT, **CODE}, "spec.code: not used with spec.agent"),
        ({**AGENT, "language": "python"}, "spec.language: not used with spec.agent"),
        ({**AGENT, **IMAGE}, "spec.command: not used with spec.agent"),
        ({**AGENT, "args": ["-v"]}, "spec.args: not used with spec.agent"),
        (
            {**AGENT, "env": [{"name": "ANTHROPIC_API_KEY", "value": "sk-..."}]},
            "spec.env[0].name: ANTHROPIC_API_KEY is set from spec.agent.apiKeySecretRef",
        ),
        (agent(provider="gpt"), "spec.agent.provider: must be one of"),
        (agent(permissionMode="yolo"), "spec.agent.permissionMode: must be one of"),
        (agent(maxTurns=0), "spec.agent.maxTurns: must be ≥ 1"),
        (agent(allowedTools=["Bash --evil"]), "spec.agent.allowedTools[0]: must match"),
        (agent(disallowedTools=["-x"]), "spec.agent.disallowedTools[0]: must match"),
        (agent(systemPrompt="x" * 20000), "spec.agent.systemPrompt: must have at most 16384"),
        ({**AGENT, "prompt": "x" * 40000}, "spec.prompt: must have at most 32768"),
    ],
)
def test_bad_specs_are_refused_naming_the_field(spec: dict[str, Any], expected: str) -> None:
    errors = admission.validate(spec, SETTINGS)
    assert any(error.startswith(expected) for error in errors), errors


def test_custom_images_are_refused_when_no_image_is_allowed() -> None:
    errors = admission.validate(IMAGE, Settings.model_validate({"allowed_images": []}))
    assert errors == ["spec.image: custom images are disabled on this cluster"]


def test_all_problems_are_reported_at_once() -> None:
    spec = {"command": ["x"], "env": [{"name": "HOME", "value": "1"}], "labels": {"job-name": "j"}}
    assert len(admission.validate(spec, SETTINGS)) == 3


STORED = api.CodeTaskSpec.model_validate(CODE).model_dump(mode="json", exclude_none=True)


@pytest.mark.parametrize(
    "change",
    [{"cancel": True}, {"priority": 5}, {"ttlSecondsAfterFinished": 60}, {}],
)
def test_updates_may_cancel_reprioritise_or_change_ttl(change: dict[str, Any]) -> None:
    assert admission.validate_update(STORED, {**STORED, **change}) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"code": "print(2)"}, "spec.code: cannot change after creation"),
        ({"timeoutSeconds": 5}, "spec.timeoutSeconds: cannot change after creation"),
        ({"labels": {"a": "b"}}, "spec.labels: cannot change after creation"),
        ({"stdin": "x"}, "spec.stdin: cannot change after creation"),
    ],
)
def test_other_spec_changes_are_refused(change: dict[str, Any], expected: str) -> None:
    errors = admission.validate_update(STORED, {**STORED, **change})
    assert len(errors) == 1 and errors[0].startswith(expected)


def test_cancel_cannot_be_taken_back() -> None:
    cancelled = {**STORED, "cancel": True}
    assert admission.validate_update(cancelled, STORED) == [
        "spec.cancel: cannot be unset once true"
    ]
