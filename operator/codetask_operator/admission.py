"""Pure: the checks the CRD schema cannot express. Each message names its field.

`validate` runs in the admission webhook and, when the webhook is off, in the operator (a task
that fails it ends Failed with reason InvalidSpec). It parses the spec with the API models first,
so it also reports what the schema would.

Updates: a CodeTask is one run, so its spec is immutable once created, except `cancel` (only from
false to true), `priority` (reorders a task still waiting for a slot; up to the cap) and
`ttlSecondsAfterFinished` (keep a finished task longer or shorter). This holds from creation rather
than from "started", so there is no race with the operator starting the task.
"""

import json
import re
from collections.abc import Mapping
from typing import Any, Final

from pydantic import ValidationError

from codetask_operator import api, callbacks, jobs, pools, quantity
from codetask_operator.settings import Settings

MUTABLE_FIELDS: Final = frozenset({"cancel", "priority", "ttlSecondsAfterFinished"})
RESERVED_ENV: Final = frozenset({"POD_NAME", "NODE_NAME", "HOME", "TMPDIR", "REDIS_URL"})
AGENT_RESERVED_ENV: Final = frozenset({jobs.AGENT_API_KEY_ENV})
"""Set by the operator for agent tasks (from agent.apiKeySecretRef)."""
RESERVED_LABEL_PREFIXES: Final = ("codetask.dev/", "batch.kubernetes.io/")
RESERVED_LABELS: Final = frozenset({jobs.LABEL_MANAGED_BY, "job-name", "controller-uid"})

_LABEL_NAME: Final = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN: Final = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)


def _path(loc: tuple[int | str, ...]) -> str:
    return "spec" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)


def validate(
    spec: Mapping[str, Any],
    settings: Settings,
    namespace: str = "",
    catalog: Mapping[str, pools.Pool] | None = None,
) -> list[str]:
    """Every problem with `spec` in `namespace`, given the pools of `catalog`, as
    `spec.<field>: <what is wrong>`; empty if it is valid."""
    try:
        task = api.CodeTaskSpec.model_validate(spec)
    except ValidationError as exc:
        return [f"{_path(e['loc'])}: {api.describe_error(e)}" for e in exc.errors()]
    pool, pool_errors = pools.choose(task.pool, namespace, catalog or {})
    return [
        *_mode(task, settings),
        *_sizes(task),
        *_env(task),
        *_resources(task),
        *pool_errors,
        *(pools.fit(task, pool) if pool else []),
        *_caps(task, settings, pool),
        *_labels(task),
        *_callback(task, settings),
    ]


def _callback(task: api.CodeTaskSpec, settings: Settings) -> list[str]:
    if task.callback is None:
        return []
    if not settings.callback_key:
        return ["spec.callback: callbacks are off on this cluster (no chart callbacks.secret)"]
    refused = callbacks.refusal(task.callback.url, settings.callback_allowed_hosts)
    return [refused] if refused else []


def _mode(task: api.CodeTaskSpec, settings: Settings) -> list[str]:
    if task.agent is not None:
        return _agent(task)
    if task.code is not None and task.command is not None:
        return ["spec.code: set either code or command, not both"]
    if task.code is not None:
        errors = [] if task.language else ["spec.language: required with spec.code"]
        if task.image is not None:
            errors.append("spec.image: only used with spec.command; code runs in the runner image")
        return errors
    if task.command is None:
        return [
            "spec.code: required (with spec.language), or spec.command with spec.image, or "
            "spec.agent with spec.prompt"
        ]
    errors = [
        f"spec.{f}: only used with spec.code"
        for f in ("language", "stdin")
        if getattr(task, f) is not None
    ]
    if task.image is None:
        errors.append("spec.image: required with spec.command")
    elif not settings.allowed_images:
        errors.append("spec.image: custom images are disabled on this cluster")
    elif not any(image_matches(task.image, p) for p in settings.allowed_images):
        allowed = ", ".join(settings.allowed_images)
        errors.append(f"spec.image: {task.image!r} is not allowed; allowed: {allowed}")
    return errors


def image_matches(image: str, pattern: str) -> bool:
    """Whether `image` matches an allow-list `pattern`: `*` is any run of characters other than
    `/`, `?` one such character, `**` any run including `/`; everything else is literal.

    Unlike fnmatch, `registry.local/*` does not allow `registry.local/evil/x`: a registry's path
    segments are often separate owners.
    """
    parts = re.split(r"(\*\*|\*|\?)", pattern)
    wildcards = {"**": ".*", "*": "[^/]*", "?": "[^/]"}
    regex = "".join(wildcards.get(part) or re.escape(part) for part in parts)
    return re.fullmatch(regex, image) is not None


def _agent(task: api.CodeTaskSpec) -> list[str]:
    """An agent task: a prompt, none of the other modes' fields, no user-set API key."""
    errors = [
        f"spec.{f}: not used with spec.agent (the agent works on spec.prompt)"
        for f in ("code", "command", "language", "stdin", "image")
        if getattr(task, f) is not None
    ]
    if task.args:
        errors.append("spec.args: not used with spec.agent")
    if not (task.prompt or "").strip():
        errors.append("spec.prompt: required with spec.agent: the task the agent works on")
    errors += [
        f"spec.env[{i}].name: {var.name} is set from spec.agent.apiKeySecretRef"
        for i, var in enumerate(task.env)
        if var.name in AGENT_RESERVED_ENV
    ]
    return errors


def _sizes(task: api.CodeTaskSpec) -> list[str]:
    errors = []
    size = sum(len(k) + len(v.encode()) for k, v in jobs.input_annotations(task).items())
    if size > api.INPUT_MAX_BYTES:
        errors.append(
            f"spec.code: code and stdin take {size} bytes as pod annotations; at most "
            f"{api.INPUT_MAX_BYTES} fit"
        )
    if (size := len(json.dumps(task.args))) > api.ARGS_MAX_BYTES:
        errors.append(f"spec.args: {size} bytes as JSON; at most {api.ARGS_MAX_BYTES}")
    return errors


def _env(task: api.CodeTaskSpec) -> list[str]:
    errors: list[str] = []
    seen: dict[str, int] = {}
    for i, var in enumerate(task.env):
        where = f"spec.env[{i}]"
        if var.name.startswith("CODETASK_") or var.name in RESERVED_ENV:
            errors.append(f"{where}.name: {var.name} is reserved for the operator")
        if var.name in seen:
            errors.append(f"{where}.name: {var.name} is already set by spec.env[{seen[var.name]}]")
        seen.setdefault(var.name, i)
        if var.value is not None and var.value_from is not None:
            errors.append(f"{where}: set value or valueFrom, not both")
        source = var.value_from
        if source is not None and (source.secret_key_ref is None) == (
            source.config_map_key_ref is None
        ):
            errors.append(f"{where}.valueFrom: set exactly one of secretKeyRef and configMapKeyRef")
    return errors


def _resources(task: api.CodeTaskSpec) -> list[str]:
    errors = []
    requests, limits = task.resources.requests.as_dict(), task.resources.limits.as_dict()
    for name, limit in limits.items():
        if quantity.parse(limit) == 0:
            errors.append(f"spec.resources.limits.{name}: must be greater than 0")
        request = requests.get(name)
        if request is not None and quantity.parse(request) > quantity.parse(limit):
            errors.append(f"spec.resources.requests.{name}: {request} exceeds the limit {limit}")
    return errors


def _caps(task: api.CodeTaskSpec, settings: Settings, pool: pools.Pool | None) -> list[str]:
    """The chart's cap on priority, and on every request and limit the task sets the chart's or
    its pool's (the defaults it leaves to the operator are within them: settings check that)."""
    errors = []
    if task.priority > settings.max_priority:
        errors.append(_priority_cap(task.priority, settings))
    caps = pools.caps(pool, settings.max_resources)
    for kind, amounts in (("requests", task.resources.requests), ("limits", task.resources.limits)):
        for name, amount in amounts.as_dict().items():
            cap, named = caps[name]
            if quantity.parse(amount) > quantity.parse(cap):
                errors.append(f"spec.resources.{kind}.{name}: {amount} is above {named}")
    return errors


def _priority_cap(priority: int, settings: Settings) -> str:
    return f"spec.priority: {priority} is above the highest allowed ({settings.max_priority})"


def _labels(task: api.CodeTaskSpec) -> list[str]:
    errors = []
    for key in task.labels:
        prefix, _, name = key.rpartition("/")
        if (
            len(name) > 63
            or not _LABEL_NAME.match(name)
            or (prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)))
        ):
            errors.append(f"spec.labels: {key!r} is not a valid label key")
        elif key in RESERVED_LABELS or key.startswith(RESERVED_LABEL_PREFIXES):
            errors.append(f"spec.labels: {key!r} is reserved for the operator and Kubernetes")
    return errors


def validate_update(
    old: Mapping[str, Any], new: Mapping[str, Any], settings: Settings
) -> list[str]:
    """Problems with changing spec `old` into `new` (both as stored, defaults applied)."""
    errors = [
        f"spec.{key}: cannot change after creation; create a new CodeTask "
        f"(only {', '.join(sorted(MUTABLE_FIELDS))} may change)"
        for key in sorted(old.keys() | new.keys())
        if key not in MUTABLE_FIELDS and old.get(key) != new.get(key)
    ]
    if old.get("cancel") and not new.get("cancel"):
        errors.append("spec.cancel: cannot be unset once true")
    priority = new.get("priority", 0)
    changed = priority != old.get("priority", 0)
    if changed and isinstance(priority, int) and priority > settings.max_priority:
        errors.append(_priority_cap(priority, settings))
    return errors


def finished_label(
    labels: Mapping[str, Any], old_labels: Mapping[str, Any] | None, status: Mapping[str, Any]
) -> str | None:
    """The problem with a task newly labelled `codetask.dev/finished` (created with it, or given
    it) before its status is final: the label takes a task out of the operator's watch, so it would
    never run or never finish. The operator sets it once the task has finished."""
    if jobs.LABEL_FINISHED not in labels or jobs.LABEL_FINISHED in (old_labels or {}):
        return None
    if status.get("phase") in {str(p) for p in api.FINAL_PHASES}:
        return None
    return (
        f"metadata.labels[{jobs.LABEL_FINISHED}]: the operator sets it once the task has "
        "finished; a task with it before then is out of the operator's watch and would never "
        "run or finish"
    )


def finished_ttl(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    old_labels: Mapping[str, Any],
    settings: Settings,
) -> str | None:
    """The problem with a TTL change of a task out of the operator's watch (labelled
    `codetask.dev/finished`): the operator reads it again only when the old TTL comes due, so
    only a longer TTL, or none, can hold."""
    if jobs.LABEL_FINISHED not in old_labels:
        return None
    default = settings.default_ttl_seconds_after_finished
    before, after = (spec.get("ttlSecondsAfterFinished", default) for spec in (old, new))
    if after is None or before == after or (before is not None and after > before):
        return None
    return (
        "spec.ttlSecondsAfterFinished: this task has finished and is out of the operator's watch "
        f"(label {jobs.LABEL_FINISHED}), which reads its TTL again only when the current one "
        "comes due: it may be made longer or removed; delete the task to have it go sooner"
    )
