"""The `codetask` CLI as a user runs it (a subprocess), against the real cluster and operator."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from tests.e2e.tasks import get, pods_of, wait_for

pytestmark = pytest.mark.usefixtures("operator")

HELLO = "print('hello from a CodeTask')\n"
FAILING = "import sys\nprint('partial result')\nprint('boom', file=sys.stderr)\nsys.exit(3)\n"
SLEEPING = "import time\nprint('started', flush=True)\ntime.sleep(300)\n"


def codetask(
    kubeconfig: str, namespace: str, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the CLI as its entry point does, with the test's kubeconfig and namespace."""
    command = [sys.executable, "-m", "codetask_operator.cli.main", *args]
    return subprocess.run(
        [*command, "--kubeconfig", kubeconfig, "-n", namespace],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A directory for the scripts a test runs."""
    return tmp_path


def script(directory: Path, name: str, code: str) -> str:
    path = directory / name
    path.write_text(code)
    return str(path)


def created(api_client: client.ApiClient, namespace: str, name: str, timeout: float = 30) -> None:
    """Wait until a CLI started in the background has created the task."""
    end = time.monotonic() + timeout
    while True:
        try:
            get(api_client, namespace, name)
            return
        except client.ApiException as exc:
            if exc.status != 404 or time.monotonic() > end:
                raise
            time.sleep(0.2)


def test_run_wait_prints_the_output_and_returns_0(
    kubeconfig: str, namespace: str, source: Path
) -> None:
    done = codetask(kubeconfig, namespace, "run", script(source, "hello.py", HELLO), "--wait")
    assert (done.returncode, done.stdout, done.stderr) == (0, "hello from a CodeTask\n", "")


def test_failing_script_returns_its_exit_code_with_stderr_kept_separate(
    kubeconfig: str, namespace: str, source: Path
) -> None:
    done = codetask(kubeconfig, namespace, "run", script(source, "fail.py", FAILING), "--wait")
    assert (done.returncode, done.stdout, done.stderr) == (3, "partial result\n", "boom\n")


def test_stdin_env_and_args_reach_the_code(kubeconfig: str, namespace: str, source: Path) -> None:
    code = "import os, sys\nprint(sys.stdin.read().upper(), os.environ['GREETING'], sys.argv[1:])\n"
    done = codetask(
        kubeconfig, namespace, "run", script(source, "echo.py", code), "--wait",
        "--stdin", script(source, "in.txt", "abc"), "--env", "GREETING=hi=there",
        "--arg", "one", "--arg", "two words",
    )  # fmt: skip
    assert (done.returncode, done.stdout) == (0, "ABC hi=there ['one', 'two words']\n"), done.stderr


def test_follow_streams_the_log_while_the_task_runs(
    kubeconfig: str, namespace: str, source: Path
) -> None:
    code = "import time\nfor i in range(3):\n    print('tick', i, flush=True)\n    time.sleep(1)\n"
    done = codetask(
        kubeconfig, namespace, "run", script(source, "tick.py", code + "raise SystemExit(4)\n"),
        "--follow",
    )  # fmt: skip
    assert done.returncode == 4, done.stderr
    assert done.stdout == "tick 0\ntick 1\ntick 2\n"


def test_run_without_wait_prints_the_name_and_get_shows_the_result(
    kubeconfig: str, namespace: str, source: Path, api_client: client.ApiClient
) -> None:
    done = codetask(kubeconfig, namespace, "run", script(source, "hello.py", HELLO), "--name", "h")
    assert (done.returncode, done.stdout) == (0, "h\n"), done.stderr
    wait_for(api_client, namespace, "h")
    shown = codetask(kubeconfig, namespace, "get", "h")
    assert shown.returncode == 0, shown.stderr
    for expected in ("Succeeded (Completed)", "Exit code", "Attempts", "Pod ", "Node ",
                     "hello from a CodeTask"):  # fmt: skip
        assert expected in shown.stdout, shown.stdout
    as_json = json.loads(codetask(kubeconfig, namespace, "get", "h", "-o", "json").stdout)
    assert as_json["status"]["stdout"] == "hello from a CodeTask\n"
    assert "managedFields" not in as_json["metadata"]
    as_yaml = yaml.safe_load(codetask(kubeconfig, namespace, "get", "h", "-o", "yaml").stdout)
    assert as_yaml["status"]["phase"] == "Succeeded"


def test_generated_names_come_from_the_file_name(
    kubeconfig: str, namespace: str, source: Path
) -> None:
    done = codetask(kubeconfig, namespace, "run", script(source, "My_Job.py", HELLO))
    assert done.returncode == 0 and done.stdout.startswith("my-job-"), done


def test_list_shows_each_task_with_its_phase_and_filters_by_phase(
    kubeconfig: str, namespace: str, source: Path
) -> None:
    codetask(kubeconfig, namespace, "run", script(source, "ok.py", HELLO), "--name", "ok", "--wait")
    codetask(kubeconfig, namespace, "run", script(source, "bad.py", FAILING), "--name", "bad",
             "--wait")  # fmt: skip
    listed = codetask(kubeconfig, namespace, "list").stdout.splitlines()
    assert listed[0].split() == ["NAME", "PHASE", "EXIT", "DURATION", "ATTEMPTS", "AGE", "REASON"]
    rows = {line.split()[0]: line.split() for line in listed[1:]}
    assert rows["ok"][1:3] == ["Succeeded", "0"] and rows["ok"][-1] == "Completed"
    assert rows["bad"][1:3] == ["Failed", "3"] and rows["bad"][-1] == "NonZeroExit"
    failed = codetask(kubeconfig, namespace, "list", "--phase", "Failed").stdout.splitlines()
    assert [line.split()[0] for line in failed[1:]] == ["bad"]
    everywhere = codetask(kubeconfig, namespace, "list", "-A").stdout.splitlines()
    assert everywhere[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert [namespace, "ok", "Succeeded"] in [line.split()[:3] for line in everywhere]
    empty = codetask(kubeconfig, namespace, "list", "--phase", "Queued")
    assert (empty.stdout, empty.stderr) == ("", f'No CodeTasks found in namespace "{namespace}".\n')


def test_logs_reads_the_pod_and_falls_back_to_status_once_the_pod_is_gone(
    kubeconfig: str, namespace: str, source: Path, api_client: client.ApiClient
) -> None:
    codetask(kubeconfig, namespace, "run", script(source, "f.py", FAILING), "--name", "f", "--wait")
    from_pod = codetask(kubeconfig, namespace, "logs", "f")
    assert from_pod.returncode == 0, from_pod.stderr
    assert "partial result\n" in from_pod.stdout and "boom\n" in from_pod.stdout
    for pod in pods_of(api_client, namespace):
        client.CoreV1Api(api_client).delete_namespaced_pod(
            pod.metadata.name, namespace, grace_period_seconds=0
        )
    end = time.monotonic() + 30
    while pods_of(api_client, namespace) and time.monotonic() < end:
        time.sleep(0.2)
    from_status = codetask(kubeconfig, namespace, "logs", "f")
    assert (from_status.returncode, from_status.stdout, from_status.stderr) == (
        0, "partial result\n", "boom\n",
    )  # fmt: skip


def test_cancel_ends_a_sleeping_task_cancelled_and_run_wait_exits_130(
    kubeconfig: str, namespace: str, source: Path, api_client: client.ApiClient
) -> None:
    command = [sys.executable, "-m", "codetask_operator.cli.main", "run",
               script(source, "sleep.py", SLEEPING), "--name", "s", "--wait",
               "--kubeconfig", kubeconfig, "-n", namespace]  # fmt: skip
    waiting = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        created(api_client, namespace, "s")
        wait_for(api_client, namespace, "s", {"Running"})
        with pytest.raises(subprocess.TimeoutExpired) as following:
            codetask(kubeconfig, namespace, "logs", "s", "-f", timeout=5)
        assert following.value.stdout == b"started\n"
        cancelled = codetask(kubeconfig, namespace, "cancel", "s")
        assert (cancelled.returncode, cancelled.stdout) == (0, "s cancel requested\n")
        wait_for(api_client, namespace, "s", {"Cancelled"}, timeout=60)
        _, err = waiting.communicate(timeout=30)
    finally:
        waiting.kill()
    assert waiting.returncode == 130, err
    assert err.splitlines()[-1].startswith("codetask: s: Cancelled"), err
    assert get(api_client, namespace, "s")["status"]["phase"] == "Cancelled"
    again = codetask(kubeconfig, namespace, "cancel", "s")
    assert (again.returncode, again.stdout) == (0, "s already finished: Cancelled\n")


def test_delete_wait_returns_once_the_task_is_gone(
    kubeconfig: str, namespace: str, source: Path
) -> None:
    codetask(kubeconfig, namespace, "run", script(source, "d.py", HELLO), "--name", "d", "--wait")
    deleted = codetask(kubeconfig, namespace, "delete", "d", "--wait", timeout=60)
    assert (deleted.returncode, deleted.stdout) == (0, "d deleted\n"), deleted.stderr
    gone = codetask(kubeconfig, namespace, "get", "d")
    assert gone.returncode == 2
    assert gone.stderr == f'codetask: CodeTask "d" in namespace "{namespace}" not found\n'


def test_stats_counts_phases_queue_and_outcomes(
    kubeconfig: str, namespace: str, source: Path
) -> None:
    codetask(kubeconfig, namespace, "run", script(source, "ok.py", HELLO), "--wait")
    codetask(kubeconfig, namespace, "run", script(source, "bad.py", FAILING), "--wait")
    counted = json.loads(codetask(kubeconfig, namespace, "stats", "-o", "json").stdout)
    assert counted["total"] == 2
    assert (counted["phases"]["Succeeded"], counted["phases"]["Failed"]) == (1, 1)
    assert (counted["queueDepth"], counted["successRate"]) == (0, 0.5)
    shown = codetask(kubeconfig, namespace, "stats").stdout
    assert "queue depth: 0" in shown and "success rate 50%" in shown
    everywhere = json.loads(codetask(kubeconfig, namespace, "stats", "-A", "-o", "json").stdout)
    assert everywhere["total"] >= 2


def test_invalid_timeout_is_rejected_by_the_api_server_naming_the_field(
    kubeconfig: str, namespace: str, source: Path
) -> None:
    done = codetask(kubeconfig, namespace, "run", script(source, "h.py", HELLO), "--timeout", "0")
    assert done.returncode == 2
    assert done.stderr.startswith("codetask: invalid CodeTask, rejected by the API server: ")
    assert "spec.timeoutSeconds" in done.stderr and done.stderr.count("\n") == 1


def test_missing_task_is_a_one_line_error(kubeconfig: str, namespace: str) -> None:
    for args in (["get", "nope"], ["logs", "nope"], ["cancel", "nope"], ["delete", "nope"]):
        done = codetask(kubeconfig, namespace, *args)
        assert done.returncode == 2, args
        assert done.stderr == f'codetask: CodeTask "nope" in namespace "{namespace}" not found\n'


def test_access_denied_names_the_verb_and_resource(
    kubeconfig: str, namespace: str, api_client: client.ApiClient, tmp_path: Path
) -> None:
    """A service account without RBAC: the cluster answers 403 and the CLI says to what."""
    core = client.CoreV1Api(api_client)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "nobody"}})
    end = time.monotonic() + 30
    while not (secrets := core.read_namespaced_service_account("nobody", namespace).secrets):
        assert time.monotonic() < end, "no token secret for the service account"
        time.sleep(0.2)
    secret = core.read_namespaced_secret(secrets[0].name, namespace)
    token = base64.b64decode(secret.data["token"]).decode()
    admin = yaml.safe_load(Path(kubeconfig).read_text())
    restricted = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": "nobody", "user": {"token": token}}],
        "contexts": [{"name": "nobody", "context": {"cluster": admin["clusters"][0]["name"],
                                                    "user": "nobody", "namespace": namespace}}],
        "current-context": "nobody",
    }  # fmt: skip
    path = tmp_path / "restricted.kubeconfig"
    path.write_text(yaml.safe_dump(restricted))
    command = [sys.executable, "-m", "codetask_operator.cli.main", "--kubeconfig", str(path)]
    done = subprocess.run([*command, "list"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith("codetask: access denied: "), done.stderr
    for words in ("cannot list", '"codetasks"', "codetask.dev", f'namespace "{namespace}"'):
        assert words in done.stderr, done.stderr


def test_unreachable_cluster_is_a_one_line_error(kubeconfig: str, tmp_path: Path) -> None:
    config = Path(kubeconfig).read_text()
    server = yaml.safe_load(config)["clusters"][0]["cluster"]["server"]
    path = tmp_path / "unreachable.kubeconfig"
    path.write_text(config.replace(server, "https://127.0.0.1:1"))
    done = codetask(str(path), "default", "list")
    assert done.returncode == 2
    assert done.stderr.startswith("codetask: cannot reach the cluster at https://127.0.0.1:1: ")
    assert done.stderr.count("\n") == 1
