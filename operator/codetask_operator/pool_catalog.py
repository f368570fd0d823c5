"""The cluster's CodeTaskPools as this process sees them: listed at start, then watched.

One catalog serves the whole process (the webhook answers a standby's calls too, before kopf
watches anything), so it follows the pools itself rather than through a kopf run. A pool named by
a task but not (yet) in the catalog is read afresh before it is called missing: a watch lags.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

from codetask_operator import api, pools
from codetask_operator.kube import ApiClient, ApiError

log = logging.getLogger("codetask.pools")
PATH: Final = f"/apis/{api.GROUP}/{api.VERSION}/{api.POOL_PLURAL}"
WATCH_SECONDS: Final = 300
RETRY_SECONDS: Final = 5.0
ABSENT_RETRY_SECONDS: Final = 60.0
"""How often an operator that cannot list pools (no CRD, no RBAC) tries again."""
UNAVAILABLE: Final = {
    404: "no CodeTaskPool CRD installed (kubectl apply -f charts/codetask-operator/crds/)",
    403: "the operator may not list CodeTaskPools (its ClusterRole needs get, list and watch on "
    "codetaskpools: upgrade the chart)",
}


class Catalog:
    """Pools by name, kept current by `follow`."""

    def __init__(self, client: ApiClient) -> None:
        self.pools: dict[str, pools.Pool] = {}
        self._client = client
        self._task: asyncio.Task[None] | None = None

    def apply(self, kind: str, body: Mapping[str, Any]) -> None:
        """Take in one watch event (ADDED, MODIFIED, DELETED) of a pool."""
        name = body["metadata"]["name"]
        if kind == "DELETED":
            self.pools.pop(name, None)
        else:
            self.pools[name] = pools.parse(
                name, body.get("spec") or {}, body["metadata"].get("uid", "")
            )

    def replace(self, items: list[dict[str, Any]]) -> None:
        """Take in a full listing: pools not in it are gone."""
        self.pools = {
            item["metadata"]["name"]: pools.parse(
                item["metadata"]["name"], item.get("spec") or {}, item["metadata"].get("uid", "")
            )
            for item in items
        }

    async def start(self) -> None:
        """List the pools now (so the first admission call sees them), then follow them."""
        version = await self._list(self._client)
        self._task = asyncio.create_task(self._follow(self._client, version), name="pool catalog")

    async def close(self) -> None:
        """Stop following."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def with_fresh(self, named: object) -> dict[str, pools.Pool]:
        """The catalog, with pool `named` (a task's spec.pool) read afresh if the catalog does not
        have it."""
        if not isinstance(named, str) or not named or named in self.pools:
            return self.pools
        try:
            body = await self._client.request("GET", f"{PATH}/{quote(named)}")
        except ApiError as exc:
            if exc.status != 404:
                raise
            return self.pools
        self.apply("ADDED", body)
        return self.pools

    async def _list(self, client: ApiClient) -> str | None:
        """Replace the catalog by a listing; its resourceVersion (None: pools cannot be listed)."""
        try:
            listing = await client.request("GET", PATH)
        except ApiError as exc:
            if exc.status not in UNAVAILABLE:
                raise
            log.warning("%s: tasks cannot use pools until then", UNAVAILABLE[exc.status])
            self.pools = {}
            return None
        self.replace(listing.get("items") or [])
        return str(listing["metadata"]["resourceVersion"])

    async def _follow(self, client: ApiClient, version: str | None) -> None:
        while True:
            try:
                if version is None:
                    await asyncio.sleep(ABSENT_RETRY_SECONDS)
                else:
                    await self._watch(client, version)
                version = await self._list(client)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # logged; the catalog keeps what it has
                log.warning("following CodeTaskPools failed (%s); listing again", exc)
                await asyncio.sleep(RETRY_SECONDS)
                version = await self._list_or_keep(client, version)

    async def _list_or_keep(self, client: ApiClient, version: str | None) -> str | None:
        try:
            return await self._list(client)
        except (ApiError, OSError) as exc:
            log.warning("listing CodeTaskPools failed (%s)", exc)
            return version

    async def _watch(self, client: ApiClient, version: str) -> None:
        """Apply watch events from `version` until the watch ends or expires (then: list)."""
        query = f"?watch=1&allowWatchBookmarks=true&timeoutSeconds={WATCH_SECONDS}"
        async for event in client.watch(f"{PATH}{query}&resourceVersion={version}"):
            kind, body = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                return  # 410 Gone and the like: list afresh
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                self.apply(kind, body)
