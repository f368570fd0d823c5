"""Pure: each attempt's own Redis credentials.

A task pod never holds the operator's Redis credential: whatever a pod can read (`/proc/*/environ`,
its spec), its code can. Each attempt's runner gets an ACL user of its own, allowed only its
attempt's keys (`codetask:{ns}:{name}:{uid}:{attempt}:*`) and the few commands the runner uses. Its
password is an HMAC of the attempt under the operator's secret: a restarted operator sets the same
one (a Job adopted after a crash carries it), and nothing per task is stored.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final
from urllib.parse import quote, urlsplit, urlunsplit

RUNNER_COMMANDS: Final = ("set", "setex", "hset", "expire", "rpush", "select", "ping")
"""What the runner sends (docs/runner-contract.md); AUTH needs no grant."""


def prefix(namespace: str, name: str, uid: str, attempt: int) -> str:
    """Key prefix of one attempt: the runner writes `{prefix}:heartbeat`, `:progress`, ..."""
    return f"codetask:{namespace}:{name}:{uid}:{attempt}"


def user(uid: str, attempt: int) -> str:
    """The attempt's ACL user."""
    return f"codetask-task-{uid}-{attempt}"


def password(secret: bytes, namespace: str, uid: str, attempt: int) -> str:
    """The attempt's password: HMAC-SHA256 of (namespace, uid, attempt) under `secret`."""
    message = f"{namespace}/{uid}/{attempt}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def acl_rules(key_prefix: str, secret_password: str) -> list[str]:
    """`ACL SETUSER` rules: from nothing (`reset`, so setting them twice is the same), enabled, one
    password, the attempt's keys only, no channels, the runner's commands only."""
    return [
        "reset",
        "on",
        f">{secret_password}",
        f"~{key_prefix}:*",
        "resetchannels",
        "-@all",
        *(f"+{command}" for command in RUNNER_COMMANDS),
    ]


def task_url(operator_url: str, username: str, secret_password: str) -> str:
    """The operator's Redis URL with the attempt's user and password in place of its own."""
    parts = urlsplit(operator_url)
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{quote(username, safe='')}:{quote(secret_password, safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def secret(explicit: str | None, operator_url: str) -> bytes:
    """The HMAC key: the configured secret, else one derived from the operator's own Redis
    password (as secret as it, and stable across restarts)."""
    if explicit:
        return explicit.encode()
    own = urlsplit(operator_url).password or ""
    return hashlib.sha256(b"codetask-redis-acl:" + own.encode()).digest()
