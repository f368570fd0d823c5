"""The cluster itself: Ready nodes, Jobs that run and time out, logs, Service IPs from pods, and
pods on the second node that reach pods, Services and the API server on the first."""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any

from kubernetes import client

from tests.conftest import SECOND_NODE_LABEL, SECOND_NODE_TOLERATION

IMAGE = os.environ.get("RUNNER_IMAGE", "codetask-runner:dev")

API_CHECK = """
import json, os, ssl, urllib.request, urllib.error
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
ctx = ssl.create_default_context(cafile=sa + "/ca.crt")
env = os.environ
url = "https://%s:%s/api" % (env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"])
def get(token):
    req = urllib.request.Request(
        url, headers={"Authorization": "Bearer " + token} if token else {}
    )
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
print(json.dumps({"host": os.environ["KUBERNETES_SERVICE_HOST"],
                  "with_token": get(open(sa + "/token").read()), "without_token": get("")}))
"""


def job(
    name: str, command: list[str], deadline: int | None = None, token: bool = False
) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": deadline,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": token,
                    "containers": [
                        {
                            "name": "main",
                            "image": IMAGE,
                            "imagePullPolicy": "IfNotPresent",
                            "command": command,
                        }
                    ],
                }
            },
        },
    }


def wait_job(batch: client.BatchV1Api, ns: str, name: str, timeout: float = 90) -> client.V1Job:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        j = batch.read_namespaced_job(name, ns)
        for c in j.status.conditions or []:
            if c.type in ("Complete", "Failed") and c.status == "True":
                return j
        time.sleep(0.3)
    raise AssertionError(f"job {ns}/{name} did not finish in {timeout}s")


def pod_of(core: client.CoreV1Api, ns: str, job_name: str) -> client.V1Pod:
    pods = core.list_namespaced_pod(ns, label_selector=f"job-name={job_name}").items
    assert len(pods) == 1, pods
    return pods[0]


def test_node_is_ready(api_client: client.ApiClient) -> None:
    nodes = client.CoreV1Api(api_client).list_node().items
    assert nodes
    ready = {
        n.metadata.name: c.status for n in nodes for c in n.status.conditions if c.type == "Ready"
    }
    assert "True" in ready.values(), ready


def test_python_job_prints_4_and_kubectl_logs_returns_it(
    api_client: client.ApiClient, namespace: str, kubeconfig: str
) -> None:
    batch, core = client.BatchV1Api(api_client), client.CoreV1Api(api_client)
    batch.create_namespaced_job(namespace, job("two-plus-two", ["python3", "-c", "print(2+2)"]))
    j = wait_job(batch, namespace, "two-plus-two")
    assert j.status.succeeded == 1
    pod = pod_of(core, namespace, "two-plus-two").metadata.name
    out = subprocess.run(
        ["kubectl", "--kubeconfig", kubeconfig, "-n", namespace, "logs", pod],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert out == "4\n"


def test_active_deadline_fails_job_with_deadline_exceeded(
    api_client: client.ApiClient, namespace: str
) -> None:
    """Usually 5.3 s after the create. Once (a CI simulation on 2026-12-05) 1.20's Job controller
    acted 65 s after its start: the delayed resync it queues for the deadline did not come, and a
    later pod event found the Job past it. The runner enforces timeoutSeconds itself, so the code of
    a code or agent task does not outlive its deadline then (a custom-image task's would)."""
    batch = client.BatchV1Api(api_client)
    start = time.monotonic()
    batch.create_namespaced_job(namespace, job("sleeper", ["sleep", "300"], deadline=5))
    j = wait_job(batch, namespace, "sleeper", timeout=120)
    failed = [c for c in j.status.conditions if c.type == "Failed"]
    assert failed and failed[0].reason == "DeadlineExceeded"
    print(f"Job failed with DeadlineExceeded {time.monotonic() - start:.1f} s after its create")


def test_pod_reaches_api_server_through_the_kubernetes_service_with_its_token(
    api_client: client.ApiClient, namespace: str
) -> None:
    batch, core = client.BatchV1Api(api_client), client.CoreV1Api(api_client)
    batch.create_namespaced_job(
        namespace, job("api-check", ["python3", "-c", API_CHECK], token=True)
    )
    j = wait_job(batch, namespace, "api-check")
    pod = pod_of(core, namespace, "api-check").metadata.name
    log = core.read_namespaced_pod_log(pod, namespace)
    assert j.status.succeeded == 1, log
    service_ip = core.read_namespaced_service("kubernetes", "default").spec.cluster_ip
    result = json.loads(log.strip().splitlines()[-1])
    assert result["host"] == service_ip
    assert result["with_token"] == 200
    assert result["without_token"] in (401, 403)


# Each target is tried for up to 30 s: node 2's kube-proxy programs a new Service's rules some time
# after its create (until then the Service IP has no route), and that delay is not what is tested.
ACROSS = """
import json, os, ssl, sys, time, urllib.request, urllib.error
pod_ip, service_ip = sys.argv[1], sys.argv[2]
def status(url, **kw):
    end = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10, **kw) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError as e:
            if time.monotonic() > end:
                return "%s: %s" % (url, e)
            time.sleep(1)
env = os.environ
api = "https://%s:%s/version" % (env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"])
print(json.dumps({"pod": status("http://%s:8080/" % pod_ip),
                  "service": status("http://%s/" % service_ip),
                  "api": status(api, context=ssl._create_unverified_context())}))
"""


def test_a_pod_on_the_second_node_reaches_a_pod_a_service_and_the_api_server_on_the_first(
    api_client: client.ApiClient, namespace: str, second_node: str
) -> None:
    batch, core = client.BatchV1Api(api_client), client.CoreV1Api(api_client)
    server = job("server", ["python3", "-m", "http.server", "8080", "--directory", "/tmp"])
    template = server["spec"]["template"]
    template["metadata"] = {"labels": {"app": "server"}}
    batch.create_namespaced_job(namespace, server)
    core.create_namespaced_service(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "server"},
            "spec": {"selector": {"app": "server"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )
    end = time.monotonic() + 60
    while (
        not (pod := pod_of(core, namespace, "server")).status.pod_ip
        or not pod.status.container_statuses
        or not pod.status.container_statuses[0].ready
    ):
        assert time.monotonic() < end, pod.status
        time.sleep(0.3)
    assert pod.spec.node_name != second_node, "the untolerated server went to the tainted node"
    service_ip = core.read_namespaced_service("server", namespace).spec.cluster_ip
    client_job = job("client", ["python3", "-c", ACROSS, pod.status.pod_ip, service_ip])
    spec = client_job["spec"]["template"]["spec"]
    spec["nodeSelector"] = {SECOND_NODE_LABEL: "true"}
    spec["tolerations"] = [SECOND_NODE_TOLERATION]
    batch.create_namespaced_job(namespace, client_job)
    done = wait_job(batch, namespace, "client", timeout=180)
    client_pod = pod_of(core, namespace, "client")
    log = core.read_namespaced_pod_log(client_pod.metadata.name, namespace)
    assert done.status.succeeded == 1, log
    assert client_pod.spec.node_name == second_node
    assert json.loads(log.strip().splitlines()[-1]) == {"pod": 200, "service": 200, "api": 200}
