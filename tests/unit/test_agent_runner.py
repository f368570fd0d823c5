"""Agent mode as a real process: the image's entry point with CODETASK_MODE=agent.

A fake ``claude`` (a script that replays stream-json lines and records how it was started) stands
in for the CLI, so these tests cover what the runner does around it: flags, stdin, environment,
input files, deadline, SIGTERM and the result. The real CLI runs in tests/e2e/test_agent.py.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.recordings import RECORDED

pytestmark = pytest.mark.unit

RUNNER_SOURCE = Path(__file__).resolve().parents[2] / "runner-image"
FAKE_CLI = """#!{python}
import json, os, sys, time
plan = json.load(open(os.environ["FAKE_PLAN"]))
record = {{
    "argv": sys.argv[1:],
    "stdin": sys.stdin.read(),
    "cwd": os.getcwd(),
    "files": sorted(os.listdir(".")),
    "env": {{k: v for k, v in os.environ.items() if not k.startswith("FAKE_")}},
}}
json.dump(record, open(os.environ["FAKE_RECORD"], "w"))
for line in plan["lines"]:
    print(json.dumps(line), flush=True)
sys.stderr.write(plan.get("stderr", ""))
time.sleep(plan.get("sleep", 0))
sys.exit(plan.get("exit", 0))
"""


class AgentRunner:
    """The runner in agent mode with the fake CLI, started the way the pod starts it."""

    def __init__(self, tmp_path: Path, plan: dict[str, Any], **env: str) -> None:
        self.dir = tmp_path
        self.workdir = tmp_path / "work"
        self.workdir.mkdir(parents=True)
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        cli = bin_dir / "claude"
        cli.write_text(FAKE_CLI.format(python=sys.executable))
        cli.chmod(0o755)
        (tmp_path / "prompt").write_text("Fix the failing test.")
        (tmp_path / "plan.json").write_text(json.dumps(plan))
        self.record_path = tmp_path / "record.json"
        self.result_path = tmp_path / "result.json"
        self.env = {
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "PYTHONPATH": str(RUNNER_SOURCE),
            "LANG": "C.UTF-8",
            "HOME": str(self.workdir),
            "TMPDIR": str(self.workdir),
            "CODETASK_MODE": "agent",
            "CODETASK_PROMPT_FILE": str(tmp_path / "prompt"),
            "CODETASK_TIMEOUT_SECONDS": "30",
            "CODETASK_GRACE_SECONDS": "2",
            "CODETASK_WORKDIR": str(self.workdir),
            "CODETASK_RESULT_PATH": str(self.result_path),
            "ANTHROPIC_API_KEY": "sk-test-not-a-key",
            "REDIS_URL": "",
            "FAKE_PLAN": str(tmp_path / "plan.json"),
            "FAKE_RECORD": str(self.record_path),
            **env,
        }
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> AgentRunner:
        self.process = subprocess.Popen(
            [sys.executable, str(RUNNER_SOURCE / "bin/codetask-runner")],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        return self

    def wait(self) -> tuple[int, dict[str, Any], str]:
        """Exit code, result document, runner stdout (the pod log)."""
        assert self.process is not None
        out, err = self.process.communicate(timeout=30)
        result = json.loads(self.result_path.read_bytes())
        return self.process.returncode, result, out + err

    def run(self) -> tuple[int, dict[str, Any], str]:
        return self.start().wait()

    def record(self) -> dict[str, Any]:
        recorded: dict[str, Any] = json.loads(self.record_path.read_text())
        return recorded


def test_agent_runs_with_its_settings_as_flags_and_the_prompt_on_stdin(tmp_path: Path) -> None:
    runner = AgentRunner(
        tmp_path,
        {"lines": RECORDED["answer"]},
        CODETASK_AGENT_MODEL="sonnet",
        CODETASK_AGENT_PERMISSION_MODE="acceptEdits",
        CODETASK_AGENT_MAX_TURNS="5",
        CODETASK_AGENT_SYSTEM_PROMPT="Be brief.",
        CODETASK_AGENT_ALLOWED_TOOLS='["Bash(git diff:*)", "Edit"]',
        CODETASK_AGENT_DISALLOWED_TOOLS='["WebFetch"]',
        REDIS_URL="redis://127.0.0.1:1/0",
    )
    code, result, log = runner.run()
    record = runner.record()

    assert code == 0, log
    assert record["argv"] == [
        "--print",
        "--output-format",
        "stream-json",
        "--verbose",
        "--no-session-persistence",
        "--model",
        "sonnet",
        "--permission-mode",
        "acceptEdits",
        "--max-turns",
        "5",
        "--append-system-prompt",
        "Be brief.",
        "--allowedTools",
        "Bash(git diff:*)",
        "Edit",
        "--disallowedTools",
        "WebFetch",
    ]
    assert record["stdin"] == "Fix the failing test."
    assert record["cwd"] == str(runner.workdir)
    assert record["env"]["ANTHROPIC_API_KEY"] == "sk-test-not-a-key"
    assert record["env"]["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert "REDIS_URL" not in record["env"]
    assert (result["reason"], result["exitCode"], result["stdout"]) == (
        "Completed",
        0,
        "The answer is 42.",
    )
    assert result["agent"]["turns"] == 1
    assert result["agent"]["usage"]["outputTokens"] == 7
    assert "agent: The answer is 42.\n" in log


def test_the_task_may_override_the_clis_defaults(tmp_path: Path) -> None:
    runner = AgentRunner(
        tmp_path, {"lines": RECORDED["answer"]}, CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="0"
    )
    runner.run()
    assert runner.record()["env"]["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "0"


def test_refused_tool_and_max_turns_are_reported(tmp_path: Path) -> None:
    plan = {"lines": RECORDED["max_turns"], "exit": 1, "stderr": "Reached maximum number of turns"}
    code, result, _ = AgentRunner(tmp_path / "a", plan).run()
    assert (code, result["reason"]) == (1, "MaxTurns")
    assert "Reached maximum number of turns" in result["stderr"]

    code, result, log = AgentRunner(tmp_path / "b", {"lines": RECORDED["disallowed"]}).run()
    assert (code, result["reason"]) == (0, "Completed")
    assert result["agent"]["deniedTools"] == ["Bash"]
    assert "agent: tool call Bash denied: not an enabled tool" in log


def test_an_agent_that_dies_without_a_result_is_an_agent_error(tmp_path: Path) -> None:
    plan = {"lines": RECORDED["answer"][:1], "exit": 3, "stderr": "boom\n"}
    code, result, _ = AgentRunner(tmp_path, plan).run()
    assert (code, result["reason"], result["stderr"]) == (3, "AgentError", "boom\n")
    assert "without a result" in result["message"]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("rate_limited", "AgentUnavailable"),
        ("unreachable", "AgentUnavailable"),
        ("api_error", "AgentError"),
    ],
)
def test_a_busy_or_unreachable_api_is_agent_unavailable_a_refused_key_an_agent_error(
    tmp_path: Path, name: str, reason: str
) -> None:
    code, result, _ = AgentRunner(tmp_path, {"lines": RECORDED[name], "exit": 1}).run()
    assert (code, result["reason"]) == (1, reason)
    assert result["message"] == f"the agent reported an error: {RECORDED[name][-1]['result']}"


def test_deadline_stops_the_agent_and_keeps_what_it_did(tmp_path: Path) -> None:
    plan = {"lines": RECORDED["permission_denied"][:3], "sleep": 60}
    started = time.monotonic()
    code, result, _ = AgentRunner(tmp_path, plan, CODETASK_TIMEOUT_SECONDS="2").run()
    assert (code, result["reason"]) == (124, "DeadlineExceeded")
    assert time.monotonic() - started < 5
    assert (result["agent"]["turns"], result["agent"]["toolCalls"]) == (1, 1)
    assert result["stdout"] == "Let me run that."


def test_sigterm_stops_the_agent_and_reports_terminated(tmp_path: Path) -> None:
    runner = AgentRunner(tmp_path, {"lines": RECORDED["answer"][:1], "sleep": 60}).start()
    assert runner.process is not None
    deadline = time.monotonic() + 10
    while not runner.record_path.exists():
        assert time.monotonic() < deadline, "the fake CLI never started"
        time.sleep(0.05)
    runner.process.send_signal(signal.SIGTERM)
    code, result, _ = runner.wait()
    assert (code, result["reason"]) == (143, "Terminated")
    assert result["agent"]["sessionId"] == RECORDED["answer"][0]["session_id"]


def test_input_files_are_copied_into_the_workdir(tmp_path: Path) -> None:
    """Like a ConfigMap volume: keys are symlinks into a hidden ..data directory."""
    files = tmp_path / "files"
    (files / "..2026_11_23").mkdir(parents=True)
    (files / "..2026_11_23" / "app.py").write_text("print('hi')\n")
    (files / "..data").symlink_to("..2026_11_23")
    (files / "app.py").symlink_to("..data/app.py")
    runner = AgentRunner(
        tmp_path, {"lines": RECORDED["answer"]}, CODETASK_INPUT_FILES_DIR=str(files)
    )
    code, _, _ = runner.run()
    assert code == 0
    assert "app.py" in runner.record()["files"]
    copied = runner.workdir / "app.py"
    assert copied.read_text() == "print('hi')\n" and not copied.is_symlink()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"CODETASK_AGENT_CLI": "no-such-claude"},
            "no-such-claude (the Claude Code CLI) not found",
        ),
        ({"CODETASK_PROMPT_FILE": "/nonexistent/prompt"}, "cannot read the prompt file"),
        ({"CODETASK_AGENT_PERMISSION_MODE": "yolo"}, "CODETASK_AGENT_PERMISSION_MODE: must be"),
        ({"CODETASK_AGENT_MAX_TURNS": "0"}, "CODETASK_AGENT_MAX_TURNS: must be an integer >= 1"),
        ({"CODETASK_AGENT_ALLOWED_TOOLS": "Bash"}, "CODETASK_AGENT_ALLOWED_TOOLS: not valid JSON"),
        ({"ANTHROPIC_API_KEY": ""}, "ANTHROPIC_API_KEY: empty"),
        ({"CODETASK_INPUT_FILES_DIR": "/nonexistent"}, "spec.agent.inputConfigMap is missing"),
    ],
)
def test_what_keeps_the_agent_from_starting_is_a_start_error(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    code, result, log = AgentRunner(tmp_path, {"lines": []}, **env).run()
    assert (code, result["reason"]) == (127, "StartError")
    assert message in result["message"], result["message"]
    assert f"codetask-runner: {result['message']}" in log
