"""3. API cost: the operator's writes per finished successful task, from the audit log.

N `print(2+2)` tasks run one after another to Succeeded on the real node. The operator runs as its
own ServiceAccount, so its requests are the audit entries with that user: every POST, PUT, PATCH and
DELETE it made in the namespace, Events included, from the first task's create to a few seconds
after the last one succeeded (late writes count). The operator's own
`codetask_api_writes_total` (which does not see kopf's Event posts) is the cross-check. The
baseline is a raw Job: one POST by its user.
"""

from __future__ import annotations

import time
from collections import Counter

from bench import audit
from bench.cluster import GROUP, PLURAL, VERSION
from bench.harness import Context, codetask, phase
from bench.report import Figure, Result
from bench.watch import Watcher

NAME = "apicost"
TARGET = 4
FINAL = ("Succeeded", "Failed", "TimedOut", "Cancelled")
SETTLE_SECONDS = 8
"""Longer than the operator's 5 s sweep, so a write it would still make is counted."""


def run(ctx: Context) -> Result:
    n = ctx.n(20, least=5)
    ns = ctx.run.namespace(NAME)
    phases: Counter[str] = Counter()
    with ctx.operator(NAME) as op:
        tasks = Watcher(
            ctx.custom().list_namespaced_custom_object, GROUP, VERSION, ns, PLURAL
        ).start()
        ctx.create_task(ns, codetask("warm"))  # kopf picks up the namespace; the image is warm
        tasks.first("warm", phase(*FINAL), timeout=120)
        time.sleep(SETTLE_SECONDS)
        mark = ctx.audit.mark()
        before = op.api_writes()
        for i in range(n):
            name = f"c{i:03d}"
            ctx.create_task(ns, codetask(name))
            tasks.first(name, phase(*FINAL), timeout=120)
        time.sleep(SETTLE_SECONDS)
        after = op.api_writes()
        for i in range(n):
            obj = ctx.custom().get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, f"c{i:03d}")
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
    succeeded = phases["Succeeded"]
    total = sum(writes.values())
    events = sum(v for k, v in writes.items() if k.endswith(" events"))
    metric = {
        k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)
    }
    per_task = round(total / max(1, succeeded), 2)
    figures = [
        Figure(
            "API writes per successful task",
            per_task,
            "writes",
            1.0,
            "raw Job: its one POST",
            f"≤ {TARGET}",
            per_task <= TARGET,
        ),
        Figure(
            "… of which not Events",
            round((total - events) / max(1, succeeded), 2),
            "writes",
            1.0,
            "raw Job: its one POST",
            "-",
            None,
        ),
    ]
    return Result(
        NAME,
        figures,
        {
            "tasks": n,
            "phases": dict(phases),
            "writes_by_verb_and_resource": dict(writes.most_common()),
            "writes_total": total,
            "events_total": events,
            "http_methods": dict(
                Counter(audit.HTTP_METHOD[k.split()[0]] for k in writes.elements())
            ),
            "metrics_cross_check": metric,
            "writes_by_others_to_these_tasks": dict(foreign),
        },
        method=__doc__ or "",
    )
