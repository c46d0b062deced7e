"""Wrappers of checkpoints, subtask groups, their notices, and dependencies."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..connection import Client
from ..keys import QueueKeys
from ..operations import BY_NAME, keys_for
from ..protocol import (
    FORGET_BATCH_MAX,
)
from .enqueueing import (
    ParentRef,
)
from .fcall import fcall, fcall_ro, text_of
from .leases import (
    dependents_from,
)


def checkpoint(
    conn: Client,
    keys: QueueKeys,
    job_id: str,
    token: str,
    saved: str,
    lease_ms: int,
    pause: bool,
    preemptible: bool = False,
) -> int:
    """Save a checkpoint and renew the lease; returns the new deadline, or 0 when paused
    (asked to, or, when `preemptible`, preempted by a job of higher priority)."""
    mode = "1" if pause else "p" if preemptible else "0"
    return int(
        fcall(
            conn,
            "psq_checkpoint",
            keys_for("psq_checkpoint", keys),
            [job_id, token, saved, lease_ms, mode],
        )
    )


def split_keys(keys: QueueKeys, job_id: str) -> list[str]:
    """The keys `psq_split` takes, in its header's order."""
    return keys_for("psq_split", keys, [job_id])


def split(
    conn: Client,
    keys: QueueKeys,
    job_id: str,
    token: str,
    number: int,
    groups: Sequence[tuple[str, int]],
    collect: bool,
    saved: str | None,
) -> str:
    """Make a running job wait for its `number`-th split; returns its new status."""
    total = sum(count for _, count in groups)
    return text_of(
        fcall(
            conn,
            "psq_split",
            split_keys(keys, job_id),
            [
                job_id,
                token,
                number,
                total,
                json.dumps([list(g) for g in groups]),
                "1" if collect else "0",
                "" if saved is None else saved,
            ],
        )
    )


def subtask_done_args(parent: ParentRef, ok: bool, value: str) -> list[Any]:
    """The keys and arguments of one `psq_subtask_done` call, for a client or a pipeline."""
    keys = QueueKeys(parent.queue)
    return [
        *keys_for("psq_subtask_done", keys, [parent.id]),
        parent.id,
        parent.split,
        parent.index,
        "1" if ok else "0",
        value,
    ]


SUBTASK_DONE_NUMKEYS = len(BY_NAME["psq_subtask_done"].keys) + 1


def subtask_done(conn: Client, parent: ParentRef, ok: bool, value: str) -> str:
    """Record a subtask's end in its parent's queue; see lua/subtask_done.lua for replies."""
    call = subtask_done_args(parent, ok, value)
    return text_of(
        fcall(
            conn,
            "psq_subtask_done",
            call[:SUBTASK_DONE_NUMKEYS],
            call[SUBTASK_DONE_NUMKEYS:],
        )
    )


def subtask_outcomes(
    conn: Client, keys: QueueKeys, parent_id: str, number: int, first: int, count: int
) -> list[str | None]:
    """A page of outcomes (JSON text) of split `number`, from index `first`."""
    reply = fcall_ro(
        conn,
        "psq_subtask_outcomes",
        keys_for("psq_subtask_outcomes", keys, [parent_id]),
        [parent_id, number, first, count],
    )
    return [None if x is None else text_of(x) for x in reply]


@dataclass(frozen=True, slots=True)
class Notice:
    """A job's end that its parent's queue (a subtask) or its dependents' queues may not have
    recorded yet."""

    subtask_id: str
    parent: ParentRef | None
    ok: bool
    value: str
    status: str = ""
    dependents: tuple[tuple[str, str], ...] = ()


def stale_notices(conn: Client, keys: QueueKeys, count: int) -> list[Notice]:
    reply = fcall_ro(
        conn,
        "psq_stale_notices",
        keys_for("psq_stale_notices", keys),
        [count],
    )
    notices = []
    for i in range(0, len(reply), 6):
        parent_json = text_of(reply[i + 1])
        parent = ParentRef(**json.loads(parent_json)) if parent_json else None
        dependents = tuple(dependents_from(reply[i + 5])) if text_of(reply[i + 5]) else ()
        notices.append(
            Notice(
                text_of(reply[i]),
                parent,
                text_of(reply[i + 2]) == "1",
                text_of(reply[i + 3]),
                text_of(reply[i + 4]),
                dependents,
            )
        )
    return notices


ADD_DEPENDENT_NUMKEYS = len(BY_NAME["psq_add_dependent"].keys)


def add_dependent_args(keys: QueueKeys, job_id: str, queue: str, dependent: str) -> list[Any]:
    """The keys and arguments of one `psq_add_dependent` call, for a client or a pipeline."""
    return [*keys_for("psq_add_dependent", keys), job_id, queue, dependent]


def parse_add_dependent_reply(reply: Any) -> tuple[str, str]:
    return text_of(reply[0]), text_of(reply[1])


def add_dependent(
    conn: Client, keys: QueueKeys, job_id: str, queue: str, dependent: str
) -> tuple[str, str]:
    """Note in job `job_id` (of `keys`) that job `dependent` of `queue` waits for it; returns
    ('pending', '') when noted, else the job's end: ('complete', ''), ('failed' / 'cancelled'
    / 'expired', error text) or ('missing', '')."""
    call = add_dependent_args(keys, job_id, queue, dependent)
    reply = fcall(
        conn, "psq_add_dependent", call[:ADD_DEPENDENT_NUMKEYS], call[ADD_DEPENDENT_NUMKEYS:]
    )
    return parse_add_dependent_reply(reply)


def dependency_done(
    conn: Client, keys: QueueKeys, job_id: str, queue: str, dep: str, ok: bool, status: str
) -> str:
    """Record in job `job_id`'s queue (`keys`) that its dependency `dep` of `queue` ended;
    see lua/dependency_done.lua for the replies."""
    return text_of(
        fcall(
            conn,
            "psq_dependency_done",
            keys_for("psq_dependency_done", keys),
            [job_id, queue, dep, "1" if ok else "0", status],
        )
    )


def forget_notices(conn: Client, keys: QueueKeys, subtask_ids: Sequence[str]) -> int:
    forgotten = 0
    for start in range(0, len(subtask_ids), FORGET_BATCH_MAX):
        batch = list(subtask_ids[start : start + FORGET_BATCH_MAX])
        forgotten += int(
            fcall(conn, "psq_forget_notices", keys_for("psq_forget_notices", keys), batch)
        )
    return forgotten
