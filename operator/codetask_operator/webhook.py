"""Validating admission webhook: admission.py's rules, answered at `kubectl apply` time.

kopf serves it; the chart owns the ValidatingWebhookConfiguration (`clientConfig.service` with the
CA it generated), so kopf does not manage one. kopf routes a request by its URL path to the handler
whose id is the path: the chart calls `/{HANDLER_ID}`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Final

import aiohttp.web
import kopf

from codetask_operator import admission, api
from codetask_operator.settings import Settings

if TYPE_CHECKING:
    from kopf._cogs.structs.reviews import Request, Response

HANDLER_ID: Final = "validate-codetask"
HANDOVER_WAIT_SECONDS: Final = 3.0
"""How long a call that arrives between two kopf runs waits for the next (the API server gives the
chart's webhook 5 s)."""


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


class ContinuousServer:
    """kopf's webhook server, kept listening from one kopf run to the next.

    A replica answers webhooks as a standby, then stops that kopf and starts the full operator's
    once the Lease is its own (at start-up, on a takeover, in a rolling update). kopf's own server
    closes its port in between, and the API server's calls are refused (failurePolicy Fail: the
    user's apply fails). Here the socket stays open: a call arriving between two runs waits up to
    HANDOVER_WAIT_SECONDS for the next run's handler, then is answered 503.
    """

    def __init__(self, server: kopf.WebhookServer) -> None:
        self._server = server
        self._serve: kopf.WebhookFn | None = None
        self._serving = asyncio.Event()
        self._listening: asyncio.Future[kopf.WebhookClientConfig] | None = None
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, fn: kopf.WebhookFn) -> AsyncIterator[kopf.WebhookClientConfig]:
        """What one kopf run calls: its handler `fn` serves until that run stops."""
        self._serve = fn
        self._serving.set()
        if self._listening is None:
            self._listening = asyncio.get_running_loop().create_future()
            self._task = asyncio.create_task(self._listen(self._listening), name="webhook server")
        try:
            yield await asyncio.shield(self._listening)
            await asyncio.Event().wait()
        finally:
            if self._serve is fn:
                self._serve = None
                self._serving.clear()

    async def close(self) -> None:
        """Stop listening (the process is ending)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _listen(self, listening: asyncio.Future[kopf.WebhookClientConfig]) -> None:
        # kopf's server restarts itself when the certificate files change, yielding again.
        async with self._server as server:
            async for client_config in server(self._dispatch):
                if not listening.done():
                    listening.set_result(client_config)

    async def _dispatch(
        self,
        request: Request,
        *,
        webhook: str | None = None,
        headers: kopf.Headers | None = None,
        sslpeer: kopf.SSLPeer | None = None,
    ) -> Response:
        try:
            await asyncio.wait_for(self._serving.wait(), HANDOVER_WAIT_SECONDS)
        except TimeoutError:
            raise aiohttp.web.HTTPServiceUnavailable(reason="the operator is restarting") from None
        assert self._serve is not None
        return await self._serve(request, webhook=webhook, headers=headers, sslpeer=sslpeer)


def server(config: Settings) -> ContinuousServer:
    """HTTPS on the webhook port with the mounted certificate."""
    cert_dir = config.webhook_cert_dir
    return ContinuousServer(
        kopf.WebhookServer(
            addr="0.0.0.0",
            port=config.webhook_port,
            certfile=cert_dir / "tls.crt" if cert_dir else None,
            pkeyfile=cert_dir / "tls.key" if cert_dir else None,
        )
    )


def configure(settings: kopf.OperatorSettings, server: ContinuousServer) -> None:
    """Serve webhooks with `server`; leave the cluster's webhook configuration be."""
    settings.admission.server = server
    settings.admission.managed = None
