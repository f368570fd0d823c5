"""One-line messages for what can go wrong talking to the cluster. Pure."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import IO, Any, Final

import click

from codetask_operator.api import GROUP, PLURAL

CRD_MISSING: Final = (
    "the CodeTask CRD is not installed in this cluster: install the chart "
    "(helm install codetask-operator charts/codetask-operator) or kubectl apply -f crds/"
)
USAGE: Final = 2
"""Exit code of every CLI error, as click uses for usage errors; task results use their own."""


class CliError(click.ClickException):
    """A failure the user can act on: printed as one line on stderr, no traceback."""

    exit_code = USAGE

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"codetask: {self.message}", err=True)


class Interrupted(CliError):
    """Ctrl-C: the shell's exit code for SIGINT."""

    exit_code = 130


class NotFound(CliError):
    """The object (or its namespace) does not exist."""


@dataclass(frozen=True)
class Request:
    """What the CLI was doing when the API server answered with an error."""

    verb: str
    resource: str = f"{PLURAL}.{GROUP}"
    namespace: str | None = None
    name: str | None = None

    def what(self) -> str:
        """`CodeTask "x" in namespace "y"`, for messages."""
        kind = "CodeTask" if self.resource == f"{PLURAL}.{GROUP}" else self.resource
        text = f'{kind} "{self.name}"' if self.name else self.resource
        return f'{text} in namespace "{self.namespace}"' if self.namespace else text


def _status(body: str | bytes | None) -> dict[str, Any]:
    """The `Status` object of an error response, or {} if the body is not one."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        parsed = json.loads(body or "")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _invalid(status: dict[str, Any]) -> str:
    causes = (status.get("details") or {}).get("causes") or []
    fields = [f"{c['field']}: {c.get('message', '')}" for c in causes if c.get("field")]
    return "; ".join(fields) if fields else str(status.get("message", "invalid"))


def describe_api_error(code: int, body: str | bytes | None, reason: str, request: Request) -> str:
    """A one-line message for an API error response, saying what to do where we can."""
    return " ".join(_describe(code, body, reason, request).split())


def _describe(code: int, body: str | bytes | None, reason: str, request: Request) -> str:
    status = _status(body)
    # Errors inside a watch stream arrive without a body, as reason "Forbidden: <message>".
    message = str(status.get("message") or reason.partition(": ")[2]).strip()
    details = status.get("details") or {}
    if code == 404:
        if details.get("kind") == "namespaces":
            return f'namespace "{details.get("name", request.namespace)}" not found'
        if not status and request.resource == f"{PLURAL}.{GROUP}":
            return CRD_MISSING
        if request.name:
            return f"{request.what()} not found"
        return message or f"{request.what()} not found"
    if "admission webhook" in message:
        return f"rejected: {message}"
    if code == 401:
        return "the cluster rejected the kubeconfig's credentials (401 Unauthorized)"
    if code == 403:
        where = f' in namespace "{request.namespace}"' if request.namespace else ""
        return "access denied: " + (message or f"cannot {request.verb} {request.resource}{where}")
    if code == 409 and request.verb == "create":
        return f"{request.what()} already exists"
    if code == 422:
        return f"invalid CodeTask, rejected by the API server: {_invalid(status)}"
    return f"{request.verb} {request.what()}: {code} {message or reason}"
