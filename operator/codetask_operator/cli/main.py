"""`codetask`: run code on Kubernetes as CodeTasks, from the shell.

Each command reads its options, then runs one coroutine with `asyncio.run`.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Final, TypeVar

import click

from codetask_operator.api import Language, Phase
from codetask_operator.cli import manifest, render, results
from codetask_operator.cli.client import Kube, Obj, Target, connect, is_final
from codetask_operator.cli.errors import CliError, Interrupted
from codetask_operator.cli.tasks import Stats, Task, exit_code, failure_line

T = TypeVar("T")
OUTPUTS: Final = click.Choice(["text", "json", "yaml"])
LANGUAGES: Final = click.Choice([language.value for language in Language])


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """The command boundary: run the coroutine; Ctrl-C exits 130 without a traceback."""
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        raise Interrupted("interrupted") from None


def _target(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        setattr(ctx.ensure_object(Target), str(param.name), value)


def cluster_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--kubeconfig`, `--context`, `-n` after the command name too, as kubectl takes them."""
    for decls, metavar, help_ in (
        (("-n", "--namespace"), "NS", "Namespace (default: the context's)."),
        (("--context",), "NAME", "Kubeconfig context to use."),
        (("--kubeconfig",), "PATH", "Kubeconfig file (default: $KUBECONFIG, ~/.kube/config)."),
    ):
        option = click.option(
            *decls, metavar=metavar, help=help_, expose_value=False, callback=_target
        )
        command = option(command)
    return command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--kubeconfig", envvar="KUBECONFIG", metavar="PATH", help="Kubeconfig file.")
@click.option("--context", metavar="NAME", help="Kubeconfig context to use.")
@click.option("-n", "--namespace", metavar="NS", help="Namespace (default: the context's).")
@click.pass_context
def cli(
    ctx: click.Context, kubeconfig: str | None, context: str | None, namespace: str | None
) -> None:
    """Run code on Kubernetes as CodeTasks and read their results."""
    ctx.obj = Target(kubeconfig, context, namespace)


def _read(path: str, what: str) -> tuple[str, str]:
    """(file name, text) of a file, or of stdin for `-`."""
    if path == "-":
        return "stdin", sys.stdin.read()
    try:
        return path, Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise CliError(f"cannot read {what} {path}: not UTF-8 text") from None


def _write_out(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.flush()


def _print_outputs(task: Task) -> None:
    """The task's stdout and stderr tails, exactly as the code wrote them."""
    sys.stdout.write(task.status.stdout or "")
    sys.stdout.flush()
    sys.stderr.write(task.status.stderr or "")
    sys.stderr.flush()


async def _stream_attempts(kube: Kube, name: str, display: render.WaitDisplay) -> tuple[Obj, bool]:
    """Follow the log of each attempt's pod until the task is final: (final task, whether any
    log was streamed). The status line shows only while no log is streaming."""
    followed: set[str] = set()
    streamed = False

    def ready(obj: Obj) -> bool:
        task = Task.of(obj)
        new_pod = task.status.pod_name not in (None, *followed)
        return task.final or (new_pod and task.phase is Phase.RUNNING)

    while True:
        with display:
            obj = await kube.wait_for(name, ready, display.update)
        if obj is None:
            raise CliError(f'CodeTask "{name}" was deleted while waiting')
        pod = Task.of(obj).status.pod_name
        if pod and pod not in followed:
            followed.add(pod)
            streamed = await kube.follow_log(pod, _write_out) or streamed
        if is_final(obj):
            return obj, streamed


async def _finish(
    kube: Kube, name: str, follow: bool, output: str, display: render.WaitDisplay
) -> int:
    """Wait for the task to finish, show its result, and return the exit code to use."""
    try:
        if follow:
            obj, streamed = await _stream_attempts(kube, name, display)
        else:
            with display:
                found = await kube.wait_for(name, is_final, display.update)
            if found is None:
                raise CliError(f'CodeTask "{name}" was deleted while waiting')
            obj, streamed = found, False
    except asyncio.CancelledError:
        click.echo(
            f"codetask: {name} keeps running; stop it with: codetask cancel {name}", err=True
        )
        raise
    task = Task.of(obj)
    if output != "text":
        sys.stdout.write(render.dump(obj, output))
    elif not streamed:
        _print_outputs(task)
    line = failure_line(task)
    if line:
        click.echo(f"codetask: {line}", err=True)
    return exit_code(task.status)


@cli.command()
@click.argument("file", metavar="FILE")
@click.option("--lang", type=LANGUAGES, help="Language (default: from the shebang or extension).")
@click.option("--name", help="Task name (default: generated from the file name).")
@click.option("--timeout", type=int, metavar="SECONDS", help="spec.timeoutSeconds.")
@click.option("--retries", type=int, metavar="N", help="spec.retries.")
@click.option("--stdin", "stdin_path", metavar="FILE|-", help="Standard input for the code.")
@click.option("--env", multiple=True, metavar="K=V", help="Environment variable; repeatable.")
@click.option("--arg", "args", multiple=True, metavar="A", help="Argument; repeatable.")
@click.option("--wait", is_flag=True, help="Wait, print the output, exit with the exit code.")
@click.option("--follow", "-f", is_flag=True, help="Stream the pod's log while waiting.")
@click.option("-o", "--output", type=OUTPUTS, default="text", help="Result format.")
@cluster_options
@click.pass_obj
def run(
    target: Target,
    file: str,
    lang: str | None,
    name: str | None,
    timeout: int | None,
    retries: int | None,
    stdin_path: str | None,
    env: tuple[str, ...],
    args: tuple[str, ...],
    wait: bool,
    follow: bool,
    output: str,
) -> None:
    """Create a CodeTask from a source file (FILE, or - for stdin); print its name.

    With --wait: print the task's stdout and stderr as written and exit with its exit code
    (TimedOut 124, Cancelled 130, other failures without one 1). With --follow: stream the
    pod's log instead (stdout and stderr together), then exit the same way.
    """
    if file == "-" and stdin_path == "-":
        raise CliError("FILE and --stdin cannot both be -")
    filename, code = _read(file, "source file")
    options = manifest.RunOptions(
        language=Language(lang) if lang else None,
        name=name,
        timeout_seconds=timeout,
        retries=retries,
        stdin=_read(stdin_path, "stdin file")[1] if stdin_path else None,
        env=env,
        args=args,
    )
    body = manifest.build(filename, code, options)

    async def main() -> int:
        async with connect(target) as kube:
            created = await kube.create(body)
            created_name = created["metadata"]["name"]
            if not (wait or follow):
                text = f"{created_name}\n" if output == "text" else render.dump(created, output)
                sys.stdout.write(text)
                return 0
            display = render.WaitDisplay(render.console(), sys.stdout.isatty())
            return await _finish(kube, created_name, follow, output, display)

    sys.exit(_run(main()))


@cli.command()
@click.argument("name")
@click.option("-o", "--output", type=OUTPUTS, default="text", help="Output format.")
@cluster_options
@click.pass_obj
def get(target: Target, name: str, output: str) -> None:
    """Show a CodeTask: phase, reason, exit code, duration, pod, node, output."""

    async def main() -> Obj:
        async with connect(target) as kube:
            return await kube.get(name)

    obj = _run(main())
    if output == "text":
        render.show(render.summary(Task.of(obj)))
    else:
        sys.stdout.write(render.dump(obj, output))


@cli.command(name="list")
@click.option("-A", "--all-namespaces", is_flag=True, help="List tasks in all namespaces.")
@click.option("--phase", type=click.Choice([p.value for p in Phase]), help="Only this phase.")
@click.option("-o", "--output", type=OUTPUTS, default="text", help="Output format.")
@cluster_options
@click.pass_obj
def list_(target: Target, all_namespaces: bool, phase: str | None, output: str) -> None:
    """List CodeTasks, like kubectl get codetasks."""

    async def main() -> tuple[list[Obj], str]:
        async with connect(target) as kube:
            return await kube.list(all_namespaces), kube.namespace

    objs, namespace = _run(main())
    pairs = [(obj, Task.of(obj)) for obj in objs]
    pairs = [(obj, task) for obj, task in pairs if phase is None or task.phase == phase]
    if output != "text":
        items = [obj for obj, _ in pairs]
        sys.stdout.write(render.dump({"apiVersion": "v1", "kind": "List", "items": items}, output))
    elif not pairs:
        where = "any namespace" if all_namespaces else f'namespace "{namespace}"'
        click.echo(f"No CodeTasks found in {where}.", err=True)
    else:
        tasks = [task for _, task in pairs]
        render.show(render.task_table(tasks, all_namespaces))


@cli.command()
@click.argument("name")
@click.option("-f", "--follow", is_flag=True, help="Stream the log until the task finishes.")
@cluster_options
@click.pass_obj
def logs(target: Target, name: str, follow: bool) -> None:
    """Print the log of the task's current pod, or the output kept in its status once the pod
    is gone (stdout to stdout, stderr to stderr)."""

    async def main() -> None:
        async with connect(target) as kube:
            if follow:
                display = render.WaitDisplay(render.console(sys.stderr), sys.stderr.isatty())
                obj, streamed = await _stream_attempts(kube, name, display)
            else:
                obj = await kube.get(name)
                pod = Task.of(obj).status.pod_name
                log = await kube.read_log(pod) if pod else None
                if log is not None:
                    sys.stdout.write(log)
                streamed = log is not None
            task = Task.of(obj)
            if not streamed:
                if not task.final and not task.status.stdout and not task.status.stderr:
                    raise CliError(f"{name} has no output yet: it is {task.phase}")
                _print_outputs(task)

    _run(main())


@cli.command()
@click.argument("name")
@cluster_options
@click.pass_obj
def cancel(target: Target, name: str) -> None:
    """Stop a task: set spec.cancel, the operator stops its pod and it ends Cancelled."""

    async def main() -> str:
        async with connect(target) as kube:
            task = Task.of(await kube.get(name))
            if task.final:
                return f"{name} already finished: {task.phase}"
            await kube.cancel(name)
            return f"{name} cancel requested"

    click.echo(_run(main()))


@cli.command()
@click.argument("name")
@click.option("--wait", is_flag=True, help="Wait until the task and its pods are gone.")
@cluster_options
@click.pass_obj
def delete(target: Target, name: str, wait: bool) -> None:
    """Delete a task; the operator removes its Jobs and pods."""

    async def main() -> None:
        async with connect(target) as kube:
            await kube.delete(name)
            if wait:
                await kube.wait_for(name, lambda task: False)

    _run(main())
    click.echo(f"{name} deleted")


@cli.command()
@click.option("-A", "--all-namespaces", is_flag=True, help="Count tasks in all namespaces.")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@cluster_options
@click.pass_obj
def stats(target: Target, all_namespaces: bool, output: str) -> None:
    """Counts by phase, queue depth, running tasks per node, successes and failures."""

    async def main() -> tuple[list[Obj], str]:
        async with connect(target) as kube:
            return await kube.list(all_namespaces), kube.namespace

    objs, namespace = _run(main())
    counted = Stats.of([Task.of(obj) for obj in objs])
    if output == "json":
        sys.stdout.write(render.dump(render.stats_dict(counted), "json"))
    else:
        scope = "all namespaces" if all_namespaces else f'namespace "{namespace}"'
        render.show(render.stats_view(counted, scope))


@cli.command(name="results")
@click.option(
    "--redis-url",
    envvar="CODETASK_REDIS_URL",
    required=True,
    metavar="URL",
    help="The operator's Redis (redis:// or rediss://; default: $CODETASK_REDIS_URL).",
)
@click.option("--stream", default=results.STREAM, show_default=True, help="The results stream.")
@click.option("-f", "--follow", is_flag=True, help="Keep reading new results as they come.")
@click.option("--group", metavar="G", help="Read as a consumer of this group, acknowledging.")
@click.option("--consumer", default="codetask-cli", show_default=True, help="With --group.")
@click.option("--since", default="0", metavar="ID", help="Without --group: after this entry id.")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
def results_(
    redis_url: str,
    stream: str,
    follow: bool,
    group: str | None,
    consumer: str,
    since: str,
    output: str,
) -> None:
    """Finished tasks' results from the results stream (docs/results.md), one per line."""
    client = results.connect(redis_url)
    show = results.as_json if output == "json" else results.line
    if group:
        entries = results.read_group(
            client, stream, group, consumer, follow, lambda i: client.xack(stream, group, i)
        )
    else:
        entries = results.read(client, stream, follow, since)
    try:
        for entry in entries:
            click.echo(show(entry))
    except KeyboardInterrupt:
        raise Interrupted("interrupted") from None


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="codetask")


if __name__ == "__main__":
    main()
