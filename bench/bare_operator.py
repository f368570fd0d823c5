"""Bare kopf: a CodeTask → a Job, nothing else (the benchmarks' second baseline; see bare.py).

Run in a pod by `kopf run --standalone --namespace=NS bare_operator.py`, with kopf's defaults:
its diff base annotation (its one write besides the Job), no Events, its workers. One addition:
a login handler, since kopf's own service-account login names `kubernetes.default.svc` and the
bench cluster has no DNS. The Job is `job.json` beside this file (`harness.raw_job`), with the
task as its controller.
"""

import json
import os
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import kopf

SA = Path("/var/run/secrets/kubernetes.io/serviceaccount")
SERVER = f"https://{os.environ['KUBERNETES_SERVICE_HOST']}:{os.environ['KUBERNETES_SERVICE_PORT']}"
JOB = json.loads(Path(__file__).with_name("job.json").read_text())


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    token = (SA / "token").read_text().strip()
    return kopf.ConnectionInfo(server=SERVER, ca_path=str(SA / "ca.crt"), token=token)


@kopf.on.startup()
async def connect(memo: kopf.Memo, **_: Any) -> None:
    auth = {"Authorization": f"Bearer {(SA / 'token').read_text().strip()}"}
    tls = ssl.create_default_context(cafile=str(SA / "ca.crt"))
    memo.api = aiohttp.ClientSession(SERVER, headers=auth, connector=aiohttp.TCPConnector(ssl=tls))


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    await memo.api.close()


@kopf.on.create("codetask.dev", "v1alpha1", "codetasks")
async def job(name: str, namespace: str | None, uid: str, memo: kopf.Memo, **_: Any) -> None:
    owner: dict[str, Any] = {"apiVersion": "codetask.dev/v1alpha1", "kind": "CodeTask"}
    owner.update(name=name, uid=uid, controller=True, blockOwnerDeletion=True)
    body = {**JOB, "metadata": {"name": name, "ownerReferences": [owner]}}
    async with memo.api.post(f"/apis/batch/v1/namespaces/{namespace}/jobs", json=body) as response:
        text = await response.text()  # read to the end: the connection goes back to the pool
    if response.status >= 400 and response.status != 409:  # 409: made by an earlier attempt
        raise kopf.TemporaryError(f"{response.status}: {text[:300]}", delay=1)
