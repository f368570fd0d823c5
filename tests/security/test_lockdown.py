"""Task pods are locked down on the real cluster: escapes fail and leave the node healthy."""

from __future__ import annotations

import json

import pytest
from kubernetes import client

from tests.e2e.tasks import codetask, create, wait_for

pytestmark = pytest.mark.usefixtures("operator")

PROBE = r"""
import json, os, socket, ssl, urllib.request, urllib.error
report = {}
lines = open("/proc/self/status").read().splitlines()
status = dict(line.split(":\t", 1) for line in lines if ":\t" in line)
report["uid"] = os.getuid()
report["cap_eff"] = status["CapEff"].strip()
report["no_new_privs"] = status["NoNewPrivs"].strip()
report["seccomp"] = status["Seccomp"].strip()
report["token"] = os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount/token")
for path in ("/etc/evil", "/usr/local/bin/evil", "/codetask/input/evil"):
    try:
        open(path, "w").write("x")
        report[path] = "written"
    except OSError as exc:
        report[path] = exc.errno
open(os.path.join(os.environ["HOME"], "ok"), "w").write("scratch is writable")
report["scratch"] = open(os.path.join(os.environ["HOME"], "ok")).read()
ctx = ssl.create_default_context()
ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
env = os.environ
host, port = env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"]
url = "https://%s:%s/api/v1/secrets" % (host, port)
try:
    urllib.request.urlopen(url, context=ctx, timeout=5)
    report["api"] = 200
except urllib.error.HTTPError as exc:
    report["api"] = exc.code
except OSError as exc:
    report["api"] = str(exc)
links = [k for k in env if k.endswith("_SERVICE_HOST") and k != "KUBERNETES_SERVICE_HOST"]
report["env_leak"] = sorted(links)
print(json.dumps(report))
"""


def test_escape_attempts_fail_inside_the_task_pod(
    api_client: client.ApiClient, namespace: str
) -> None:
    create(api_client, namespace, codetask("probe", language="python", code=PROBE))
    status = wait_for(api_client, namespace, "probe")["status"]
    assert status["phase"] == "Succeeded", status
    report = json.loads(status["stdout"])
    assert report["uid"] == 65532
    assert int(report["cap_eff"], 16) == 0, "capabilities must all be dropped"
    assert report["no_new_privs"] == "1"
    assert report["seccomp"] == "2", "seccomp filter mode (RuntimeDefault)"
    assert report["token"] is False, "no service-account token in task pods"
    assert report["/etc/evil"] == 30 and report["/usr/local/bin/evil"] == 30, "EROFS"
    assert report["/codetask/input/evil"] in (13, 30), "the input volume is read-only"
    assert report["scratch"] == "scratch is writable"
    assert report["api"] in (401, 403), "anonymous requests to the API server are refused"
    assert report["env_leak"] == [], "no service links"


def test_fork_bomb_is_contained_and_the_node_stays_healthy(
    api_client: client.ApiClient, namespace: str
) -> None:
    bomb = "bomb() { bomb | bomb & }; bomb\nsleep 30\n"
    create(
        api_client,
        namespace,
        codetask(
            "bomb",
            language="bash",
            code=bomb,
            timeoutSeconds=10,
            resources={"limits": {"cpu": "500m"}},
        ),
    )
    status = wait_for(api_client, namespace, "bomb", timeout=90)["status"]
    assert status["phase"] in ("TimedOut", "Failed"), status
    assert_node_healthy_and_tasks_still_run(api_client, namespace, "after-bomb")


def test_filling_the_disk_is_stopped_at_the_ephemeral_storage_limit(
    api_client: client.ApiClient, namespace: str
) -> None:
    # The kubelet measures emptyDir use every --volume-stats-agg-period (1 min) and evicts on its
    # next check after that: the filler waits long enough for a busy node to get there.
    fill = 'dd if=/dev/zero of="$HOME/fill" bs=1M count=2000 2>&1 | tail -n 1\nsleep 180\n'
    create(
        api_client,
        namespace,
        codetask(
            "fill",
            language="sh",
            code=fill,
            timeoutSeconds=200,
            resources={"limits": {"ephemeral-storage": "64Mi"}},
        ),
    )
    status = wait_for(api_client, namespace, "fill", timeout=240)["status"]
    assert status["phase"] == "Failed", status
    assert "ephemeral" in status["message"].lower() or "evict" in status["message"].lower(), status
    assert_node_healthy_and_tasks_still_run(api_client, namespace, "after-fill")


def assert_node_healthy_and_tasks_still_run(
    api_client: client.ApiClient, ns: str, name: str
) -> None:
    nodes = client.CoreV1Api(api_client).list_node().items
    for node in nodes:
        ready = next(c for c in node.status.conditions if c.type == "Ready")
        assert ready.status == "True"
        pressure = [
            c.type for c in node.status.conditions if c.type != "Ready" and c.status == "True"
        ]
        assert pressure == [], pressure
    create(api_client, ns, codetask(name, language="python", code="print('still fine')"))
    assert wait_for(api_client, ns, name)["status"]["stdout"] == "still fine\n"
