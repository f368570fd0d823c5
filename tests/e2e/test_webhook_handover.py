"""The webhook port across kopf runs in one process: the standby's run stops, the leader's starts.

Real kopf runs against the cluster (kopf cancels every task started during a run when it ends, so
only a real run shows that the server outlives it).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import kopf
import pytest

from codetask_operator import webhook
from codetask_operator.kube import connect, login
from codetask_operator.pool_catalog import Catalog
from codetask_operator.settings import Settings
from tests.e2e.conftest import free_port

REFUSED = "spec.code: set either code or command, not both"


def review(uid: str) -> dict[str, Any]:
    task = {
        "apiVersion": "codetask.dev/v1alpha1",
        "kind": "CodeTask",
        "metadata": {"name": "a", "namespace": "d"},
        "spec": {"language": "python", "code": "print(1)", "command": ["true"]},
    }
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "operation": "CREATE",
            "userInfo": {"username": "test"},
            "kind": {"group": "codetask.dev", "version": "v1alpha1", "kind": "CodeTask"},
            "resource": {"group": "codetask.dev", "version": "v1alpha1", "resource": "codetasks"},
            "object": task,
        },
    }


@pytest.mark.usefixtures("crd")
def test_the_webhook_answers_before_between_and_after_kopf_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(webhook, "HANDLER_WAIT_SECONDS", 0.5)
    port = free_port()
    url = f"http://127.0.0.1:{port}/{webhook.HANDLER_ID}"

    async def verdict(session: aiohttp.ClientSession, uid: str) -> tuple[int, str]:
        async with session.post(url, json=review(uid)) as answer:
            if answer.status != 200:
                return answer.status, ""
            response = (await answer.json())["response"]
            assert response["uid"] == uid and response["allowed"] is False
            return 200, response["status"]["message"]

    async def kopf_run(server: webhook.ContinuousServer, seconds: float, catalog: Catalog) -> None:
        registry = kopf.OperatorRegistry()
        kopf.on.login(registry=registry)(login)
        webhook.register(registry, Settings.model_validate({}), catalog)
        settings = kopf.OperatorSettings()
        webhook.configure(settings, server)
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(seconds, stop.set)
        await kopf.operator(
            registry=registry, settings=settings, standalone=True, clusterwide=True, stop_flag=stop
        )

    async def scenario() -> None:
        server = webhook.ContinuousServer(
            kopf.WebhookServer(addr="127.0.0.1", port=port, insecure=True)
        )
        await server.start()
        client = await connect()
        catalog = Catalog(client)
        await catalog.start()
        async with aiohttp.ClientSession() as session:
            assert await verdict(session, "no run yet") == (503, ""), "waited, then 503"
            early = asyncio.create_task(verdict(session, "early"))
            await kopf_run(server, 3, catalog)
            assert await early == (200, REFUSED), "a call before the first run waits for it"
            started = time.monotonic()
            assert await verdict(session, "between") == (200, REFUSED)
            assert time.monotonic() - started < 0.4, "answered by the stopped run's handler"
            second = asyncio.create_task(kopf_run(server, 2, catalog))
            await asyncio.sleep(0.1)
            assert await verdict(session, "second starting") == (200, REFUSED)
            await second
            assert await verdict(session, "after") == (200, REFUSED)
            await server.close()
            with pytest.raises(aiohttp.ClientConnectionError):
                await verdict(session, "closed")
        await catalog.close()
        await client.close()

    asyncio.run(scenario())
