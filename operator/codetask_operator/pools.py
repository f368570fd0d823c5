"""Pure: which CodeTaskPool a task runs in, and whether it fits there. Each message names its field.

Pools are cluster-scoped and admin-managed: a task author only names one (`spec.pool`), and the
pool says which namespaces may (`namespaces`, and `defaultFor`, which implies it). The catalog of
pools the operator knows (`pool_catalog.py`) is the input; nothing here reads the API.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from codetask_operator import api, quantity


@dataclass(frozen=True)
class Pool:
    """A pool by name: its spec, or why its stored object is not a valid spec."""

    name: str
    spec: api.CodeTaskPoolSpec | None
    invalid: str = ""
    uid: str = ""


def matches(namespace: str, patterns: Sequence[str]) -> bool:
    """Whether a namespace matches one of the names or globs (`*`, `?`)."""
    return any(fnmatch.fnmatchcase(namespace, pattern) for pattern in patterns)


def choose(
    named: str | None, namespace: str, pools: Mapping[str, Pool]
) -> tuple[Pool | None, list[str]]:
    """The pool a task of `namespace` that names `named` runs in (None: the operator's own
    settings), or the problems, as `spec.pool: ...`."""
    if named is None:
        defaults = sorted(
            name
            for name, pool in pools.items()
            if pool.spec is not None and matches(namespace, pool.spec.default_for)
        )
        if len(defaults) > 1:
            return None, [
                f"spec.pool: required in namespace {namespace}: pools {', '.join(defaults)} are "
                "all its default (defaultFor); name one"
            ]
        return (pools[defaults[0]], []) if defaults else (None, [])
    pool = pools.get(named)
    if pool is None:
        return None, [f"spec.pool: CodeTaskPool {named!r} does not exist"]
    if pool.spec is None:
        return None, [f"spec.pool: CodeTaskPool {named!r} is invalid: {pool.invalid}"]
    if not matches(namespace, [*pool.spec.namespaces, *pool.spec.default_for]):
        return None, [f"spec.pool: CodeTaskPool {named!r} may not be used in namespace {namespace}"]
    return pool, []


def fit(task: api.CodeTaskSpec, pool: Pool) -> list[str]:
    """What of the task the pool does not run: a code task's language. (Its amounts are checked
    against the pool's limits where the operator's caps are: `caps`.)"""
    spec = pool.spec
    if spec is None or task.code is None or not spec.languages:
        return []
    if task.language in spec.languages:
        return []
    allowed = ", ".join(spec.languages)
    return [f"spec.language: CodeTaskPool {pool.name!r} runs {allowed}, not {task.language}"]


def caps(pool: Pool | None, operator_caps: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """The most a task may ask of each resource, and how a refusal names it: the pool's limit
    where it sets one (a pool's class may be larger than the operator's caps), else the
    operator's cap."""
    limits = pool.spec.resources.limits.as_dict() if pool and pool.spec else {}
    out = {name: (cap, f"the cap {cap}") for name, cap in operator_caps.items()}
    for name, limit in limits.items():
        assert pool is not None
        out[name] = (limit, f"the limit {limit} of CodeTaskPool {pool.name!r}")
    return out


def parse(name: str, spec: Mapping[str, object], uid: str = "") -> Pool:
    """A stored pool object's spec as a Pool; an invalid one (stored before a schema change, with
    requests above its limits, or warm pods where it may not be used) keeps why."""
    try:
        model = api.CodeTaskPoolSpec.model_validate(spec)
    except ValueError as exc:
        return Pool(name, None, " ".join(str(exc).split())[:500], uid)
    requests, limits = model.resources.requests.as_dict(), model.resources.limits.as_dict()
    for resource, request in requests.items():
        limit = limits.get(resource)
        if limit is not None and quantity.parse(request) > quantity.parse(limit):
            why = f"spec.resources.requests.{resource}: above its limit {limit}"
            return Pool(name, None, why, uid)
    if model.warm is not None:
        allowed = [*model.namespaces, *model.default_for]
        for i, namespace in enumerate(model.warm.namespaces):
            if not matches(namespace, allowed):
                why = f"spec.warm.namespaces[{i}]: the pool may not be used in {namespace}"
                return Pool(name, None, why, uid)
    return Pool(name, model, "", uid)
