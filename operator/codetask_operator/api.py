"""The CodeTask API, codetask.dev/v1alpha1: the one source of truth.

`crd.py` turns these models into the CRD schema, and the field descriptions become `kubectl explain`
text. Rules the schema can express live here; cross-field rules live in `admission.py`.

Size limits: the code and stdin travel to the pod as annotations (all annotations of an object share
256 KiB), so the schema caps `code` at 128 Ki and `stdin` at 64 Ki characters and admission caps
both together at 192 KiB of UTF-8.
"""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel
from pydantic_core import ErrorDetails

from codetask_operator import quantity

GROUP: Final = "codetask.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "CodeTask"
PLURAL: Final = "codetasks"
POOL_KIND: Final = "CodeTaskPool"
POOL_PLURAL: Final = "codetaskpools"

KIB: Final = 1024
CODE_MAX_LENGTH: Final = 128 * KIB
STDIN_MAX_LENGTH: Final = 64 * KIB
INPUT_MAX_BYTES: Final = 192 * KIB
"""Code and stdin together: UTF-8 bytes plus annotation keys, leaving 64 KiB for others."""
ARGS_MAX_BYTES: Final = 32 * KIB
"""`args` as JSON: it travels in one environment variable (Linux caps one at 128 KiB)."""
PROMPT_MAX_LENGTH: Final = 32 * KIB
SYSTEM_PROMPT_MAX_LENGTH: Final = 16 * KIB
"""`agent.systemPrompt` travels in one environment variable."""
AGENT_MAX_TURNS: Final = 1000
OUTPUT_LIMIT_DEFAULT: Final = 16 * KIB
OUTPUT_LIMIT_MAX: Final = 256 * KIB
TIMEOUT_DEFAULT: Final = 300
TIMEOUT_MAX: Final = 86400
MAX_RETRIES: Final = 10
BACKOFF_DEFAULT: Final = 10
BACKOFF_CAP_SECONDS: Final = 600
"""No single backoff delay is longer, however many attempts failed."""


class Language(StrEnum):
    """Interpreter the runner uses for `spec.code`."""

    PYTHON = "python"
    NODE = "node"
    BASH = "bash"
    SH = "sh"


class AgentProvider(StrEnum):
    """Which agent runs an agent task."""

    CLAUDE = "claude"


class PermissionMode(StrEnum):
    """The agent's permission mode (Claude Code's `--permission-mode`). Nobody answers permission
    prompts in a task pod: a tool call that would ask is refused."""

    DEFAULT = "default"
    ACCEPT_EDITS = "acceptEdits"
    PLAN = "plan"
    DONT_ASK = "dontAsk"
    BYPASS_PERMISSIONS = "bypassPermissions"


class Phase(StrEnum):
    """Where the task is in its life: Pending, Queued, Running, or one of the final phases."""

    PENDING = "Pending"
    QUEUED = "Queued"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    TIMED_OUT = "TimedOut"
    CANCELLED = "Cancelled"


FINAL_PHASES: Final = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.TIMED_OUT, Phase.CANCELLED})


class Reason(StrEnum):
    """Why the task, an attempt or a condition is where it is. A closed set: see REASON_HELP."""

    QUEUED = "Queued"
    SCHEDULED = "Scheduled"
    STARTED = "Started"
    RETRYING = "Retrying"
    COMPLETED = "Completed"
    NON_ZERO_EXIT = "NonZeroExit"
    MAX_TURNS = "MaxTurns"
    AGENT_ERROR = "AgentError"
    AGENT_UNAVAILABLE = "AgentUnavailable"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    OOM_KILLED = "OOMKilled"
    IMAGE_ERROR = "ImageError"
    CONFIG_ERROR = "ConfigError"
    UNSCHEDULABLE = "Unschedulable"
    FAILED_CREATE = "FailedCreate"
    STOPPING = "Stopping"
    NOT_ISOLATED = "NotIsolated"
    START_ERROR = "StartError"
    RUNNER_ERROR = "RunnerError"
    TERMINATED = "Terminated"
    LOST = "Lost"
    INVALID_SPEC = "InvalidSpec"
    CANCELLED = "Cancelled"


REASON_HELP: Final[dict[Reason, str]] = {
    Reason.QUEUED: "(Queued) waiting for a slot under the operator's running-task limits",
    Reason.SCHEDULED: "(Pending) the attempt's Job exists, its pod is not running yet",
    Reason.STARTED: "(Running) the task's container is running",
    Reason.RETRYING: "(Pending) an attempt failed with a retryPolicy reason; retry after backoff",
    Reason.COMPLETED: "(Succeeded) the code exited 0, or the agent finished without error",
    Reason.NON_ZERO_EXIT: "(Failed) the code exited non-zero or was killed by a signal",
    Reason.MAX_TURNS: "(Failed) the agent used agent.maxTurns turns without finishing",
    Reason.AGENT_ERROR: "(Failed) the agent reported an error (e.g. the model API refused the "
    "key) or ended without a result",
    Reason.AGENT_UNAVAILABLE: "(Failed) the model API was rate-limited, overloaded or "
    "unreachable; retried with backoff by default",
    Reason.DEADLINE_EXCEEDED: "(TimedOut) timeoutSeconds passed",
    Reason.OOM_KILLED: "(Failed) the container hit its memory limit",
    Reason.IMAGE_ERROR: "(Failed) the image cannot be pulled or is not present",
    Reason.CONFIG_ERROR: "(Failed) the container cannot be created: Secret/ConfigMap missing",
    Reason.UNSCHEDULABLE: "(Pending) no node can run the pod yet; the attempt still times out",
    Reason.FAILED_CREATE: "(Pending) the cluster refuses to create the attempt's pod (quota, "
    "admission); the attempt still times out",
    Reason.STOPPING: "(Pending) the next attempt waits until the previous attempt's pod is known "
    "to have stopped",
    Reason.NOT_ISOLATED: "(Pending) the operator cannot put the task NetworkPolicies in the "
    "namespace (see the message: RBAC?); no Job starts until it can",
    Reason.START_ERROR: "(Failed) the runner could not start the code, e.g. interpreter missing",
    Reason.RUNNER_ERROR: "(Failed) the container ended without a readable result",
    Reason.TERMINATED: "(Failed) the pod was stopped by someone else: evicted, preempted, deleted",
    Reason.LOST: "(Failed) the pod or Job vanished, its node failed or its heartbeat stopped",
    Reason.INVALID_SPEC: "(Failed) the spec is invalid or the Job was rejected; never retried",
    Reason.CANCELLED: "(Cancelled) spec.cancel was set",
}

RETRYABLE_REASONS: Final = (
    Reason.NON_ZERO_EXIT,
    Reason.MAX_TURNS,
    Reason.AGENT_ERROR,
    Reason.AGENT_UNAVAILABLE,
    Reason.DEADLINE_EXCEEDED,
    Reason.OOM_KILLED,
    Reason.IMAGE_ERROR,
    Reason.CONFIG_ERROR,
    Reason.UNSCHEDULABLE,
    Reason.START_ERROR,
    Reason.RUNNER_ERROR,
    Reason.TERMINATED,
    Reason.LOST,
)
DEFAULT_RETRY_POLICY: Final = (
    Reason.NON_ZERO_EXIT,
    Reason.OOM_KILLED,
    Reason.AGENT_UNAVAILABLE,
    Reason.TERMINATED,
    Reason.LOST,
)
"""What `retries` retries when `retryPolicy` is not set: a failed run, as Kubernetes Jobs
(`backoffLimit`), Argo, Tekton and BullMQ retry; not a timeout nor a task that cannot start."""


class ConditionType(StrEnum):
    """Condition types: Admitted, Running, Finished (any final phase), Succeeded."""

    ADMITTED = "Admitted"
    RUNNING = "Running"
    FINISHED = "Finished"
    SUCCEEDED = "Succeeded"


class ConditionStatus(StrEnum):
    """Kubernetes condition status."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


def _retryable(reason: Reason) -> Reason:
    if reason is Reason.INVALID_SPEC:
        raise ValueError("InvalidSpec is never retried: the same spec fails the same way")
    if reason not in RETRYABLE_REASONS:
        raise ValueError(
            f"{reason} is not a failure reason; retryable: {', '.join(RETRYABLE_REASONS)}"
        )
    return reason


def _quantity(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("must be a Kubernetes quantity such as 500m, 256Mi or 2")
    text = str(value)
    quantity.parse(text)
    return text


RetryReason = Annotated[
    Reason,
    AfterValidator(_retryable),
    WithJsonSchema({"type": "string", "enum": [r.value for r in RETRYABLE_REASONS]}),
]
Quantity = Annotated[
    str,
    BeforeValidator(_quantity),
    WithJsonSchema({"x-kubernetes-int-or-string": True, "pattern": quantity.PATTERN}),
]
LabelValue = Annotated[
    str, Field(max_length=63, pattern=r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
]
ObjectName = Annotated[str, Field(min_length=1, max_length=253)]
PoolName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    ),
]
NamespacePattern = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[-a-z0-9*?]+$")]
"""A namespace name, or a glob of `*` (any run of characters) and `?` (one character)."""


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, serialize_by_alias=True
    )


class ResourceList(_Model):
    """Amounts per resource; integers or quantity strings."""

    cpu: Quantity | None = Field(None, description="CPU, e.g. 500m or 2.")
    memory: Quantity | None = Field(None, description="Memory, e.g. 256Mi or 1Gi.")
    ephemeral_storage: Quantity | None = Field(
        None,
        alias="ephemeral-storage",
        description="Local disk, including the /scratch directory, e.g. 1Gi.",
    )

    def as_dict(self) -> dict[str, str]:
        """The amounts that are set, keyed by Kubernetes resource name."""
        return self.model_dump(exclude_none=True)


class Resources(_Model):
    """Requests and limits for the task's container. Unset amounts take the operator's defaults;
    limits are always set on the pod. The /scratch directory may use the ephemeral-storage limit."""

    requests: ResourceList = Field(
        default_factory=ResourceList, description="Amounts the scheduler reserves for the pod."
    )
    limits: ResourceList = Field(
        default_factory=ResourceList,
        description="Hard caps: memory over the limit ends the task with reason OOMKilled.",
    )


class KeySelector(_Model):
    """A key of a Secret or ConfigMap in the task's namespace."""

    name: ObjectName = Field(description="Name of the Secret or ConfigMap.")
    key: str = Field(min_length=1, max_length=253, description="The key whose value is used.")
    optional: bool | None = Field(
        None, description="If true, a missing object or key leaves the variable unset."
    )


class EnvVarSource(_Model):
    """Where an environment variable's value comes from: exactly one of the two."""

    secret_key_ref: KeySelector | None = Field(None, description="A key of a Secret.")
    config_map_key_ref: KeySelector | None = Field(None, description="A key of a ConfigMap.")


class EnvVar(_Model):
    """An environment variable for the code: a literal value or a reference."""

    name: str = Field(
        max_length=256,
        pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$",
        description="Variable name. CODETASK_*, POD_NAME, NODE_NAME, HOME, TMPDIR and REDIS_URL "
        "are reserved.",
    )
    value: str | None = Field(None, max_length=32 * KIB, description="Literal value.")
    value_from: EnvVarSource | None = Field(
        None, description="Take the value from a Secret or ConfigMap key instead."
    )


ToolRule = Annotated[
    str,
    Field(
        min_length=1,
        max_length=512,
        pattern=r"^[A-Za-z_][A-Za-z0-9_-]*(\(.*\))?$",
    ),
]
"""A permission rule: a tool name (`Edit`, `mcp__server__tool`) or a tool with a specifier
(`Bash(git diff:*)`), as Claude Code's `--allowedTools`/`--disallowedTools` take them."""


class SecretKeySelector(_Model):
    """A key of a Secret in the task's namespace."""

    name: ObjectName = Field(description="Name of the Secret.")
    key: str = Field(
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description="The key whose value is used.",
    )


class AgentSpec(_Model):
    """Agent mode: an AI coding agent works on `spec.prompt` in the task's pod, with the tools its
    permission settings allow, in the pod's scratch directory. Excludes code, command and
    language."""

    provider: AgentProvider = Field(
        AgentProvider.CLAUDE, description="The agent: claude (Claude Code, run headless)."
    )
    model: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][-A-Za-z0-9._:@/\[\]]*$",
        description="Model name or alias, e.g. sonnet or claude-sonnet-4-5. Unset: the agent's "
        "default.",
    )
    allowed_tools: list[ToolRule] = Field(
        default_factory=list,
        max_length=64,
        description="Permission rules the agent may use without asking, e.g. Edit, Write or "
        "Bash(npm test:*).",
    )
    disallowed_tools: list[ToolRule] = Field(
        default_factory=list,
        max_length=64,
        description="Permission rules the agent must not use, e.g. WebFetch or Bash(curl:*); a "
        "bare tool name removes the tool. Deny wins over allow.",
    )
    permission_mode: PermissionMode | None = Field(
        None,
        description="The agent's permission mode. Nobody answers permission prompts in a task "
        "pod, so a tool call that would ask is refused. Unset: default.",
    )
    max_turns: int | None = Field(
        None,
        ge=1,
        le=AGENT_MAX_TURNS,
        description="Stop after this many turns (model round trips); the task then fails with "
        "reason MaxTurns. Unset: no limit but timeoutSeconds.",
    )
    system_prompt: str | None = Field(
        None,
        max_length=SYSTEM_PROMPT_MAX_LENGTH,
        description="Instructions appended to the agent's own system prompt (which carries its "
        f"tool rules), at most {SYSTEM_PROMPT_MAX_LENGTH} characters.",
    )
    api_key_secret_ref: SecretKeySelector = Field(
        description="The Secret key holding the model API key (ANTHROPIC_API_KEY). Never put "
        "the key itself in the spec. A missing Secret or key fails the task with reason "
        "ConfigError.",
    )
    input_config_map: ObjectName | None = Field(
        None,
        description="A ConfigMap whose keys are copied as files into the agent's working "
        "directory before it starts. Missing or empty: the task fails with reason StartError.",
    )


class CallbackSpec(_Model):
    """Where the task's end is posted (docs/results.md, "Completion callbacks")."""

    url: str = Field(
        ...,
        max_length=2048,
        pattern=r"^https?://[^\s/?#@]+(/[^\s#]*)?$",
        description="http:// or https:// URL without credentials; its host must be one the "
        "operator allows (chart value callbacks.allowedHosts, default none).",
    )


class CodeTaskSpec(_Model):
    """What to run. Either `code` (with `language`), run by the operator's runner image,
    `command` (with `image`), run directly in an allowed custom image, or `agent` (with
    `prompt`), an AI coding agent run by the operator's agent image. Immutable after creation
    except `cancel`, `priority` and `ttlSecondsAfterFinished`."""

    language: Language | None = Field(
        None, description="Interpreter for `code`. Required with code."
    )
    code: str | None = Field(
        None,
        max_length=CODE_MAX_LENGTH,
        description=f"Inline source, at most {CODE_MAX_LENGTH} characters; code and stdin "
        f"together at most {INPUT_MAX_BYTES} bytes of UTF-8. Delivered to the pod as the file "
        "/codetask/input/code. Exactly one of code, command and agent.",
    )
    command: list[Annotated[str, Field(max_length=4096)]] | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="Custom-image mode: the container's command (entrypoint), run without the "
        "runner. Requires `image`. Exactly one of code, command and agent.",
    )
    image: str | None = Field(
        None,
        min_length=1,
        max_length=512,
        description="Custom-image mode: the image to run `command` in; must match the "
        "operator's allowed images.",
    )
    args: list[Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=list,
        max_length=256,
        description=f"Arguments: after the code file, or after `command`. At most {ARGS_MAX_BYTES} "
        "bytes as JSON.",
    )
    stdin: str | None = Field(
        None,
        max_length=STDIN_MAX_LENGTH,
        description=f"Standard input for the code, at most {STDIN_MAX_LENGTH} characters. Code "
        "mode only.",
    )
    env: list[EnvVar] = Field(
        default_factory=list, max_length=64, description="Environment variables for the code."
    )
    timeout_seconds: int = Field(
        TIMEOUT_DEFAULT,
        ge=1,
        le=TIMEOUT_MAX,
        description="Deadline of each attempt, counted from its Job's start (including image "
        "pull). On expiry the task ends TimedOut with reason DeadlineExceeded.",
    )
    resources: Resources = Field(
        default_factory=Resources, description="CPU, memory and local disk of the task's pod."
    )
    retries: int = Field(
        0,
        ge=0,
        le=MAX_RETRIES,
        description="Extra attempts after a failure whose reason is in retryPolicy.",
    )
    retry_policy: list[RetryReason] | None = Field(
        None,
        max_length=len(RETRYABLE_REASONS),
        description="Failure reasons that start another attempt (while retries remain). "
        f"Unset: {', '.join(DEFAULT_RETRY_POLICY)}. InvalidSpec is never retried.",
    )
    backoff_seconds: int = Field(
        BACKOFF_DEFAULT,
        ge=1,
        le=BACKOFF_CAP_SECONDS,
        description="Delay before the first retry; it doubles per retry, with jitter, up to "
        f"{BACKOFF_CAP_SECONDS} seconds.",
    )
    ttl_seconds_after_finished: int | None = Field(
        None,
        ge=0,
        le=365 * 86400,
        description="Delete the task (and its Jobs and pods) this long after it finished. "
        "Unset: the operator's default.",
    )
    output_limit_bytes: int = Field(
        OUTPUT_LIMIT_DEFAULT,
        ge=0,
        le=OUTPUT_LIMIT_MAX,
        description="Bytes of stdout and of stderr kept in status, each the tail of its stream.",
    )
    prompt: str | None = Field(
        None,
        max_length=PROMPT_MAX_LENGTH,
        description="With `agent`: the task the agent works on, delivered to the pod as the file "
        f"/codetask/input/prompt (counts toward the {INPUT_MAX_BYTES}-byte input limit). "
        "Otherwise free text describing what the task is for.",
    )
    agent: AgentSpec | None = Field(
        None,
        description="Agent mode: run an AI coding agent on `prompt` instead of code. Requires "
        "prompt and agent.apiKeySecretRef. Exactly one of code, command and agent.",
    )
    labels: dict[str, LabelValue] = Field(
        default_factory=dict,
        max_length=32,
        description="Labels copied onto the task's Jobs; onto its pods only for the keys the "
        "operator allows (chart value runner.podLabelKeys, default none), since Services and "
        "NetworkPolicies select pods by label. Keys under codetask.dev/ and batch.kubernetes.io/ "
        "are reserved.",
    )
    priority: int = Field(
        0,
        ge=-1000,
        le=1000,
        description="Higher starts first when tasks wait for a slot; ties go by creation time.",
    )
    cancel: bool = Field(
        False,
        description="Set to true to stop the task: its pod is stopped and it ends Cancelled. "
        "Cannot be unset.",
    )
    callback: CallbackSpec | None = Field(
        None,
        description="When the task finishes, POST a CloudEvents 1.0 JSON event "
        "(dev.codetask.task.finished, id: the task's uid) to callback.url, signed with "
        "HMAC-SHA256 (header X-Codetask-Signature), retried with backoff; status.callback "
        "shows the delivery.",
    )
    pool: PoolName | None = Field(
        None,
        description="The CodeTaskPool to run in: where its pods are placed (nodes, tolerations, "
        "runtime class), its runner image and its resource class. The pool must allow the "
        "task's namespace. Unset: the pool that is the namespace's default (defaultFor), if "
        "one is, else the operator's own settings.",
    )


class Condition(_Model):
    """A condition, by the Kubernetes API conventions."""

    type: ConditionType = Field(description="Admitted, Running, Finished or Succeeded.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: Reason = Field(description="CamelCase reason of the last transition.")
    message: str = Field(max_length=32 * KIB, description="Human-readable details; may be empty.")
    last_transition_time: datetime = Field(description="When status last changed.")
    observed_generation: int | None = Field(
        None, ge=0, description="metadata.generation the condition was set for."
    )


class Truncated(_Model):
    """Whether each stream's tail in status is shorter than what the code wrote."""

    stdout: bool = Field(description="stdout was cut to its tail.")
    stderr: bool = Field(description="stderr was cut to its tail.")


class Progress(_Model):
    """The latest progress the code reported (see the runner's progress protocol)."""

    percent: float | None = Field(None, ge=0, le=100, description="0 to 100.")
    stage: str | None = Field(None, max_length=256, description="Short name of the current stage.")
    message: str | None = Field(None, max_length=KIB, description="Free text.")
    time: datetime | None = Field(None, description="When the code reported it.")


class AgentUsage(_Model):
    """Tokens the agent's model calls used, as the agent reported them."""

    input_tokens: int | None = Field(None, ge=0, description="Input tokens, not cached.")
    output_tokens: int | None = Field(None, ge=0, description="Output tokens.")
    cache_read_input_tokens: int | None = Field(
        None, ge=0, description="Input tokens read from the prompt cache."
    )
    cache_creation_input_tokens: int | None = Field(
        None, ge=0, description="Input tokens written to the prompt cache."
    )


class AgentReport(_Model):
    """What the agent reported about its run (agent tasks only)."""

    model: str | None = Field(None, max_length=256, description="The model the agent used.")
    session_id: str | None = Field(None, max_length=128, description="The agent's session id.")
    turns: int | None = Field(None, ge=0, description="Turns (model round trips) taken.")
    tool_calls: int | None = Field(None, ge=0, description="Tool calls the model asked for.")
    denied_tool_calls: int | None = Field(
        None,
        ge=0,
        description="Tool calls refused by the permission settings: denied by a rule or mode, "
        "or for a tool not enabled (disallowedTools).",
    )
    denied_tools: list[Annotated[str, Field(max_length=256)]] = Field(
        default_factory=list,
        max_length=32,
        description="Names of the refused tools, each once, in order of the first refusal.",
    )
    usage: AgentUsage | None = Field(None, description="Token usage.")
    cost_usd: float | None = Field(
        None, ge=0, description="Cost in US dollars as the agent computed it (list prices)."
    )


class AttemptRecord(_Model):
    """A finished attempt."""

    attempt: int = Field(ge=1, description="Attempt number, 1-based.")
    job_name: str | None = Field(None, description="The attempt's Job.")
    pod_name: str | None = Field(None, description="The attempt's pod.")
    node_name: str | None = Field(None, description="Node the pod ran on.")
    start_time: datetime | None = Field(None, description="When the code started.")
    completion_time: datetime | None = Field(None, description="When the attempt ended.")
    exit_code: int | None = Field(None, description="Exit code; 128+N if killed by signal N.")
    reason: Reason | None = Field(None, description="How the attempt ended.")
    message: str | None = Field(None, max_length=32 * KIB, description="Details.")


class CallbackStatus(_Model):
    """The delivery of spec.callback."""

    delivered: bool = Field(False, description="The receiver answered 2xx.")
    attempts: int = Field(0, ge=0, description="POSTs made.")
    last_error: str | None = Field(None, max_length=1024, description="Of the last failed POST.")
    gave_up: bool = Field(
        False, description="Not delivered within the operator's retry time; no more POSTs."
    )
    time: datetime | None = Field(None, description="Of the last POST.")


class Dispatch(StrEnum):
    """How an attempt started."""

    COLD = "cold"
    WARM = "warm"


class CodeTaskStatus(_Model):
    """Observed state, written by the operator only."""

    phase: Phase | None = Field(
        None, description="Pending, Queued, Running, Succeeded, Failed, TimedOut or Cancelled."
    )
    reason: Reason | None = Field(
        None,
        description="Why the task is in its phase. "
        + "; ".join(f"{reason}: {help_}" for reason, help_ in REASON_HELP.items())
        + ".",
    )
    message: str | None = Field(None, max_length=32 * KIB, description="Human-readable details.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Admitted, Running, Finished and Succeeded, for machines "
        "(e.g. kubectl wait --for=condition=Finished).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    attempts: int | None = Field(None, ge=0, description="Attempts started so far.")
    job_name: str | None = Field(None, description="Job of the current or last attempt.")
    pod_name: str | None = Field(None, description="Pod of the current or last attempt.")
    node_name: str | None = Field(None, description="Node of the current or last attempt.")
    start_time: datetime | None = Field(
        None, description="When the current or last attempt's code started."
    )
    completion_time: datetime | None = Field(None, description="When the task finished.")
    duration_seconds: float | None = Field(None, ge=0, description="Run time of the last attempt.")
    exit_code: int | None = Field(None, description="Exit code; 128+N if killed by signal N.")
    stdout: str | None = Field(None, max_length=OUTPUT_LIMIT_MAX, description="Tail of stdout.")
    stderr: str | None = Field(None, max_length=OUTPUT_LIMIT_MAX, description="Tail of stderr.")
    truncated: Truncated | None = Field(None, description="Whether stdout/stderr were cut.")
    last_heartbeat_time: datetime | None = Field(
        None, description="Last sign of life of the running attempt."
    )
    observed_generation: int | None = Field(
        None, ge=0, description="metadata.generation this status is for."
    )
    progress: Progress | None = Field(None, description="Latest progress the code reported.")
    agent: AgentReport | None = Field(
        None,
        description="Agent tasks: turns, tool calls, token usage and cost of the last attempt.",
    )
    history: list[AttemptRecord] = Field(
        default_factory=list,
        max_length=MAX_RETRIES + 1,
        description="Finished attempts, oldest first.",
    )
    next_attempt_time: datetime | None = Field(
        None, description="When the next attempt starts (phase Pending, reason Retrying)."
    )
    queue_position: int | None = Field(
        None, ge=1, description="1-based place among Queued tasks; unset when not Queued."
    )
    pool: str | None = Field(
        None, description="The CodeTaskPool of the current or last attempt; unset: none."
    )
    dispatch: Dispatch | None = Field(
        None,
        description="How the current or last attempt started: warm (bound to a ready pod of its "
        "pool) or cold (a Job of its own); the Scheduled message says why cold in a warm pool.",
    )
    bind_seconds: float | None = Field(
        None, ge=0, description="Warm attempts: how long binding the ready pod took."
    )
    callback: CallbackStatus | None = Field(None, description="The delivery of spec.callback.")


class TolerationOperator(StrEnum):
    """How a toleration matches a taint's value."""

    EXISTS = "Exists"
    EQUAL = "Equal"


class TaintEffect(StrEnum):
    """The taint effect a toleration matches."""

    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class Toleration(_Model):
    """A toleration of the pool's pods (core/v1 Toleration)."""

    key: str | None = Field(
        None,
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
        description="Taint key; unset with operator Exists: every taint.",
    )
    operator: TolerationOperator | None = Field(None, description="Exists or Equal (unset: Equal).")
    value: LabelValue | None = Field(None, description="Taint value, with Equal.")
    effect: TaintEffect | None = Field(None, description="Effect to match; unset: all.")
    toleration_seconds: int | None = Field(
        None,
        ge=0,
        description="With NoExecute: how long the pod stays bound to a node after the taint.",
    )


class WarmSpec(_Model):
    """A pool's warm pods: per namespace, `minReady` pods wait for a task each."""

    namespaces: list[ObjectName] = Field(
        min_length=1,
        max_length=64,
        description="Namespaces (exact names) where warm pods are kept: a task's pod runs in its "
        "own namespace, so a warm pod waits in the namespace of the tasks it is for. Each must be "
        "one the pool may be used in.",
    )
    min_ready: int = Field(
        1,
        ge=0,
        le=100,
        description="Warm pods kept ready (or starting) in each of the namespaces; the scale "
        "subresource's replicas (kubectl scale, HPA, KEDA).",
    )
    max: int = Field(
        10,
        ge=0,
        le=100,
        description="At most this many warm pods waiting in a namespace, however minReady is "
        "scaled.",
    )
    max_idle_seconds: int = Field(
        3600,
        ge=60,
        le=86400,
        description="A warm pod left idle this long is replaced, so that image and settings "
        "changes roll out.",
    )


class CodeTaskPoolSpec(_Model):
    """A pool of runners that cluster admins define: which namespaces' tasks may run in it,
    where its pods run and with what. Changes apply to attempts that start afterwards."""

    namespaces: list[NamespacePattern] = Field(
        min_length=1,
        max_length=64,
        description="Namespaces whose tasks may name this pool: names or globs such as team-*; "
        "* for all.",
    )
    default_for: list[NamespacePattern] = Field(
        default_factory=list,
        max_length=64,
        description="Namespaces whose tasks that name no pool run in this one (names or globs); "
        "these may use it too. A namespace two pools are the default for must name one.",
    )
    languages: list[Language] = Field(
        default_factory=list,
        max_length=len(Language),
        description="Languages of the code tasks it runs; empty: all. Agent and custom-image "
        "tasks are placed by the pool whatever their language.",
    )
    image: str | None = Field(
        None,
        min_length=1,
        max_length=512,
        description="Runner image of its code tasks (one that speaks the runner contract, e.g. "
        "the operator's runner with more packages). Unset: the operator's runner image.",
    )
    resources: Resources = Field(
        default_factory=Resources,
        description="The pool's class: its tasks' requests and limits where a task sets none, "
        "and the most a task in it may ask for (the limits; unset: the operator's caps).",
    )
    node_selector: dict[str, LabelValue] = Field(
        default_factory=dict, max_length=32, description="Node labels its pods require."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=32, description="Taints its pods tolerate."
    )
    affinity: dict[str, Any] | None = Field(
        None,
        description="The pods' affinity (core/v1 Affinity: nodeAffinity, podAffinity, "
        "podAntiAffinity), as in a pod spec.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    runtime_class_name: PoolName | None = Field(
        None,
        description="The RuntimeClass its pods run with (a sandbox such as gVisor or Kata); it "
        "must exist. Unset: the node's default runtime.",
    )
    warm: WarmSpec | None = Field(
        None,
        description="Ready pods kept ahead of demand, so that a task that fits starts in "
        "milliseconds (one fresh pod per task still). Needs Redis. Unset: every task starts cold.",
    )


class CodeTaskPoolStatus(_Model):
    """Observed state of the pool's warm pods, written by the operator."""

    replicas: int = Field(
        0, ge=0, description="Warm pods waiting for a task: ready and starting (all namespaces)."
    )
    ready: int = Field(0, ge=0, description="Warm pods ready for a task (all namespaces).")
    bound: int = Field(
        0, ge=0, description="Warm pods bound to a task and running it (all namespaces)."
    )
    selector: str | None = Field(
        None, description="Label selector of the pool's warm pods (for the scale subresource)."
    )
    message: str | None = Field(
        None, max_length=4 * KIB, description="Why warm pods are missing, if they are."
    )


_ERROR_TEMPLATES: Final = {
    "missing": "required",
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be ≥ {ge}",
    "less_than_equal": "must be ≤ {le}",
    "string_too_short": "must have at least {min_length} characters",
    "string_too_long": "must have at most {max_length} characters",
    "too_short": "must have at least {min_length} entries",
    "too_long": "must have at most {max_length} entries",
    "string_pattern_mismatch": "must match {pattern}",
    "enum": "must be one of {expected}",
    "value_error": "{error}",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "dict_type": "must be an object",
    "model_type": "must be an object",
}


def describe_error(error: ErrorDetails) -> str:
    """A short, user-facing message for one pydantic error, without its location."""
    ctx = error.get("ctx", {})
    if error["type"] in ("string_too_short", "too_short") and ctx.get("min_length") == 1:
        return "must not be empty"
    template = _ERROR_TEMPLATES.get(error["type"])
    if template is None:
        return error["msg"][:1].lower() + error["msg"][1:]
    return template.format(**ctx)
