"""Validating admission webhook: admission.py's rules, answered at `kubectl apply` time.

kopf serves it; the chart owns the ValidatingWebhookConfiguration (`clientConfig.service` with the
CA it generated), so kopf does not manage one. kopf routes a request by its URL path to the handler
whose id is the path: the chart calls `/{HANDLER_ID}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import kopf

from codetask_operator import admission, api
from codetask_operator.settings import Settings

HANDLER_ID: Final = "validate-codetask"


def check(
    operation: str | None, old: Mapping[str, Any] | None, new: Mapping[str, Any], settings: Settings
) -> None:
    """Refuse (AdmissionError, 422, naming each bad field) a change of spec `old` to `new`.

    An update is checked only against the immutability rules: re-checking the whole spec would
    refuse cancelling a task whose image the operator no longer allows.
    """
    if operation == "UPDATE" and old is not None:
        errors = admission.validate_update(old, new)
    else:
        errors = admission.validate(new, settings)
    if errors:
        raise kopf.AdmissionError("; ".join(errors), code=422)


def register(registry: kopf.OperatorRegistry, config: Settings) -> None:
    """Add the CodeTask validation handler to `registry`."""

    @kopf.on.validate(
        api.GROUP,
        api.VERSION,
        api.PLURAL,
        id=HANDLER_ID,
        operations=["CREATE", "UPDATE"],
        registry=registry,
    )
    async def validate_codetask(
        spec: kopf.Spec, operation: str | None = None, old: kopf.Body | None = None, **_: Any
    ) -> None:
        check(operation, dict(old.spec) if old is not None else None, dict(spec), config)


def configure(settings: kopf.OperatorSettings, config: Settings) -> None:
    """Serve HTTPS on the webhook port with the mounted certificate; leave the cluster config be."""
    cert_dir = config.webhook_cert_dir
    settings.admission.server = kopf.WebhookServer(
        addr="0.0.0.0",
        port=config.webhook_port,
        certfile=cert_dir / "tls.crt" if cert_dir else None,
        pkeyfile=cert_dir / "tls.key" if cert_dir else None,
    )
    settings.admission.managed = None
