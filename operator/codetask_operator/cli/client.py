"""API access for the CLI: the kubeconfig as kubectl reads it, CodeTask calls, pod logs.

Every API failure leaves here as a `CliError` with a one-line message (see `errors.py`).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
import yaml
from kubernetes_asyncio import client, config, watch

from codetask_operator.api import FINAL_PHASES, GROUP, PLURAL, VERSION
from codetask_operator.cli.errors import (
    CRD_MISSING,
    CliError,
    NotFound,
    Request,
    describe_api_error,
)

Obj = dict[str, Any]

DEFAULT_KUBECONFIG: Final = "~/.kube/config"
IN_CLUSTER_NAMESPACE: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
CALL_TIMEOUT: Final = aiohttp.ClientTimeout(connect=10, sock_read=60)
STREAM_TIMEOUT: Final = aiohttp.ClientTimeout(connect=10)
LOG_GONE: Final = "unable to retrieve container logs for "
"""What the kubelet sends, with 200 OK, once the container behind a pod is removed."""
WATCH_SECONDS: Final = 50
"""The server ends each watch after this long; we then watch again from the last version."""


@dataclass
class Target:
    """Which cluster and namespace: `--kubeconfig` (or `$KUBECONFIG`), `--context`, `-n`."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None


async def _configure(target: Target) -> tuple[client.Configuration, str | None]:
    """The client configuration and the context's namespace, the way kubectl finds them: the
    kubeconfig files, else the pod's service account when running in a cluster."""
    configuration = client.Configuration()
    wanted = target.kubeconfig or DEFAULT_KUBECONFIG
    files = os.pathsep.join(
        p for p in wanted.split(os.pathsep) if p and Path(p).expanduser().is_file()
    )
    if files:
        try:
            loader = await config.load_kube_config(
                config_file=files,
                context=target.context,
                client_configuration=configuration,
                persist_config=False,
            )
        except (config.ConfigException, yaml.YAMLError, LookupError, TypeError, ValueError) as exc:
            detail = " ".join(str(exc).split()) or type(exc).__name__
            raise CliError(f"invalid kubeconfig {files}: {detail}") from None
        context = (loader.current_context or {}).get("context") or {}
        return configuration, context.get("namespace")
    if target.kubeconfig is None and target.context is None:
        try:
            config.load_incluster_config(client_configuration=configuration)
            return configuration, IN_CLUSTER_NAMESPACE.read_text().strip()
        except (config.ConfigException, OSError):
            pass
    raise CliError(f"no kubeconfig found at {wanted}: set $KUBECONFIG or pass --kubeconfig")


@asynccontextmanager
async def connect(target: Target) -> AsyncIterator[Kube]:
    """A `Kube` for the target, closed on exit."""
    configuration, context_namespace = await _configure(target)
    namespace = target.namespace or context_namespace or "default"
    api = client.ApiClient(configuration)
    try:
        yield Kube(api, namespace, configuration.host)
    finally:
        await api.close()


class Kube:
    """CodeTask and pod calls in one namespace (or all, for listing)."""

    def __init__(self, api: client.ApiClient, namespace: str, server: str) -> None:
        self.namespace = namespace
        self.server = server
        self._custom = client.CustomObjectsApi(api)
        self._core = client.CoreV1Api(api)

    @contextmanager
    def _errors(self, request: Request) -> Iterator[None]:
        """API and connection failures as one-line `CliError`s."""
        try:
            yield
        except client.ApiException as exc:
            message = describe_api_error(exc.status or 0, exc.body, exc.reason or "", request)
            found = exc.status != 404 or message == CRD_MISSING
            raise (CliError if found else NotFound)(message) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            detail = str(exc) or type(exc).__name__
            raise CliError(f"cannot reach the cluster at {self.server}: {detail}") from None

    def _request(self, verb: str, name: str | None = None) -> Request:
        return Request(verb, namespace=self.namespace, name=name)

    async def create(self, body: Obj) -> Obj:
        """Create a CodeTask; the server fills in its name if `generateName` was used."""
        name = body["metadata"].get("name")
        with self._errors(self._request("create", name)):
            task: Obj = await self._custom.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, body, _request_timeout=CALL_TIMEOUT
            )
        return task

    async def get(self, name: str) -> Obj:
        """The CodeTask called `name`."""
        with self._errors(self._request("get", name)):
            task: Obj = await self._custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name, _request_timeout=CALL_TIMEOUT
            )
        return task

    async def list(self, all_namespaces: bool = False) -> list[Obj]:
        """CodeTasks in the namespace, or in all namespaces."""
        if all_namespaces:
            with self._errors(Request("list")):
                found = await self._custom.list_cluster_custom_object(
                    GROUP, VERSION, PLURAL, _request_timeout=CALL_TIMEOUT
                )
        else:
            with self._errors(self._request("list")):
                found = await self._custom.list_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, _request_timeout=CALL_TIMEOUT
                )
        items: list[Obj] = found.get("items") or []
        return items

    async def cancel(self, name: str) -> Obj:
        """Set `spec.cancel: true` with a merge patch; setting it twice changes nothing."""
        with self._errors(self._request("patch", name)):
            task: Obj = await self._custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                name,
                {"spec": {"cancel": True}},
                _content_type="application/merge-patch+json",
                _request_timeout=CALL_TIMEOUT,
            )
        return task

    async def delete(self, name: str) -> None:
        """Delete the CodeTask; the operator removes its Jobs and pods."""
        with self._errors(self._request("delete", name)):
            await self._custom.delete_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name, _request_timeout=CALL_TIMEOUT
            )

    async def wait_for(
        self,
        name: str,
        done: Callable[[Obj], bool],
        seen: Callable[[Obj], None] = lambda task: None,
    ) -> Obj | None:
        """The task once `done(task)`, calling `seen` on every version; None if it is deleted."""
        task = await self._get_or_none(name)
        while task is not None:
            seen(task)
            if done(task):
                return task
            task = await self._next_version(name, task)
        return None

    async def _next_version(self, name: str, task: Obj) -> Obj | None:
        """The task's next version (or the same one if the watch ended quietly); None once it is
        deleted. A watch too old to resume (410 Gone) starts over from a fresh get."""
        stream = watch.Watch()
        try:
            with self._errors(self._request("watch", name)):
                try:
                    async for event in stream.stream(
                        self._custom.list_namespaced_custom_object,
                        GROUP,
                        VERSION,
                        self.namespace,
                        PLURAL,
                        field_selector=f"metadata.name={name}",
                        resource_version=task["metadata"]["resourceVersion"],
                        timeout_seconds=WATCH_SECONDS,
                        _request_timeout=STREAM_TIMEOUT,
                    ):
                        if event["type"] == "DELETED":
                            return None
                        if event["type"] in ("ADDED", "MODIFIED"):
                            changed: Obj = event["raw_object"]
                            return changed
                except client.ApiException as exc:
                    if exc.status != 410:
                        raise
                    return await self._get_or_none(name)
        finally:
            await stream.close()
        return task

    async def _get_or_none(self, name: str) -> Obj | None:
        try:
            return await self.get(name)
        except NotFound:
            return None

    async def read_log(self, pod: str) -> str | None:
        """The pod's log so far, or None when the pod is gone or its container has not started."""
        with self._errors(Request("get", "pods/log", self.namespace, pod)):
            try:
                log: str = await self._core.read_namespaced_pod_log(
                    pod, self.namespace, _request_timeout=CALL_TIMEOUT
                )
            except client.ApiException as exc:
                if exc.status in (400, 404):
                    return None
                raise
        return None if log.startswith(LOG_GONE) else log

    async def follow_log(self, pod: str, write: Callable[[bytes], None]) -> bool:
        """Stream the pod's log to `write` until the container ends; False if it cannot be read
        (the pod is gone or its container has not started)."""
        with self._errors(Request("get", "pods/log", self.namespace, pod)):
            response = await self._core.read_namespaced_pod_log(
                pod,
                self.namespace,
                follow=True,
                _preload_content=False,
                _request_timeout=STREAM_TIMEOUT,
            )
            try:
                if response.status in (400, 404):
                    return False
                if response.status != 200:
                    error = client.ApiException(status=response.status, reason=response.reason)
                    error.body = await response.read()
                    raise error
                async for chunk in response.content.iter_any():
                    write(chunk)
            finally:
                response.release()
        return True


def is_final(task: Obj) -> bool:
    """Whether the task reached Succeeded, Failed, TimedOut or Cancelled."""
    return (task.get("status") or {}).get("phase") in FINAL_PHASES
