"""Python code in a forked child of the runner, as ``python3 CODEFILE ARGS...`` would run it.

For ``language: python`` the runner does not start a second interpreter (a whole Python start-up
per task): process.py forks the runner and the child calls ``run``. What the code can notice is
made to match a new ``python3 CODEFILE ARGS...`` (CPython 3.11, the image's), in the order of
CPython's own start-up and shutdown:

- start (process.py: a new session, fds 0-2, the runner's descriptors closed): signal
  dispositions; the code's environment in ``os.environ``; ``sys.argv``, ``sys.orig_argv``,
  ``sys.path[0]``; new standard streams (unbuffered under ``PYTHONUNBUFFERED``); a fresh
  ``__main__``; the runner's own modules out of ``sys.modules``;
- end: the exit status (and message) of ``SystemExit``, an uncaught exception's traceback through
  ``sys.excepthook``, death by SIGINT after an uncaught ``KeyboardInterrupt``, non-daemon threads
  joined, ``atexit`` functions, the standard streams flushed (status 120 when stdout cannot be),
  the code's modules cleared (unclosed files are flushed, ``__del__`` runs), then ``os._exit``.

What this cannot run the same way is left to the interpreter itself: before the fork (a syntax
error or compile-time warning, bytecode, a zip archive, ``PYTHONINSPECT``: ``compile_code``
returns None) by the spawn, after it (any failure before the code's first line) by ``execve``.

Left different: ``/proc/self/cmdline`` and ``/proc/self/environ`` (and ``ps``) show the runner's;
the runner's frames lie below the code's ``<module>`` frame (seen only by stack inspection; the
recursion limit leaves about ten frames fewer); modules the runner's start-up loaded stay in
``sys.modules`` (they would load the same on first import).
"""

from __future__ import annotations

import _thread
import _warnings  # what warnings.py wraps: ~0.5 ms of start-up for one filter
import io
import os
import sys

TYPE_CHECKING = False  # typing costs ~10 ms at start-up; mypy still reads the block below
if TYPE_CHECKING:
    import importlib._bootstrap_external as _bootstrap_external
    import signal as _signal
    from types import CodeType, ModuleType, TracebackType
    from typing import Any, NoReturn, TextIO
else:
    # What importlib.util and .machinery re-export, loaded with the interpreter: importing them
    # would cost ~3 ms of start-up (contextlib, collections, functools).
    import _frozen_importlib_external as _bootstrap_external
    import _signal  # signal.py wraps it in enums: ~2 ms of start-up for names we do not need

RUNNER_PACKAGE = __name__.rpartition(".")[0]
EXIT_FLUSH_FAILED = 120
"""CPython's exit status when stdout cannot be flushed at exit."""
_DEFAULT_SIGNALS = (_signal.SIGTERM, _signal.SIGCHLD, _signal.SIGQUIT, _signal.SIGHUP)
"""Handled by the runner, or reset by the spawn (``setsigdef``): default again, as after exec."""
_IGNORED_SIGNALS = (_signal.SIGPIPE, _signal.SIGXFSZ)
"""Ignored by every CPython at start-up."""
_WARNINGS_AS_ERRORS = ("error", None, Warning, None, 0)
"""A warnings filter: while the code compiles, any warning raises."""


def compile_code(path: str) -> CodeType | None:
    """In the runner, before the fork: the code file compiled as ``python3 PATH`` would compile
    it, or None where the interpreter itself should run it (the spawn): a syntax error or a
    compile-time warning (its message belongs to the code's stderr), bytecode, a zip archive,
    ``PYTHONINSPECT``. Compiling before the fork spares the child the copy-on-write faults of
    the compiler's work."""
    if sys.flags.inspect:  # the interpreter would go interactive after the code
        return None
    try:
        with open(path, "rb") as file:
            source = file.read()
        if not _plain_source(path, source):
            return None
        # A CPython without these internals (3.13 renamed one) raises here: the spawn runs it.
        _warnings.filters.insert(0, _WARNINGS_AS_ERRORS)
        _warnings._filters_mutated()  # type: ignore[attr-defined]
        try:
            # dont_inherit: the runner's own `from __future__` flags must not reach the code
            return compile(source, path, "exec", dont_inherit=True)
        finally:
            _warnings.filters.remove(_WARNINGS_AS_ERRORS)
            _warnings._filters_mutated()  # type: ignore[attr-defined]
    except Exception:
        return None


def run(code: CodeType, argv: list[str], env: dict[str, str]) -> NoReturn:
    """In the forked child, fds 0-2 on the code's stdin, stdout and stderr and no other of the
    runner's: run ``code``, compiled from ``argv[1]`` of ``[PYTHON3, CODEFILE, ARGS...]``, with
    ``env``; never returns."""
    try:
        main, preloaded = _start(argv, env)
    except BaseException:
        _exec(argv, env)
    os._exit(_run(code, main, preloaded))


def _exec(argv: list[str], env: dict[str, str]) -> NoReturn:
    """The interpreter itself, as the spawn would have started it."""
    try:
        for signum in (*_DEFAULT_SIGNALS, *_IGNORED_SIGNALS, _signal.SIGINT):
            _signal.signal(signum, _signal.SIG_DFL)
        os.execve(argv[0], argv, env)
    finally:
        os._exit(127)


def _start(argv: list[str], env: dict[str, str]) -> tuple[ModuleType, frozenset[str]]:
    """Everything up to the code's first line; raises whatever should go to ``_exec`` instead."""
    _signal.set_wakeup_fd(-1)
    for signum in _DEFAULT_SIGNALS:
        _signal.signal(signum, _signal.SIG_DFL)
    for signum in _IGNORED_SIGNALS:
        _signal.signal(signum, _signal.SIG_IGN)
    _signal.signal(_signal.SIGINT, _signal.default_int_handler)
    path = argv[1]
    _set_environ(env)
    sys.argv = argv[1:]
    sys.orig_argv = list(argv)
    if not sys.flags.safe_path:  # what the interpreter put first: the runner's cwd or script dir
        sys.path[0] = os.path.dirname(os.path.realpath(path))
    unbuffered = bool(env.get("PYTHONUNBUFFERED"))
    old = (sys.stdin, sys.stdout, sys.stderr)
    sys.stdin, sys.stdout, sys.stderr = streams = [
        _stream(fd, like, unbuffered) for fd, like in enumerate(old)
    ]
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = streams  # type: ignore[misc]
    main = _main_module(path)
    for name in [n for n in sys.modules if n.partition(".")[0] == RUNNER_PACKAGE]:
        del sys.modules[name]
    sys.modules["__main__"] = main
    atexit = sys.modules.get("atexit")
    if atexit is not None:
        atexit._clear()
    return main, frozenset(sys.modules)


def _plain_source(path: str, source: bytes) -> bool:
    """False where ``python3 PATH`` would not compile the file as source: bytecode (by name or
    magic number) or a zip archive (it would run its ``__main__.py``)."""
    return not (
        path.endswith(".pyc")
        or source[:2] == _bootstrap_external.MAGIC_NUMBER[:2]
        or b"PK\x05\x06" in source[-65557:]  # a zip's end-of-central-directory record
    )


def _set_environ(env: dict[str, str]) -> None:
    """``os.environ`` becomes ``env``, in the order the spawned interpreter would list it."""
    environ = os.environ
    for key in [k for k in environ if k not in env]:
        del environ[key]
    for key, value in env.items():
        if environ.get(key) != value:
            environ[key] = value


def _stream(fd: int, like: TextIO, unbuffered: bool) -> io.TextIOWrapper:
    """The standard stream CPython makes of ``fd`` (``create_stdio`` in pylifecycle.c), with the
    runner's encoding and error handler (same locale, same ``PYTHONIOENCODING``)."""
    write = fd > 0
    raw_only = unbuffered and write
    # the stream outlives this function: no `with`
    buffer: Any = open(fd, "wb" if write else "rb", 0 if raw_only else -1, closefd=False)  # noqa: SIM115
    raw = buffer if raw_only else buffer.raw
    raw.name = ("<stdin>", "<stdout>", "<stderr>")[fd]
    line_buffering = not unbuffered and (raw.isatty() or fd == 2)
    stream = io.TextIOWrapper(buffer, like.encoding, like.errors, "\n", line_buffering, unbuffered)
    stream.mode = "w" if write else "r"  # type: ignore[misc]
    return stream


def _main_module(path: str) -> ModuleType:
    """``__main__`` as CPython sets it up for a script: these names, in this order."""
    main = type(sys)("__main__")
    namespace = main.__dict__
    namespace["__annotations__"] = {}
    namespace["__builtins__"] = sys.modules["builtins"]
    namespace["__loader__"] = _bootstrap_external.SourceFileLoader("__main__", path)
    namespace["__file__"] = path
    namespace["__cached__"] = None
    return main


def _run(code: CodeType, main: ModuleType, preloaded: frozenset[str]) -> int:
    """Run the code and end as CPython's ``Py_RunMain`` would; returns the exit status."""
    namespace = main.__dict__
    error: BaseException | None = None
    try:
        exec(code, namespace)
    except BaseException as exc:
        error = exc
    _flush_quietly()
    interrupted = isinstance(error, KeyboardInterrupt)
    if isinstance(error, SystemExit):
        status = _exit_status(error)
    else:
        status = 0 if error is None else _print_uncaught(error)
        namespace.pop("__file__", None)  # CPython drops them once the script is done
        namespace.pop("__cached__", None)
    error = None
    status = _finalize(status, preloaded)
    if interrupted:  # bpo-1054041: an uncaught KeyboardInterrupt ends the process by SIGINT
        _signal.signal(_signal.SIGINT, _signal.SIG_DFL)
        os.kill(os.getpid(), _signal.SIGINT)
        status = 128 + _signal.SIGINT
    return status


def _exit_status(exc: SystemExit) -> int:
    """``_Py_HandleSystemExit``: no code is 0, an int is the status, anything else is printed."""
    try:
        code: object = exc.code
    except Exception:
        code = exc
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF if -(2**63) <= code < 2**63 else 255  # C: exit((int)PyLong_AsLong)
    stderr = getattr(sys, "stderr", None)
    try:
        if stderr is None:
            os.write(2, str(code).encode(errors="backslashreplace"))
        else:
            stderr.write(str(code))
    except Exception:
        pass
    _write_stderr("\n")
    return 1


def _print_uncaught(error: BaseException) -> int:
    """``PyErr_Print``: ``sys.last_*`` and ``sys.excepthook``, with the traceback starting at the
    code's ``<module>`` (this frame, the only other one, is left out). Returns the status."""
    tb = _own_frame_skipped(error)
    error.__traceback__ = tb  # printed from the exception, not from the argument
    kind = type(error)
    sys.last_type, sys.last_value, sys.last_traceback = kind, error, tb
    hook = getattr(sys, "excepthook", None)
    if hook is None:
        _write_stderr("sys.excepthook is missing\n")
        sys.__excepthook__(kind, error, tb)
        return 1
    try:
        hook(kind, error, tb)
    except SystemExit as exc:
        return _exit_status(exc)
    except BaseException as exc:
        _write_stderr("Error in sys.excepthook:\n")
        sys.__excepthook__(type(exc), exc, _own_frame_skipped(exc))
        _write_stderr("\nOriginal exception was:\n")
        sys.__excepthook__(kind, error, tb)
    return 1


def _own_frame_skipped(exc: BaseException) -> TracebackType | None:
    """``exc``'s traceback without its first entry, this module's own frame."""
    tb = exc.__traceback__
    return None if tb is None else tb.tb_next


def _finalize(status: int, preloaded: frozenset[str]) -> int:
    """What of ``Py_FinalizeEx`` the code can notice; returns the exit status."""
    threading = sys.modules.get("threading")
    if threading is not None:
        try:
            threading._shutdown()
        except BaseException as exc:
            _unraisable(threading, exc)
    atexit = sys.modules.get("atexit")
    if atexit is not None:
        try:
            atexit._run_exitfuncs()  # reports each failing function itself
        except BaseException as exc:
            _unraisable(atexit, exc)
    if not _flush_std_files():
        status = EXIT_FLUSH_FAILED
    _clear_modules(preloaded)
    _flush_quietly()
    return status


def _clear_modules(preloaded: frozenset[str]) -> None:
    """Clear ``__main__`` and the modules the code imported, as ``finalize_modules`` does, so
    what they hold is released: files flushed and closed, ``__del__`` run. Not while threads of
    the code still run (daemons: CPython stops them first, clearing under them would break them)."""
    if _thread._count():
        return
    import gc

    sys.last_type = sys.last_value = sys.last_traceback = None
    gc.collect()
    for name, module in reversed(list(sys.modules.items())):
        if name == "__main__" or name not in preloaded:
            namespace = getattr(module, "__dict__", None)
            if isinstance(namespace, dict):
                _clear_namespace(namespace)
    gc.collect()


def _clear_namespace(namespace: dict[str, object]) -> None:
    """``_PyModule_ClearDict``: names with one leading underscore first, then all but
    ``__builtins__``, each set to None."""
    for key in list(namespace):
        if isinstance(key, str) and key[:1] == "_" and key[1:2] != "_":
            namespace[key] = None
    for key in list(namespace):
        if isinstance(key, str) and key != "__builtins__":
            namespace[key] = None


def _flush_std_files() -> bool:
    """``flush_std_files``: False when stdout or stderr could not be flushed."""
    ok = True
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name, None)
        if stream is None or not _is_open(stream):
            continue
        try:
            stream.flush()
        except Exception as exc:
            if name == "stdout":
                _unraisable(stream, exc)
            ok = False
    return ok


def _flush_quietly() -> None:
    for name in ("stderr", "stdout"):
        try:
            getattr(sys, name).flush()
        except Exception:
            continue


def _is_open(stream: Any) -> bool:
    try:
        return not stream.closed
    except Exception:
        return False


def _write_stderr(text: str) -> None:
    """``PySys_WriteStderr``: to ``sys.stderr``, else to fd 2."""
    stderr = getattr(sys, "stderr", None)
    try:
        if stderr is not None:
            stderr.write(text)
            return
    except Exception:
        pass
    try:
        os.write(2, text.encode(errors="backslashreplace"))
    except OSError:
        return


def _unraisable(obj: object, exc: BaseException) -> None:
    """What ``PyErr_WriteUnraisable(obj)`` prints through the default ``sys.unraisablehook``."""
    import traceback

    lines = traceback.format_exception(type(exc), exc, _own_frame_skipped(exc))
    try:
        described = repr(obj)
    except Exception:
        described = "<object repr() failed>"
    _write_stderr(f"Exception ignored in: {described}\n" + "".join(lines))
