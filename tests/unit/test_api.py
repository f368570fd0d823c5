"""The API models: defaults, bounds, JSON names and round trips."""

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from codetask_operator import api

pytestmark = pytest.mark.unit


def test_spec_defaults_match_the_documented_api() -> None:
    spec = api.CodeTaskSpec()
    assert spec.timeout_seconds == 300
    assert spec.retries == 0
    assert spec.retry_policy is None  # lifecycle.retry_delay applies DEFAULT_RETRY_POLICY
    assert spec.backoff_seconds == 10
    assert spec.output_limit_bytes == 16384
    assert spec.priority == 0
    assert spec.cancel is False
    assert spec.ttl_seconds_after_finished is None
    assert (spec.args, spec.env, spec.labels) == ([], [], {})
    assert spec.resources.requests.as_dict() == {} == spec.resources.limits.as_dict()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("timeoutSeconds", 0),
        ("timeoutSeconds", 86401),
        ("retries", -1),
        ("retries", 11),
        ("backoffSeconds", 0),
        ("backoffSeconds", 601),
        ("outputLimitBytes", -1),
        ("outputLimitBytes", 262145),
        ("ttlSecondsAfterFinished", -1),
        ("priority", 1001),
        ("code", "x" * (128 * 1024 + 1)),
        ("stdin", "x" * (64 * 1024 + 1)),
        ("language", "ruby"),
        ("command", []),
        ("image", ""),
        ("labels", {"team": "-not-a-label-value"}),
        ("labels", {"k": "v" * 64}),
        ("retryPolicy", ["InvalidSpec"]),
        ("retryPolicy", ["Completed"]),
    ],
)
def test_spec_rejects_out_of_bounds_values(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        api.CodeTaskSpec.model_validate({field: value})
    assert caught.value.errors()[0]["loc"][0] == field


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("timeoutSeconds", 1),
        ("timeoutSeconds", 86400),
        ("retries", 10),
        ("outputLimitBytes", 0),
        ("outputLimitBytes", 262144),
        ("code", "x" * 128 * 1024),
        ("stdin", ""),
        ("labels", {"team": "", "tier": "a.b_c-d"}),
        ("retryPolicy", ["NonZeroExit", "OOMKilled", "Lost"]),
    ],
)
def test_spec_accepts_values_at_the_bounds(field: str, value: Any) -> None:
    api.CodeTaskSpec.model_validate({field: value})


def test_invalid_spec_is_never_retryable() -> None:
    with pytest.raises(ValidationError, match="InvalidSpec is never retried"):
        api.CodeTaskSpec(retry_policy=[api.Reason.INVALID_SPEC])
    assert api.Reason.INVALID_SPEC not in api.RETRYABLE_REASONS


def test_json_names_are_camel_case_and_python_names_snake_case() -> None:
    by_alias = api.CodeTaskSpec.model_validate({"timeoutSeconds": 5, "outputLimitBytes": 7})
    by_name = api.CodeTaskSpec(timeout_seconds=5, output_limit_bytes=7)
    assert by_alias == by_name
    dumped = by_name.model_dump(mode="json")
    assert {"timeoutSeconds", "outputLimitBytes", "retryPolicy", "ttlSecondsAfterFinished"} <= set(
        dumped
    )


def test_resources_use_kubernetes_names_and_normalise_integers_to_strings() -> None:
    resources = api.Resources.model_validate(
        {"limits": {"cpu": 2, "memory": "1Gi", "ephemeral-storage": "2Gi"}}
    )
    assert resources.limits.as_dict() == {"cpu": "2", "memory": "1Gi", "ephemeral-storage": "2Gi"}


@pytest.mark.parametrize("value", [0.5, True, "1x", "-1", "", "1.5.5"])
def test_resources_reject_what_is_not_a_quantity(value: object) -> None:
    with pytest.raises(ValidationError):
        api.ResourceList.model_validate({"cpu": value})


def test_env_accepts_values_and_references() -> None:
    spec = api.CodeTaskSpec.model_validate(
        {
            "env": [
                {"name": "A", "value": "1"},
                {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}},
            ]
        }
    )
    source = spec.env[2].value_from
    assert source is not None and source.config_map_key_ref is not None
    assert source.config_map_key_ref.key == "k"


def test_spec_round_trips_through_json() -> None:
    spec = api.CodeTaskSpec.model_validate(
        {
            "language": "python",
            "code": "print(1)",
            "args": ["a"],
            "stdin": "in",
            "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
            "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}},
            "retries": 2,
            "retryPolicy": ["Lost", "NonZeroExit"],
            "labels": {"team": "a"},
            "cancel": True,
        }
    )
    dumped = spec.model_dump(mode="json", exclude_none=True)
    assert api.CodeTaskSpec.model_validate(dumped) == spec
    assert dumped["resources"] == {"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}}


def test_status_round_trips_through_json() -> None:
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    status = api.CodeTaskStatus(
        phase=api.Phase.SUCCEEDED,
        reason=api.Reason.COMPLETED,
        conditions=[
            api.Condition(
                type=api.ConditionType.FINISHED,
                status=api.ConditionStatus.TRUE,
                reason=api.Reason.COMPLETED,
                message="",
                last_transition_time=now,
                observed_generation=1,
            )
        ],
        attempts=1,
        exit_code=0,
        stdout="4\n",
        truncated=api.Truncated(stdout=False, stderr=False),
        progress=api.Progress(percent=100, stage="done"),
        history=[api.AttemptRecord(attempt=1, reason=api.Reason.COMPLETED, exit_code=0)],
        start_time=now,
    )
    dumped = status.model_dump(mode="json", exclude_none=True)
    assert dumped["conditions"][0]["lastTransitionTime"] == "2026-11-23T12:00:00Z"
    assert api.CodeTaskStatus.model_validate(dumped) == status


def test_status_ignores_kopf_storage_keys() -> None:
    status = api.CodeTaskStatus.model_validate({"phase": "Running", "kopf": {"progress": {}}})
    assert status.phase is api.Phase.RUNNING


def test_every_reason_is_documented() -> None:
    assert set(api.REASON_HELP) == set(api.Reason)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"timeoutSeconds": 0}, "must be ≥ 1"),
        ({"retries": 11}, "must be ≤ 10"),
        ({"language": "ruby"}, "must be one of 'python', 'node', 'bash' or 'sh'"),
        (
            {"env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "", "key": "k"}}}]},
            "must not be empty",
        ),
        ({"env": [{}]}, "required"),
        ({"cancel": "maybe"}, "must be true or false"),
    ],
)
def test_errors_are_described_briefly(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        api.CodeTaskSpec.model_validate(data)
    assert api.describe_error(caught.value.errors()[0]) == message


def test_agent_spec_defaults_and_json_names() -> None:
    spec = api.CodeTaskSpec.model_validate(
        {
            "prompt": "Fix it.",
            "agent": {
                "apiKeySecretRef": {"name": "model-key", "key": "api-key"},
                "allowedTools": ["Bash(git diff:*)"],
                "permissionMode": "acceptEdits",
                "inputConfigMap": "files",
            },
        }
    )
    assert spec.agent is not None
    assert spec.agent.provider is api.AgentProvider.CLAUDE
    assert (spec.agent.model, spec.agent.max_turns, spec.agent.system_prompt) == (None, None, None)
    dumped = spec.model_dump(mode="json", exclude_none=True)["agent"]
    assert dumped == {
        "provider": "claude",
        "allowedTools": ["Bash(git diff:*)"],
        "disallowedTools": [],
        "permissionMode": "acceptEdits",
        "apiKeySecretRef": {"name": "model-key", "key": "api-key"},
        "inputConfigMap": "files",
    }


@pytest.mark.parametrize(
    "agent",
    [
        {},
        {"apiKeySecretRef": {"name": "k"}},
        {"apiKeySecretRef": {"name": "k", "key": "a/b"}},
        {"apiKeySecretRef": {"name": "k", "key": "v"}, "allowedTools": ["Bash(x) extra"]},
        {"apiKeySecretRef": {"name": "k", "key": "v"}, "maxTurns": 1001},
        {"apiKeySecretRef": {"name": "k", "key": "v"}, "model": "--help"},
    ],
)
def test_agent_spec_rejects_what_cannot_run(agent: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        api.CodeTaskSpec.model_validate({"prompt": "x", "agent": agent})


def test_agent_reasons_are_documented_and_retryable() -> None:
    for reason in (api.Reason.MAX_TURNS, api.Reason.AGENT_ERROR):
        assert reason in api.REASON_HELP and reason in api.RETRYABLE_REASONS
