"""The container's OOM-kill counter, to tell an out-of-memory kill from any other SIGKILL.

The kernel's OOM killer picks the largest process in the container's cgroup — the code, not the
runner — so the container itself does not end OOMKilled; the cgroup's counter says what happened.
"""

from __future__ import annotations

COUNTERS = (
    "/sys/fs/cgroup/memory.events",  # cgroup v2
    "/sys/fs/cgroup/memory/memory.oom_control",  # cgroup v1
)


def oom_kills(paths: tuple[str, ...] = COUNTERS) -> int | None:
    """The cgroup's `oom_kill` count, or None where no counter is readable."""
    for path in paths:
        try:
            with open(path) as file:
                for line in file:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            continue
    return None
