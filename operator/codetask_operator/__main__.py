"""`codetask-operator` / `python -m codetask_operator`: validate settings, then run kopf."""

from __future__ import annotations

import asyncio
import logging
import sys

import kopf

from codetask_operator import settings as settings_mod


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
    # One line per task transition (ours), not one per handler call on every watch event.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    from codetask_operator import handlers  # noqa: F401  (registers the handlers)

    asyncio.run(
        kopf.operator(
            standalone=True,
            clusterwide=not config.namespaces,
            namespaces=config.namespaces,
            liveness_endpoint=f"http://0.0.0.0:{config.health_port}/healthz",
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
