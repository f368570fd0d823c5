"""A CodeTask as the CLI reads it: a typed view, its exit code, counts over many. Pure."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from pydantic import ValidationError

from codetask_operator.api import FINAL_PHASES, CodeTaskStatus, Phase, Reason, describe_error
from codetask_operator.cli.errors import CliError

TIMED_OUT_EXIT: Final = 124
"""As timeout(1) exits."""
CANCELLED_EXIT: Final = 130
"""As a shell reports a command stopped by Ctrl-C."""
FAILED_EXIT: Final = 1
MESSAGE_MAX: Final = 300


@dataclass(frozen=True)
class Task:
    """The parts of a CodeTask object the CLI shows."""

    namespace: str
    name: str
    created: datetime | None
    status: CodeTaskStatus

    @classmethod
    def of(cls, obj: dict[str, Any]) -> Task:
        """Read an API object; its status must match this CLI's API version."""
        metadata = obj.get("metadata") or {}
        name = str(metadata.get("name", ""))
        try:
            status = CodeTaskStatus.model_validate(obj.get("status") or {})
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in ("status", *error["loc"]))
            raise CliError(
                f"the status of CodeTask {name!r} is not one this CLI understands "
                f"({where}: {describe_error(error)}): is the CLI older than the operator?"
            ) from None
        created = metadata.get("creationTimestamp")
        return cls(
            namespace=str(metadata.get("namespace", "")),
            name=name,
            created=datetime.fromisoformat(created.replace("Z", "+00:00")) if created else None,
            status=status,
        )

    @property
    def phase(self) -> Phase:
        """The phase; a task the operator has not seen yet counts as Pending."""
        return self.status.phase or Phase.PENDING

    @property
    def reason(self) -> str | None:
        """The reason, unless it only repeats the phase (Queued, Cancelled)."""
        reason = self.status.reason
        return reason.value if reason and reason.value != self.phase.value else None

    @property
    def final(self) -> bool:
        """Whether the task has finished."""
        return self.phase in FINAL_PHASES


def exit_code(status: CodeTaskStatus) -> int:
    """What `codetask run --wait` exits with: the code's exit code where there is one, else 124
    for TimedOut, 130 for Cancelled, 1 for other failures."""
    if status.phase is Phase.CANCELLED:
        return CANCELLED_EXIT
    if status.phase is Phase.SUCCEEDED:
        return status.exit_code or 0
    if status.phase is Phase.TIMED_OUT:
        return TIMED_OUT_EXIT if status.exit_code is None else status.exit_code
    return status.exit_code or FAILED_EXIT


def failure_line(task: Task) -> str | None:
    """One line on why the task did not succeed, unless the code's own exit code and stderr say
    it all (reason NonZeroExit)."""
    status = task.status
    if status.phase is Phase.SUCCEEDED or status.reason is Reason.NON_ZERO_EXIT:
        return None
    reason = f" ({task.reason})" if task.reason else ""
    message = " ".join((status.message or "").split())
    if len(message) > MESSAGE_MAX:
        message = message[: MESSAGE_MAX - 1] + "…"
    return f"{task.name}: {task.phase}{reason}" + (f": {message}" if message else "")


@dataclass(frozen=True)
class Stats:
    """Counts over a set of CodeTasks: the old /tasks/stats and monitor-workers."""

    total: int
    phases: dict[str, int]
    """Every phase, zeros included, in life-cycle order."""
    queue_depth: int
    running_per_node: dict[str, int]
    succeeded: int
    failed: int
    """Failed and TimedOut."""
    cancelled: int

    @classmethod
    def of(cls, tasks: list[Task]) -> Stats:
        """Count `tasks` by phase, queue and node."""
        phases = Counter(task.phase for task in tasks)
        nodes = Counter(
            task.status.node_name or "(no node yet)"
            for task in tasks
            if task.phase is Phase.RUNNING
        )
        return cls(
            total=len(tasks),
            phases={phase.value: phases[phase] for phase in Phase},
            queue_depth=phases[Phase.QUEUED],
            running_per_node=dict(sorted(nodes.items())),
            succeeded=phases[Phase.SUCCEEDED],
            failed=phases[Phase.FAILED] + phases[Phase.TIMED_OUT],
            cancelled=phases[Phase.CANCELLED],
        )

    @property
    def success_rate(self) -> float | None:
        """Succeeded out of succeeded and failed; None before any finished."""
        finished = self.succeeded + self.failed
        return self.succeeded / finished if finished else None
