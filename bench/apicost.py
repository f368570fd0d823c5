"""3. API cost: the operator's writes per finished task, from the audit log, in three cases.

- **quick**: N `print(2+2)` tasks one after another to Succeeded on the real node (the code often
  ends before the operator sees the pod running: no Running write);
- **seen Running**: N tasks that sleep 3 s first, one after another (always seen running);
- **under maxRunning**: N quick tasks created at once under `limits.maxRunning` N/4 (queued, then
  started as slots free up: the Queued writes and queue positions count).

The operator (the chart's release) runs as its own ServiceAccount, so its requests are the audit
entries with that user: every POST, PUT, PATCH and DELETE it made in the case's namespace, Events
included, from the first task's create to a few seconds after the last one ended (late writes
count); its Lease renewals are in its own namespace and not counted. The operator's own
`codetask_api_writes_total` (which does not see kopf's Event posts) is the cross-check. The
baseline is a raw Job: one POST by its user.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from bench import audit
from bench.cluster import GROUP, PLURAL, VERSION
from bench.harness import Context, codetask, phase
from bench.operator_process import Operator
from bench.report import Figure, Result
from bench.watch import Watcher

NAME = "apicost"
TARGET = 3
FINAL = ("Succeeded", "Failed", "TimedOut", "Cancelled")
SETTLE_SECONDS = 8
"""Longer than the operator's 5 s sweep, so a write it would still make is counted."""
SLOW = "import time\ntime.sleep(3)\nprint(2 + 2)"


def _case(
    ctx: Context, op: Operator, case: str, n: int, code: str, at_once: bool
) -> dict[str, Any]:
    """Run `n` tasks in a namespace of their own; the operator's writes there, per task."""
    ns = ctx.run.namespace(f"{NAME}-{case}")
    tasks = Watcher(ctx.custom().list_namespaced_custom_object, GROUP, VERSION, ns, PLURAL).start()
    ctx.create_task(ns, codetask("warm"))  # kopf picks up the namespace; its policies are made
    tasks.first("warm", phase(*FINAL), timeout=120)
    ctx.settle(SETTLE_SECONDS)
    mark = ctx.audit.mark()
    before = op.api_writes()
    names = [f"c{i:03d}" for i in range(n)]
    for name in names:
        ctx.create_task(ns, codetask(name, code))
        if not at_once:
            tasks.first(name, phase(*FINAL), timeout=120)
    for name in names:
        tasks.first(name, phase(*FINAL), timeout=600)
    ctx.settle(SETTLE_SECONDS)
    after = op.api_writes()
    phases: Counter[str] = Counter()
    for name in names:
        obj = ctx.custom().get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        phases[str((obj.get("status") or {}).get("phase"))] += 1
    tasks.stop()
    ctx.run.delete_namespace(ns, wait=120)

    entries = [e for e in audit.parse(ctx.audit.lines_since(mark), needle=ns) if e.namespace == ns]
    writes = audit.count_writes(entries, ctx.identity.user)
    ours = {e.user for e in entries if e.verb == "create" and e.resource == PLURAL}
    foreign = Counter(
        f"{e.user} {e.verb} {e.resource}"
        for e in entries
        if e.write
        and e.user not in ours | {ctx.identity.user}
        and e.resource in (PLURAL, f"{PLURAL}/status", "jobs")
        and not e.user.startswith("system:serviceaccount:kube-system:")
    )
    total = sum(writes.values())
    events = sum(v for k, v in writes.items() if k.endswith(" events"))
    ended = sum(phases.values())
    return {
        "tasks": n,
        "per_task": round(total / max(1, ended), 2),
        "per_task_without_events": round((total - events) / max(1, ended), 2),
        "phases": dict(phases),
        "writes_by_verb_and_resource": dict(writes.most_common()),
        "writes_total": total,
        "events_total": events,
        "metrics_cross_check": {
            k: after.get(k, 0) - before.get(k, 0)
            for k in after
            if after.get(k, 0) != before.get(k, 0)
        },
        "writes_by_others_to_these_tasks": dict(foreign),
    }


def run(ctx: Context) -> Result:
    n = ctx.n(20, least=4)
    limit = max(1, n // 4)
    with ctx.operator(NAME) as op:
        quick = _case(ctx, op, "quick", n, "print(2+2)", at_once=False)
        running = _case(ctx, op, "running", n, SLOW, at_once=False)
    with ctx.operator(f"{NAME}-limited", values=("--set", f"limits.maxRunning={limit}")) as op:
        limited = _case(ctx, op, "limited", n, "print(2+2)", at_once=True)

    def figure(name: str, case: dict[str, Any], target: bool) -> Figure:
        value = case["per_task"]
        return Figure(
            name,
            value,
            "writes",
            1.0,
            "raw Job: its one POST",
            f"≤ {TARGET}" if target else "-",
            value <= TARGET if target else None,
        )

    figures = [
        figure("API writes per task, print(2+2)", quick, True),
        figure("API writes per task, seen Running", running, True),
        figure(f"API writes per task, maxRunning {limit}", limited, False),
    ]
    return Result(
        NAME,
        figures,
        {"quick": quick, "seen_running": running, "under_max_running": limited, "limit": limit},
        method=__doc__ or "",
    )
