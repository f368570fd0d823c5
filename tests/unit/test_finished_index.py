"""Finished tasks out of the watch: the index, and when a task is labelled out."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from codetask_operator import jobs
from codetask_operator.finished_index import FinishedIndex, finished, of_task
from codetask_operator.kube import ApiError
from codetask_operator.reconcile import Reconciler, Registry, TaskState
from codetask_operator.settings import Settings
from tests.unit.test_reconcile import (
    NAME,
    NS,
    UID,
    FakeKube,
    iso,
    job_body,
    pod_body,
    settled,
)

pytestmark = pytest.mark.unit

DONE = datetime(2026, 12, 5, 10, tzinfo=UTC)
FINAL = {"phase": "Succeeded", "completionTime": "2026-12-05T10:00:00Z"}


@pytest.mark.parametrize(
    ("spec", "default", "expires"),
    [
        ({}, None, None),
        ({}, 60, DONE + timedelta(seconds=60)),
        ({"ttlSecondsAfterFinished": 5}, 60, DONE + timedelta(seconds=5)),
        ({"ttlSecondsAfterFinished": 0}, None, DONE),
    ],
)
def test_an_entry_expires_at_its_own_ttl_else_the_default(
    spec: dict[str, int], default: int | None, expires: datetime | None
) -> None:
    entry = finished(NS, NAME, UID, spec, FINAL, default)
    assert (entry.phase, entry.completed, entry.expires) == ("Succeeded", DONE, expires)


def test_a_listed_task_gives_the_same_entry() -> None:
    task = {
        "metadata": {"namespace": NS, "name": NAME, "uid": UID},
        "spec": {"code": "print(1)", "ttlSecondsAfterFinished": 5},
        "status": {**FINAL, "stdout": "1\n"},
    }
    assert of_task(task, 60) == finished(NS, NAME, UID, {"ttlSecondsAfterFinished": 5}, FINAL, 60)


def test_due_entries_come_soonest_first_and_at_most_the_limit() -> None:
    index = FinishedIndex()
    for n, ttl in enumerate([30, 10, 20, 3600]):
        index.add(
            finished(f"ns{n % 2}", f"t{n}", f"u{n}", {"ttlSecondsAfterFinished": ttl}, FINAL, 0)
        )
    index.add(finished(NS, "kept", "k", {}, FINAL, None))
    now = DONE + timedelta(seconds=60)
    assert [e.name for e in index.due(now, 10)] == ["t1", "t2", "t0"]
    assert [e.name for e in index.due(now, 2)] == ["t1", "t2"]
    assert len(index) == 5 and "u3" in index and "u9" not in index


def test_a_fresh_list_drops_what_it_no_longer_has_and_empty_namespaces_go() -> None:
    index = FinishedIndex()
    for n in range(3):
        index.add(finished(NS, f"t{n}", f"u{n}", {}, FINAL, None))
    index.add(finished("other", "o", "o", {}, {"phase": "Failed"}, None))
    index.confirm(NS, ["u1", "not-indexed"])
    assert [e.uid for e in index.namespace(NS)] == ["u1"]
    assert sorted(p or "" for p in index.phases()) == ["Failed", "Succeeded"]
    index.discard(NS, "u1")
    index.discard("nowhere", "u1")
    assert list(index.by_namespace) == ["other"]


def finished_state(kube: FakeKube, **settings: object) -> tuple[Reconciler, TaskState]:
    reconciler = Reconciler(kube, Settings(**settings), Registry())  # type: ignore[arg-type]
    state = TaskState(uid=UID, namespace=NS, name=NAME, spec={}, status=dict(FINAL), final=True)
    reconciler.registry.tasks[UID] = state
    return reconciler, state


def test_a_task_labelled_out_is_indexed_with_the_default_ttl() -> None:
    kube = FakeKube()
    reconciler, state = finished_state(kube, default_ttl_seconds_after_finished=60)
    asyncio.run(reconciler.settle_finished())
    assert kube.calls == [f"label finished codetasks/{NAME}"] and state.left
    [entry] = reconciler.out_of_watch.namespace(NS)
    assert entry.expires == DONE + timedelta(seconds=60)
    asyncio.run(reconciler.settle_finished())
    assert len(kube.calls) == 1, "once"
    assert reconciler.registry.phases() == [], "counted by the index"


@pytest.mark.parametrize("busy", ["announcing", "labelling", "unfinished", "deleted"])
def test_a_task_stays_in_the_watch_while_it_has_something_to_do(busy: str) -> None:
    kube = FakeKube()
    reconciler, state = finished_state(kube)
    if busy == "announcing":
        state.announcing = True
    elif busy == "labelling":
        state.labelling.add(object())  # type: ignore[arg-type]
    elif busy == "unfinished":
        state.final = False
    else:
        state.deleted = True
    asyncio.run(reconciler.settle_finished())
    assert kube.calls == [] and not state.left


@pytest.mark.parametrize(("code", "again"), [(404, False), (409, False), (422, False), (500, True)])
def test_a_label_refused_for_a_task_gone_or_renamed_is_not_tried_again(
    code: int, again: bool
) -> None:
    """404: deleted; 409 or 422 (the patch carries the uid): the name is another task's now."""
    kube = FakeKube()
    reconciler, state = finished_state(kube)
    kube.fail["label_task_finished"] = [ApiError(code, "refused")]

    async def twice() -> None:
        for _ in range(2):
            with contextlib.suppress(ApiError):
                await reconciler.leave_watch(state)

    asyncio.run(twice())
    assert len(kube.calls) == (1 if again else 0) and state.left == again
    assert len(reconciler.out_of_watch) == (1 if again else 0)


def test_a_task_that_left_is_forgotten_without_revoking_anything() -> None:
    kube = FakeKube()
    reconciler, state = finished_state(kube)
    asyncio.run(settled(reconciler, reconciler.leave_watch(state)))
    reconciler.left_watch(UID)
    assert reconciler.registry.get(UID) is None, "late Job and pod events do not bring it back"
    assert not reconciler.background and reconciler.out_of_watch.namespace(NS)


class ListingKube(FakeKube):
    """FakeKube with CodeTasks to list, by label selector."""

    def __init__(self, tasks: list[dict[str, Any]]) -> None:
        super().__init__()
        self.tasks = tasks

    async def task_pages(self, namespace: str | None, selector: str = "") -> AsyncIterator[Any]:
        self.calls.append(f"list tasks {namespace or '*'} {selector}")
        for task in self.tasks:
            yield task

    async def list_jobs(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        self.calls.append(f"list jobs {selector}")
        return list(self.jobs.values())

    async def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        self.calls.append(f"list pods {selector}")
        return list(self.pods.values())


def listed_task(namespace: str, name: str, uid: str) -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": name, "uid": uid}, "status": FINAL}


@pytest.mark.parametrize(
    ("served", "lists"),
    [([], ["*"]), (["team-*"], ["*"]), (["team-a", "other"], ["team-a", "other"])],
)
def test_the_start_indexes_the_served_tasks_out_of_the_watch(
    served: list[str], lists: list[str]
) -> None:
    tasks = [listed_task("team-a", "a", "ua"), listed_task("other", "o", "uo")]
    kube = ListingKube(tasks)
    reconciler = Reconciler(kube, Settings(), Registry())  # type: ignore[arg-type]
    asyncio.run(reconciler.load_out_of_watch(served))
    assert kube.calls == [f"list tasks {scope} codetask.dev/finished" for scope in lists]
    expected = {"ua", "uo"} if served != ["team-*"] else {"ua"}
    assert set(reconciler.out_of_watch.namespace_of) == expected
    assert reconciler.out_of_watch.loaded


def test_jobs_and_pods_seen_before_their_task_was_indexed_are_labelled_out() -> None:
    """After a restart a Job or pod can be listed before the list of tasks out of the watch says
    whose it is: the operator may have stopped after labelling the task, before them."""
    kube = ListingKube([listed_task(NS, NAME, UID)])
    reconciler = Reconciler(kube, Settings(), Registry())  # type: ignore[arg-type]
    assert reconciler.registry.get(UID) is not None  # a pod event, its task not known yet
    job, pod, gone = job_body(), pod_body(), pod_body()
    gone["metadata"].update(name="going", deletionTimestamp=iso(1))
    kube.jobs, kube.pods = {"j": job}, {"p": pod, "g": gone}
    asyncio.run(settled(reconciler, reconciler.load_out_of_watch([])))
    selector = f"{jobs.LABEL_TASK_UID}={UID},!{jobs.LABEL_FINISHED}"
    assert kube.calls == [
        f"list tasks * {jobs.LABEL_FINISHED}",
        f"list jobs {selector}",
        f"list pods {selector}",
        f"label finished jobs/{job['metadata']['name']}",
        f"label finished pods/{pod['metadata']['name']}",
    ]
    assert UID not in reconciler.registry.tasks


def test_a_job_of_a_task_out_of_the_watch_is_labelled_once_at_a_time() -> None:
    kube = FakeKube()
    reconciler = Reconciler(kube, Settings(), Registry())  # type: ignore[arg-type]

    async def events() -> None:
        reconciler.label_out(NS, "jobs", "j")
        reconciler.label_out(NS, "jobs", "j")  # a second event while the first patch is out
        await settled(reconciler, asyncio.sleep(0))
        reconciler.label_out(NS, "jobs", "j")  # its label removed again
        await settled(reconciler, asyncio.sleep(0))

    asyncio.run(events())
    assert kube.calls == ["label finished jobs/j", "label finished jobs/j"]


@pytest.mark.parametrize("final", [True, False])
def test_a_task_someone_else_labelled_stays_until_the_operator_has(final: bool) -> None:
    """Labelled by a user (with the webhook off): a finished task still gets its index entry (its
    TTL, the cap); an unfinished one goes on from its Job's and pod's events."""
    kube = FakeKube()
    reconciler, state = finished_state(kube)
    state.final = final
    reconciler.left_watch(UID)
    assert reconciler.registry.tasks[UID] is state
    state.final = True
    asyncio.run(reconciler.leave_watch(state))
    assert UID not in reconciler.registry.tasks and UID in reconciler.out_of_watch


class StoredKube(FakeKube):
    """FakeKube whose CodeTasks are read by name."""

    def __init__(self) -> None:
        super().__init__()
        self.stored: dict[str, dict[str, Any]] = {}

    async def get_task(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.stored.get(name)


def stored(kube: StoredKube, name: str, uid: str, ttl: int | None, done: str, **meta: Any) -> None:
    spec = {} if ttl is None else {"ttlSecondsAfterFinished": ttl}
    kube.stored[name] = {
        "metadata": {"namespace": NS, "name": name, "uid": uid, "labels": FINISHED_LABEL, **meta},
        "spec": spec,
        "status": {"phase": "Succeeded", "completionTime": done},
    }


FINISHED_LABEL = {jobs.LABEL_FINISHED: "true"}


def test_tasks_out_of_the_watch_go_at_their_ttl_as_read_afresh() -> None:
    kube = StoredKube()
    settings = Settings(default_ttl_seconds_after_finished=None)
    reconciler = Reconciler(kube, settings, Registry())  # type: ignore[arg-type]
    hour_ago = iso(3600)
    for name, ttl in [("due", 60), ("longer", 7200), ("kept", None), ("gone", 60), ("other", 60)]:
        stored(kube, name, f"u-{name}", ttl, hour_ago)
        reconciler.out_of_watch.add(of_task(kube.stored[name], None))
    # Since indexed: one's TTL made longer, one's removed, one deleted, one's name reused, one
    # back in the watch.
    stored(kube, "longer", "u-longer", 7200, hour_ago)
    reconciler.out_of_watch.add(finished(NS, "longer", "u-longer", {}, FINAL, 60))
    reconciler.out_of_watch.add(finished(NS, "kept", "u-kept", {}, FINAL, 60))
    del kube.stored["gone"]
    stored(kube, "other", "u-another", 60, hour_ago)
    stored(kube, "back", "u-back", 60, hour_ago, labels={})
    reconciler.out_of_watch.add(finished(NS, "back", "u-back", {}, FINAL, 60))
    asyncio.run(reconciler.expire_out_of_watch())
    assert kube.calls == ["delete task due"]
    left = {e.name: e.expires for e in reconciler.out_of_watch.namespace(NS)}
    assert set(left) == {"longer", "kept"} and left["kept"] is None
