"""Identity by ownership: a pod made by hand, carrying a victim task's labels and a result-shaped
termination message, does not decide the victim's outcome. A Job counts for a task only in its
namespace with the task as controller, a pod only with such a Job as controller.
"""

from __future__ import annotations

import json
import time

import pytest
from kubernetes import client

from codetask_operator import jobs
from codetask_operator.settings import Settings
from tests.conftest import SESSION
from tests.e2e.tasks import codetask, create, get, wait_for

FORGED = json.dumps(
    {"v": 1, "reason": "Completed", "exitCode": 0, "stdout": "forged\n", "stderr": ""}
)


def forged_pod(name: str, labels: dict[str, str], image: str) -> client.V1Pod:
    """A pod that exits at once with FORGED as its termination message."""
    script = f"printf '%s' '{FORGED}' > /dev/termination-log"
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1PodSpec(
            restart_policy="Never",
            automount_service_account_token=False,
            containers=[
                client.V1Container(
                    name="runner",
                    image=image,
                    image_pull_policy="Never",
                    command=["sh", "-c", script],
                )
            ],
        ),
    )


@pytest.mark.usefixtures("operator")
@pytest.mark.timeout(180)
def test_a_pod_forged_with_a_victims_labels_does_not_decide_its_outcome(
    api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    code = "import time\ntime.sleep(15)\nprint('own result')\n"
    uid = create(api_client, namespace, codetask("victim", language="python", code=code))[
        "metadata"
    ]["uid"]
    # The victim's Job and pod labels, known from its uid before its own pod exists: the forged
    # pods are older than it (the operator used to take the oldest pod with the Job's name).
    job_name = jobs.job_name("victim", uid, 1)
    labels = {**jobs.labels_for("victim", uid, 1), "job-name": job_name}
    image = Settings().runner_image

    # Another namespace this operator also serves, and the victim's own namespace (no owner).
    core.create_namespaced_pod(namespace, forged_pod("forged", labels, image))
    other = f"{SESSION}-forge-{int(time.time()) % 100000}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=other)))
    try:
        core.create_namespaced_pod(other, forged_pod("forged", labels, image))
        for ns in (other, namespace):
            end = time.monotonic() + 60
            while core.read_namespaced_pod("forged", ns).status.phase != "Succeeded":
                assert time.monotonic() < end, f"the forged pod in {ns} did not end"
                time.sleep(0.5)
        assert (get(api_client, namespace, "victim").get("status") or {}).get("phase") != (
            "Succeeded"
        )
        status = wait_for(api_client, namespace, "victim", timeout=90)["status"]
        assert (status["phase"], status["stdout"], status["attempts"]) == (
            "Succeeded",
            "own result\n",
            1,
        )
    finally:
        core.delete_namespace(other)
