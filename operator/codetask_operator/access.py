"""Pure: the Secrets and ConfigMaps a task reads, and proof that its creator may read them.

The operator creates the task's pod, so a task could print any Secret or ConfigMap of its
namespace that its creator may not `get` (a confused deputy). The admission webhook therefore
asks, with a SubjectAccessReview as the requesting user, whether they may `get` each one, refuses
the task naming the field otherwise, and stamps the task it let through: an HMAC, under the
webhook's TLS key, of the namespace, name and references, with the time. The operator starts a task
with references only with a stamp that verifies and was made when the task was created: one whose
create the webhook did not see (down, under failurePolicy Ignore) does not start with them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from codetask_operator import api

STAMP_ANNOTATION: Final = "codetask.dev/references-checked"
STAMP_WINDOW_SECONDS: Final = 60.0
"""A stamp counts only for a task created within this long of it: copied onto a later task (while
the webhook is down) it does not."""


@dataclass(frozen=True)
class Reference:
    """A Secret or ConfigMap the task's pod reads, and the spec field that names it."""

    field: str
    resource: str
    """`secrets` or `configmaps`."""
    name: str


def references(spec: api.CodeTaskSpec) -> list[Reference]:
    """Every Secret and ConfigMap the task's pod would read."""
    found = []
    for i, var in enumerate(spec.env):
        source = var.value_from
        if source is not None and source.secret_key_ref is not None:
            field = f"spec.env[{i}].valueFrom.secretKeyRef"
            found.append(Reference(field, "secrets", source.secret_key_ref.name))
        if source is not None and source.config_map_key_ref is not None:
            field = f"spec.env[{i}].valueFrom.configMapKeyRef"
            found.append(Reference(field, "configmaps", source.config_map_key_ref.name))
    if spec.agent is not None:
        secret = spec.agent.api_key_secret_ref.name
        found.append(Reference("spec.agent.apiKeySecretRef", "secrets", secret))
        if spec.agent.input_config_map is not None:
            config_map = spec.agent.input_config_map
            found.append(Reference("spec.agent.inputConfigMap", "configmaps", config_map))
    return found


def review(user: dict[str, Any], namespace: str, ref: Reference) -> dict[str, Any]:
    """The SubjectAccessReview: may the requesting user `get` the referenced object?"""
    spec: dict[str, Any] = {
        "user": user.get("username", ""),
        "groups": user.get("groups") or [],
        "resourceAttributes": {
            "namespace": namespace,
            "verb": "get",
            "resource": ref.resource,
            "name": ref.name,
        },
    }
    if user.get("uid"):
        spec["uid"] = user["uid"]
    if user.get("extra"):
        spec["extra"] = user["extra"]
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}


def refusal(ref: Reference, username: str, namespace: str) -> str:
    """Why a reference is refused, naming the field and the missing permission."""
    kind = "secret" if ref.resource == "secrets" else "configmap"
    return (
        f"{ref.field}: {username or 'you'} may not get {kind} {ref.name!r} in namespace "
        f"{namespace!r}, and the task's pod would read it (ask for get on {ref.resource})"
    )


def _subject(name: str, generate_name: str) -> str:
    return name or f"generate:{generate_name}"


def _mac(key: bytes, namespace: str, subject: str, refs: list[Reference], at: int) -> str:
    message = json.dumps(
        [namespace, subject, at, sorted((r.field, r.resource, r.name) for r in refs)],
        separators=(",", ":"),
    )
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def stamp(
    key: bytes, namespace: str, name: str, generate_name: str, refs: list[Reference], at: int
) -> str:
    """The webhook's stamp on a task it checked at `at` (Unix seconds)."""
    subject = _subject(name, generate_name)
    return f"{at}.{'g' if not name else 'n'}.{_mac(key, namespace, subject, refs, at)}"


def verified(
    key: bytes,
    value: str | None,
    namespace: str,
    name: str,
    generate_name: str,
    refs: list[Reference],
    created: datetime,
) -> bool:
    """Whether `value` is the webhook's stamp for this task, made when it was created."""
    try:
        at_text, form, mac = (value or "").split(".")
        at = int(at_text)
    except ValueError:
        return False
    if form not in ("n", "g") or abs(created.timestamp() - at) > STAMP_WINDOW_SECONDS:
        return False
    subject = name if form == "n" else _subject("", generate_name)
    if form == "g" and not (generate_name and name.startswith(generate_name)):
        return False
    return hmac.compare_digest(mac, _mac(key, namespace, subject, refs, at))


def unchecked(refs: list[Reference]) -> str:
    """Why a task whose references were not checked does not start."""
    fields = ", ".join(r.field for r in refs)
    return (
        f"{fields}: not checked: the admission webhook did not see this task's creation (it was "
        "down or not answering), so whether its creator may read these is unknown; create it "
        "again"
    )
