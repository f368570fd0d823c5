"""Admission: every bad spec is refused with a message naming its field; good specs pass."""

from typing import Any

import pytest

from codetask_operator import admission, api
from codetask_operator.settings import Settings

pytestmark = pytest.mark.unit

SETTINGS = Settings.model_validate({"allowed_images": ["busybox:*", "registry.local/tools/*"]})
CODE = {"language": "python", "code": "print(1)"}
IMAGE = {"image": "busybox:1.36", "command": ["sh", "-c", "echo hi"]}
KEY = {"name": "model-key", "key": "api-key"}
AGENT = {"prompt": "Fix the failing test.", "agent": {"apiKeySecretRef": KEY}}


def code(**fields: Any) -> dict[str, Any]:
    return {**CODE, **fields}


def agent(**fields: Any) -> dict[str, Any]:
    return {**AGENT, "agent": {**AGENT["agent"], **fields}}


@pytest.mark.parametrize(
    "spec",
    [
        CODE,
        code(stdin="", args=["-v"], env=[{"name": "A", "value": ""}]),
        code(resources={"requests": {"cpu": "500m", "memory": 1073741824}, "limits": {"cpu": 1}}),
        code(labels={"team": "ml", "example.com/tier": "batch"}),
        code(retries=3, retryPolicy=["NonZeroExit", "OOMKilled"], cancel=True),
        code(code="é" * 64 * 1024, stdin="x" * 60 * 1024),
        IMAGE,
        {"image": "registry.local/tools/jq:1", "command": ["jq"], "args": ["."]},
        AGENT,
        {
            **agent(
                model="claude-sonnet-4-5",
                allowedTools=["Read", "Edit", "Bash(npm test:*)", "mcp__github__get_issue"],
                disallowedTools=["WebFetch"],
                permissionMode="acceptEdits",
                maxTurns=20,
                systemPrompt="Be brief.",
                inputConfigMap="repo-files",
            ),
            "env": [{"name": "ANTHROPIC_BASE_URL", "value": "http://gateway:8080"}],
            "timeoutSeconds": 600,
        },
    ],
    ids=lambda spec: (
        ",".join(sorted(spec)) + ("+" + ",".join(sorted(spec["agent"])) if "agent" in spec else "")
    ),
)
def test_good_specs_pass(spec: dict[str, Any]) -> None:
    assert admission.validate(spec, SETTINGS) == []


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (code(timeoutSeconds=0), "spec.timeoutSeconds: must be ≥ 1"),
        (code(timeoutSeconds=86401), "spec.timeoutSeconds: must be ≤ 86400"),
        (code(language="ruby"), "spec.language: must be one of"),
        (code(retries=11), "spec.retries: must be ≤ 10"),
        (code(retryPolicy=["InvalidSpec"]), "spec.retryPolicy[0]: InvalidSpec is never retried"),
        (code(outputLimitBytes=10**6), "spec.outputLimitBytes: must be ≤ 262144"),
        (code(env=[{"value": "x"}]), "spec.env[0].name: required"),
        (code(resources={"limits": {"cpu": "lots"}}), "spec.resources.limits.cpu: 'lots' is not"),
        ({}, "spec.code: required (with spec.language), or spec.command with spec.image"),
        ({**CODE, **IMAGE}, "spec.code: set either code or command, not both"),
        ({"code": "print(1)"}, "spec.language: required with spec.code"),
        (code(image="python:3"), "spec.image: only used with spec.command"),
        ({"command": ["true"]}, "spec.image: required with spec.command"),
        ({**IMAGE, "image": "evil.io/miner"}, "spec.image: 'evil.io/miner' is not allowed"),
        ({**IMAGE, "language": "sh"}, "spec.language: only used with spec.code"),
        ({**IMAGE, "stdin": "x"}, "spec.stdin: only used with spec.code"),
        (
            code(env=[{"name": "CODETASK_NAME", "value": "x"}]),
            "spec.env[0].name: CODETASK_NAME is reserved",
        ),
        (code(env=[{"name": "HOME", "value": "/"}]), "spec.env[0].name: HOME is reserved"),
        (
            code(env=[{"name": "REDIS_URL", "value": "x"}]),
            "spec.env[0].name: REDIS_URL is reserved",
        ),
        (
            code(env=[{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]),
            "spec.env[1].name: A is already set by spec.env[0]",
        ),
        (
            code(
                env=[
                    {
                        "name": "A",
                        "value": "1",
                        "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}},
                    }
                ]
            ),
            "spec.env[0]: set value or valueFrom, not both",
        ),
        (code(env=[{"name": "A", "valueFrom": {}}]), "spec.env[0].valueFrom: set exactly one of"),
        (
            code(resources={"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}),
            "spec.resources.requests.memory: 2Gi exceeds the limit 1Gi",
        ),
        (
            code(resources={"limits": {"cpu": 0}}),
            "spec.resources.limits.cpu: must be greater than 0",
        ),
        (code(code="é" * 100 * 1024), "spec.code: code and stdin take 204817 bytes"),
        (code(args=["\u0001" * 4096] * 2), "spec.args: 49160 bytes as JSON; at most 32768"),
        (code(labels={"codetask.dev/task": "x"}), "spec.labels: 'codetask.dev/task' is reserved"),
        (code(labels={"job-name": "x"}), "spec.labels: 'job-name' is reserved"),
        (code(labels={"bad key": "x"}), "spec.labels: 'bad key' is not a valid label key"),
        (
            code(labels={"Example.com/x": "y"}),
            "spec.labels: 'Example.com/x' is not a valid label key",
        ),
        ({"agent": AGENT["agent"]}, "spec.prompt: required with spec.agent"),
        ({**AGENT, "prompt": "  \n"}, "spec.prompt: required with spec.agent"),
        ({"prompt": "x", "agent": {}}, "spec.agent.apiKeySecretRef: required"),
        (agent(apiKeySecretRef={"name": "k"}), "spec.agent.apiKeySecretRef.key: required"),
        ({**AGENT, **CODE}, "spec.code: not used with spec.agent"),
        ({**AGENT, "language": "python"}, "spec.language: not used with spec.agent"),
        ({**AGENT, **IMAGE}, "spec.command: not used with spec.agent"),
        ({**AGENT, "args": ["-v"]}, "spec.args: not used with spec.agent"),
        (
            {**AGENT, "env": [{"name": "ANTHROPIC_API_KEY", "value": "sk-..."}]},
            "spec.env[0].name: ANTHROPIC_API_KEY is set from spec.agent.apiKeySecretRef",
        ),
        (agent(provider="gpt"), "spec.agent.provider: must be one of"),
        (agent(permissionMode="yolo"), "spec.agent.permissionMode: must be one of"),
        (agent(maxTurns=0), "spec.agent.maxTurns: must be ≥ 1"),
        (agent(allowedTools=["Bash --evil"]), "spec.agent.allowedTools[0]: must match"),
        (agent(disallowedTools=["-x"]), "spec.agent.disallowedTools[0]: must match"),
        (agent(systemPrompt="x" * 20000), "spec.agent.systemPrompt: must have at most 16384"),
        ({**AGENT, "prompt": "x" * 40000}, "spec.prompt: must have at most 32768"),
    ],
)
def test_bad_specs_are_refused_naming_the_field(spec: dict[str, Any], expected: str) -> None:
    errors = admission.validate(spec, SETTINGS)
    assert any(error.startswith(expected) for error in errors), errors


def test_custom_images_are_refused_when_no_image_is_allowed() -> None:
    errors = admission.validate(IMAGE, Settings.model_validate({"allowed_images": []}))
    assert errors == ["spec.image: custom images are disabled on this cluster"]


def test_all_problems_are_reported_at_once() -> None:
    spec = {"command": ["x"], "env": [{"name": "HOME", "value": "1"}], "labels": {"job-name": "j"}}
    assert len(admission.validate(spec, SETTINGS)) == 3


STORED = api.CodeTaskSpec.model_validate(CODE).model_dump(mode="json", exclude_none=True)


@pytest.mark.parametrize(
    "change",
    [{"cancel": True}, {"priority": 5}, {"ttlSecondsAfterFinished": 60}, {}],
)
def test_updates_may_cancel_reprioritise_or_change_ttl(change: dict[str, Any]) -> None:
    assert admission.validate_update(STORED, {**STORED, **change}, SETTINGS) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"code": "print(2)"}, "spec.code: cannot change after creation"),
        ({"timeoutSeconds": 5}, "spec.timeoutSeconds: cannot change after creation"),
        ({"labels": {"a": "b"}}, "spec.labels: cannot change after creation"),
        ({"stdin": "x"}, "spec.stdin: cannot change after creation"),
    ],
)
def test_other_spec_changes_are_refused(change: dict[str, Any], expected: str) -> None:
    errors = admission.validate_update(STORED, {**STORED, **change}, SETTINGS)
    assert len(errors) == 1 and errors[0].startswith(expected)


def test_cancel_cannot_be_taken_back() -> None:
    cancelled = {**STORED, "cancel": True}
    assert admission.validate_update(cancelled, STORED, SETTINGS) == [
        "spec.cancel: cannot be unset once true"
    ]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (code(priority=101), ["spec.priority: 101 is above the highest allowed (100)"]),
        (
            code(resources={"limits": {"memory": "8Gi"}}),
            ["spec.resources.limits.memory: 8Gi is above the cap 2Gi"],
        ),
        (
            # A request alone would raise the pod's limit to it: capped too.
            code(resources={"requests": {"cpu": "4500m"}}),
            ["spec.resources.requests.cpu: 4500m is above the cap 4"],
        ),
        (
            code(resources={"requests": {"ephemeral-storage": 5 * 2**30}}),
            ["spec.resources.requests.ephemeral-storage: 5368709120 is above the cap 4Gi"],
        ),
        (
            code(priority=1000, resources={"limits": {"cpu": 8, "memory": "3G"}}),
            [
                "spec.priority: 1000 is above the highest allowed (100)",
                "spec.resources.limits.cpu: 8 is above the cap 4",
                "spec.resources.limits.memory: 3G is above the cap 2Gi",
            ],
        ),
        ({**IMAGE, "priority": 500}, ["spec.priority: 500 is above the highest allowed (100)"]),
        (agent() | {"resources": {"limits": {"memory": "4Gi"}}}, ["spec.resources.limits.memory"]),
    ],
    ids=[
        "priority",
        "memory-limit",
        "cpu-request",
        "disk-request",
        "all-at-once",
        "image",
        "agent",
    ],
)
def test_priority_and_resources_above_the_caps_are_refused_naming_field_and_cap(
    spec: dict[str, Any], expected: list[str]
) -> None:
    errors = admission.validate(spec, SETTINGS)
    assert len(errors) == len(expected)
    assert all(e.startswith(x) for e, x in zip(errors, expected, strict=True)), errors


@pytest.mark.parametrize(
    "spec",
    [
        code(priority=100),
        code(priority=-1000),
        code(resources={"requests": {"cpu": "4", "memory": "2Gi"}, "limits": {"cpu": "4000m"}}),
        code(resources={"limits": {"memory": 2**31, "ephemeral-storage": "4Gi"}}),
    ],
    ids=["priority-at-cap", "lowest-priority", "cpu-and-memory-at-cap", "memory-bytes-at-cap"],
)
def test_amounts_at_the_caps_pass(spec: dict[str, Any]) -> None:
    assert admission.validate(spec, SETTINGS) == []


def test_caps_come_from_the_settings() -> None:
    generous = Settings.model_validate({"max_priority": 1000, "max_memory": "64Gi"})
    spec = code(priority=1000, resources={"limits": {"memory": "32Gi"}})
    assert admission.validate(spec, generous) == []
    strict = Settings.model_validate({"max_priority": 0, "max_cpu": "1"})
    assert admission.validate(code(priority=1, resources={"requests": {"cpu": 2}}), strict) == [
        "spec.priority: 1 is above the highest allowed (0)",
        "spec.resources.requests.cpu: 2 is above the cap 1",
    ]


@pytest.mark.parametrize(
    ("old", "new", "refused"),
    [
        (0, 100, False),
        (0, 101, True),
        (5, 1000, True),
        # Created under a higher cap: lowering it, or leaving it as it is, is not refused.
        (500, 500, False),
        (500, 50, False),
    ],
)
def test_raising_priority_above_the_cap_is_refused(old: int, new: int, refused: bool) -> None:
    errors = admission.validate_update(
        {**STORED, "priority": old}, {**STORED, "priority": new}, SETTINGS
    )
    assert errors == (
        [f"spec.priority: {new} is above the highest allowed (100)"] if refused else []
    )


@pytest.mark.parametrize(
    ("pattern", "image", "allowed"),
    [
        ("registry.local/*", "registry.local/jq:1", True),
        ("registry.local/*", "registry.local/evil/x", False),
        ("registry.local/*", "registry.local/evil/x:1", False),
        ("registry.local/tools/*", "registry.local/tools/jq@sha256:abc", True),
        ("registry.local/tools/*", "registry.local/tools/../../evil", False),
        ("registry.local/**", "registry.local/team/sub/jq:1", True),
        ("registry.local/**", "registry.localhost/jq", False),
        ("registry.local/team-*/tool:*", "registry.local/team-a/tool:1", True),
        ("registry.local/team-*/tool:*", "registry.local/team-a/b/tool:1", False),
        ("busybox:*", "busybox:1.36", True),
        ("busybox:*", "busybox:1.36/x", False),
        ("busybox:1.3?", "busybox:1.36", True),
        ("busybox:1.3?", "busybox:1.3/", False),
        ("*", "busybox", True),
        ("*", "docker.io/library/busybox", False),
        ("**", "docker.io/library/busybox", True),
        ("codetask-*", "codetask-runner:dev", True),
        ("registry.local/jq", "registry.local/jq", True),
        ("registry.local/jq", "registry.local/jq:latest", False),
        # Regex and fnmatch specials other than * and ? are literal.
        ("registry.local/a.b", "registry.local/axb", False),
        ("registry.local/a+", "registry.local/aa", False),
        ("Busybox:*", "busybox:1", False),
    ],
)
def test_image_patterns_star_stays_within_a_path_segment(
    pattern: str, image: str, allowed: bool
) -> None:
    assert admission.image_matches(image, pattern) is allowed
    errors = admission.validate(
        {"image": image, "command": ["true"]},
        Settings.model_validate({"allowed_images": [pattern]}),
    )
    assert (errors == []) is allowed, errors


FINISHED = {"codetask.dev/finished": "true"}


@pytest.mark.parametrize(
    ("labels", "old", "phase", "refused"),
    [
        (FINISHED, None, None, True),  # created with it: never run
        (FINISHED, {}, "Running", True),  # given it while running: never finished
        (FINISHED, {"app": "x"}, "Queued", True),
        (FINISHED, {}, "Succeeded", False),  # the operator's own label
        (FINISHED, {}, "Cancelled", False),
        (FINISHED, FINISHED, "Running", False),  # already there: not this update's doing
        ({"app": "x"}, {}, "Running", False),
        ({}, FINISHED, "Running", False),  # removed: the task comes back into the watch
    ],
)
def test_the_finished_label_is_refused_on_a_task_not_finished(
    labels: dict[str, str], old: dict[str, str] | None, phase: str | None, refused: bool
) -> None:
    status = {"phase": phase} if phase else {}
    error = admission.finished_label(labels, old, status)
    assert (error is not None) == refused
    if refused:
        assert error and error.startswith("metadata.labels[codetask.dev/finished]")


@pytest.mark.parametrize(
    ("labels", "old", "new", "refused"),
    [
        (FINISHED, {"ttlSecondsAfterFinished": 60}, {"ttlSecondsAfterFinished": 600}, False),
        (FINISHED, {"ttlSecondsAfterFinished": 60}, {}, False),  # the default: a week
        (FINISHED, {"ttlSecondsAfterFinished": 60}, {"ttlSecondsAfterFinished": 60}, False),
        (FINISHED, {"ttlSecondsAfterFinished": 600}, {"ttlSecondsAfterFinished": 60}, True),
        (FINISHED, {}, {"ttlSecondsAfterFinished": 60}, True),
        ({}, {"ttlSecondsAfterFinished": 600}, {"ttlSecondsAfterFinished": 60}, False),  # watched
    ],
)
def test_a_task_out_of_the_watch_may_only_keep_its_ttl_or_make_it_longer(
    labels: dict[str, str], old: dict[str, Any], new: dict[str, Any], refused: bool
) -> None:
    error = admission.finished_ttl(old, new, labels, Settings())
    assert (error is not None) == refused
    if refused:
        assert error and error.startswith("spec.ttlSecondsAfterFinished: ")


def test_without_a_default_ttl_a_task_out_of_the_watch_may_drop_its_own() -> None:
    settings = Settings(default_ttl_seconds_after_finished=None)
    assert admission.finished_ttl({"ttlSecondsAfterFinished": 5}, {}, FINISHED, settings) is None
    assert admission.finished_ttl({}, {"ttlSecondsAfterFinished": 5}, FINISHED, settings)
