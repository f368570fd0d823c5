"""The admission webhook's answers: refusals name the field, good specs and allowed updates pass."""

from pathlib import Path
from typing import Any

import kopf
import pytest

from codetask_operator import pools, webhook
from codetask_operator.settings import Settings

pytestmark = pytest.mark.unit

SETTINGS = Settings.model_validate({"allowed_images": ["codetask-*"]})
CODE = {"language": "python", "code": "print(1)"}
STORED = {**CODE, "timeoutSeconds": 300, "priority": 0, "cancel": False, "retryPolicy": ["Lost"]}


def refusal(operation: str, old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    with pytest.raises(kopf.AdmissionError) as caught:
        webhook.check(operation, old, new, SETTINGS)
    assert caught.value.code == 422
    return str(caught.value)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({**CODE, "command": ["true"]}, "spec.code: set either code or command, not both"),
        ({"command": ["true"]}, "spec.image: required with spec.command"),
        (
            {"image": "evil.io/miner", "command": ["x"]},
            "spec.image: 'evil.io/miner' is not allowed",
        ),
        ({"code": "print(1)"}, "spec.language: required with spec.code"),
        ({**CODE, "labels": {"a/b/c": "x"}}, "spec.labels: 'a/b/c' is not a valid label key"),
        ({**CODE, "env": [{"name": "HOME", "value": "/"}]}, "spec.env[0].name: HOME is reserved"),
        # Refused by the pydantic models, not by the CRD schema alone.
        ({**CODE, "timeoutSeconds": "soon"}, "spec.timeoutSeconds: must be an integer"),
        ({**CODE, "retryPolicy": ["InvalidSpec"]}, "spec.retryPolicy[0]: InvalidSpec is never"),
        ({**CODE, "priority": 1000}, "spec.priority: 1000 is above the highest allowed (100)"),
        (
            {**CODE, "resources": {"limits": {"memory": "8Gi"}}},
            "spec.resources.limits.memory: 8Gi is above the cap 2Gi",
        ),
    ],
)
def test_bad_spec_is_refused_with_a_message_naming_the_field(
    spec: dict[str, Any], message: str
) -> None:
    assert message in refusal("CREATE", None, spec)


def test_every_problem_is_in_the_one_message() -> None:
    message = refusal("CREATE", None, {"command": ["true"], "language": "sh"})
    assert "spec.language: only used with spec.code" in message
    assert "spec.image: required with spec.command" in message


@pytest.mark.parametrize(
    "spec", [CODE, {"image": "codetask-tools:1", "command": ["jq"]}], ids=["code", "image"]
)
def test_good_spec_is_allowed(spec: dict[str, Any]) -> None:
    webhook.check("CREATE", None, spec, SETTINGS)


@pytest.mark.parametrize(
    "change",
    [{"cancel": True}, {"priority": 5}, {"ttlSecondsAfterFinished": 60}, {}],
    ids=["cancel", "priority", "ttl", "metadata-only"],
)
def test_update_of_a_mutable_field_is_allowed(change: dict[str, Any]) -> None:
    webhook.check("UPDATE", STORED, {**STORED, **change}, SETTINGS)


def test_update_is_not_refused_for_rules_that_changed_since_creation() -> None:
    # Created while custom images were allowed; cancelling it must still work.
    old = {"image": "registry.local/tool:1", "command": ["x"], "cancel": False}
    webhook.check("UPDATE", old, {**old, "cancel": True}, SETTINGS)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"code": "print(2)"}, "spec.code: cannot change after creation"),
        ({"timeoutSeconds": 5}, "spec.timeoutSeconds: cannot change after creation"),
        ({"language": None}, "spec.language: cannot change after creation"),
    ],
)
def test_update_of_an_immutable_field_is_refused(change: dict[str, Any], message: str) -> None:
    assert message in refusal("UPDATE", STORED, {**STORED, **change})


def test_raising_priority_above_the_cap_is_refused() -> None:
    message = refusal("UPDATE", STORED, {**STORED, "priority": 101})
    assert "spec.priority: 101 is above the highest allowed (100)" in message


def test_cancel_cannot_be_unset() -> None:
    cancelled = {**STORED, "cancel": True}
    assert "spec.cancel: cannot be unset" in refusal("UPDATE", cancelled, STORED)


def test_webhook_server_uses_the_mounted_certificate_and_kopf_manages_no_configuration(
    tmp_path: Path,
) -> None:
    settings = kopf.OperatorSettings()
    config = Settings.model_validate({"webhook_port": 9555, "webhook_cert_dir": tmp_path})
    webhook.configure(settings, webhook.server(config))
    continuous = settings.admission.server
    assert isinstance(continuous, webhook.ContinuousServer)
    server = continuous._server
    assert (server.addr, server.port) == ("0.0.0.0", 9555)
    assert (server.certfile, server.pkeyfile) == (tmp_path / "tls.crt", tmp_path / "tls.key")
    assert settings.admission.managed is None


def test_a_pool_is_checked_for_the_tasks_namespace_at_creation_only() -> None:
    gpu = pools.parse("gpu", {"namespaces": ["team-a"], "languages": ["python"]})
    known = {"gpu": gpu}
    webhook.check("CREATE", None, {**CODE, "pool": "gpu"}, SETTINGS, "team-a", known)
    with pytest.raises(
        kopf.AdmissionError, match=r"spec\.pool: CodeTaskPool 'gpu' may not be used"
    ):
        webhook.check("CREATE", None, {**CODE, "pool": "gpu"}, SETTINGS, "team-b", known)
    with pytest.raises(
        kopf.AdmissionError, match=r"spec\.language: CodeTaskPool 'gpu' runs python"
    ):
        webhook.check(
            "CREATE", None, {**CODE, "language": "sh", "pool": "gpu"}, SETTINGS, "team-a", known
        )
    # Cancelling a task whose pool is gone (or no longer allows it) still works.
    stored = {**STORED, "pool": "gpu"}
    webhook.check("UPDATE", stored, {**stored, "cancel": True}, SETTINGS, "team-b", {})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"namespaces": ["a"], "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}},
            "spec.resources.requests.cpu: above its limit 1",
        ),
        ({"namespaces": ["a"], "languages": ["cobol"]}, "languages"),
        ({}, "namespaces"),
    ],
)
def test_a_pool_the_operator_could_not_use_is_refused_naming_the_field(
    spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(kopf.AdmissionError, match=message) as refused:
        webhook.check_pool("p", spec)
    assert refused.value.code == 422


def test_a_good_pool_is_allowed() -> None:
    webhook.check_pool(
        "p",
        {
            "namespaces": ["team-*"],
            "languages": ["python"],
            "resources": {"requests": {"cpu": "500m"}, "limits": {"cpu": "1"}},
        },
    )
