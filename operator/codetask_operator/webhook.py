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
HANDLER_WAIT_SECONDS: Final = 3.0
"""How long a call that arrives before kopf's first run is ready waits for it (the API server gives
the chart's webhook 5 s)."""


def check(
    operation: str | None, old: Mapping[str, Any] | None, new: Mapping[str, Any], settings: Settings
) -> None:
    """Refuse (AdmissionError, 422, naming each bad field) a change of spec `old` to `new`.

    An update is checked only against the immutability rules and a raised priority's cap:
    re-checking the whole spec would refuse cancelling a task whose image the operator no longer
    allows.
    """
    if operation == "UPDATE" and old is not None:
        errors = admission.validate_update(old, new, settings)
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
    """kopf's webhook server, listening for the whole process rather than for one kopf run.

    A replica answers webhooks as a standby, then stops that kopf and starts the full operator's
    once the Lease is its own (at start-up, on a takeover, in a rolling update). kopf's own server
    closes its port in between, and the API server's calls are refused (failurePolicy Fail: the
    user's apply fails). Here the port opens before the first run and closes after the last; the
    latest run's handler answers (it only reads what kopf loaded: registry, resources), and a call
    that comes before the first run's handler waits up to HANDLER_WAIT_SECONDS for it, else 503.
    """

    def __init__(self, server: kopf.WebhookServer) -> None:
        self._server = server
        self._serve: kopf.WebhookFn | None = None
        self._serving = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Listen. Called outside kopf: a task started in a kopf run is cancelled when it ends."""
        listening: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._listen(listening), name="webhook server")
        await listening

    async def close(self) -> None:
        """Stop listening (the process is ending)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def __call__(self, fn: kopf.WebhookFn) -> AsyncIterator[kopf.WebhookClientConfig]:
        """What a kopf run calls: from now on its handler `fn` answers."""
        self._serve = fn
        self._serving.set()
        yield kopf.WebhookClientConfig()  # the chart owns the webhook configuration
        await asyncio.Event().wait()

    async def _listen(self, listening: asyncio.Future[None]) -> None:
        # kopf's server restarts itself when the certificate files change, yielding again.
        async with self._server as server:
            async for _client_config in server(self._dispatch):
                if not listening.done():
                    listening.set_result(None)

    async def _dispatch(
        self,
        request: Request,
        *,
        webhook: str | None = None,
        headers: kopf.Headers | None = None,
        sslpeer: kopf.SSLPeer | None = None,
    ) -> Response:
        try:
            await asyncio.wait_for(self._serving.wait(), HANDLER_WAIT_SECONDS)
        except TimeoutError:
            raise aiohttp.web.HTTPServiceUnavailable(reason="the operator is starting") from None
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
