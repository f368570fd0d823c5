"""The Job manifest built for an attempt: names, labels, inputs, resources and pod security."""

import json
import re
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from codetask_operator import api, jobs
from codetask_operator.settings import Settings

pytestmark = pytest.mark.unit

UID = "6f1c2b9e-0d4a-4c1e-9b7a-2f3e4d5c6b7a"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def settings(**overrides: Any) -> Settings:
    return Settings.model_validate(overrides)


def code_spec(**fields: Any) -> api.CodeTaskSpec:
    return api.CodeTaskSpec.model_validate({"language": "python", "code": "print(1)", **fields})


def agent_spec(**agent: Any) -> api.CodeTaskSpec:
    return api.CodeTaskSpec.model_validate(
        {
            "prompt": "Fix the failing test.",
            "agent": {"apiKeySecretRef": {"name": "model-key", "key": "api-key"}, **agent},
        }
    )


REDIS = jobs.RedisAccess("redis://task-user:pw@redis:6379/0", "codetask:team-a:hello:uid:1")


def build(
    spec: api.CodeTaskSpec | None = None, redis: jobs.RedisAccess | None = None, **overrides: Any
) -> dict[str, Any]:
    return jobs.build_job(
        "hello", UID, "team-a", spec or code_spec(), 1, settings(**overrides), redis
    )


def pod_spec(job: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = job["spec"]["template"]["spec"]
    return spec


def container(job: dict[str, Any]) -> dict[str, Any]:
    only: dict[str, Any] = pod_spec(job)["containers"][0]
    return only


def env(job: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(job)["env"]}


@pytest.mark.parametrize(
    ("name", "attempt", "expected"),
    [
        ("hello", 1, "hello-5f3d1c7d6b-1"),
        ("hello", 11, "hello-5f3d1c7d6b-11"),
        ("my.task.v2", 1, "my-task-v2-5f3d1c7d6b-1"),
        ("x" * 253, 3, "x" * 39 + "-5f3d1c7d6b-3"),
        ("a" * 38 + "-bc", 1, "a" * 38 + "-5f3d1c7d6b-1"),
        ("---", 1, "task-5f3d1c7d6b-1"),
    ],
)
def test_job_names_are_deterministic_short_dns_labels(
    name: str, attempt: int, expected: str
) -> None:
    digest = jobs.job_name("any", UID, 1).split("-")[1]
    expected = expected.replace("5f3d1c7d6b", digest)
    assert jobs.job_name(name, UID, attempt) == expected
    assert len(expected) <= 52 and DNS_LABEL.match(expected)


@given(
    name=st.text(min_size=1, max_size=300),
    uid=st.uuids().map(str),
    attempt=st.integers(min_value=1, max_value=api.MAX_RETRIES + 1),
)
def test_any_name_gives_a_valid_job_name_and_labels(name: str, uid: str, attempt: int) -> None:
    job_name = jobs.job_name(name, uid, attempt)
    assert len(job_name) <= jobs.JOB_NAME_MAX and DNS_LABEL.match(job_name)
    assert jobs.job_name(name, uid, attempt) == job_name
    for value in jobs.labels_for(name, uid, attempt).values():
        assert len(value) <= 63 and LABEL_VALUE.match(value)


@given(uids=st.lists(st.uuids().map(str), min_size=2, max_size=2, unique=True))
def test_recreated_tasks_with_the_same_name_get_different_jobs(uids: list[str]) -> None:
    assert jobs.job_name("same", uids[0], 1) != jobs.job_name("same", uids[1], 1)


def test_long_task_names_are_hashed_in_labels_short_ones_kept() -> None:
    assert jobs.labels_for("hello", UID)[jobs.LABEL_TASK] == "hello"
    long_name = "a" * 100
    hashed = jobs.labels_for(long_name, UID)[jobs.LABEL_TASK]
    assert len(hashed) <= 63 and hashed.startswith("a" * 52 + "-")
    assert hashed != jobs.labels_for("a" * 101, UID)[jobs.LABEL_TASK]


def test_job_and_pod_carry_task_labels_and_the_job_the_specs_labels() -> None:
    job = build(code_spec(labels={"team": "ml", "tier": "batch"}))
    expected = {
        "app.kubernetes.io/managed-by": "codetask-operator",
        "codetask.dev/task": "hello",
        "codetask.dev/task-uid": UID,
        "codetask.dev/attempt": "1",
    }
    assert job["metadata"]["labels"] == {**expected, "team": "ml", "tier": "batch"}
    assert job["spec"]["template"]["metadata"]["labels"] == {
        **expected,
        "codetask.dev/mode": "code",
    }
    agent_labels = build(agent_spec())["spec"]["template"]["metadata"]["labels"]
    assert agent_labels["codetask.dev/mode"] == "agent"
    assert jobs.labels_for("hello", UID) == {
        k: v for k, v in expected.items() if k != "codetask.dev/attempt"
    }


@pytest.mark.parametrize(
    ("allowed", "on_pod"),
    [
        ([], {}),
        (["team"], {"team": "ml"}),
        (["team", "example.com/tier"], {"team": "ml", "example.com/tier": "batch"}),
        (["other"], {}),
    ],
    ids=["none-by-default", "one-key", "two-keys", "allowed-key-not-set"],
)
def test_spec_labels_reach_the_pod_only_for_allowed_keys(
    allowed: list[str], on_pod: dict[str, str]
) -> None:
    # A Service or NetworkPolicy selecting `app: web` must not pick up a task that says so.
    asked = {"team": "ml", "example.com/tier": "batch", "app": "web"}
    job = build(code_spec(labels=asked), pod_label_keys=allowed)
    pod_labels = job["spec"]["template"]["metadata"]["labels"]
    assert {k: v for k, v in pod_labels.items() if k in asked} == on_pod
    assert pod_labels[jobs.LABEL_MODE] == "code" and pod_labels[jobs.LABEL_TASK_UID] == UID
    assert asked.items() <= job["metadata"]["labels"].items()


def test_job_is_owned_and_controlled_by_its_codetask() -> None:
    job = build()
    assert job["metadata"]["namespace"] == "team-a"
    assert job["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "codetask.dev/v1alpha1",
            "kind": "CodeTask",
            "name": "hello",
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def test_one_pod_per_attempt_with_the_task_deadline() -> None:
    job = build(code_spec(timeout_seconds=3))
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 3
    assert pod_spec(job)["restartPolicy"] == "Never"
    assert pod_spec(job)["terminationGracePeriodSeconds"] == 10


def test_code_and_stdin_travel_as_annotations_mounted_read_only() -> None:
    job = build(code_spec(code="print(input())", stdin="4\n"))
    assert job["spec"]["template"]["metadata"]["annotations"] == {
        "codetask.dev/code": "print(input())",
        "codetask.dev/stdin": "4\n",
    }
    [volume] = [v for v in pod_spec(job)["volumes"] if v["name"] == "input"]
    assert volume["downwardAPI"]["items"] == [
        {"path": "code", "fieldRef": {"fieldPath": "metadata.annotations['codetask.dev/code']"}},
        {"path": "stdin", "fieldRef": {"fieldPath": "metadata.annotations['codetask.dev/stdin']"}},
    ]
    assert {"name": "input", "mountPath": "/codetask/input", "readOnly": True} in container(job)[
        "volumeMounts"
    ]
    assert env(job)["CODETASK_STDIN_FILE"] == "/codetask/input/stdin"


def test_without_stdin_there_is_no_stdin_file() -> None:
    job = build()
    assert "codetask.dev/stdin" not in job["spec"]["template"]["metadata"]["annotations"]
    assert "CODETASK_STDIN_FILE" not in env(job)


def test_runner_environment_follows_the_contract() -> None:
    job = build(
        code_spec(args=["a b", "c"], output_limit_bytes=100),
        redis=REDIS,
        grace_seconds=7,
        redis_url="redis://:operator-secret@redis:6379/0",
    )
    assert env(job) == {
        "CODETASK_NAMESPACE": "team-a",
        "CODETASK_NAME": "hello",
        "CODETASK_ATTEMPT": "1",
        "POD_NAME": {"fieldRef": {"fieldPath": "metadata.name"}},
        "NODE_NAME": {"fieldRef": {"fieldPath": "spec.nodeName"}},
        "CODETASK_TIMEOUT_SECONDS": "300",
        "CODETASK_WORKDIR": "/scratch",
        "HOME": "/scratch",
        "TMPDIR": "/scratch",
        "CODETASK_LANGUAGE": "python",
        "CODETASK_CODE_FILE": "/codetask/input/code",
        "CODETASK_ARGS": json.dumps(["a b", "c"]),
        "CODETASK_OUTPUT_LIMIT_BYTES": "100",
        "CODETASK_GRACE_SECONDS": "7",
        "CODETASK_RESULT_PATH": "/dev/termination-log",
        "CODETASK_HEARTBEAT_INTERVAL": "10",
        "CODETASK_HEARTBEAT_TTL": "30",
        "REDIS_URL": "redis://task-user:pw@redis:6379/0",
        "CODETASK_REDIS_PREFIX": "codetask:team-a:hello:uid:1",
    }
    assert container(job)["terminationMessagePath"] == "/dev/termination-log"
    assert container(job)["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert "operator-secret" not in json.dumps(job)  # the operator's own credential never


def test_user_env_follows_with_values_and_references() -> None:
    job = build(
        code_spec(
            env=[
                {"name": "GREETING", "value": "hi"},
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "t"}}},
                {
                    "name": "MODE",
                    "valueFrom": {"configMapKeyRef": {"name": "c", "key": "m", "optional": True}},
                },
            ]
        )
    )
    assert container(job)["env"][-3:] == [
        {"name": "GREETING", "value": "hi"},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "t"}}},
        {
            "name": "MODE",
            "valueFrom": {"configMapKeyRef": {"name": "c", "key": "m", "optional": True}},
        },
    ]


def test_runner_image_and_pull_policy_come_from_settings() -> None:
    job = build(runner_image="registry.local/runner:1", image_pull_policy="Never")
    assert container(job)["image"] == "registry.local/runner:1"
    assert container(job)["imagePullPolicy"] == "Never"
    assert "command" not in container(job)
    assert pod_spec(job)["dnsPolicy"] == "ClusterFirst"
    assert pod_spec(build(pod_dns_policy="Default"))["dnsPolicy"] == "Default"


def test_custom_image_runs_the_command_directly_without_runner_inputs() -> None:
    spec = api.CodeTaskSpec(image="busybox:1.36", command=["sh", "-c"], args=["echo hi"])
    job = build(spec)
    assert container(job)["image"] == "busybox:1.36"
    assert container(job)["command"] == ["sh", "-c"]
    assert container(job)["args"] == ["echo hi"]
    assert "annotations" not in job["spec"]["template"]["metadata"]
    assert [v["name"] for v in pod_spec(job)["volumes"]] == ["scratch"]
    assert not {"CODETASK_CODE_FILE", "REDIS_URL", "CODETASK_LANGUAGE"} & set(
        env(build(spec, REDIS, redis_url="redis://r"))
    )
    assert container(job)["securityContext"] == container(build())["securityContext"]


@pytest.mark.parametrize(
    ("asked", "requests", "limits"),
    [
        (
            {},
            {"cpu": "100m", "memory": "128Mi", "ephemeral-storage": "64Mi"},
            {"cpu": "1", "memory": "512Mi", "ephemeral-storage": "1Gi"},
        ),
        (
            {"requests": {"cpu": "250m"}, "limits": {"memory": "1Gi"}},
            {"cpu": "250m", "memory": "128Mi", "ephemeral-storage": "64Mi"},
            {"cpu": "1", "memory": "1Gi", "ephemeral-storage": "1Gi"},
        ),
        (
            {"requests": {"memory": "2Gi", "cpu": 2}},
            {"cpu": "2", "memory": "2Gi", "ephemeral-storage": "64Mi"},
            {"cpu": "2", "memory": "2Gi", "ephemeral-storage": "1Gi"},
        ),
        (
            {"limits": {"memory": "64Mi", "ephemeral-storage": "32Mi"}},
            {"cpu": "100m", "memory": "64Mi", "ephemeral-storage": "32Mi"},
            {"cpu": "1", "memory": "64Mi", "ephemeral-storage": "32Mi"},
        ),
    ],
    ids=["defaults", "merge", "request-raises-default-limit", "limit-lowers-default-request"],
)
def test_resources_merge_the_task_over_the_defaults_and_always_set_limits(
    asked: dict[str, Any], requests: dict[str, str], limits: dict[str, str]
) -> None:
    job = build(code_spec(resources=asked))
    assert container(job)["resources"] == {"requests": requests, "limits": limits}
    [scratch] = [v for v in pod_spec(job)["volumes"] if v["name"] == "scratch"]
    assert scratch["emptyDir"] == {"sizeLimit": limits["ephemeral-storage"]}


def test_scratch_is_the_only_writable_path() -> None:
    job = build()
    assert container(job)["securityContext"]["readOnlyRootFilesystem"] is True
    writable = [m for m in container(job)["volumeMounts"] if not m.get("readOnly")]
    assert writable == [{"name": "scratch", "mountPath": "/scratch"}]


# Pod Security Standards, "restricted" profile (v1.20+ rules), checked field by field.
PSS_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
    "persistentVolumeClaim", "projected", "secret",
}  # fmt: skip


@pytest.mark.parametrize(
    "spec",
    [
        code_spec(stdin="x"),
        api.CodeTaskSpec(image="busybox", command=["true"]),
        agent_spec(inputConfigMap="files"),
    ],
    ids=["code", "custom-image", "agent"],
)
def test_pod_meets_the_restricted_pod_security_standard(spec: api.CodeTaskSpec) -> None:
    job = build(spec)
    pod = pod_spec(job)
    annotations = job["spec"]["template"]["metadata"].get("annotations", {})
    # Host namespaces, host ports, hostPath and other volume types
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    assert all(set(v) - {"name"} <= PSS_VOLUME_TYPES for v in pod["volumes"])
    # Pod-level: non-root, seccomp, no sysctls, no SELinux/AppArmor overrides
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] != 0
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "sysctls" not in security and "seLinuxOptions" not in security
    assert not any(key.startswith("container.apparmor.security.beta") for key in annotations)
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    for c in pod["containers"] + pod.get("initContainers", []):
        context = c["securityContext"]
        assert context["privileged"] is False
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["runAsNonRoot"] is True
        assert context.get("runAsUser", 1) != 0
        assert "procMount" not in context and "seLinuxOptions" not in context
        assert not any(p.get("hostPort") for p in c.get("ports", []))
        assert set(c["resources"]["limits"]) == {"cpu", "memory", "ephemeral-storage"}


def test_built_job_is_plain_json_data() -> None:
    job = build()
    assert json.loads(json.dumps(job)) == job


def test_job_for_a_new_uuid_is_distinct_per_attempt() -> None:
    uid = str(uuid.uuid4())
    names = {jobs.job_name("t", uid, attempt) for attempt in range(1, 12)}
    assert len(names) == 11


# --- agent tasks ------------------------------------------------------------------------------


def test_agent_task_runs_the_agent_image_with_the_prompt_as_a_file() -> None:
    job = build(agent_spec(), agent_image="registry.local/agent:1")
    assert container(job)["image"] == "registry.local/agent:1"
    assert "command" not in container(job)
    assert job["spec"]["template"]["metadata"]["annotations"] == {
        "codetask.dev/prompt": "Fix the failing test."
    }
    [volume] = [v for v in pod_spec(job)["volumes"] if v["name"] == "input"]
    assert volume["downwardAPI"]["items"] == [
        {
            "path": "prompt",
            "fieldRef": {"fieldPath": "metadata.annotations['codetask.dev/prompt']"},
        }
    ]
    assert env(job)["CODETASK_PROMPT_FILE"] == "/codetask/input/prompt"


def test_agent_key_comes_from_the_secret_and_settings_from_the_spec() -> None:
    job = build(
        agent_spec(
            model="sonnet",
            allowedTools=["Read", "Bash(npm test:*)"],
            disallowedTools=["WebFetch"],
            permissionMode="acceptEdits",
            maxTurns=8,
            systemPrompt="Be brief.",
        ),
        REDIS,
    )
    variables = env(job)
    assert variables["ANTHROPIC_API_KEY"] == {
        "secretKeyRef": {"name": "model-key", "key": "api-key"}
    }
    assert {k: v for k, v in variables.items() if k.startswith("CODETASK_AGENT_")} == {
        "CODETASK_AGENT_PROVIDER": "claude",
        "CODETASK_AGENT_MODEL": "sonnet",
        "CODETASK_AGENT_ALLOWED_TOOLS": json.dumps(["Read", "Bash(npm test:*)"]),
        "CODETASK_AGENT_DISALLOWED_TOOLS": json.dumps(["WebFetch"]),
        "CODETASK_AGENT_PERMISSION_MODE": "acceptEdits",
        "CODETASK_AGENT_MAX_TURNS": "8",
        "CODETASK_AGENT_SYSTEM_PROMPT": "Be brief.",
    }
    assert variables["CODETASK_MODE"] == "agent"
    assert variables["REDIS_URL"] == REDIS.url
    assert variables["CODETASK_TIMEOUT_SECONDS"] == "300"
    assert variables["CODETASK_RESULT_PATH"] == "/dev/termination-log"
    assert "CODETASK_LANGUAGE" not in variables and "CODETASK_CODE_FILE" not in variables


def test_agent_settings_left_unset_are_not_passed() -> None:
    variables = env(build(agent_spec()))
    assert {k for k in variables if k.startswith("CODETASK_AGENT_")} == {"CODETASK_AGENT_PROVIDER"}
    assert "CODETASK_INPUT_FILES_DIR" not in variables


def test_agent_input_config_map_is_mounted_optional_and_read_only() -> None:
    job = build(agent_spec(inputConfigMap="files"))
    [volume] = [v for v in pod_spec(job)["volumes"] if v["name"] == "files"]
    assert volume["configMap"] == {"name": "files", "optional": True, "defaultMode": 0o444}
    assert {"name": "files", "mountPath": "/codetask/files", "readOnly": True} in container(job)[
        "volumeMounts"
    ]
    assert env(job)["CODETASK_INPUT_FILES_DIR"] == "/codetask/files"
    writable = [m for m in container(job)["volumeMounts"] if not m.get("readOnly")]
    assert writable == [{"name": "scratch", "mountPath": "/scratch"}]
