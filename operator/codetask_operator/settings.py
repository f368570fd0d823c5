"""Operator settings from `CODETASK_*` environment variables, validated once at start."""

import json
import re
import socket
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from codetask_operator import quantity
from codetask_operator.api import describe_error

ENV_PREFIX = "CODETASK_"
_SECRET_FIELDS = frozenset({"redis_url", "callback_key"})
_NAMESPACE_PATTERN = re.compile(r"^[a-z0-9*?]([-a-z0-9*?]{0,61}[a-z0-9*?])?$")
_DNS = {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
_HTTPS = {"ports": [{"port": 443, "protocol": "TCP"}]}
DEFAULT_TTL_SECONDS = 7 * 24 * 3600
"""A finished task is deleted a week after it ended (the chart's default too)."""
DEFAULT_KEEP_FINISHED = 1000
"""Finished tasks kept per namespace (the chart's default too)."""
Mode = Literal["code", "agent"]
"""Task pods run code (the runner's interpreters, or a custom image) or an agent."""
DEFAULT_TASK_EGRESS: dict[Mode, list[dict[str, Any]]] = {"code": [_DNS], "agent": [_DNS, _HTTPS]}
"""Without the chart's values: DNS for both, and for agent tasks the model's API over HTTPS."""

# Lists come as JSON (`["a","b"]`) or comma-separated (`a,b`).
StrList = Annotated[list[str], NoDecode]


class SettingsError(Exception):
    """Settings are invalid; the message names each environment variable and what is wrong."""


def names_only(namespaces: list[str]) -> bool:
    """Namespaces given, every one a name (no glob): nothing needs discovering, and the chart then
    grants namespaced Roles only, no listing of namespaces."""
    return bool(namespaces) and not any(set("*?") & set(ns) for ns in namespaces)


class Settings(BaseSettings):
    """Everything the operator is configured with."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, env_parse_none_str="null")

    runner_image: str = Field("codetask-runner:dev", min_length=1)
    agent_image: str = Field(
        "codetask-agent:dev", min_length=1, description="Runner image for spec.agent tasks."
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    allowed_images: StrList = Field(
        default_factory=list,
        description="Patterns of images allowed in custom-image mode; empty = none. `*` and `?` "
        "match within one path segment (never `/`), `**` across segments.",
    )
    pod_label_keys: StrList = Field(
        default_factory=list,
        description="Keys of spec.labels copied onto task pods; empty = none (they stay on the "
        "CodeTask and its Job, where no Service or NetworkPolicy selects them).",
    )

    network_policy: bool = Field(
        True,
        description="Keep a NetworkPolicy for code and one for agent task pods (no ingress, egress "
        "by task_egress) in every namespace tasks run in, before its first Job.",
    )
    network_policy_name: str = Field(
        "codetask",
        pattern=r"^[a-z0-9]([-a-z0-9]{0,230}[a-z0-9])?$",
        description="Policies are named <this>-code-tasks and <this>-agent-tasks.",
    )
    task_egress: dict[Mode, list[dict[str, Any]]] = Field(
        default_factory=lambda: json.loads(json.dumps(DEFAULT_TASK_EGRESS)),
        description="Egress rules (NetworkPolicyEgressRule) of code and of agent task pods.",
    )

    default_cpu_request: str = "100m"
    default_memory_request: str = "128Mi"
    default_ephemeral_storage_request: str = "64Mi"
    default_cpu_limit: str = "1"
    default_memory_limit: str = "512Mi"
    default_ephemeral_storage_limit: str = "1Gi"
    max_priority: int = Field(
        100, ge=0, le=1000, description="The highest spec.priority a task may set (1000 = any)."
    )
    max_cpu: str = Field("4", description="The largest request or limit a task may ask for.")
    max_memory: str = "2Gi"
    max_ephemeral_storage: str = "4Gi"
    default_ttl_seconds_after_finished: int | None = Field(
        DEFAULT_TTL_SECONDS,
        ge=0,
        description="For tasks without spec.ttlSecondsAfterFinished; None = keep.",
    )

    redis_url: str | None = Field(
        None,
        pattern=r"^rediss?://",
        description="redis:// or rediss://: task pods reach it over the network (no unix socket).",
    )
    redis_acl_secret: str | None = Field(
        None,
        repr=False,
        description="Key of the per-attempt Redis passwords (HMAC); unset: derived from the "
        "password in redis_url.",
    )
    keep_finished_per_namespace: int = Field(
        DEFAULT_KEEP_FINISHED,
        ge=0,
        description="Finished CodeTasks kept per namespace: beyond it the oldest are deleted "
        "(once their result is in the results stream); 0: no limit.",
    )
    callback_allowed_hosts: StrList = Field(
        default_factory=list,
        description="Hosts a task's spec.callback may name: host names (`*.example.com` for "
        "subdomains), with `:port` to allow only that port, or CIDRs for IP addresses. Empty: "
        "no callbacks.",
    )
    callback_key: str | None = Field(
        None, repr=False, description="HMAC-SHA256 key that signs callbacks; unset: none allowed."
    )
    callback_retry_seconds: int = Field(
        3600, ge=1, le=7 * 86400, description="How long a callback is retried after the end."
    )
    callback_timeout_seconds: float = Field(5.0, gt=0, le=60, description="Per POST.")
    results_stream: str = Field(
        "codetask:results:stream",
        max_length=200,
        description="Redis Stream that gets every finished task's result once (with Redis); "
        "empty: none.",
    )
    results_max_len: int = Field(
        100_000, ge=1, description="About this many entries are kept in the results stream."
    )
    results_marker_ttl_seconds: int = Field(
        7 * 86400,
        ge=60,
        description="How long a task's 'published' marker lives: tasks that finished longer ago "
        "are not checked again after a restart.",
    )
    heartbeat_interval_seconds: int = Field(10, ge=1, le=3600)
    heartbeat_ttl_seconds: int = Field(30, ge=2, le=86400)
    grace_seconds: int = Field(5, ge=0, le=300)
    pod_dns_policy: Literal["ClusterFirst", "Default"] = "ClusterFirst"
    pending_grace_seconds: float = Field(
        20,
        ge=0,
        le=3600,
        description="An unschedulable pod or a missing Secret/ConfigMap fails the task after this.",
    )
    sweep_interval_seconds: float = Field(
        5, gt=0, le=300, description="How often unfinished tasks are re-checked without an event."
    )

    max_running: int = Field(0, ge=0, description="Running tasks in the cluster; 0 = unlimited.")
    max_running_per_namespace: int = Field(0, ge=0, description="Per namespace; 0 = unlimited.")
    namespaces: StrList = Field(
        default_factory=list,
        description="Watched namespaces, names or globs like team-*; empty = all.",
    )

    log_format: Literal["json", "plain", "full"] = "json"
    events: Literal["warnings", "all"] = Field(
        "warnings",
        description="Kubernetes Events posted on tasks: failures and retries only, or also the "
        "Normal ones (Queued, Scheduled, Started, Succeeded, Cancelled): one API write each.",
    )
    metrics_port: int = Field(8000, ge=1, le=65535)
    health_port: int = Field(8080, ge=1, le=65535)

    webhook_enabled: bool = False
    webhook_port: int = Field(9443, ge=1, le=65535)
    webhook_cert_dir: Path | None = Field(
        None, description="tls.crt and tls.key; unset = self-signed by kopf."
    )
    references_key: str | None = Field(
        None,
        repr=False,
        description="Key of the webhook's stamp on tasks whose Secret/ConfigMap references it "
        "checked (HMAC). Set: tasks with references start only with a valid stamp.",
    )

    leader_election: bool = Field(
        False, description="Act only while holding a coordination.k8s.io Lease (several replicas)."
    )
    lease_name: str = Field("codetask-operator", min_length=1, max_length=253)
    lease_namespace: str | None = Field(
        None,
        validation_alias=AliasChoices(f"{ENV_PREFIX}LEASE_NAMESPACE", "POD_NAMESPACE"),
        description="Namespace of the Lease; unset = the pod's own (POD_NAMESPACE).",
    )
    pod_name: str = Field(
        default_factory=socket.gethostname,
        validation_alias=AliasChoices(f"{ENV_PREFIX}POD_NAME", "POD_NAME"),
        description="Start of the Lease holder identity (a random suffix follows).",
    )
    lease_duration_seconds: int = Field(10, ge=2, le=3600)
    renew_period_seconds: float = Field(3, gt=0, le=1800)

    @field_validator(
        "allowed_images", "namespaces", "pod_label_keys", "callback_allowed_hosts", mode="before"
    )
    @classmethod
    def _split(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        if value.lstrip().startswith("["):
            return json.loads(value)
        return [item.strip() for item in value.split(",") if item.strip()]

    @field_validator("namespaces")
    @classmethod
    def _namespaces(cls, value: list[str]) -> list[str]:
        bad = [ns for ns in value if not _NAMESPACE_PATTERN.match(ns)]
        if bad:
            raise ValueError(f"not namespace names or glob patterns: {', '.join(bad)}")
        return value

    @field_validator("allowed_images")
    @classmethod
    def _images(cls, value: list[str]) -> list[str]:
        bad = [p for p in value if "[" in p or "]" in p]
        if bad:
            raise ValueError(f"[...] is not supported (only *, ** and ?): {', '.join(bad)}")
        return value

    @field_validator(
        "max_cpu",
        "max_memory",
        "max_ephemeral_storage",
        "default_cpu_request",
        "default_memory_request",
        "default_ephemeral_storage_request",
        "default_cpu_limit",
        "default_memory_limit",
        "default_ephemeral_storage_limit",
    )
    @classmethod
    def _quantity(cls, value: str) -> str:
        quantity.parse(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        for name, request in self.default_requests.items():
            limit = self.default_limits[name]
            if quantity.parse(request) > quantity.parse(limit):
                raise ValueError(f"default {name} request {request} exceeds its limit {limit}")
            if quantity.parse(limit) > quantity.parse(cap := self.max_resources[name]):
                raise ValueError(f"default {name} limit {limit} exceeds the cap {cap}")
        if self.heartbeat_ttl_seconds <= self.heartbeat_interval_seconds:
            raise ValueError(
                f"{ENV_PREFIX}HEARTBEAT_TTL_SECONDS ({self.heartbeat_ttl_seconds}) must exceed "
                f"{ENV_PREFIX}HEARTBEAT_INTERVAL_SECONDS ({self.heartbeat_interval_seconds})"
            )
        return self

    @model_validator(mode="after")
    def _lease(self) -> Self:
        if not self.leader_election:
            return self
        if not self.lease_namespace:
            raise ValueError(
                f"{ENV_PREFIX}LEASE_NAMESPACE (or POD_NAMESPACE) is required with "
                f"{ENV_PREFIX}LEADER_ELECTION"
            )
        if self.renew_period_seconds * 2 >= self.lease_duration_seconds:
            raise ValueError(
                f"{ENV_PREFIX}RENEW_PERIOD_SECONDS ({self.renew_period_seconds:g}) must be less "
                f"than half of {ENV_PREFIX}LEASE_DURATION_SECONDS ({self.lease_duration_seconds})"
            )
        return self

    @property
    def namespaces_by_name(self) -> bool:
        """Every watched namespace is named exactly: see `names_only`."""
        return names_only(self.namespaces)

    @property
    def default_requests(self) -> dict[str, str]:
        """Default requests, keyed by Kubernetes resource name."""
        return {
            "cpu": self.default_cpu_request,
            "memory": self.default_memory_request,
            "ephemeral-storage": self.default_ephemeral_storage_request,
        }

    @property
    def max_resources(self) -> dict[str, str]:
        """The largest request or limit a task may ask for, keyed by Kubernetes resource name."""
        return {
            "cpu": self.max_cpu,
            "memory": self.max_memory,
            "ephemeral-storage": self.max_ephemeral_storage,
        }

    @property
    def default_limits(self) -> dict[str, str]:
        """Default limits, keyed by Kubernetes resource name."""
        return {
            "cpu": self.default_cpu_limit,
            "memory": self.default_memory_limit,
            "ephemeral-storage": self.default_ephemeral_storage_limit,
        }


def load() -> Settings:
    """Settings from the environment, or SettingsError listing every problem."""
    try:
        return Settings()
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else ""
            where = f"{ENV_PREFIX}{field.upper()}: " if field else ""
            got = "" if field in _SECRET_FIELDS or not field else f" (got {error['input']!r})"
            lines.append(f"{where}{describe_error(error)}{got}")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None
