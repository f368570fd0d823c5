"""Operator settings: defaults, parsing, and errors that name the environment variable."""

import json
import os

import pytest

from codetask_operator import settings

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(settings.ENV_PREFIX) or name in ("POD_NAME", "POD_NAMESPACE"):
            monkeypatch.delenv(name)


def test_defaults_are_usable() -> None:
    loaded = settings.load()
    assert loaded.runner_image == "codetask-runner:dev"
    assert loaded.image_pull_policy == "IfNotPresent"
    assert loaded.allowed_images == [] and loaded.namespaces == []
    assert (loaded.heartbeat_interval_seconds, loaded.heartbeat_ttl_seconds) == (10, 30)
    assert loaded.grace_seconds == 5 and loaded.pod_dns_policy == "ClusterFirst"
    assert loaded.pending_grace_seconds == 20
    assert (loaded.max_running, loaded.max_running_per_namespace) == (0, 0)
    assert set(loaded.default_limits) == {"cpu", "memory", "ephemeral-storage"}
    assert loaded.redis_url is None and loaded.webhook_enabled is False
    assert loaded.pod_label_keys == []
    assert loaded.max_priority == 100
    assert loaded.max_resources == {"cpu": "4", "memory": "2Gi", "ephemeral-storage": "4Gi"}
    assert loaded.network_policy is True and loaded.network_policy_name == "codetask"
    assert loaded.task_egress == settings.DEFAULT_TASK_EGRESS


def test_values_come_from_prefixed_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODETASK_RUNNER_IMAGE", "registry.local/runner:1")
    monkeypatch.setenv("CODETASK_POD_DNS_POLICY", "Default")
    monkeypatch.setenv("CODETASK_MAX_RUNNING", "2")
    monkeypatch.setenv("CODETASK_DEFAULT_MEMORY_LIMIT", "1Gi")
    monkeypatch.setenv("CODETASK_REDIS_URL", "redis://redis:6379/0")
    monkeypatch.setenv("CODETASK_WEBHOOK_ENABLED", "true")
    loaded = settings.load()
    assert loaded.runner_image == "registry.local/runner:1"
    assert loaded.pod_dns_policy == "Default"
    assert loaded.max_running == 2
    assert loaded.default_limits["memory"] == "1Gi"
    assert loaded.redis_url == "redis://redis:6379/0"
    assert loaded.webhook_enabled is True


@pytest.mark.parametrize(
    "value", ["busybox:*, registry.local/*", '["busybox:*", "registry.local/*"]']
)
def test_lists_are_comma_separated_or_json(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CODETASK_ALLOWED_IMAGES", value)
    keys = value.replace("busybox:*", "team").replace("registry.local/*", "example.com/tier")
    monkeypatch.setenv("CODETASK_POD_LABEL_KEYS", keys)
    loaded = settings.load()
    assert loaded.allowed_images == ["busybox:*", "registry.local/*"]
    assert loaded.pod_label_keys == ["team", "example.com/tier"]


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("CODETASK_MAX_RUNNING", "-1", "CODETASK_MAX_RUNNING: must be ≥ 0 (got '-1')"),
        ("CODETASK_MAX_RUNNING", "many", "CODETASK_MAX_RUNNING: must be an integer (got 'many')"),
        ("CODETASK_GRACE_SECONDS", "301", "CODETASK_GRACE_SECONDS: must be ≤ 300"),
        ("CODETASK_IMAGE_PULL_POLICY", "Sometimes", "CODETASK_IMAGE_PULL_POLICY: "),
        ("CODETASK_POD_DNS_POLICY", "None", "CODETASK_POD_DNS_POLICY: "),
        ("CODETASK_LOG_FORMAT", "xml", "CODETASK_LOG_FORMAT: "),
        ("CODETASK_METRICS_PORT", "70000", "CODETASK_METRICS_PORT: must be ≤ 65535"),
        (
            "CODETASK_DEFAULT_CPU_LIMIT",
            "lots",
            "CODETASK_DEFAULT_CPU_LIMIT: 'lots' is not a Kubernetes quantity",
        ),
        (
            "CODETASK_NAMESPACES",
            "team-a,Team_B",
            "CODETASK_NAMESPACES: not namespace names or glob patterns: Team_B",
        ),
        ("CODETASK_REDIS_URL", "http://secret@redis", "CODETASK_REDIS_URL: must match"),
        ("CODETASK_REDIS_URL", "unix:///run/redis.sock", "CODETASK_REDIS_URL: must match"),
        ("CODETASK_WEBHOOK_ENABLED", "perhaps", "CODETASK_WEBHOOK_ENABLED: must be true or false"),
        ("CODETASK_HEARTBEAT_TTL_SECONDS", "5", "CODETASK_HEARTBEAT_TTL_SECONDS (5) must exceed"),
        (
            "CODETASK_LEADER_ELECTION",
            "true",
            "CODETASK_LEASE_NAMESPACE (or POD_NAMESPACE) is required with CODETASK_LEADER_ELECTION",
        ),
        ("CODETASK_LEASE_DURATION_SECONDS", "1", "CODETASK_LEASE_DURATION_SECONDS: must be ≥ 2"),
        (
            "CODETASK_DEFAULT_MEMORY_LIMIT",
            "64Mi",
            "default memory request 128Mi exceeds its limit 64Mi",
        ),
        ("CODETASK_MAX_PRIORITY", "-1", "CODETASK_MAX_PRIORITY: must be ≥ 0"),
        ("CODETASK_MAX_PRIORITY", "1001", "CODETASK_MAX_PRIORITY: must be ≤ 1000"),
        ("CODETASK_MAX_MEMORY", "lots", "CODETASK_MAX_MEMORY: 'lots' is not a Kubernetes quantity"),
        ("CODETASK_MAX_CPU", "500m", "default cpu limit 1 exceeds the cap 500m"),
        ("CODETASK_TASK_EGRESS", "[{}]", "CODETASK_TASK_EGRESS: "),
        ("CODETASK_TASK_EGRESS", '{"pods": []}', "should be 'code' or 'agent' (got 'pods')"),
        ("CODETASK_NETWORK_POLICY_NAME", "Rel_1", "CODETASK_NETWORK_POLICY_NAME: "),
        (
            "CODETASK_ALLOWED_IMAGES",
            "registry.local/[a-z]*",
            "CODETASK_ALLOWED_IMAGES: [...] is not supported (only *, ** and ?)",
        ),
    ],
)
def test_bad_values_give_errors_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(settings.SettingsError) as caught:
        settings.load()
    assert expected in str(caught.value)


def test_secrets_are_not_echoed_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODETASK_REDIS_URL", "http://user:hunter2@redis")
    with pytest.raises(settings.SettingsError) as caught:
        settings.load()
    assert "hunter2" not in str(caught.value)


def test_every_problem_is_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODETASK_MAX_RUNNING", "-1")
    monkeypatch.setenv("CODETASK_HEALTH_PORT", "0")
    with pytest.raises(settings.SettingsError) as caught:
        settings.load()
    assert "CODETASK_MAX_RUNNING" in str(caught.value)
    assert "CODETASK_HEALTH_PORT" in str(caught.value)


def test_settings_are_frozen() -> None:
    loaded = settings.load()
    with pytest.raises(ValueError, match="frozen"):
        loaded.max_running = 3  # type: ignore[misc]


def test_leader_election_is_off_by_default_and_a_dead_leader_is_replaced_within_15_s() -> None:
    loaded = settings.load()
    assert loaded.leader_election is False
    assert loaded.lease_name == "codetask-operator"
    assert (loaded.lease_duration_seconds, loaded.renew_period_seconds) == (10, 3)


def test_lease_namespace_and_pod_name_come_from_the_downward_api(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CODETASK_LEADER_ELECTION", "true")
    monkeypatch.setenv("POD_NAMESPACE", "codetask-system")
    monkeypatch.setenv("POD_NAME", "codetask-operator-7d9-x2x")
    loaded = settings.load()
    assert loaded.lease_namespace == "codetask-system"
    assert loaded.pod_name == "codetask-operator-7d9-x2x"
    monkeypatch.setenv("CODETASK_LEASE_NAMESPACE", "elsewhere")
    assert settings.load().lease_namespace == "elsewhere"


def test_renew_period_must_leave_room_for_retries_within_the_lease(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CODETASK_LEADER_ELECTION", "true")
    monkeypatch.setenv("POD_NAMESPACE", "codetask-system")
    monkeypatch.setenv("CODETASK_LEASE_DURATION_SECONDS", "10")
    monkeypatch.setenv("CODETASK_RENEW_PERIOD_SECONDS", "5")
    with pytest.raises(settings.SettingsError) as caught:
        settings.load()
    assert "CODETASK_RENEW_PERIOD_SECONDS (5) must be less than half of" in str(caught.value)
    monkeypatch.setenv("CODETASK_RENEW_PERIOD_SECONDS", "2")
    assert settings.load().renew_period_seconds == 2


def test_task_egress_comes_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    rules = {"code": [{"ports": [{"port": 8080}]}], "agent": []}
    monkeypatch.setenv("CODETASK_TASK_EGRESS", json.dumps(rules))
    monkeypatch.setenv("CODETASK_NETWORK_POLICY_NAME", "rel-codetask-operator")
    loaded = settings.load()
    assert loaded.task_egress == rules
    assert loaded.network_policy_name == "rel-codetask-operator"


@pytest.mark.parametrize(
    ("namespaces", "by_name"),
    [
        ("", False),
        ("team-a", True),
        ("team-a,team-b", True),
        ("team-*", False),
        ("team-a,ci-?", False),
    ],
)
def test_namespaces_are_served_by_name_only_when_none_is_a_glob(
    monkeypatch: pytest.MonkeyPatch, namespaces: str, by_name: bool
) -> None:
    """As the chart decides between namespaced Roles (no namespace listing) and a ClusterRole."""
    monkeypatch.setenv(f"{settings.ENV_PREFIX}NAMESPACES", namespaces)
    assert settings.load().namespaces_by_name is by_name
