"""Agent tasks on the real cluster: the real Claude Code CLI in a task pod, against the stand-in.

The stand-in (tests/agent_standin.py) speaks the Messages API with streaming on the node's
address, where task pods reach it; each test points the agent at its own script with
ANTHROPIC_BASE_URL (spec.env) and reads back what the agent sent.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from tests import agent_standin
from tests.agent_standin import StandIn
from tests.e2e.tasks import codetask, create, get, jobs_of, pods_of, wait_for

pytestmark = pytest.mark.usefixtures("operator")

KEY = "sk-ant-standin-not-a-real-key"
SECRET = "model-key"
WRITE_A_FILE = {
    "command": "echo agent-was-here > proof.txt && cat proof.txt",
    "description": "Write a file and show it",
}


@pytest.fixture(scope="module")
def standin(api_client: client.ApiClient) -> Iterator[StandIn]:
    """The stand-in on the node's InternalIP (this machine's address), where pods reach it."""
    node = client.CoreV1Api(api_client).list_node().items[0]
    host = next(a.address for a in node.status.addresses if a.type == "InternalIP")
    server = StandIn(host).start()
    yield server
    server.stop()


@pytest.fixture
def api_key(api_client: client.ApiClient, namespace: str) -> str:
    """The Secret agent tasks name in apiKeySecretRef."""
    client.CoreV1Api(api_client).create_namespaced_secret(
        namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name=SECRET), string_data={"api-key": KEY}),
    )
    return SECRET


def agent_task(
    name: str, base_url: str, prompt: str = "Say hello.", timeout: int = 60, **agent: Any
) -> dict[str, Any]:
    return codetask(
        name,
        prompt=prompt,
        agent={"apiKeySecretRef": {"name": SECRET, "key": "api-key"}, **agent},
        env=[
            {"name": "ANTHROPIC_BASE_URL", "value": base_url},
            # The stand-in never fails by accident; a refused key should fail at once.
            {"name": "CLAUDE_CODE_MAX_RETRIES", "value": "0"},
        ],
        timeoutSeconds=timeout,
    )


@pytest.mark.usefixtures("api_key")
def test_agent_answer_succeeds_with_final_text_turns_and_usage_in_status(
    api_client: client.ApiClient, namespace: str, standin: StandIn
) -> None:
    url = standin.script(agent_standin.answer("The answer is 42."))
    create(api_client, namespace, agent_task("t", url, prompt="What is six times seven?"))
    status = wait_for(api_client, namespace, "t", timeout=120)["status"]

    assert (status["phase"], status["reason"], status["exitCode"]) == (
        "Succeeded",
        "Completed",
        0,
    ), status
    assert status["stdout"] == "The answer is 42."
    report = status["agent"]
    assert (report["turns"], report["toolCalls"], report["deniedToolCalls"]) == (1, 0, 0)
    assert report["usage"]["inputTokens"] == agent_standin.INPUT_TOKENS
    assert report["usage"]["outputTokens"] == agent_standin.OUTPUT_TOKENS
    assert report["costUsd"] > 0 and report["sessionId"]
    # The real CLI made the call: the key from the Secret, the prompt from spec.prompt.
    [call] = standin.messages_requests(url)
    assert call.headers.get("x-api-key") == KEY
    assert call.body["stream"] is True
    assert "What is six times seven?" in str(call.body["messages"])


@pytest.mark.usefixtures("api_key")
def test_agent_past_its_timeout_ends_timedout(
    api_client: client.ApiClient, namespace: str, standin: StandIn
) -> None:
    url = standin.script(agent_standin.endless())
    create(api_client, namespace, agent_task("t", url, timeout=8))
    started = time.monotonic()
    status = wait_for(api_client, namespace, "t", timeout=60)["status"]

    assert (status["phase"], status["reason"]) == ("TimedOut", "DeadlineExceeded"), status
    assert time.monotonic() - started < 8 + 10
    assert status["durationSeconds"] <= 8 + 2
    # It was stopped mid-answer, not before it asked the model anything.
    assert len(standin.messages_requests(url)) == 1


@pytest.mark.parametrize(
    ("settings", "denied"),
    [
        pytest.param({"disallowedTools": ["Bash"]}, True, id="disallowed"),
        pytest.param({}, True, id="not-allowed-in-default-mode"),
        pytest.param({"allowedTools": ["Bash"]}, False, id="allowed"),
    ],
)
@pytest.mark.usefixtures("api_key")
def test_tool_call_the_permission_settings_forbid_is_refused_and_reported(
    api_client: client.ApiClient,
    namespace: str,
    standin: StandIn,
    settings: dict[str, Any],
    denied: bool,
) -> None:
    script = agent_standin.tool_then_answer(
        "Bash", WRITE_A_FILE, "error={is_error}; the tool said: {result}"
    )
    url = standin.script(script)
    create(api_client, namespace, agent_task("t", url, **settings))
    status = wait_for(api_client, namespace, "t", timeout=120)["status"]

    assert (status["phase"], status["reason"]) == ("Succeeded", "Completed"), status
    first, second = standin.messages_requests(url)
    [tool_result] = agent_standin.tool_results(second.body)
    report = status["agent"]
    assert report["toolCalls"] == 1
    if denied:
        assert tool_result["is_error"] is True
        assert "agent-was-here" not in agent_standin.result_text(tool_result)
        assert (report["deniedToolCalls"], report["deniedTools"]) == (1, ["Bash"])
        assert status["stdout"].startswith("error=True")
    else:
        assert not tool_result.get("is_error")
        assert agent_standin.result_text(tool_result).strip() == "agent-was-here"
        assert (report["deniedToolCalls"], report["deniedTools"]) == (0, [])
    offered = [tool["name"] for tool in first.body.get("tools", [])]
    assert ("Bash" in offered) == ("disallowedTools" not in settings)


def test_missing_api_key_secret_fails_config_error_without_a_crash_loop(
    api_client: client.ApiClient, namespace: str, standin: StandIn
) -> None:
    url = standin.script(agent_standin.answer("never asked"))
    create(api_client, namespace, agent_task("t", url))
    status = wait_for(api_client, namespace, "t", timeout=60)["status"]

    assert (status["phase"], status["reason"]) == ("Failed", "ConfigError"), status
    assert SECRET in status["message"]
    assert standin.requests(url) == []
    # The container never started, so it never restarted; the Job is deleted, and its pod goes
    # (the garbage collector and the kubelet take their time on a busy node).
    end = time.monotonic() + 60
    while (pods := pods_of(api_client, namespace)) and time.monotonic() < end:
        for pod in pods:
            assert all(c.restart_count == 0 for c in pod.status.container_statuses or [])
        time.sleep(0.5)
    assert not jobs_of(api_client, namespace)
    assert all(pod.metadata.deletion_timestamp for pod in pods_of(api_client, namespace))


@pytest.mark.usefixtures("api_key")
def test_refused_key_fails_agent_error_with_the_agents_message(
    api_client: client.ApiClient, namespace: str, standin: StandIn
) -> None:
    url = standin.script(agent_standin.api_error(401, "authentication_error", "invalid x-api-key"))
    create(api_client, namespace, agent_task("t", url))
    status = wait_for(api_client, namespace, "t", timeout=120)["status"]

    assert (status["phase"], status["reason"]) == ("Failed", "AgentError"), status
    assert "Invalid API key" in status["message"]
    assert "Invalid API key" in status["stderr"]


@pytest.mark.usefixtures("api_key")
def test_agent_over_max_turns_fails_max_turns(
    api_client: client.ApiClient, namespace: str, standin: StandIn
) -> None:
    url = standin.script(agent_standin.tool_forever("Bash", {"command": "echo hi"}))
    create(api_client, namespace, agent_task("t", url, maxTurns=2, allowedTools=["Bash"]))
    status = wait_for(api_client, namespace, "t", timeout=120)["status"]

    assert (status["phase"], status["reason"]) == ("Failed", "MaxTurns"), status
    assert status["agent"]["toolCalls"] >= 2


@pytest.mark.usefixtures("api_key")
def test_input_config_map_files_are_in_the_agents_working_directory(
    api_client: client.ApiClient, namespace: str, standin: StandIn
) -> None:
    client.CoreV1Api(api_client).create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="files"), data={"notes.txt": "from the ConfigMap\n"}
        ),
    )
    script = agent_standin.tool_then_answer("Bash", {"command": "cat notes.txt && pwd"}, "{result}")
    url = standin.script(script)
    create(
        api_client,
        namespace,
        agent_task("t", url, inputConfigMap="files", allowedTools=["Bash(cat:*)", "Bash(pwd)"]),
    )
    status = wait_for(api_client, namespace, "t", timeout=120)["status"]

    assert status["phase"] == "Succeeded", status
    assert status["stdout"].split() == ["from", "the", "ConfigMap", "/scratch"]


@pytest.mark.usefixtures("api_key")
def test_missing_input_config_map_fails_at_once_naming_the_field(
    api_client: client.ApiClient, namespace: str, standin: StandIn
) -> None:
    url = standin.script(agent_standin.answer("never asked"))
    create(api_client, namespace, agent_task("t", url, inputConfigMap="absent"))
    status = wait_for(api_client, namespace, "t", timeout=60)["status"]

    assert (status["phase"], status["reason"]) == ("Failed", "StartError"), status
    assert "spec.agent.inputConfigMap" in status["message"]
    assert standin.requests(url) == []


@pytest.mark.usefixtures("api_key")
def test_cancelling_a_working_agent_ends_cancelled(
    api_client: client.ApiClient, namespace: str, standin: StandIn
) -> None:
    url = standin.script(agent_standin.endless())
    create(api_client, namespace, agent_task("t", url, timeout=120))
    end = time.monotonic() + 60
    while not standin.messages_requests(url):
        assert time.monotonic() < end, get(api_client, namespace, "t").get("status")
        time.sleep(0.2)
    client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
        "codetask.dev", "v1alpha1", namespace, "codetasks", "t", {"spec": {"cancel": True}}
    )
    status = wait_for(api_client, namespace, "t", timeout=60)["status"]
    assert (status["phase"], status["reason"]) == ("Cancelled", "Cancelled"), status
