"""Splitting a job into subtasks: creating them, collecting their outcomes, cancelling them.

A split is numbered per parent (1, 2, ... for nested or repeated splits). Subtask ids are
derived from the parent id, the split number and the subtask's position, so re-running a
parent after a crash re-creates the same ids, and enqueueing an existing id is a no-op.

Subtasks may live in other queues (other Cluster slots). No library call takes keys of two
queues: a subtask's end is recorded in its own queue first (psq_complete / psq_fail add a
notice), then delivered to the parent's queue (psq_subtask_done, idempotent per subtask), then
the notice is forgotten. A worker that dies in between leaves the notice, and any worker
re-drives it later (psq_stale_notices). See docs/architecture.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..store import calls
from ..store.connection import Client
from ..store.keys import QueueKeys
from ..store.protocol import ENQUEUE_BATCH_MAX, OUTCOMES_PAGE_MAX, REDRIVE_BATCH, Status
from . import dependencies

if TYPE_CHECKING:
    from .queue import Queue


class Subtask:
    """One call to run as a subtask: `Subtask(func, *args, queue=..., timeout=..., **kwargs)`.

    `queue` (a name or a Queue) defaults to the parent's queue; the enqueue options
    (priority, timeout, retries, backoff, result_ttl, time_slice) are those of `Queue.enqueue`.
    """

    def __init__(
        self,
        func: Callable[..., Any] | str,
        *args: Any,
        queue: str | Queue | None = None,
        options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.queue = queue
        self.options = dict(options or {})

    def queue_name(self, default: str) -> str:
        if self.queue is None:
            return default
        return self.queue if isinstance(self.queue, str) else self.queue.name


class SubtaskFailed(Exception):
    """The outcome of a subtask that failed for good, when the parent collects failures."""

    def __init__(self, index: int, error: str) -> None:
        last = error.strip().splitlines()[-1:] or ["no error text"]
        super().__init__(f"subtask {index} failed: {last[0]}")
        self.index = index
        self.error = error

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SubtaskFailed) and (other.index, other.error) == (
            self.index,
            self.error,
        )

    def __hash__(self) -> int:
        return hash((self.index, self.error))


def subtask_id(parent_id: str, number: int, index: int) -> str:
    return f"{parent_id}.{number}.{index}"


def enqueue_subtasks(
    connection: Client,
    parent_queue: str,
    parent_id: str,
    number: int,
    subtasks: Iterable[Subtask],
    queue_for: Callable[[str], Queue],
) -> list[tuple[str, int]]:
    """Enqueue subtasks in batches (bounded memory); returns the groups [(queue, count)]."""
    groups: list[tuple[str, int]] = []
    batch: list[tuple[Queue, calls.NewJob]] = []

    def flush() -> None:
        if not batch:
            return
        by_queue: dict[str, list[calls.NewJob]] = {}
        queues: dict[str, Queue] = {}
        for queue, job in batch:
            by_queue.setdefault(queue.name, []).append(job)
            queues[queue.name] = queue
        for name, jobs in by_queue.items():
            queues[name].enqueue_many(jobs)
        batch.clear()

    for index, sub in enumerate(subtasks, start=1):
        queue = queue_for(sub.queue_name(parent_queue))
        parent = calls.ParentRef(parent_queue, parent_id, number, index)
        job = queue.prepare(
            sub.func,
            sub.args,
            sub.kwargs,
            job_id=subtask_id(parent_id, number, index),
            parent=parent,
            **sub.options,
        )
        if groups and groups[-1][0] == queue.name:
            groups[-1] = (queue.name, groups[-1][1] + 1)
        else:
            groups.append((queue.name, 1))
        batch.append((queue, job))
        if len(batch) >= ENQUEUE_BATCH_MAX:
            flush()
    flush()
    return groups


def iter_outcomes(
    connection: Client, keys: QueueKeys, parent_id: str, number: int, total: int
) -> Iterator[Any]:
    """Each subtask's result in subtask order, a page at a time; failures as SubtaskFailed."""
    for first in range(1, total + 1, OUTCOMES_PAGE_MAX):
        count = min(OUTCOMES_PAGE_MAX, total - first + 1)
        page = calls.subtask_outcomes(connection, keys, parent_id, number, first, count)
        for offset, text in enumerate(page):
            if text is None:
                yield SubtaskFailed(first + offset, "no outcome (cancelled)")
                continue
            outcome = json.loads(text)
            if outcome.get("ok"):
                yield outcome.get("result")
            else:
                yield SubtaskFailed(first + offset, str(outcome.get("error")))


def cancel_subtasks(connection: Client, parent_id: str, record: Mapping[str, Any]) -> int:
    """Cancel the pending subtasks of a parent's current split, and theirs in turn."""
    number = record.get("split")
    groups: Sequence[Sequence[Any]] = record.get("split_groups") or []
    if not number:
        return 0
    cancelled = 0
    index = 0
    for queue_name, count in groups:
        keys = QueueKeys(str(queue_name))
        ids = [subtask_id(parent_id, int(number), index + k + 1) for k in range(int(count))]
        index += int(count)
        for start in range(0, len(ids), ENQUEUE_BATCH_MAX):
            chunk = ids[start : start + ENQUEUE_BATCH_MAX]
            done = calls.cancel(connection, keys, chunk, cascade=True)
            for job_id, outcome in zip(chunk, done, strict=True):
                if outcome.was in (Status.QUEUED, Status.DELAYED, Status.ACTIVE, Status.WAITING):
                    cancelled += 1
                if outcome.was == Status.WAITING and outcome.record is not None:
                    cancelled += cancel_subtasks(connection, job_id, json.loads(outcome.record))
    return cancelled


def deliver_notice(
    connection: Client,
    own_keys: QueueKeys,
    subtask: str,
    parent: calls.ParentRef,
    ok: bool,
    value: str,
) -> str:
    """Record a subtask's end in its parent's queue, then forget the notice in its own.

    The notice is forgotten only once the parent's queue has recorded the outcome (two round
    trips, not one pipeline: a pipeline would forget it even when the recording failed).
    When the parent fails because of this subtask, its other subtasks are cancelled, and the
    parent's own end is delivered to its parent in turn (a nested split fails upwards now,
    not after NOTICE_REDRIVE_MS).
    """
    outcome = calls.subtask_done(connection, parent, ok, value)
    calls.forget_notices(connection, own_keys, [subtask])
    if outcome == "parent_failed":
        fail_upwards(connection, QueueKeys(parent.queue), parent.id)
    return outcome


def fail_upwards(connection: Client, keys: QueueKeys, job_id: str) -> None:
    """A parent failed because of a subtask: cancel its other subtasks, tell its own parent."""
    fetched = calls.fetch(connection, keys, job_id)
    record = json.loads(fetched.record)
    cancel_subtasks(connection, job_id, record)
    grandparent = record.get("parent")
    if isinstance(grandparent, dict):
        deliver_notice(
            connection,
            keys,
            job_id,
            calls.ParentRef(**grandparent),
            False,
            fetched.error or "unknown error",
        )


def redrive_notices(connection: Client, keys: QueueKeys, count: int = REDRIVE_BATCH) -> int:
    """Deliver the overdue notices of one queue (subtask ends and ends of jobs others depend
    on, see dependencies.py); returns how many were handled."""
    notices = calls.stale_notices(connection, keys, count)
    for notice in notices:
        if notice.dependents:  # a job others depend on: they are told first
            dependencies.tell_dependents(
                connection,
                keys,
                notice.subtask_id,
                notice.dependents,
                notice.ok,
                notice.status or "missing",
            )
        if notice.parent is None:
            calls.forget_notices(connection, keys, [notice.subtask_id])
        else:
            deliver_notice(
                connection, keys, notice.subtask_id, notice.parent, notice.ok, notice.value
            )
    return len(notices)
