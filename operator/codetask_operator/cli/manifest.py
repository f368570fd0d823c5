"""A CodeTask manifest from a source file and the `codetask run` options. Pure."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, Final

from codetask_operator.api import API_VERSION, KIND, Language
from codetask_operator.cli.errors import CliError

EXTENSIONS: Final = {
    ".py": Language.PYTHON,
    ".js": Language.NODE,
    ".mjs": Language.NODE,
    ".cjs": Language.NODE,
    ".bash": Language.BASH,
    ".sh": Language.BASH,
}
"""`.sh` runs under bash, which also runs POSIX scripts; `#!/bin/sh` selects sh."""

INTERPRETERS: Final = {
    "python": Language.PYTHON,
    "python3": Language.PYTHON,
    "node": Language.NODE,
    "nodejs": Language.NODE,
    "bash": Language.BASH,
    "sh": Language.SH,
}
NAME_PREFIX_MAX: Final = 40
"""Leaves room for the generated suffix and the operator's Job-name hash."""


@dataclass(frozen=True)
class RunOptions:
    """What `codetask run` was asked for, besides the code itself."""

    language: Language | None = None
    name: str | None = None
    timeout_seconds: int | None = None
    retries: int | None = None
    stdin: str | None = None
    env: Sequence[str] = ()
    args: Sequence[str] = field(default_factory=tuple)


def detect_language(filename: str, code: str) -> Language:
    """The language of a source file: its shebang, else its extension."""
    first_line = code.partition("\n")[0]
    if first_line.startswith("#!"):
        words = first_line[2:].split()
        if words and PurePath(words[0]).name == "env":
            words = [w for w in words[1:] if not w.startswith("-")]
        if words:
            interpreter = re.sub(r"[\d.]+$", "", PurePath(words[0]).name)
            if interpreter in INTERPRETERS:
                return INTERPRETERS[interpreter]
    language = EXTENSIONS.get(PurePath(filename).suffix.lower())
    if language is None:
        choices = "|".join(language.value for language in Language)
        raise CliError(f"cannot tell the language of {filename}: pass --lang {choices}")
    return language


def name_prefix(filename: str) -> str:
    """A `generateName` from the file's stem: `fetch_data.py` → `fetch-data-`."""
    stem = PurePath(filename).stem.lower()
    base = re.sub(r"[^a-z0-9-]+", "-", stem)[:NAME_PREFIX_MAX].strip("-")
    if not base or not base[0].isalpha():
        base = f"task-{base}".rstrip("-")
    return f"{base}-"


def parse_env(pairs: Sequence[str]) -> list[dict[str, str]]:
    """`NAME=VALUE` strings as CodeTask env entries; the API server checks the names."""
    env = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise CliError(f"--env {pair!r}: expected NAME=VALUE")
        env.append({"name": name, "value": value})
    return env


def build(filename: str, code: str, options: RunOptions) -> dict[str, Any]:
    """The CodeTask to create. Only options that were given are set: the server applies defaults
    and validates, so its message names the field of a bad value."""
    language = options.language or detect_language(filename, code)
    spec: dict[str, Any] = {"language": language.value, "code": code}
    if options.args:
        spec["args"] = list(options.args)
    if options.stdin is not None:
        spec["stdin"] = options.stdin
    if options.env:
        spec["env"] = parse_env(options.env)
    if options.timeout_seconds is not None:
        spec["timeoutSeconds"] = options.timeout_seconds
    if options.retries is not None:
        spec["retries"] = options.retries
    metadata = {"name": options.name} if options.name else {"generateName": name_prefix(filename)}
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}
