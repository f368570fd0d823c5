"""`codetask-operator` / `python -m codetask_operator`: validate settings, then run kopf."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from typing import Any

import kopf

from codetask_operator import leader, namespace_discovery, webhook
from codetask_operator import settings as settings_mod
from codetask_operator.kube import connect, login
from codetask_operator.pool_catalog import Catalog

FIRST_TAKE_SECONDS = 1.0
"""How long a replica waits for its first try at the Lease before it stands by as a webhook-only
kopf (a webhook call waits for a handler meanwhile: `webhook.HANDLER_WAIT_SECONDS`)."""


def main() -> int:
    """Run the operator until SIGTERM; exit 2 with a clear message on bad settings."""
    try:
        config = settings_mod.load()
    except settings_mod.SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    log_format = {
        "json": kopf.LogFormat.JSON,
        "plain": kopf.LogFormat.PLAIN,
        "full": kopf.LogFormat.FULL,
    }[config.log_format]
    kopf.configure(log_format=log_format, verbose=False)
    namespace_discovery.install()
    # One line per task transition (ours), not one per handler call on every watch event.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    # Not a line per /healthz probe and per admission call (aiohttp's access log).
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    asyncio.run(run(config))
    return 0


async def run(config: settings_mod.Settings) -> None:
    """Run kopf; with leader election, first as a standby until the Lease is ours.

    A standby runs kopf with only the webhook handler: it answers admission requests and /healthz
    but watches nothing. Once the Lease is held, that kopf stops and the full operator starts;
    the webhook port stays open across (ContinuousServer). A replica that takes the Lease within
    FIRST_TAKE_SECONDS starts the full operator without a standby first.
    """
    catalog_client = await connect()
    catalog = Catalog(catalog_client)
    await catalog.start()
    server = webhook.server(config) if config.webhook_enabled else None
    if server is not None:
        await server.start()
    try:
        if not config.leader_election:
            await _kopf(config, server, _operator_registry(config, catalog))
            return
        api_client = await connect()
        elector = leader.Elector(api_client, config)
        holding = asyncio.create_task(elector.hold())
        try:
            # Usually the Lease is free and taken at once: then no standby kopf is started, only
            # to be stopped mid-discovery (kopf waits 5 s for its requests cut short).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(elector.decided.wait(), FIRST_TAKE_SECONDS)
            if not elector.decided.is_set():
                await _kopf(
                    config,
                    server,
                    _standby_registry(config, elector, catalog),
                    stop_flag=elector.decided,
                )
            if elector.leading:
                await _kopf(config, server, _operator_registry(config, catalog))
        finally:
            holding.cancel()
            await elector.release()
            await api_client.close()
    finally:
        if server is not None:
            await server.close()
        await catalog.close()
        await catalog_client.close()


def _standby_registry(
    config: settings_mod.Settings, elector: leader.Elector, catalog: Catalog
) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(login)

    @kopf.on.cleanup(id="stand-down", registry=registry)
    async def stand_down(**_: Any) -> None:
        """kopf stops before the Lease is ours, so the process does: never take it now."""
        elector.stand_down()

    if config.webhook_enabled:
        webhook.register(registry, config, catalog)
    return registry


def _operator_registry(config: settings_mod.Settings, catalog: Catalog) -> kopf.OperatorRegistry:
    from codetask_operator import handlers

    handlers.use_catalog(catalog)
    registry = handlers.HANDLERS
    if config.webhook_enabled:
        webhook.register(registry, config, catalog)
    return registry


async def _kopf(
    config: settings_mod.Settings,
    server: webhook.ContinuousServer | None,
    registry: kopf.OperatorRegistry,
    stop_flag: asyncio.Event | None = None,
) -> None:
    settings = kopf.OperatorSettings()
    # Namespaces named exactly are served as named. kopf would list the cluster's namespaces
    # first, which the chart does not grant then; it retries the refusal for about 2.5 minutes
    # (handlers.API_ERROR_BACKOFFS) before serving anything, at every start and takeover. This also
    # makes kopf read the CRDs once, at start.
    settings.scanning.disabled = config.namespaces_by_name
    if server is not None:
        webhook.configure(settings, server)
    await kopf.operator(
        registry=registry,
        settings=settings,
        standalone=True,
        clusterwide=not config.namespaces,
        namespaces=config.namespaces,
        liveness_endpoint=f"http://0.0.0.0:{config.health_port}/healthz",
        stop_flag=stop_flag,
    )


if __name__ == "__main__":
    sys.exit(main())
