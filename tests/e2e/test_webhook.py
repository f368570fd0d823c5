"""The Helm-installed operator's admission webhook: `kubectl apply` refuses bad CodeTasks."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.conftest import SESSION
from tests.e2e.conftest import RELEASE_LABEL, chart_values, helm_release, kubectl
from tests.e2e.tasks import codetask, wait_for

DENIED = 'admission webhook "validate.codetasks.codetask.dev" denied the request: '


@contextlib.contextmanager
def checked_namespace(api_client: client.ApiClient, prefix: str, *values: str) -> Iterator[str]:
    """`<prefix>-tasks`, served by the chart installed as `<prefix>-codetask-operator` (with
    `values`) and checked by its webhook, once the webhook answers."""
    release = f"{prefix}-codetask-operator"
    # Fail, not the chart's default Ignore: an unreachable webhook fails these tests instead of
    # letting every task through unchecked.
    values = (*chart_values(release, f"{prefix}-*"), "--set", "webhook.failurePolicy=Fail", *values)
    with helm_release(release, f"{prefix}-system", values):
        namespace = f"{prefix}-tasks"
        core = client.CoreV1Api(api_client)
        meta = client.V1ObjectMeta(name=namespace, labels={RELEASE_LABEL: release})
        core.create_namespace(client.V1Namespace(metadata=meta))
        wait_until_answering(namespace)
        yield namespace
        kubectl("delete", "namespace", namespace, "--wait=false")


CALLBACK_HOST = "hooks.example.com"


@pytest.fixture(scope="module")
def tasks_ns(crd: None, api_client: client.ApiClient) -> Iterator[str]:
    """A namespace the release serves and its webhook checks; callbacks on, to CALLBACK_HOST."""
    prefix = f"{SESSION}w"
    kubectl("create", "namespace", f"{prefix}-system")
    key = ("-n", f"{prefix}-system", "create", "secret", "generic", "callback-key")
    assert kubectl(*key, "--from-literal=key=e2e").returncode == 0
    callbacks = ("--set", "callbacks.secret.name=callback-key")
    callbacks += ("--set", f"callbacks.allowedHosts={{{CALLBACK_HOST}}}")
    with checked_namespace(api_client, prefix, *callbacks) as namespace:
        yield namespace


def apply(namespace: str, name: str, *flags: str, **spec: Any) -> tuple[int, str]:
    done = kubectl(
        "apply", "-n", namespace, *flags, "-f", "-", stdin=yaml.safe_dump(codetask(name, **spec))
    )
    return done.returncode, done.stderr


def wait_until_answering(namespace: str, timeout: float = 60) -> None:
    """Until the webhook answers through its Service. `helm --wait` saw the pod Ready, but
    kube-proxy programs the Service's new endpoint on its own schedule, and the operator may still
    be switching from standby to leader (CI saw calls refused just after the install)."""
    end = time.monotonic() + timeout
    while (answer := apply(namespace, "ping", "--dry-run=server", language="sh", code="true"))[0]:
        assert time.monotonic() < end, f"webhook not answering after {timeout}s: {answer[1]}"
        time.sleep(0.5)


def test_task_with_both_code_and_command_is_refused_naming_the_field(tasks_ns: str) -> None:
    # The CRD schema cannot say "one of": only admission can.
    code, stderr = apply(tasks_ns, "both", language="python", code="print(1)", command=["true"])
    assert code != 0
    assert DENIED + "spec.code: set either code or command, not both" in stderr, stderr
    assert kubectl("-n", tasks_ns, "get", "ct", "both").returncode != 0


def test_a_callback_to_a_host_the_chart_does_not_allow_is_refused_naming_the_field(
    tasks_ns: str,
) -> None:
    hook = {"url": "https://elsewhere.example.org/hook"}
    code, stderr = apply(tasks_ns, "cb", language="sh", code="true", callback=hook)
    assert code != 0
    assert DENIED + "spec.callback.url: " in stderr and "elsewhere.example.org" in stderr, stderr
    hook = {"url": f"https://{CALLBACK_HOST}/hook"}
    dry = ("--dry-run=server",)
    code, stderr = apply(tasks_ns, "cb", *dry, language="sh", code="true", callback=hook)
    assert code == 0, stderr


def test_changing_code_after_creation_is_refused_but_cancel_is_allowed(tasks_ns: str) -> None:
    sleeper = "import time\ntime.sleep(60)\n"
    code, stderr = apply(tasks_ns, "fixed", language="python", code=sleeper)
    assert code == 0, stderr
    code, stderr = apply(tasks_ns, "fixed", language="python", code="print('other')")
    assert code != 0
    assert DENIED + "spec.code: cannot change after creation" in stderr, stderr
    code, stderr = apply(tasks_ns, "fixed", language="python", code=sleeper, cancel=True)
    assert code == 0, stderr


def test_good_task_passes_the_webhook_and_runs(tasks_ns: str, api_client: client.ApiClient) -> None:
    code, stderr = apply(tasks_ns, "good", language="python", code="print(6 * 7)")
    assert code == 0, stderr
    status = wait_for(api_client, tasks_ns, "good")["status"]
    assert (status["phase"], status["stdout"]) == ("Succeeded", "42\n"), status


FINISHED = "codetask.dev/finished"


def test_the_finished_label_is_the_operators_once_the_task_has_finished(
    tasks_ns: str, api_client: client.ApiClient
) -> None:
    """A task created with the label would never run (out of the operator's watch): refused. The
    chart's operator labels its own finished task (its RBAC, through this webhook); out of the
    watch, the task's TTL may grow but not shrink."""
    task = codetask("early", language="sh", code="true")
    task["metadata"]["labels"] = {FINISHED: "true"}
    done = kubectl("apply", "-n", tasks_ns, "-f", "-", stdin=yaml.safe_dump(task))
    assert done.returncode != 0
    assert DENIED + f"metadata.labels[{FINISHED}]: the operator sets it" in done.stderr, done.stderr
    code, stderr = apply(tasks_ns, "late", language="sh", code="true", ttlSecondsAfterFinished=600)
    assert code == 0, stderr
    assert wait_for(api_client, tasks_ns, "late")["status"]["phase"] == "Succeeded"
    end = time.monotonic() + 30
    label = "jsonpath={.metadata.labels.codetask\\.dev/finished}"
    while kubectl("get", "ct", "late", "-n", tasks_ns, "-o", label).stdout != "true":
        assert time.monotonic() < end, "not labelled out of the watch"
        time.sleep(0.5)
    ttl = ("--type", "merge", "-p", '{"spec": {"ttlSecondsAfterFinished": %d}}')
    shorter = kubectl("patch", "ct", "late", "-n", tasks_ns, *ttl[:-1], ttl[-1] % 60)
    assert DENIED + "spec.ttlSecondsAfterFinished: " in shorter.stderr, shorter.stderr
    longer = kubectl("patch", "ct", "late", "-n", tasks_ns, *ttl[:-1], ttl[-1] % 6000)
    assert longer.returncode == 0, longer.stderr


def test_a_pool_the_namespace_may_not_use_is_refused_and_one_it_may_runs(
    tasks_ns: str, api_client: client.ApiClient, pool: Callable[..., str]
) -> None:
    """Made just before the apply: the webhook reads a pool its catalog does not have yet."""
    elsewhere, here = pool(namespaces=["someone-else"]), pool(namespaces=[tasks_ns])
    code, stderr = apply(tasks_ns, "outside", language="python", code="print(1)", pool=elsewhere)
    assert code != 0
    expected = f"spec.pool: CodeTaskPool {elsewhere!r} may not be used in namespace {tasks_ns}"
    assert DENIED + expected in stderr, stderr
    code, stderr = apply(tasks_ns, "missing", language="python", code="print(1)", pool="no-such")
    assert DENIED + "spec.pool: CodeTaskPool 'no-such' does not exist" in stderr, stderr
    code, stderr = apply(tasks_ns, "inside", language="python", code="print(1)", pool=here)
    assert code == 0, stderr
    status = wait_for(api_client, tasks_ns, "inside")["status"]
    assert (status["phase"], status["pool"]) == ("Succeeded", here), status


def test_a_pool_with_requests_above_its_limits_is_refused_naming_the_field(tasks_ns: str) -> None:
    """Pools are cluster-scoped: the release serving `tasks_ns` checks them all (failurePolicy
    Ignore, so a release coming or going never blocks pools)."""
    pool = {
        "apiVersion": "codetask.dev/v1alpha1",
        "kind": "CodeTaskPool",
        "metadata": {"name": f"{SESSION}-over-its-limits"},
        "spec": {
            "namespaces": [tasks_ns],
            "resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}},
        },
    }
    done = kubectl("apply", "-f", "-", stdin=yaml.safe_dump(pool))
    assert done.returncode != 0
    denied = 'admission webhook "validate.codetaskpools.codetask.dev" denied the request: '
    message = "spec.resources.requests.memory: above its limit 1Gi"
    assert denied + message in done.stderr, done.stderr
