"""Pure: a CodeTask spec, attempt and settings → the attempt's Job manifest (batch/v1).

The runner's side of the pod is described in docs/runner-contract.md. Custom-image tasks run the
user's command directly (no runner in their image) under the same lockdown; agent tasks run the
runner in the agent image, which drives the agent instead of an interpreter.
"""

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Final

from codetask_operator import api, quantity
from codetask_operator.pools import Pool
from codetask_operator.settings import Settings

JOB_NAME_MAX: Final = 52
"""Pods get a 6-character suffix and the `job-name` label must stay within 63."""
CONTAINER_NAME: Final = "runner"
INPUT_DIR: Final = "/codetask/input"
SCRATCH_DIR: Final = "/scratch"
RESULT_PATH: Final = "/dev/termination-log"
FILES_DIR: Final = "/codetask/files"
"""Agent tasks: the input ConfigMap, which the runner copies into the working directory."""
CODE_ANNOTATION: Final = "codetask.dev/code"
STDIN_ANNOTATION: Final = "codetask.dev/stdin"
PROMPT_ANNOTATION: Final = "codetask.dev/prompt"
AGENT_API_KEY_ENV: Final = "ANTHROPIC_API_KEY"
NON_ROOT_ID: Final = 65532

MANAGED_BY: Final = "codetask-operator"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_TASK: Final = "codetask.dev/task"
LABEL_TASK_UID: Final = "codetask.dev/task-uid"
LABEL_ATTEMPT: Final = "codetask.dev/attempt"
LABEL_MODE: Final = "codetask.dev/mode"
"""On task pods: ``code`` or ``agent``, what the task NetworkPolicies select them by."""
LABEL_POOL: Final = "codetask.dev/pool"
"""On the Jobs and pods of a task that runs in a CodeTaskPool: its name."""
LABEL_FINISHED: Final = "codetask.dev/finished"
"""Set on a finished task's Jobs and pods: it takes them out of the operator's watches (they stay
for `kubectl logs` and go with the task), so a restart does not list them."""
RESOURCE_NAMES: Final = ("cpu", "memory", "ephemeral-storage")

_LABEL_VALUE: Final = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def job_name(task_name: str, task_uid: str, attempt: int) -> str:
    """`<name>-<hash of uid>-<attempt>`: deterministic, a DNS-1123 label of ≤ 52 characters."""
    suffix = f"-{_digest(task_uid)}-{attempt}"
    base = re.sub(r"[^a-z0-9-]", "-", task_name.lower())[: JOB_NAME_MAX - len(suffix)]
    return (base.strip("-") or "task") + suffix


def label_value(text: str) -> str:
    """`text` if it is a valid label value, else a readable prefix plus a hash of it."""
    if len(text) <= 63 and _LABEL_VALUE.match(text):
        return text
    prefix = re.sub(r"[^A-Za-z0-9._-]", "-", text)[:52]
    prefix = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", prefix)
    return f"{prefix}-{_digest(text)}" if prefix else _digest(text)


def labels_for(task_name: str, task_uid: str, attempt: int | None = None) -> dict[str, str]:
    """Labels of a task's Jobs and pods; without `attempt`, a selector for all its attempts."""
    labels = {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_TASK: label_value(task_name),
        LABEL_TASK_UID: label_value(task_uid),
    }
    if attempt is not None:
        labels[LABEL_ATTEMPT] = str(attempt)
    return labels


def owner_reference(task_name: str, task_uid: str) -> dict[str, Any]:
    """Makes the CodeTask the Job's controller, so deleting the task deletes Job and pod."""
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "name": task_name,
        "uid": task_uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def input_annotations(spec: api.CodeTaskSpec) -> dict[str, str]:
    """The pod annotations that carry the code and stdin, or the agent's prompt (empty in
    custom-image mode)."""
    annotations = {}
    if spec.agent is not None:
        annotations[PROMPT_ANNOTATION] = spec.prompt or ""
    elif spec.code is not None:
        annotations[CODE_ANNOTATION] = spec.code
        if spec.stdin is not None:
            annotations[STDIN_ANNOTATION] = spec.stdin
    return annotations


def resources(
    asked: api.Resources, settings: Settings, pool: Pool | None = None
) -> dict[str, dict[str, str]]:
    """The pod's requests and limits: the task's amounts over its pool's class, over the
    operator's defaults.

    Where a request comes out above its limit, the amount from the weaker source yields (the
    task's own beat the pool's, which beat the defaults): a request the task sets above a default
    limit raises that limit, a pool's limit below a default request lowers that request. Both set
    by the task and inconsistent is admission's to refuse.
    """
    class_ = pool.spec.resources if pool and pool.spec else api.Resources()
    sources = (  # weakest first
        (settings.default_requests, settings.default_limits),
        (class_.requests.as_dict(), class_.limits.as_dict()),
        (asked.requests.as_dict(), asked.limits.as_dict()),
    )
    requests, limits = {}, {}
    for name in RESOURCE_NAMES:
        request_rank, request = max((r, s[0][name]) for r, s in enumerate(sources) if name in s[0])
        limit_rank, limit = max((r, s[1][name]) for r, s in enumerate(sources) if name in s[1])
        if quantity.parse(request) > quantity.parse(limit):
            if request_rank > limit_rank:
                limit = request
            elif request_rank < limit_rank:
                request = limit
        requests[name], limits[name] = request, limit
    return {"requests": requests, "limits": limits}


def _value(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}


def _field(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


@dataclass(frozen=True)
class RedisAccess:
    """The attempt's own Redis: a URL with its own user and password, and its key prefix."""

    url: str
    prefix: str


CONTAINER_SECURITY: Final = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "privileged": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
}


def _runner_env(
    spec: api.CodeTaskSpec, settings: Settings, redis: RedisAccess | None
) -> list[dict[str, Any]]:
    """What the runner reads in both its modes (code and agent)."""
    env = [
        _value("CODETASK_OUTPUT_LIMIT_BYTES", str(spec.output_limit_bytes)),
        _value("CODETASK_GRACE_SECONDS", str(settings.grace_seconds)),
        _value("CODETASK_RESULT_PATH", RESULT_PATH),
        _value("CODETASK_HEARTBEAT_INTERVAL", str(settings.heartbeat_interval_seconds)),
        _value("CODETASK_HEARTBEAT_TTL", str(settings.heartbeat_ttl_seconds)),
    ]
    if redis is not None:
        env += [_value("REDIS_URL", redis.url), _value("CODETASK_REDIS_PREFIX", redis.prefix)]
    return env


def _agent_env(agent: api.AgentSpec) -> list[dict[str, Any]]:
    """The agent's settings for the runner, and its API key straight from the Secret."""
    key_ref = {"name": agent.api_key_secret_ref.name, "key": agent.api_key_secret_ref.key}
    env = [
        _value("CODETASK_MODE", "agent"),
        _value("CODETASK_PROMPT_FILE", f"{INPUT_DIR}/prompt"),
        _value("CODETASK_AGENT_PROVIDER", agent.provider.value),
        {"name": AGENT_API_KEY_ENV, "valueFrom": {"secretKeyRef": key_ref}},
    ]
    if agent.model is not None:
        env.append(_value("CODETASK_AGENT_MODEL", agent.model))
    if agent.allowed_tools:
        env.append(_value("CODETASK_AGENT_ALLOWED_TOOLS", json.dumps(agent.allowed_tools)))
    if agent.disallowed_tools:
        env.append(_value("CODETASK_AGENT_DISALLOWED_TOOLS", json.dumps(agent.disallowed_tools)))
    if agent.permission_mode is not None:
        env.append(_value("CODETASK_AGENT_PERMISSION_MODE", agent.permission_mode.value))
    if agent.max_turns is not None:
        env.append(_value("CODETASK_AGENT_MAX_TURNS", str(agent.max_turns)))
    if agent.system_prompt is not None:
        env.append(_value("CODETASK_AGENT_SYSTEM_PROMPT", agent.system_prompt))
    if agent.input_config_map is not None:
        env.append(_value("CODETASK_INPUT_FILES_DIR", FILES_DIR))
    return env


def task_env(
    task_name: str,
    namespace: str,
    spec: api.CodeTaskSpec,
    attempt: int,
    settings: Settings,
    redis: RedisAccess | None,
) -> list[dict[str, Any]]:
    env = [
        _value("CODETASK_NAMESPACE", namespace),
        _value("CODETASK_NAME", task_name),
        _value("CODETASK_ATTEMPT", str(attempt)),
        _field("POD_NAME", "metadata.name"),
        _field("NODE_NAME", "spec.nodeName"),
        _value("CODETASK_TIMEOUT_SECONDS", str(spec.timeout_seconds)),
        _value("CODETASK_WORKDIR", SCRATCH_DIR),
        _value("HOME", SCRATCH_DIR),
        _value("TMPDIR", SCRATCH_DIR),
    ]
    if spec.agent is not None:
        env += _agent_env(spec.agent) + _runner_env(spec, settings, redis)
    elif spec.code is not None:
        if spec.language is None:
            raise ValueError("spec.language: required with spec.code")
        env += [
            _value("CODETASK_LANGUAGE", spec.language.value),
            _value("CODETASK_CODE_FILE", f"{INPUT_DIR}/code"),
            _value("CODETASK_ARGS", json.dumps(spec.args)),
            *_runner_env(spec, settings, redis),
        ]
        if spec.stdin is not None:
            env.append(_value("CODETASK_STDIN_FILE", f"{INPUT_DIR}/stdin"))
    return env + [var.model_dump(mode="json", exclude_none=True) for var in spec.env]


def _container(
    task_name: str,
    namespace: str,
    spec: api.CodeTaskSpec,
    attempt: int,
    settings: Settings,
    redis: RedisAccess | None,
    pool: Pool | None,
) -> dict[str, Any]:
    mounts: list[dict[str, Any]] = [{"name": "scratch", "mountPath": SCRATCH_DIR}]
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "imagePullPolicy": settings.image_pull_policy,
    }
    if spec.agent is not None:
        container["image"] = settings.agent_image
        mounts.insert(0, {"name": "input", "mountPath": INPUT_DIR, "readOnly": True})
        if spec.agent.input_config_map is not None:
            mounts.append({"name": "files", "mountPath": FILES_DIR, "readOnly": True})
    elif spec.code is not None:
        container["image"] = (pool and pool.spec and pool.spec.image) or settings.runner_image
        mounts.insert(0, {"name": "input", "mountPath": INPUT_DIR, "readOnly": True})
    else:
        container.update(image=spec.image, command=spec.command, args=spec.args)
    container.update(
        env=task_env(task_name, namespace, spec, attempt, settings, redis),
        resources=resources(spec.resources, settings, pool),
        volumeMounts=mounts,
        terminationMessagePath=RESULT_PATH,
        terminationMessagePolicy="FallbackToLogsOnError",
        securityContext=CONTAINER_SECURITY,
    )
    return container


def _volumes(spec: api.CodeTaskSpec, scratch_limit: str) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = [{"name": "scratch", "emptyDir": {"sizeLimit": scratch_limit}}]
    items = [
        {
            "path": key.removeprefix("codetask.dev/"),
            "fieldRef": {"fieldPath": f"metadata.annotations['{key}']"},
        }
        for key in input_annotations(spec)
    ]
    if items:
        volumes.insert(0, {"name": "input", "downwardAPI": {"items": items, "defaultMode": 0o444}})
    if spec.agent is not None and spec.agent.input_config_map is not None:
        # Optional, so a missing ConfigMap does not hold the pod in ContainerCreating until the
        # deadline: the runner finds no files and fails at once, naming the ConfigMap.
        config_map = {"name": spec.agent.input_config_map, "optional": True, "defaultMode": 0o444}
        volumes.append({"name": "files", "configMap": config_map})
    return volumes


def placement(pool: Pool | None) -> dict[str, Any]:
    """The pod spec fields that put a pool's pods where the pool says: none without a pool."""
    if pool is None or pool.spec is None:
        return {}
    spec = pool.spec
    fields: dict[str, Any] = {}
    if spec.node_selector:
        fields["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        fields["tolerations"] = [
            t.model_dump(mode="json", exclude_none=True) for t in spec.tolerations
        ]
    if spec.affinity:
        fields["affinity"] = spec.affinity
    if spec.runtime_class_name:
        fields["runtimeClassName"] = spec.runtime_class_name
    return fields


def build_job(
    task_name: str,
    task_uid: str,
    namespace: str,
    spec: api.CodeTaskSpec,
    attempt: int,
    settings: Settings,
    redis: RedisAccess | None = None,
    pool: Pool | None = None,
) -> dict[str, Any]:
    """The Job for one attempt of a validated CodeTask spec in `pool` (None: the operator's own
    settings); `redis`, the attempt's own access (never the operator's credential: the pod's
    code can read whatever the pod holds)."""
    container = _container(task_name, namespace, spec, attempt, settings, redis, pool)
    labels = labels_for(task_name, task_uid, attempt)
    if pool is not None:
        labels[LABEL_POOL] = label_value(pool.name)
    mode = "agent" if spec.agent is not None else "code"
    # Services and NetworkPolicies select pods: a task's own label could route a Service's traffic
    # to it or widen its network, so only the keys the operator allows reach the pod.
    pod_labels = {k: v for k, v in spec.labels.items() if k in settings.pod_label_keys}
    template_metadata: dict[str, Any] = {"labels": {**pod_labels, **labels, LABEL_MODE: mode}}
    if annotations := input_annotations(spec):
        template_metadata["annotations"] = annotations
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(task_name, task_uid, attempt),
            "namespace": namespace,
            "labels": {**spec.labels, **labels},
            "ownerReferences": [owner_reference(task_name, task_uid)],
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": spec.timeout_seconds,
            "template": {
                "metadata": template_metadata,
                "spec": pod_spec(
                    settings,
                    container,
                    _volumes(spec, container["resources"]["limits"]["ephemeral-storage"]),
                    pool,
                ),
            },
        },
    }


def pod_spec(
    settings: Settings, container: dict[str, Any], volumes: list[dict[str, Any]], pool: Pool | None
) -> dict[str, Any]:
    """A task pod's spec (cold or warm): one container, no service account token, no service
    links, non-root under the runtime's seccomp profile, placed as its pool says."""
    return {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "dnsPolicy": settings.pod_dns_policy,
        "terminationGracePeriodSeconds": settings.grace_seconds + 5,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": NON_ROOT_ID,
            "runAsGroup": NON_ROOT_ID,
            "fsGroup": NON_ROOT_ID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
        **placement(pool),
    }
