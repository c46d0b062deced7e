"""Wrappers of `psq_enqueue`: the job to enqueue, the command of a batch, its reply."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..connection import Client
from ..keys import QueueKeys
from ..operations import BY_NAME, keys_for
from .fcall import fcall, text_of


@dataclass(frozen=True, slots=True)
class ParentRef:
    """Names the split a subtask belongs to: subtask `index` of split `split` of job `id`."""

    queue: str
    id: str
    split: int
    index: int

    def to_json(self) -> str:
        return json.dumps(
            {"queue": self.queue, "id": self.id, "split": self.split, "index": self.index}
        )


@dataclass(frozen=True, slots=True)
class SplitPlan:
    """A job enqueued to wait for `total` subtasks (a client-side group)."""

    total: int
    groups: list[tuple[str, int]]
    collect: bool
    results_arg: bool

    def to_json(self) -> str:
        return json.dumps(
            {
                "total": self.total,
                "groups": [list(g) for g in self.groups],
                "collect": self.collect,
                "results_arg": self.results_arg,
            }
        )


# Not frozen: a frozen dataclass's __init__ costs twice as much, once per job of a bulk enqueue.
@dataclass(slots=True)
class NewJob:
    """One job as `psq_enqueue` takes it (treat it as read-only; `dataclasses.replace` makes
    a changed copy)."""

    id: str
    func: str
    payload: str
    priority: int
    delay_ms: int
    at_ms: int | None
    timeout: float
    retries: int
    backoff: float
    result_ttl: float
    time_slice: float = 0.0
    parent: ParentRef | None = None
    split: SplitPlan | None = None
    # '' or the JSON object of the rarely used options (see lua/enqueue.lua: expires,
    # unique_for, unique_key, on_success, on_failure, retry_on, depends_on,
    # on_dependency_failure); a job without them sends one empty field.
    extra: str = ""
    # The jobs it depends on as (queue, id), registered with them after the enqueue.
    depends_on: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class EnqueueOutcome:
    id: str
    status: str
    created: bool


ENQUEUE_NUMKEYS = len(BY_NAME["psq_enqueue"].keys)
# The fixed head of each queue's psq_enqueue FCALL, made once per queue name.
_ENQUEUE_HEADS: dict[str, tuple[Any, ...]] = {}
_ENQUEUE_HEADS_MAX = 10_000


def enqueue_command(keys: QueueKeys, jobs: Sequence[NewJob]) -> list[Any]:
    """The whole `FCALL psq_enqueue ...` command of one call (for `execute_command`). The payload
    size limit is the queue's (`size_limits`), enforced by the library."""
    head = _ENQUEUE_HEADS.get(keys.queue)
    if head is None:
        if len(_ENQUEUE_HEADS) >= _ENQUEUE_HEADS_MAX:
            _ENQUEUE_HEADS.clear()
        head = ("FCALL", "psq_enqueue", ENQUEUE_NUMKEYS, *keys_for("psq_enqueue", keys))
        _ENQUEUE_HEADS[keys.queue] = head
    command = [*head, len(jobs)]
    for job in jobs:
        command += (
            job.id,
            job.func,
            job.payload,
            job.priority,
            job.delay_ms,
            "" if job.at_ms is None else job.at_ms,
            job.timeout,
            job.retries,
            job.backoff,
            job.result_ttl,
            job.time_slice,
            "" if job.parent is None else job.parent.to_json(),
            "" if job.split is None else job.split.to_json(),
            job.extra,
        )
    return command


_ENQUEUE_COUNT_AT = 3 + ENQUEUE_NUMKEYS  # where an enqueue command's job count is


def enqueue_size(command: Sequence[Any]) -> int:
    """How many jobs an `enqueue_command` holds."""
    return int(command[_ENQUEUE_COUNT_AT])


def join_enqueue_commands(commands: list[Sequence[Any]]) -> list[Any]:
    """One `psq_enqueue` command of the jobs of several of one queue (at most
    ENQUEUE_BATCH_MAX in all), in order."""
    joined = [*commands[0][:_ENQUEUE_COUNT_AT], sum(enqueue_size(c) for c in commands)]
    for command in commands:
        joined += command[_ENQUEUE_COUNT_AT + 1 :]
    return joined


def split_enqueue_reply(reply: Sequence[Any], commands: list[Sequence[Any]]) -> list[Any]:
    """The reply of a joined command cut into the replies of the commands joined."""
    parts, at = [], 0
    for command in commands:
        end = at + 3 * enqueue_size(command)
        parts.append(reply[at:end])
        at = end
    return parts


def enqueue_args(keys: QueueKeys, jobs: Sequence[NewJob]) -> list[Any]:
    """The keys and arguments of one `psq_enqueue` call, for a client or a pipeline."""
    return enqueue_command(keys, jobs)[3:]


def enqueued_ids(reply: Sequence[Any]) -> list[str]:
    """The ids of a `psq_enqueue` reply, in order (the jobs created and those that existed)."""
    return [text_of(job_id) for job_id in reply[::3]]


def parse_enqueue_reply(reply: Sequence[Any]) -> list[EnqueueOutcome]:
    return [
        EnqueueOutcome(text_of(reply[i]), text_of(reply[i + 1]), bool(reply[i + 2]))
        for i in range(0, len(reply), 3)
    ]


def enqueue(conn: Client, keys: QueueKeys, jobs: Sequence[NewJob]) -> list[EnqueueOutcome]:
    call = enqueue_args(keys, jobs)
    reply = fcall(conn, "psq_enqueue", call[:ENQUEUE_NUMKEYS], call[ENQUEUE_NUMKEYS:])
    return parse_enqueue_reply(reply)
