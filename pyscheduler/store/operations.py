"""The library's functions and the keys each one takes: the single source of every KEYS order.

`pyscheduler.library` renders this table into the Lua library, where every function checks
the keys it was given against its row before it reads or writes anything; the wrappers in
`pyscheduler.calls` build their key lists from the same rows with `keys_for`. Each Lua file's
header lists its KEYS in this order (a test compares them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from .keys import QueueKeys

# A fixed key named "state" is one of these sets of the queue (which one, the call says).
STATE = "state"
STATE_SETS: Final = ("ready", "delayed", "active", "waiting", "failed", "finished")


# The Redis type of each key (as TYPE names it); a call whose key holds another type is
# refused before it reads or writes, since Redis would fail it halfway (WRONGTYPE).
KEY_TYPES: Final = {
    "jobs": "hash",
    "payloads": "hash",
    "results": "hash",
    "errors": "hash",
    "ready": "zset",
    "delayed": "zset",
    "active": "zset",
    "waiting": "zset",
    "failed": "zset",
    "finished": "zset",
    "seq": "string",
    "stats": "hash",
    "wake": "list",
    "checkpoints": "hash",
    "notices": "zset",
    "config": "hash",
    "starts": "zset",
    "workers": "zset",
    "worker_info": "hash",
    "subtasks": "hash",
    "metrics": "hash",
    "events": "stream",
    "schedules": "hash",
    "ticks": "zset",
    "unique": "zset",
    "unique_ids": "hash",
    STATE: "zset",
}


@dataclass(frozen=True, slots=True)
class Operation:
    """One function of the library.

    `keys`: its fixed KEYS, as `QueueKeys` attribute names (or STATE), in order. With
    `per_item`, one `subtasks:<id>` key of the queue follows them for each job id the call
    names (its items), in the order of the items.
    """

    name: str
    file: str
    keys: tuple[str, ...]
    per_item: bool = False
    read_only: bool = False


OPERATIONS: Final = (
    Operation(
        "psq_enqueue",
        "enqueue.lua",
        (
            "jobs",
            "payloads",
            "ready",
            "delayed",
            "seq",
            "stats",
            "wake",
            "waiting",
            "config",
            "events",
            "unique",
            "unique_ids",
        ),
    ),
    Operation(
        "psq_pop",
        "pop.lua",
        (
            "jobs",
            "payloads",
            "errors",
            "ready",
            "delayed",
            "active",
            "failed",
            "seq",
            "stats",
            "wake",
            "results",
            "finished",
            "checkpoints",
            "notices",
            "config",
            "starts",
            "metrics",
            "events",
            "schedules",
            "ticks",
        ),
    ),
    Operation("psq_renew", "renew.lua", ("jobs", "active")),
    Operation(
        "psq_release",
        "release.lua",
        ("jobs", "ready", "active", "seq", "wake", "config", "starts", "stats", "metrics"),
    ),
    Operation(
        "psq_start_run",
        "start_run.lua",
        ("jobs", "active", "starts", "config", "stats", "metrics", "events"),
    ),
    Operation(
        "psq_complete_many",
        "complete_many.lua",
        (
            "jobs",
            "payloads",
            "results",
            "errors",
            "active",
            "finished",
            "stats",
            "checkpoints",
            "notices",
            "config",
            "wake",
            "failed",
            "metrics",
            "events",
            "ready",
            "seq",
        ),
        per_item=True,
    ),
    Operation(
        "psq_fail",
        "fail.lua",
        (
            "jobs",
            "errors",
            "ready",
            "delayed",
            "active",
            "failed",
            "seq",
            "stats",
            "wake",
            "notices",
            "config",
            "metrics",
            "events",
            "payloads",
        ),
    ),
    Operation(
        "psq_cancel",
        "cancel.lua",
        (
            "jobs",
            "ready",
            "delayed",
            "active",
            "waiting",
            "finished",
            "stats",
            "notices",
            "events",
        ),
        per_item=True,
    ),
    Operation(
        "psq_fetch",
        "fetch.lua",
        ("jobs", "payloads", "results", "errors", "checkpoints"),
        per_item=True,
        read_only=True,
    ),
    Operation(
        "psq_counts",
        "counts.lua",
        ("ready", "delayed", "active", "failed", "finished", "stats", "waiting", "config", "jobs"),
        read_only=True,
    ),
    Operation(
        "psq_metrics",
        "metrics.lua",
        ("stats", "metrics", "workers"),
        read_only=True,
    ),
    Operation("psq_list_jobs", "list_jobs.lua", (STATE, "jobs"), read_only=True),
    Operation(
        "psq_checkpoint",
        "checkpoint.lua",
        ("jobs", "checkpoints", "ready", "active", "seq", "stats", "wake", "config", "events"),
    ),
    Operation(
        "psq_split",
        "split.lua",
        (
            "jobs",
            "checkpoints",
            "ready",
            "active",
            "waiting",
            "failed",
            "errors",
            "seq",
            "stats",
            "wake",
            "notices",
            "config",
            "events",
            "payloads",
        ),
        per_item=True,
    ),
    Operation(
        "psq_subtask_done",
        "subtask_done.lua",
        (
            "jobs",
            "ready",
            "waiting",
            "failed",
            "errors",
            "seq",
            "stats",
            "wake",
            "notices",
            "config",
            "events",
            "payloads",
        ),
        per_item=True,
    ),
    Operation("psq_subtask_outcomes", "subtask_outcomes.lua", (), per_item=True, read_only=True),
    Operation(
        "psq_stale_notices",
        "stale_notices.lua",
        ("notices", "jobs", "results", "errors"),
        read_only=True,
    ),
    Operation("psq_forget_notices", "forget_notices.lua", ("notices",)),
    Operation("psq_add_dependent", "add_dependent.lua", ("jobs", "errors")),
    Operation(
        "psq_dependency_done",
        "dependency_done.lua",
        (
            "jobs",
            "ready",
            "waiting",
            "finished",
            "errors",
            "seq",
            "stats",
            "wake",
            "notices",
            "config",
            "events",
        ),
    ),
    Operation("psq_configure", "configure.lua", ("config", "wake", "ready")),
    Operation(
        "psq_retry",
        "retry.lua",
        ("jobs", "ready", "failed", "seq", "stats", "wake", "config", "events"),
    ),
    Operation(
        "psq_purge",
        "purge.lua",
        ("jobs", "payloads", "results", "errors", "checkpoints", STATE),
    ),
    Operation("psq_heartbeat", "heartbeat.lua", ("workers", "worker_info")),
    Operation("psq_list_workers", "list_workers.lua", ("workers", "worker_info"), read_only=True),
    Operation("psq_version", "version.lua", (), read_only=True),
    Operation("psq_schedule", "schedule.lua", ("schedules", "ticks", "config", "wake")),
    Operation("psq_unschedule", "unschedule.lua", ("schedules", "ticks")),
    Operation("psq_pause_schedule", "pause_schedule.lua", ("schedules", "ticks", "wake")),
    Operation("psq_refill_schedule", "refill_schedule.lua", ("schedules", "ticks", "wake")),
    Operation("psq_list_schedules", "list_schedules.lua", ("schedules", "ticks"), read_only=True),
    Operation("psq_set_progress", "set_progress.lua", ("jobs",)),
)

BY_NAME: Final = {op.name: op for op in OPERATIONS}


def keys_for(
    name: str, keys: QueueKeys, item_ids: Sequence[str] = (), state: str | None = None
) -> list[str]:
    """The KEYS of one call of `name` on queue `keys`: its fixed keys, then (for a per-item
    function) one subtasks key per job id in `item_ids`. `state` names the state set
    (`QueueKeys` attribute, e.g. "failed") of a function whose keys include STATE."""
    op = BY_NAME[name]
    out: list[str] = []
    for key in op.keys:
        if key == STATE:
            if state not in STATE_SETS:
                raise ValueError(f"{name} needs a state set, one of {STATE_SETS}: {state!r}")
            out.append(getattr(keys, str(state)))
        else:
            out.append(getattr(keys, key))
    if item_ids:
        if not op.per_item:
            raise ValueError(f"{name} takes no per-job keys")
        out += (keys.subtasks(job_id) for job_id in item_ids)
    return out


def template_context() -> dict[str, object]:
    """The table as the Lua templates use it."""
    return {
        "OPERATION_TABLE": OPERATIONS,
        "STATE_KEY": STATE,
        "STATE_SETS": STATE_SETS,
        "KEY_TYPES": KEY_TYPES,
    }
