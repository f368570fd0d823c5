"""What the CLI shows: the wait status line, the task summary, the list table, the stats.

Everything here returns rich renderables built from `Text` (never markup), so a task's output
is shown as written.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from types import TracebackType
from typing import IO, Any, Final

import yaml
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.status import Status
from rich.table import Table
from rich.text import Text

from codetask_operator.api import Phase
from codetask_operator.cli.tasks import Stats, Task

PHASE_STYLES: Final = {
    Phase.PENDING: "dim",
    Phase.QUEUED: "yellow",
    Phase.RUNNING: "cyan",
    Phase.SUCCEEDED: "green",
    Phase.FAILED: "red",
    Phase.TIMED_OUT: "red",
    Phase.CANCELLED: "magenta",
}
PIPE_WIDTH: Final = 160
"""Width of tables written to a pipe or file, where rich cannot ask the terminal."""


def console(file: IO[str] | None = None) -> Console:
    """A console for stdout (or `file`): colours on a terminal only, no guessing highlights."""
    out = file or sys.stdout
    terminal = out.isatty()
    return Console(file=out, highlight=False, width=None if terminal else PIPE_WIDTH)


def show(renderable: RenderableType, file: IO[str] | None = None) -> None:
    """Print to a terminal with colours, or to a pipe as plain lines without trailing blanks."""
    out = console(file)
    if out.is_terminal:
        out.print(renderable)
        return
    with out.capture() as captured:
        out.print(renderable)
    out.file.write("".join(f"{line.rstrip()}\n" for line in captured.get().splitlines()))


def format_age(seconds: float) -> str:
    """kubectl's age format: 42s, 3m12s, 95m, 20h, 12d, 3y."""
    s = max(int(seconds), 0)
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    return f"{days}d" if days < 730 else f"{days // 365}y"


def format_duration(seconds: float | None) -> str:
    """A run time: 0.05s, 12.3s, 3m04s, 1h02m; empty when unknown."""
    if seconds is None:
        return ""
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def phase_text(task: Task) -> Text:
    """The phase, coloured by outcome."""
    return Text(task.phase.value, style=PHASE_STYLES[task.phase])


def status_line(task: Task, elapsed: float | None = None) -> Text:
    """`hello-x7k2p  Running  Started  40% download: 3/7 files  12s` for the wait display."""
    status = task.status
    line = Text.assemble((task.name, "bold"), "  ", phase_text(task))
    if task.reason:
        line.append(f"  {task.reason}")
    if task.phase is Phase.QUEUED and status.queue_position:
        line.append(f"  queue position {status.queue_position}")
    progress = status.progress
    if progress and task.phase is Phase.RUNNING:
        parts = [f"{progress.percent:.0f}%" if progress.percent is not None else ""]
        parts.append(": ".join(p for p in (progress.stage, progress.message) if p))
        line.append("  " + " ".join(p for p in parts if p), style="cyan")
    if elapsed is not None:
        line.append(f"  {format_age(elapsed)}", style="dim")
    return line


class WaitDisplay:
    """The live status line while `codetask run --wait` waits; nothing unless enabled (a
    terminal), so piped output stays exactly the task's."""

    def __init__(self, out: Console, enabled: bool) -> None:
        self._task: Task | None = None
        self._started = time.monotonic()
        self._status = Status(self, console=out) if enabled else None

    def __rich__(self) -> Text:
        if self._task is None:
            return Text("waiting for the task", style="dim")
        return status_line(self._task, time.monotonic() - self._started)

    def update(self, obj: dict[str, Any]) -> None:
        """Show the task's latest state."""
        self._task = Task.of(obj)

    def __enter__(self) -> WaitDisplay:
        if self._status:
            self._status.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._status:
            self._status.stop()


def summary(task: Task, now: datetime | None = None) -> RenderableType:
    """`codetask get` in text: the fields that say what happened, then stdout and stderr."""
    status = task.status
    now = now or datetime.now(UTC)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    phase = phase_text(task)
    if task.reason:
        phase.append(f" ({task.reason})")
    rows: list[tuple[str, Text | str | None]] = [
        ("Name", task.name),
        ("Namespace", task.namespace),
        ("Phase", phase),
        ("Exit code", None if status.exit_code is None else str(status.exit_code)),
        ("Duration", format_duration(status.duration_seconds)),
        ("Attempts", None if status.attempts is None else str(status.attempts)),
        ("Queue position", None if status.queue_position is None else str(status.queue_position)),
        ("Pod", status.pod_name),
        ("Node", status.node_name),
        ("Age", format_age((now - task.created).total_seconds()) if task.created else None),
        ("Message", status.message),
    ]
    if status.progress and status.progress.percent is not None:
        stage = status.progress.stage or ""
        rows.append(("Progress", f"{status.progress.percent:.0f}% {stage}".strip()))
    for label, value in rows:
        if value:
            grid.add_row(label, value if isinstance(value, Text) else Text(value))
    parts: list[RenderableType] = [grid]
    truncated = status.truncated
    for stream, text, cut in (
        ("stdout", status.stdout, truncated.stdout if truncated else False),
        ("stderr", status.stderr, truncated.stderr if truncated else False),
    ):
        if text:
            title = f"{stream} (tail, truncated)" if cut else stream
            body = Text(text.rstrip("\n"))
            parts.append(Panel(body, title=title, title_align="left", expand=False))
    return Group(*parts)


def task_table(tasks: list[Task], all_namespaces: bool, now: datetime | None = None) -> Table:
    """`codetask list`: the columns of `kubectl get codetasks`, plus the reason."""
    now = now or datetime.now(UTC)
    table = Table(box=None, header_style="bold", pad_edge=False)
    columns = ["NAME", "PHASE", "EXIT", "DURATION", "ATTEMPTS", "AGE", "REASON"]
    for column in ["NAMESPACE", *columns] if all_namespaces else columns:
        table.add_column(column, no_wrap=True)
    for task in tasks:
        status = task.status
        row: list[Text | str] = [
            task.name,
            phase_text(task),
            "" if status.exit_code is None else str(status.exit_code),
            format_duration(status.duration_seconds),
            "" if status.attempts is None else str(status.attempts),
            format_age((now - task.created).total_seconds()) if task.created else "",
            status.reason or "",
        ]
        table.add_row(*([task.namespace, *row] if all_namespaces else row))
    return table


def stats_view(stats: Stats, scope: str) -> RenderableType:
    """`codetask stats` in text: phases, queue, running per node, outcomes."""
    phases = Table(box=None, header_style="bold", pad_edge=False, title_justify="left")
    phases.add_column("PHASE")
    phases.add_column("TASKS", justify="right")
    for phase, count in stats.phases.items():
        phases.add_row(Text(phase, style=PHASE_STYLES[Phase(phase)]), str(count))
    phases.add_row(Text("total", style="bold"), str(stats.total))
    nodes = Table(box=None, header_style="bold", pad_edge=False)
    nodes.add_column("NODE")
    nodes.add_column("RUNNING", justify="right")
    for node, count in stats.running_per_node.items():
        nodes.add_row(node, str(count))
    rate = stats.success_rate
    outcome = (
        f"succeeded {stats.succeeded}, failed {stats.failed} (incl. timed out), "
        f"cancelled {stats.cancelled}" + (f", success rate {rate:.0%}" if rate is not None else "")
    )
    parts: list[RenderableType] = [
        Text(f"CodeTasks in {scope}", style="bold"),
        phases,
        Text(f"\nqueue depth: {stats.queue_depth}"),
        Text(outcome),
    ]
    if stats.running_per_node:
        parts += [Text(""), nodes]
    return Group(*parts)


def stats_dict(stats: Stats) -> dict[str, Any]:
    """`codetask stats -o json`."""
    return {
        "total": stats.total,
        "phases": stats.phases,
        "queueDepth": stats.queue_depth,
        "runningPerNode": stats.running_per_node,
        "succeeded": stats.succeeded,
        "failed": stats.failed,
        "cancelled": stats.cancelled,
        "successRate": stats.success_rate,
    }


def dump(obj: Any, output: str) -> str:
    """An object as JSON or YAML, without `metadata.managedFields`."""
    if isinstance(obj, dict) and isinstance(obj.get("metadata"), dict):
        obj = {
            **obj,
            "metadata": {k: v for k, v in obj["metadata"].items() if k != "managedFields"},
        }
    if output == "yaml":
        return yaml.safe_dump(obj, sort_keys=False, allow_unicode=True)
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
