"""The few Kubernetes API calls the operator makes, each idempotent, over one aiohttp session.

kopf watches; these calls write. They share kopf's credentials (`login`), retry 429 and 5xx answers
and dropped connections with backoff (honouring Retry-After), and raise `ApiError` otherwise.
A full client library would cost the operator ~35 MB of memory for five calls.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import aiohttp
import kopf

from codetask_operator import api, jobs
from codetask_operator.metrics import API_RETRIES, API_WRITES

log = logging.getLogger("codetask.kube")
MERGE_PATCH: Final = "application/merge-patch+json"
JSON_PATCH: Final = "application/json-patch+json"
SERVICE_ACCOUNT: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")
RETRY_BACKOFF: Final = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0)
"""Seconds before each retry of a 429/5xx answer or a dropped connection (±25 % jitter)."""
MAX_RETRY_AFTER: Final = 10.0
REQUEST_TIMEOUT: Final = 30.0


class ApiError(Exception):
    """The API server answered with an error status (after retries, if it was transient)."""

    def __init__(self, status: int, reason: str, body: str = "") -> None:
        super().__init__(f"{status} {reason}: {body[:500]}")
        self.status, self.reason, self.body = status, reason, body

    @property
    def message(self) -> str:
        """The API server's own words (a Status object's message), else the start of the body."""
        try:
            said = json.loads(self.body).get("message")
        except (ValueError, AttributeError):
            said = None
        return str(said or self.body[:500] or self.reason)


class NotOurs(Exception):
    """An object with our deterministic name exists but belongs to someone else."""


def in_cluster(root: Path = SERVICE_ACCOUNT) -> kopf.ConnectionInfo | None:
    """Credentials of the pod's service account; the API server by the address Kubernetes put in
    the environment (no cluster DNS needed)."""
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT")
    token = root / "token"
    if not (host and port and token.exists()):
        return None
    host = f"[{host}]" if ":" in host else host
    namespace = root / "namespace"
    return kopf.ConnectionInfo(
        server=f"https://{host}:{port}",
        ca_path=str(root / "ca.crt"),
        token=token.read_text().strip(),
        default_namespace=namespace.read_text().strip() if namespace.exists() else None,
    )


def credentials(settings: kopf.OperatorSettings | None = None) -> kopf.ConnectionInfo:
    """In-cluster credentials, else those of the kubeconfig ($KUBECONFIG or ~/.kube/config)."""
    info = in_cluster() or kopf.login_with_kubeconfig(settings=settings or kopf.OperatorSettings())
    if info is None:
        raise kopf.LoginError("no service account token and no kubeconfig")
    return info


async def login(settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo:
    """kopf's login handler: the same credentials as the operator's own calls."""
    return credentials(settings)


def retry_delay(
    status: int | None, headers: Mapping[str, str], attempt: int, rng: random.Random
) -> float | None:
    """Seconds to wait before retrying after `attempt` failures, or None to give up.

    `status` None is a dropped or refused connection. Only 429 and 5xx are transient answers.
    """
    if attempt > len(RETRY_BACKOFF):
        return None
    if status is not None and status != 429 and not 500 <= status <= 599:
        return None
    retry_after = headers.get("Retry-After", "")
    if retry_after.isdigit():
        return min(float(retry_after), MAX_RETRY_AFTER)
    base = RETRY_BACKOFF[attempt - 1]
    return base * rng.uniform(0.75, 1.25)


class ApiClient:
    """One aiohttp session to the API server; `request` returns the decoded JSON body."""

    def __init__(self, info: kopf.ConnectionInfo, rng: random.Random | None = None) -> None:
        self.info = info
        self.rng = rng or random.Random()
        self.session = self._session(info)

    @staticmethod
    def _session(info: kopf.ConnectionInfo) -> aiohttp.ClientSession:
        ssl = False if info.insecure else info.as_ssl_context()
        return aiohttp.ClientSession(
            base_url=info.server.rstrip("/"),
            headers=info.as_http_headers(),
            connector=aiohttp.TCPConnector(ssl=ssl, limit=20),
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
            trust_env=False,  # proxy/netrc look-ups would cost two thread hops per call
        )

    async def close(self) -> None:
        """Close the session."""
        await self.session.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = None,
        retry: bool = True,
        decode: bool = True,
        accept: str | None = None,
    ) -> dict[str, Any]:
        """`method path` with a JSON body; transient failures retried (unless `retry` is False,
        for a caller with its own deadline), errors as `ApiError`. The answer's JSON, or {} when
        `decode` is False (a caller that needs only success skips parsing the whole object)."""
        attempt = 0
        relogged = False
        while True:
            attempt += 1
            status: int | None = None
            headers: Mapping[str, str] = {}
            try:
                async with self.session.request(
                    method,
                    path,
                    json=body,
                    headers={
                        **({"Content-Type": content_type} if body is not None else {}),
                        **({"Accept": accept} if accept else {}),
                    }
                    or None,
                    timeout=aiohttp.ClientTimeout(total=timeout) if timeout else None,
                ) as resp:
                    text = await resp.text()
                    if resp.status < 400:
                        result: dict[str, Any] = json.loads(text) if decode else {}
                        return result
                    status, headers = resp.status, resp.headers
                    error = ApiError(resp.status, resp.reason or "", text)
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                error = ApiError(0, type(exc).__name__, str(exc))
            if status == 401 and not relogged:
                # A rotated service-account token: read the credentials again, once.
                relogged = True
                await self.session.close()
                self.info = credentials()
                self.session = self._session(self.info)
                continue
            delay = retry_delay(status, headers, attempt, self.rng) if retry else None
            if delay is None:
                raise error
            API_RETRIES.labels(str(status or "connection")).inc()
            log.debug("retrying %s %s in %.1fs after %s", method, path, delay, error)
            await asyncio.sleep(delay)

    async def watch(self, path: str) -> AsyncIterator[dict[str, Any]]:
        """The events of a watch request (`?watch=1...`), one JSON object a line, until the API
        server ends it. An error answer raises ApiError; nothing is retried."""
        async with self.session.get(path, timeout=aiohttp.ClientTimeout(sock_read=None)) as resp:
            if resp.status >= 400:
                raise ApiError(resp.status, resp.reason or "", await resp.text())
            async for line in resp.content:
                if line.strip():
                    event: dict[str, Any] = json.loads(line)
                    yield event


METADATA_ONLY: Final = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
"""A list's items with their metadata only (not their spec and status)."""


async def connect() -> ApiClient:
    """A client with the in-cluster service account, else the kubeconfig."""
    return ApiClient(credentials())


def _path(namespace: str, plural: str, name: str = "", group: str = "", version: str = "v1") -> str:
    prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
    path = f"{prefix}/namespaces/{quote(namespace)}/{plural}"
    return f"{path}/{quote(name)}" if name else path


class Kube:
    """The calls the reconciler needs."""

    def __init__(self, client: ApiClient) -> None:
        self.client = client

    async def create_job(self, namespace: str, manifest: dict[str, Any], owner_uid: str) -> str:
        """Create the Job, or adopt the existing one of the same name if the task owns it."""
        name: str = manifest["metadata"]["name"]
        API_WRITES.labels("create", "jobs").inc()
        try:
            await self.client.request(
                "POST", _path(namespace, "jobs", group="batch"), manifest, decode=False
            )
            return name
        except ApiError as exc:
            if exc.status != 409:
                raise
        existing = await self.client.request("GET", _path(namespace, "jobs", name, group="batch"))
        owners = {ref.get("uid") for ref in existing["metadata"].get("ownerReferences") or []}
        if owner_uid not in owners:
            raise NotOurs(f"Job {namespace}/{name} exists and is not owned by this CodeTask")
        return name

    async def _get(self, path: str) -> dict[str, Any] | None:
        """The object as the API server has it now; None if there is none."""
        try:
            return await self.client.request("GET", path)
        except ApiError as exc:
            if exc.status != 404:
                raise
            return None

    async def _delete(self, path: str, body: dict[str, Any] | None = None) -> None:
        """Delete the object; absent is fine."""
        try:
            await self.client.request("DELETE", path, body, decode=False)
        except ApiError as exc:
            if exc.status != 404:
                raise

    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Job as the API server has it now (None if there is none): a watch can lag."""
        return await self._get(_path(namespace, "jobs", name, group="batch"))

    async def get_policy(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The NetworkPolicy as the API server has it now (None if there is none)."""
        return await self._get(_path(namespace, "networkpolicies", name, "networking.k8s.io"))

    async def create_policy(self, manifest: dict[str, Any]) -> None:
        """Create the NetworkPolicy; one created meanwhile (another task's start) is fine."""
        meta = manifest["metadata"]
        API_WRITES.labels("create", "networkpolicies").inc()
        path = _path(meta["namespace"], "networkpolicies", group="networking.k8s.io")
        try:
            await self.client.request("POST", path, manifest, decode=False)
        except ApiError as exc:
            if exc.status != 409:
                raise

    async def replace_policy_spec(self, namespace: str, name: str, spec: dict[str, Any]) -> None:
        """Set the NetworkPolicy's whole spec (a JSON patch: nothing of the old one stays)."""
        API_WRITES.labels("patch", "networkpolicies").inc()
        path = _path(namespace, "networkpolicies", name, "networking.k8s.io")
        body = [{"op": "replace", "path": "/spec", "value": spec}]
        await self.client.request("PATCH", path, body, JSON_PATCH, decode=False)

    async def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """The namespace's pods matching a label selector, as the API server has them now."""
        path = _path(namespace, "pods") + f"?labelSelector={quote(selector)}"
        items: list[dict[str, Any]] = (await self.client.request("GET", path)).get("items") or []
        return items

    async def list_jobs(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """The namespace's Jobs matching a label selector, as the API server has them now."""
        path = _path(namespace, "jobs", group="batch") + f"?labelSelector={quote(selector)}"
        items: list[dict[str, Any]] = (await self.client.request("GET", path)).get("items") or []
        return items

    async def failed_create(self, namespace: str, job_uid: str) -> str | None:
        """The newest FailedCreate message the Job controller recorded for this Job, if any: why
        the cluster refuses its pod (quota, admission)."""
        fields = f"involvedObject.uid={job_uid},reason=FailedCreate"
        path = _path(namespace, "events") + f"?fieldSelector={quote(fields)}"
        items = (await self.client.request("GET", path)).get("items") or []
        if not items:
            return None
        newest = max(items, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        message: str = newest.get("message") or "FailedCreate"
        return message

    async def list_tasks(
        self, namespace: str | None = None, selector: str = ""
    ) -> list[dict[str, Any]]:
        """The CodeTasks of a namespace, or of the cluster, read in pages of 500."""
        return [item async for item in self.task_pages(namespace, selector)]

    async def task_uids(self, namespace: str, selector: str = "") -> set[str]:
        """The uids of a namespace's CodeTasks, read afresh in pages of 500, metadata only."""
        pages = self.task_pages(namespace, selector, accept=METADATA_ONLY)
        return {item["metadata"]["uid"] async for item in pages}

    async def task_pages(
        self, namespace: str | None, selector: str = "", accept: str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """The CodeTasks of a namespace, or of the cluster, a page of 500 at a time (one page in
        memory at once for a caller that keeps little of each)."""
        scope = f"/namespaces/{quote(namespace)}" if namespace else ""
        path = f"/apis/{api.GROUP}/{api.VERSION}{scope}/{api.PLURAL}?limit=500"
        if selector:
            path += f"&labelSelector={quote(selector)}"
        token = ""
        while True:
            page = await self.client.request(
                "GET", path + (f"&continue={quote(token)}" if token else ""), accept=accept
            )
            for item in page.get("items") or []:
                yield item
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                return

    async def allowed(self, review: dict[str, Any]) -> bool:
        """Whether a SubjectAccessReview allows what it asks (a read: nothing is stored)."""
        path = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
        answer = await self.client.request("POST", path, review)
        return bool((answer.get("status") or {}).get("allowed"))

    async def get_task(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The CodeTask as the API server has it now (None if there is none)."""
        return await self._get(_path(namespace, api.PLURAL, name, api.GROUP, api.VERSION))

    async def delete_job(
        self, namespace: str, name: str, resource_version: str | None = None
    ) -> None:
        """Delete a Job and (in the background) its pods; absent is fine. With `resource_version`,
        only that version of it (409 if it changed since)."""
        API_WRITES.labels("delete", "jobs").inc()
        body: dict[str, Any] = {"propagationPolicy": "Background"}
        if resource_version:
            body["preconditions"] = {"resourceVersion": resource_version}
        await self._delete(_path(namespace, "jobs", name, group="batch"), body)

    async def patch_job(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        """Merge-patch a Job (a resourceVersion in the patch is a precondition: 409 if stale)."""
        API_WRITES.labels("patch", "jobs").inc()
        path = _path(namespace, "jobs", name, group="batch")
        await self.client.request("PATCH", path, patch, MERGE_PATCH, decode=False)

    async def patch_pod_labels(self, namespace: str, name: str, labels: dict[str, str]) -> None:
        """Add labels to a pod."""
        await self._patch_labels(namespace, "pods", name, labels)

    async def label_finished(self, namespace: str, plural: str, name: str) -> None:
        """Label a finished task's Job (`jobs`) or pod (`pods`) out of the operator's watches."""
        await self._patch_labels(namespace, plural, name, {jobs.LABEL_FINISHED: "true"})

    async def label_task_finished(self, namespace: str, name: str, uid: str) -> None:
        """Label a finished CodeTask (that incarnation of it: 409 if the name is another's now)
        out of the operator's watch."""
        API_WRITES.labels("patch", api.PLURAL).inc()
        body = {"metadata": {"uid": uid, "labels": {jobs.LABEL_FINISHED: "true"}}}
        path = _path(namespace, api.PLURAL, name, api.GROUP, api.VERSION)
        await self.client.request("PATCH", path, body, MERGE_PATCH, decode=False)

    async def _patch_labels(
        self, namespace: str, plural: str, name: str, labels: dict[str, str]
    ) -> None:
        API_WRITES.labels("patch", plural).inc()
        body = {"metadata": {"labels": labels}}
        path = _path(namespace, plural, name, group="batch" if plural == "jobs" else "")
        await self.client.request("PATCH", path, body, MERGE_PATCH, decode=False)

    async def patch_pool_status(self, name: str, status: dict[str, Any]) -> None:
        """Merge-patch a CodeTaskPool's status subresource."""
        API_WRITES.labels("patch", "codetaskpools/status").inc()
        path = f"/apis/{api.GROUP}/{api.VERSION}/{api.POOL_PLURAL}/{name}/status"
        await self.client.request("PATCH", path, {"status": status}, MERGE_PATCH, decode=False)

    async def patch_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        """Merge-patch the CodeTask's status subresource; returns the patched object."""
        API_WRITES.labels("patch", "codetasks/status").inc()
        path = _path(namespace, api.PLURAL, name, api.GROUP, api.VERSION) + "/status"
        return await self.client.request("PATCH", path, {"status": status}, MERGE_PATCH)

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
        await self.client.request("POST", _path(meta["namespace"], "events"), body, decode=False)

    async def delete_task(self, namespace: str, name: str, uid: str) -> None:
        """Delete the CodeTask (only that incarnation of it); its Jobs and pods follow."""
        API_WRITES.labels("delete", "codetasks").inc()
        try:
            await self.client.request(
                "DELETE",
                _path(namespace, api.PLURAL, name, api.GROUP, api.VERSION),
                {"preconditions": {"uid": uid}, "propagationPolicy": "Background"},
                decode=False,
            )
        except ApiError as exc:
            if exc.status not in (404, 409):
                raise
