"""The few Kubernetes API calls the operator makes (kubernetes_asyncio), each idempotent."""

from __future__ import annotations

import json
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from codetask_operator import api
from codetask_operator.metrics import API_WRITES

MERGE_PATCH = "application/merge-patch+json"


async def _checked(resp: Any) -> Any:
    """The raw response; with _preload_content=False the client raises nothing on errors."""
    if resp.status >= 400:
        exc = ApiException(status=resp.status, reason=resp.reason)
        exc.body = await resp.text()
        resp.release()
        raise exc
    return resp


class NotOurs(Exception):
    """An object with our deterministic name exists but belongs to someone else."""


async def connect() -> client.ApiClient:
    """An API client from the in-cluster service account, else from the kubeconfig."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        await config.load_kube_config()
    return client.ApiClient()


class Kube:
    """Typed wrappers for the calls the handlers need."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    async def create_job(self, namespace: str, manifest: dict[str, Any], owner_uid: str) -> str:
        """Create the Job, or adopt the existing one of the same name if the task owns it."""
        name: str = manifest["metadata"]["name"]
        API_WRITES.labels("create", "jobs").inc()
        try:
            resp = await _checked(
                await self.batch.create_namespaced_job(namespace, manifest, _preload_content=False)
            )
            resp.release()
            return name
        except ApiException as exc:
            if exc.status != 409:
                raise
        existing = await _checked(
            await self.batch.read_namespaced_job(name, namespace, _preload_content=False)
        )
        body = json.loads(await existing.read())
        owners = {ref.get("uid") for ref in body["metadata"].get("ownerReferences") or []}
        if owner_uid not in owners:
            raise NotOurs(f"Job {namespace}/{name} exists and is not owned by this CodeTask")
        return name

    async def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job and (in the background) its pods; absent is fine."""
        API_WRITES.labels("delete", "jobs").inc()
        try:
            resp = await _checked(
                await self.batch.delete_namespaced_job(
                    name, namespace, propagation_policy="Background", _preload_content=False
                )
            )
            resp.release()
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def patch_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        """Merge-patch the CodeTask's status subresource; returns the patched object."""
        API_WRITES.labels("patch", "codetasks/status").inc()
        resp = await _checked(
            await self.custom.patch_namespaced_custom_object_status(
                api.GROUP,
                api.VERSION,
                namespace,
                api.PLURAL,
                name,
                {"status": status},
                _content_type=MERGE_PATCH,
                _preload_content=False,
            )
        )
        result: dict[str, Any] = json.loads(await resp.read())
        return result

    async def post_event(
        self, involved: dict[str, Any], type_: str, reason: str, message: str, now: str
    ) -> None:
        """Create a core/v1 Event about `involved` (a minimal object body)."""
        meta = involved["metadata"]
        body = {
            "metadata": {"generateName": f"{meta['name'][:200]}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": involved["apiVersion"],
                "kind": involved["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "codetask-operator"},
            "reportingComponent": "codetask-operator",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        API_WRITES.labels("create", "events").inc()
        resp = await _checked(
            await self.core.create_namespaced_event(meta["namespace"], body, _preload_content=False)
        )
        resp.release()

    async def delete_task(self, namespace: str, name: str, uid: str) -> None:
        """Delete the CodeTask (only that incarnation of it); its Jobs and pods follow."""
        API_WRITES.labels("delete", "codetasks").inc()
        try:
            resp = await _checked(
                await self.custom.delete_namespaced_custom_object(
                    api.GROUP,
                    api.VERSION,
                    namespace,
                    api.PLURAL,
                    name,
                    body={"preconditions": {"uid": uid}, "propagationPolicy": "Background"},
                    _preload_content=False,
                )
            )
            resp.release()
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise
