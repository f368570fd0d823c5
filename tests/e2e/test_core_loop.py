"""CodeTask → Job → Pod → status on the real cluster, one property per test."""

from __future__ import annotations

import subprocess
import time
from datetime import datetime

import pytest
from kubernetes import client

from tests.e2e.tasks import Operator, codetask, create, get, jobs_of, pods_of, wait_for

pytestmark = pytest.mark.usefixtures("operator")


@pytest.mark.parametrize(
    ("language", "code", "stdout"),
    [
        ("python", "print(2 + 2)", "4\n"),
        ("node", "console.log(6 * 7)", "42\n"),
        ("bash", 'echo "$((6 * 7))"', "42\n"),
        ("sh", "printf 'sh says %s\\n' hi", "sh says hi\n"),
    ],
)
def test_language_task_succeeds_with_its_stdout(
    api_client: client.ApiClient, namespace: str, language: str, code: str, stdout: str
) -> None:
    create(api_client, namespace, codetask("t", language=language, code=code))
    status = wait_for(api_client, namespace, "t")["status"]
    assert status["phase"] == "Succeeded", status
    assert status["reason"] == "Completed"
    assert status["exitCode"] == 0
    assert status["stdout"] == stdout
    assert status["attempts"] == 1
    assert status["durationSeconds"] >= 0
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Admitted": "True",
        "Running": "False",
        "Finished": "True",
        "Succeeded": "True",
    }


def test_non_zero_exit_fails_with_exit_code_and_separate_stderr(
    api_client: client.ApiClient, namespace: str
) -> None:
    code = "import sys\nprint('partial result')\nprint('boom', file=sys.stderr)\nsys.exit(3)\n"
    create(api_client, namespace, codetask("t", language="python", code=code))
    status = wait_for(api_client, namespace, "t")["status"]
    assert (status["phase"], status["reason"], status["exitCode"]) == ("Failed", "NonZeroExit", 3)
    assert status["stdout"] == "partial result\n"
    assert status["stderr"] == "boom\n"


def test_endless_loop_times_out_within_two_seconds_of_its_timeout(
    api_client: client.ApiClient, namespace: str
) -> None:
    create(
        api_client,
        namespace,
        codetask("t", language="python", code="while True:\n    pass\n", timeoutSeconds=3),
    )
    running = wait_for(api_client, namespace, "t", {"Running", "TimedOut"})
    started = time.monotonic()
    status = wait_for(api_client, namespace, "t")["status"]
    assert (status["phase"], status["reason"]) == ("TimedOut", "DeadlineExceeded"), status
    assert time.monotonic() - started <= 3 + 2, running
    # Absent when the deadline (which counts the pod's start-up) struck before the code ran.
    assert status.get("durationSeconds", 0) <= 3 + 2, status


def test_memory_hog_is_reported_oomkilled(api_client: client.ApiClient, namespace: str) -> None:
    code = "chunks = []\nwhile True:\n    chunks.append(bytearray(8 * 1024 * 1024))\n"
    create(
        api_client,
        namespace,
        codetask("t", language="python", code=code, resources={"limits": {"memory": "48Mi"}}),
    )
    status = wait_for(api_client, namespace, "t")["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "OOMKilled"), status
    assert status["exitCode"] == 137


def test_missing_image_is_reported_image_error_within_30_seconds(
    api_client: client.ApiClient, namespace: str
) -> None:
    create(api_client, namespace, codetask("t", image="codetask-missing:v0", command=["true"]))
    created = time.monotonic()
    status = wait_for(api_client, namespace, "t", timeout=30)["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "ImageError"), status
    assert "codetask-missing:v0" in status["message"]
    assert time.monotonic() - created < 30
    # Its Job is deleted, so the pod that can never start goes too.
    end = time.monotonic() + 30
    while time.monotonic() < end and jobs_of(api_client, namespace):
        time.sleep(0.5)
    assert not jobs_of(api_client, namespace)


@pytest.mark.parametrize(
    ("spec_yaml", "field"),
    [
        ("language: python\n  code: x\n  timeoutSeconds: 0", "spec.timeoutSeconds"),
        ("language: cobol\n  code: x", "spec.language"),
        ("language: python\n  code: x\n  retries: 99", "spec.retries"),
        ("language: python\n  code: x\n  outputLimitBytes: -1", "spec.outputLimitBytes"),
        (
            "language: python\n  code: x\n  resources: {limits: {memory: lots}}",
            "spec.resources.limits.memory",
        ),
    ],
)
def test_invalid_manifest_is_rejected_by_kubectl_apply_naming_the_field(
    kubeconfig: str, namespace: str, spec_yaml: str, field: str
) -> None:
    manifest = (
        "apiVersion: codetask.dev/v1alpha1\nkind: CodeTask\n"
        f"metadata:\n  name: bad\nspec:\n  {spec_yaml}\n"
    )
    done = subprocess.run(
        ["kubectl", "-n", namespace, "apply", "--validate=false", "-f", "-"],
        input=manifest,
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    assert field in done.stderr, done.stderr


def test_operator_killed_while_20_tasks_run_finishes_all_with_one_job_each(
    api_client: client.ApiClient, namespace: str, operator: Operator
) -> None:
    for i in range(20):
        code = f"import time\ntime.sleep({1 + i % 3})\nprint({i} * 2)\n"
        create(api_client, namespace, codetask(f"t{i}", language="python", code=code))
    time.sleep(1.5)
    operator.stop()
    time.sleep(2)
    operator.start()
    for i in range(20):
        status = wait_for(api_client, namespace, f"t{i}", timeout=120)["status"]
        assert (status["phase"], status["stdout"]) == ("Succeeded", f"{i * 2}\n"), status
        assert status["attempts"] == 1
    names = sorted(j.metadata.name for j in jobs_of(api_client, namespace))
    assert len(names) == 20 and len(set(names)) == 20


def test_deleting_a_running_task_removes_its_job_and_pod(
    api_client: client.ApiClient, namespace: str
) -> None:
    create(
        api_client,
        namespace,
        codetask("t", language="python", code="import time\ntime.sleep(300)\n"),
    )
    wait_for(api_client, namespace, "t", {"Running"})
    assert jobs_of(api_client, namespace) and pods_of(api_client, namespace)
    client.CustomObjectsApi(api_client).delete_namespaced_custom_object(
        "codetask.dev", "v1alpha1", namespace, "codetasks", "t"
    )
    end = time.monotonic() + 60
    while time.monotonic() < end and (
        jobs_of(api_client, namespace) or pods_of(api_client, namespace)
    ):
        time.sleep(0.5)
    assert not jobs_of(api_client, namespace)
    assert not pods_of(api_client, namespace)


def test_running_task_reports_pod_node_and_start_time(
    api_client: client.ApiClient, namespace: str
) -> None:
    create(
        api_client,
        namespace,
        codetask("t", language="python", code="import time\ntime.sleep(30)\n"),
    )
    status = wait_for(api_client, namespace, "t", {"Running"})["status"]
    assert status["podName"].startswith(status["jobName"])
    assert status["nodeName"]
    assert datetime.fromisoformat(status["startTime"].replace("Z", "+00:00"))
    assert get(api_client, namespace, "t")["status"]["reason"] == "Started"


FINISHED = "codetask.dev/finished"


def finished_labels(api: client.ApiClient, ns: str) -> list[str | None]:
    """The finished label of the task "t", its Job and its pod."""
    objects = [*jobs_of(api, ns), *pods_of(api, ns)]
    task = (get(api, ns, "t")["metadata"].get("labels") or {}).get(FINISHED)
    return [task, *((o.metadata.labels or {}).get(FINISHED) for o in objects)]


def test_a_finished_task_its_job_and_pod_stay_labelled_out_of_the_operators_watches(
    api_client: client.ApiClient, namespace: str
) -> None:
    """They stay (the Job and pod for `kubectl logs`), labelled so that the operator's watches
    (and a restart's listing) leave them out; a Job that lost its label comes back into view and
    is labelled again, as after an operator stopped between a task's end and its labels."""
    create(api_client, namespace, codetask("t", language="python", code="print(1)"))
    assert wait_for(api_client, namespace, "t")["status"]["phase"] == "Succeeded"
    end = time.monotonic() + 20
    while finished_labels(api_client, namespace) != ["true", "true", "true"]:
        assert time.monotonic() < end, finished_labels(api_client, namespace)
        time.sleep(0.3)
    job = jobs_of(api_client, namespace)[0].metadata.name
    unlabel = {"metadata": {"labels": {FINISHED: None}}}
    patched = client.BatchV1Api(api_client).patch_namespaced_job(job, namespace, unlabel)
    assert FINISHED not in (patched.metadata.labels or {})  # (the operator may relabel it at once)
    while finished_labels(api_client, namespace) != ["true", "true", "true"]:
        assert time.monotonic() < end + 20, finished_labels(api_client, namespace)
        time.sleep(0.3)
    assert get(api_client, namespace, "t")["status"]["stdout"] == "1\n"
