"""A task's Secret and ConfigMap references: found in every field that names one, checked as the
requesting user by the webhook, and stamped so the operator knows the check happened."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import pytest

from codetask_operator import access, api
from codetask_operator.access import Reference
from codetask_operator.webhook import stamp_references

pytestmark = pytest.mark.unit

KEY = b"k" * 32
CREATED = datetime(2026, 12, 5, 1, 0, 0, tzinfo=UTC)
AT = int(CREATED.timestamp())
SECRET_ENV = {"name": "DB", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}
CONFIG_ENV = {"name": "CFG", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "x"}}}
CODE = {"language": "python", "code": "print(1)"}
AGENT = {"prompt": "hi", "agent": {"apiKeySecretRef": {"name": "model", "key": "k"}}}


def spec(**fields: Any) -> api.CodeTaskSpec:
    return api.CodeTaskSpec.model_validate(fields)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (CODE, []),
        ({**CODE, "env": [{"name": "A", "value": "1"}]}, []),
        (
            {**CODE, "env": [{"name": "A", "value": "1"}, SECRET_ENV, CONFIG_ENV]},
            [
                Reference("spec.env[1].valueFrom.secretKeyRef", "secrets", "db"),
                Reference("spec.env[2].valueFrom.configMapKeyRef", "configmaps", "cfg"),
            ],
        ),
        (AGENT, [Reference("spec.agent.apiKeySecretRef", "secrets", "model")]),
        (
            {**AGENT, "agent": {**AGENT["agent"], "inputConfigMap": "files"}},
            [
                Reference("spec.agent.apiKeySecretRef", "secrets", "model"),
                Reference("spec.agent.inputConfigMap", "configmaps", "files"),
            ],
        ),
    ],
)
def test_every_reference_is_found_with_its_field(
    fields: dict[str, Any], expected: list[Reference]
) -> None:
    assert access.references(spec(**fields)) == expected


def test_the_review_asks_as_the_requesting_user() -> None:
    user = {"username": "alice", "uid": "u-1", "groups": ["dev"], "extra": {"scope": ["x"]}}
    review = access.review(user, "team-a", Reference("f", "secrets", "db"))
    assert review["spec"] == {
        "user": "alice",
        "uid": "u-1",
        "groups": ["dev"],
        "extra": {"scope": ["x"]},
        "resourceAttributes": {
            "namespace": "team-a",
            "verb": "get",
            "resource": "secrets",
            "name": "db",
        },
    }


REFS = [Reference("spec.env[0].valueFrom.secretKeyRef", "secrets", "db")]
GOOD = access.stamp(KEY, "ns", "t", "", REFS, AT)


@pytest.mark.parametrize(
    ("value", "namespace", "name", "generate_name", "refs", "created", "ok"),
    [
        (GOOD, "ns", "t", "", REFS, CREATED, True),
        (GOOD, "ns", "t", "", REFS, CREATED + timedelta(seconds=59), True),
        # Copied onto a later task (the webhook down meanwhile): too old for it.
        (GOOD, "ns", "t", "", REFS, CREATED + timedelta(seconds=61), False),
        (GOOD, "other", "t", "", REFS, CREATED, False),
        (GOOD, "ns", "t2", "", REFS, CREATED, False),
        (
            GOOD,
            "ns",
            "t",
            "",
            [Reference("spec.env[0].valueFrom.secretKeyRef", "secrets", "x")],
            CREATED,
            False,
        ),
        (
            access.stamp(b"another key", "ns", "t", "", REFS, AT),
            "ns",
            "t",
            "",
            REFS,
            CREATED,
            False,
        ),
        (None, "ns", "t", "", REFS, CREATED, False),
        ("garbage", "ns", "t", "", REFS, CREATED, False),
        # generateName: the name is made after admission.
        (access.stamp(KEY, "ns", "", "t-", REFS, AT), "ns", "t-x7k2p", "t-", REFS, CREATED, True),
        (access.stamp(KEY, "ns", "", "t-", REFS, AT), "ns", "u-x7k2p", "t-", REFS, CREATED, False),
    ],
)
def test_only_the_webhooks_stamp_for_this_task_verifies(
    value: str | None,
    namespace: str,
    name: str,
    generate_name: str,
    refs: list[Reference],
    created: datetime,
    ok: bool,
) -> None:
    assert access.verified(KEY, value, namespace, name, generate_name, refs, created) is ok


class Answers:
    """SubjectAccessReviews answered from a set of (user, resource, name) allowed."""

    def __init__(self, allowed: set[tuple[str, str, str]]) -> None:
        self.allowed_set = allowed
        self.asked: list[dict[str, Any]] = []

    async def allowed(self, review: dict[str, Any]) -> bool:
        self.asked.append(review)
        attrs = review["spec"]["resourceAttributes"]
        return (review["spec"]["user"], attrs["resource"], attrs["name"]) in self.allowed_set


def mutate(answers: Answers, fields: dict[str, Any], annotations: dict[str, str]) -> kopf.Patch:
    patch = kopf.Patch()
    meta = {"name": "t", "namespace": "ns", "annotations": annotations}
    asyncio.run(
        stamp_references(answers, KEY, fields, meta, patch, {"username": "alice"})  # type: ignore[arg-type]
    )
    return patch


def test_a_reference_the_creator_may_not_get_is_refused_naming_the_field() -> None:
    answers = Answers({("alice", "configmaps", "cfg")})
    with pytest.raises(kopf.AdmissionError) as refused:
        mutate(answers, {**CODE, "env": [SECRET_ENV, CONFIG_ENV]}, {})
    assert str(refused.value) == (
        "spec.env[0].valueFrom.secretKeyRef: alice may not get secret 'db' in namespace 'ns', "
        "and the task's pod would read it (ask for get on secrets)"
    )
    assert len(answers.asked) == 2


def test_references_the_creator_may_get_are_stamped_and_a_forged_stamp_dropped() -> None:
    answers = Answers({("alice", "secrets", "db")})
    patch = mutate(answers, {**CODE, "env": [SECRET_ENV]}, {access.STAMP_ANNOTATION: "forged"})
    value = patch["metadata"]["annotations"][access.STAMP_ANNOTATION]
    at = datetime.fromtimestamp(int(value.split(".")[0]), UTC)
    assert access.verified(
        KEY, value, "ns", "t", "", access.references(spec(**CODE, env=[SECRET_ENV])), at
    )
    dropped = mutate(answers, CODE, {access.STAMP_ANNOTATION: "forged"})
    assert dropped["metadata"]["annotations"][access.STAMP_ANNOTATION] is None
