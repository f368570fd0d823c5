"""Choosing a task's CodeTaskPool, what the pool runs, and the Job it makes."""

from __future__ import annotations

from typing import Any

import pytest

from codetask_operator import admission, api, jobs, pools
from codetask_operator.pool_catalog import Catalog
from codetask_operator.settings import Settings

pytestmark = pytest.mark.unit

SETTINGS = Settings()


def pool(name: str, **spec: Any) -> pools.Pool:
    parsed = pools.parse(name, {"namespaces": ["team-a"], **spec})
    assert parsed.spec is not None, parsed.invalid
    return parsed


def catalog(*items: pools.Pool) -> dict[str, pools.Pool]:
    return {p.name: p for p in items}


def task(**spec: Any) -> api.CodeTaskSpec:
    return api.CodeTaskSpec.model_validate({"language": "python", "code": "print(1)", **spec})


@pytest.mark.parametrize(
    ("named", "namespace", "known", "chosen", "error"),
    [
        (None, "team-a", {}, None, None),
        ("gpu", "team-a", {"gpu": {}}, "gpu", None),
        ("gpu", "team-a", {"gpu": {"namespaces": ["team-*"]}}, "gpu", None),
        ("gpu", "team-a", {"gpu": {"namespaces": ["*"]}}, "gpu", None),
        ("gpu", "team-b", {"gpu": {}}, None, "may not be used in namespace team-b"),
        ("gpu", "team-b", {"gpu": {"defaultFor": ["team-b"]}}, "gpu", None),
        ("gone", "team-a", {"gpu": {}}, None, "CodeTaskPool 'gone' does not exist"),
        (None, "team-a", {"gpu": {"defaultFor": ["team-?"]}}, "gpu", None),
        (None, "team-b", {"gpu": {"defaultFor": ["team-a"]}}, None, None),
        ("cpu", "team-a", {"gpu": {"defaultFor": ["team-a"]}, "cpu": {}}, "cpu", None),
        (
            None,
            "team-a",
            {"gpu": {"defaultFor": ["team-*"]}, "arm": {"defaultFor": ["team-a"]}},
            None,
            "pools arm, gpu are all its default (defaultFor); name one",
        ),
    ],
)
def test_the_pool_a_task_runs_in(
    named: str | None,
    namespace: str,
    known: dict[str, dict[str, Any]],
    chosen: str | None,
    error: str | None,
) -> None:
    found, errors = pools.choose(
        named, namespace, catalog(*(pool(n, **s) for n, s in known.items()))
    )
    assert (found.name if found else None) == chosen
    if error is None:
        assert errors == []
    else:
        [message] = errors
        assert message.startswith("spec.pool: ") and error in message


def test_an_invalid_pool_is_named_with_why() -> None:
    broken = pools.parse(
        "small",
        {
            "namespaces": ["team-a"],
            "resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": "512Mi"}},
        },
    )
    assert broken.spec is None and "requests.memory: above its limit 512Mi" in broken.invalid
    assert pools.parse("x", {"namespaces": []}).spec is None
    _, errors = pools.choose("small", "team-a", catalog(broken))
    assert errors == [f"spec.pool: CodeTaskPool 'small' is invalid: {broken.invalid}"]


@pytest.mark.parametrize(
    ("languages", "spec", "refused"),
    [
        ([], {}, False),
        (["python"], {}, False),
        (["node", "bash"], {}, True),
        (["node"], {"language": None, "code": None, "command": ["true"], "image": "x"}, False),
    ],
)
def test_a_pool_runs_only_its_languages_of_code(
    languages: list[str], spec: dict[str, Any], refused: bool
) -> None:
    errors = pools.fit(task(**spec), pool("p", languages=languages))
    assert bool(errors) == refused
    if refused:
        assert errors == ["spec.language: CodeTaskPool 'p' runs node, bash, not python"]


def test_a_pools_limits_replace_the_operators_caps_where_set() -> None:
    big = pool("big", resources={"limits": {"memory": "8Gi"}})
    small = pool("small", resources={"limits": {"cpu": "500m"}})
    ask = {"resources": {"limits": {"memory": "4Gi", "cpu": "1"}}}
    spec = {"language": "python", "code": "print(1)", **ask}
    assert admission.validate(spec, SETTINGS) == [
        "spec.resources.limits.memory: 4Gi is above the cap 2Gi"
    ]
    assert admission.validate({**spec, "pool": "big"}, SETTINGS, "team-a", catalog(big)) == []
    assert admission.validate({**spec, "pool": "small"}, SETTINGS, "team-a", catalog(small)) == [
        "spec.resources.limits.cpu: 1 is above the limit 500m of CodeTaskPool 'small'",
        "spec.resources.limits.memory: 4Gi is above the cap 2Gi",
    ]


def test_admission_reports_pool_problems_with_the_others() -> None:
    spec = {"language": "ruby", "code": "x", "pool": "gone"}
    errors = admission.validate(spec, SETTINGS, "team-a", {})
    assert errors == ["spec.language: must be one of 'python', 'node', 'bash' or 'sh'"]
    spec = {"language": "python", "code": "x", "pool": "gone", "timeoutSeconds": 5}
    assert admission.validate(spec, SETTINGS, "team-a", {}) == [
        "spec.pool: CodeTaskPool 'gone' does not exist"
    ]


def build(spec: api.CodeTaskSpec, chosen: pools.Pool | None) -> dict[str, Any]:
    return jobs.build_job("t", "uid-1", "team-a", spec, 1, SETTINGS, pool=chosen)


def test_the_job_of_a_pool_task_carries_the_pools_placement_image_and_label() -> None:
    chosen = pool(
        "sandboxed",
        image="registry.local/runner-plus:1",
        nodeSelector={"codetask.dev/pool": "sandboxed"},
        tolerations=[{"key": "sandbox", "operator": "Exists", "effect": "NoSchedule"}],
        affinity={"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
        runtimeClassName="gvisor",
    )
    pod = build(task(), chosen)["spec"]["template"]
    spec = pod["spec"]
    assert spec["nodeSelector"] == {"codetask.dev/pool": "sandboxed"}
    assert spec["tolerations"] == [{"key": "sandbox", "operator": "Exists", "effect": "NoSchedule"}]
    assert spec["affinity"] == {
        "nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}
    }
    assert spec["runtimeClassName"] == "gvisor"
    assert spec["containers"][0]["image"] == "registry.local/runner-plus:1"
    assert pod["metadata"]["labels"][jobs.LABEL_POOL] == "sandboxed"
    # The lockdown stays whatever the pool says.
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["automountServiceAccountToken"] is False


def test_without_a_pool_the_job_has_no_placement() -> None:
    spec = build(task(), None)["spec"]["template"]["spec"]
    assert not {"nodeSelector", "tolerations", "affinity", "runtimeClassName"} & spec.keys()
    assert spec["containers"][0]["image"] == SETTINGS.runner_image


def test_a_pool_image_is_for_code_tasks_only() -> None:
    chosen = pool("p", image="registry.local/runner-plus:1")
    custom = task(language=None, code=None, command=["true"], image="codetask-tools:1")
    assert build(custom, chosen)["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "codetask-tools:1"
    )


@pytest.mark.parametrize(
    ("class_", "asked", "requests", "limits"),
    [
        ({}, {}, {"memory": "128Mi"}, {"memory": "512Mi"}),
        (
            {"requests": {"memory": "1Gi"}, "limits": {"memory": "2Gi"}},
            {},
            {"memory": "1Gi"},
            {"memory": "2Gi"},
        ),
        ({"limits": {"memory": "64Mi"}}, {}, {"memory": "64Mi"}, {"memory": "64Mi"}),
        ({"requests": {"memory": "1Gi"}}, {}, {"memory": "1Gi"}, {"memory": "1Gi"}),
        (
            {"requests": {"memory": "1Gi"}, "limits": {"memory": "2Gi"}},
            {"limits": {"memory": "256Mi"}},
            {"memory": "256Mi"},
            {"memory": "256Mi"},
        ),
    ],
)
def test_a_pools_class_is_the_default_under_the_tasks_own_amounts(
    class_: dict[str, Any], asked: dict[str, Any], requests: dict[str, str], limits: dict[str, str]
) -> None:
    got = jobs.resources(api.Resources.model_validate(asked), SETTINGS, pool("p", resources=class_))
    assert {k: got["requests"][k] for k in requests} == requests
    assert {k: got["limits"][k] for k in limits} == limits


def item(name: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"namespaces": ["*"], **spec}}


def test_the_catalog_follows_listings_and_watch_events() -> None:
    known = Catalog(client=None)  # type: ignore[arg-type]  # no API call is made here
    known.replace([item("a"), item("b")])
    assert sorted(known.pools) == ["a", "b"]
    known.apply("MODIFIED", item("a", runtimeClassName="gvisor"))
    known.apply("DELETED", item("b"))
    known.apply("ADDED", item("c", namespaces=[]))
    assert sorted(known.pools) == ["a", "c"]
    assert known.pools["a"].spec and known.pools["a"].spec.runtime_class_name == "gvisor"
    assert known.pools["c"].spec is None and "namespaces" in known.pools["c"].invalid
    known.replace([item("c")])
    assert sorted(known.pools) == ["c"]
