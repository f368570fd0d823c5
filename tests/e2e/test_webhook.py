"""The Helm-installed operator's admission webhook: `kubectl apply` refuses bad CodeTasks."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.conftest import SESSION
from tests.e2e.conftest import RELEASE_LABEL, chart_values, helm_release, kubectl
from tests.e2e.tasks import codetask, wait_for

RELEASE = f"{SESSION}w-codetask-operator"
RELEASE_NS = f"{SESSION}w-system"
TASKS_NS = f"{SESSION}w-tasks"
DENIED = 'admission webhook "validate.codetasks.codetask.dev" denied the request: '


@pytest.fixture(scope="module")
def tasks_ns(crd: None, api_client: client.ApiClient) -> Iterator[str]:
    """A namespace the release serves and its webhook checks."""
    # Fail, not the chart's default Ignore: an unreachable webhook fails these tests instead of
    # letting every task through unchecked.
    values = [*chart_values(RELEASE, f"{SESSION}w-*"), "--set", "webhook.failurePolicy=Fail"]
    with helm_release(RELEASE, RELEASE_NS, values):
        core = client.CoreV1Api(api_client)
        meta = client.V1ObjectMeta(name=TASKS_NS, labels={RELEASE_LABEL: RELEASE})
        core.create_namespace(client.V1Namespace(metadata=meta))
        wait_until_answering(TASKS_NS)
        yield TASKS_NS
        kubectl("delete", "namespace", TASKS_NS, "--wait=false")


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
