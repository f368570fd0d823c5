"""Admission webhooks: admission.py's rules, answered at `kubectl apply` time, and the check that a
task's creator may read the Secrets and ConfigMaps it references (access.py).

kopf serves them; the chart owns the Validating- and MutatingWebhookConfiguration
(`clientConfig.service` with the CA it generated), so kopf does not manage them. kopf routes a
request by its URL path to the handler whose id is the path: the chart calls `/{HANDLER_ID}`,
`/{MUTATE_ID}` and `/{POOL_HANDLER_ID}`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Final

import aiohttp.web
import kopf
from pydantic import ValidationError

from codetask_operator import access, admission, api, pools
from codetask_operator.kube import Kube, connect
from codetask_operator.pool_catalog import Catalog
from codetask_operator.settings import Settings

if TYPE_CHECKING:
    from kopf._cogs.structs.reviews import Request, Response

HANDLER_ID: Final = "validate-codetask"
MUTATE_ID: Final = "mutate-codetask"
POOL_HANDLER_ID: Final = "validate-codetaskpool"
HANDLER_WAIT_SECONDS: Final = 3.0
"""How long a call that arrives before kopf's first run is ready waits for it (the API server gives
the chart's webhook 5 s)."""


def check(
    operation: str | None,
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any],
    settings: Settings,
    namespace: str = "",
    catalog: Mapping[str, pools.Pool] | None = None,
) -> None:
    """Refuse (AdmissionError, 422, naming each bad field) a change of spec `old` to `new` of a
    task in `namespace`, with the pools of `catalog`.

    An update is checked only against the immutability rules and a raised priority's cap:
    re-checking the whole spec would refuse cancelling a task whose image the operator no longer
    allows, or whose pool was changed since.
    """
    if operation == "UPDATE" and old is not None:
        errors = admission.validate_update(old, new, settings)
    else:
        errors = admission.validate(new, settings, namespace, catalog)
    if errors:
        raise kopf.AdmissionError("; ".join(errors), code=422)


def check_pool(name: str, spec: Mapping[str, Any]) -> None:
    """Refuse (AdmissionError, 422, naming the field) a CodeTaskPool spec the operator could not
    use: its schema's rules, and requests within its limits (pools.parse)."""
    pool = pools.parse(name, spec)
    if pool.spec is None:
        raise kopf.AdmissionError(pool.invalid, code=422)


def register(registry: kopf.OperatorRegistry, config: Settings, catalog: Catalog) -> None:
    """Add the CodeTask and CodeTaskPool admission handlers to `registry`."""

    @kopf.on.validate(
        api.GROUP,
        api.VERSION,
        api.POOL_PLURAL,
        id=POOL_HANDLER_ID,
        operations=["CREATE", "UPDATE"],
        registry=registry,
    )
    async def validate_pool(spec: kopf.Spec, meta: kopf.Meta, **_: Any) -> None:
        check_pool(str(meta.get("name") or ""), dict(spec))

    @kopf.on.validate(
        api.GROUP,
        api.VERSION,
        api.PLURAL,
        id=HANDLER_ID,
        operations=["CREATE", "UPDATE"],
        registry=registry,
    )
    async def validate_codetask(
        spec: kopf.Spec,
        meta: kopf.Meta,
        status: kopf.Status,
        operation: str | None = None,
        old: kopf.Body | None = None,
        **_: Any,
    ) -> None:
        old_labels = dict(old.metadata.labels) if old is not None else None
        previous = dict(old.spec) if old is not None else None
        error = admission.finished_label(dict(meta.labels), old_labels, dict(status))
        if error is None and previous is not None and old_labels is not None:
            error = admission.finished_ttl(previous, dict(spec), old_labels, config)
        if error is not None:
            raise kopf.AdmissionError(error, code=422)
        known = await catalog.with_fresh(spec.get("pool")) if operation == "CREATE" else {}
        check(operation, previous, dict(spec), config, meta.get("namespace") or "", known)

    if config.references_key is None:
        return
    key = config.references_key.encode()
    clients: list[Kube] = []

    @kopf.on.mutate(
        api.GROUP,
        api.VERSION,
        api.PLURAL,
        id=MUTATE_ID,
        operations=["CREATE"],
        registry=registry,
    )
    async def check_references(
        spec: kopf.Spec, meta: kopf.Meta, patch: kopf.Patch, userinfo: kopf.UserInfo, **_: Any
    ) -> None:
        if not clients:
            clients.append(Kube(await connect()))
        await stamp_references(clients[0], key, dict(spec), meta, patch, dict(userinfo))


async def stamp_references(
    kube: Kube,
    key: bytes,
    spec: Mapping[str, Any],
    meta: Mapping[str, Any],
    patch: kopf.Patch,
    user: dict[str, Any],
) -> None:
    """Refuse (AdmissionError, 403, naming each field) a task that references a Secret or ConfigMap
    its creator may not get; stamp one that references only what they may (and drop any stamp the
    creator set)."""
    try:
        task = api.CodeTaskSpec.model_validate(spec)
    except ValidationError:
        return  # the validating webhook names what is wrong
    refs = access.references(task)
    if not refs:
        if access.STAMP_ANNOTATION in (meta.get("annotations") or {}):
            patch.meta.annotations[access.STAMP_ANNOTATION] = None
        return
    namespace = meta.get("namespace") or ""
    denied = [r for r in refs if not await kube.allowed(access.review(user, namespace, r))]
    if denied:
        who = user.get("username", "")
        message = "; ".join(access.refusal(r, who, namespace) for r in denied)
        raise kopf.AdmissionError(message, code=403)
    value = access.stamp(
        key,
        namespace,
        meta.get("name") or "",
        meta.get("generateName") or "",
        refs,
        int(time.time()),
    )
    patch.meta.annotations[access.STAMP_ANNOTATION] = value


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
