"""Looking at what queues hold, without changing it: the known queues, a queue's stats and
metrics, one job's snapshot, pages of jobs in a state.

`Queue`'s methods of the same names delegate here (client/queue.py); `QueueStats`,
`queue_stats` and `job_info` are shared with the asyncio client.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from ..exceptions import InvalidOption
from ..store import calls, registry
from ..store.connection import Client, pipeline
from ..store.keys import QueueKeys
from ..store.library import ensure_loaded
from ..store.protocol import Status
from ..store.serialization import decode_payload, decode_result
from .job import Job, JobInfo, parse_record
from .metrics import QueueMetrics, check_minutes, queue_metrics
from .queue_settings import QueueLimits, limits_of

if TYPE_CHECKING:
    from .queue import Queue


@dataclass(frozen=True, slots=True)
class QueueStats:
    """A snapshot of one queue, read in one library call."""

    name: str
    queued: int
    delayed: int
    active: int
    waiting: int
    failed: int
    finished: int
    paused: bool
    oldest_ready_age: float | None  # seconds the longest-waiting ready job has waited
    counters: dict[str, int]
    limits: QueueLimits
    aging: float | None  # priority levels a ready job gains per second of waiting


def queue_stats(name: str, counts: calls.Counts) -> QueueStats:
    settings = counts.settings or {}
    aging = settings.get("aging")
    return QueueStats(
        name=name,
        queued=counts.queued,
        delayed=counts.delayed,
        active=counts.active,
        waiting=counts.waiting,
        failed=counts.failed,
        finished=counts.finished,
        paused=settings.get("paused") == "1",
        oldest_ready_age=(
            None if counts.oldest_ready_age_ms is None else counts.oldest_ready_age_ms / 1000
        ),
        counters=counts.stats,
        limits=limits_of(settings),
        aging=None if aging is None else float(aging),
    )


def job_info(queue: str, job_id: str, fetched: calls.FetchedJob, show_token: bool) -> JobInfo:
    """The snapshot of a job `psq_fetch` read. The fencing token of its lease is left out of
    `record` unless `show_token` (it lets its holder report for the job)."""
    record = parse_record(fetched.record)
    if not show_token:
        record.pop("token", None)
    try:
        args, kwargs = decode_payload(fetched.payload) if fetched.payload else ([], {})
    except ValueError:
        args, kwargs = [], {}
    status = str(record.get("status", Status.FAILED.value))
    return JobInfo(
        id=job_id,
        queue=queue,
        status=status,
        func=record.get("func"),
        args=args,
        kwargs=kwargs,
        priority=int(record.get("priority", 0)),
        attempts=int(record.get("attempts", 0)),
        retries=int(record.get("retries", 0)),
        timeout=record.get("timeout"),
        created_ms=record.get("created"),
        started_ms=record.get("started"),
        ended_ms=record.get("ended"),
        result=decode_result(fetched.result) if status == Status.COMPLETE else None,
        error=fetched.error if status != Status.COMPLETE else None,
        record=record,
        checkpoint=None if fetched.checkpoint is None else json.loads(fetched.checkpoint),
        subtasks_done=fetched.subtasks_done,
    )


# -- queues -------------------------------------------------------------------------------------


def known(connection: Client) -> list[str]:
    return registry.known_queues(connection)


def counts(queue: Queue) -> calls.Counts:
    ensure_loaded(queue.connection, queue.auto_load)
    return calls.counts(queue.connection, queue.keys)


def stats(queue: Queue) -> QueueStats:
    return queue_stats(queue.name, counts(queue))


def stats_of(names: Sequence[str], connection: Client) -> list[QueueStats]:
    all_keys = [QueueKeys(name) for name in names]  # checks every name first
    if not all_keys:
        return []
    ensure_loaded(connection)
    pipe = pipeline(connection)
    for keys in all_keys:
        calls.pipe_counts(pipe, keys)
    found = []
    for name, reply in zip(names, pipe.execute(raise_on_error=False), strict=True):
        if isinstance(reply, redis.ResponseError):
            calls.raise_mapped(reply)
        found.append(queue_stats(name, calls.parse_counts(reply)))
    return found


def metrics(queue: Queue, minutes: int) -> QueueMetrics:
    check_minutes(minutes)
    ensure_loaded(queue.connection, queue.auto_load)
    return queue_metrics(queue.name, calls.metrics(queue.connection, queue.keys, minutes))


# -- jobs ---------------------------------------------------------------------------------------


def fetch_info(queue: Queue, job_id: str, show_token: bool) -> JobInfo:
    ensure_loaded(queue.connection, queue.auto_load)
    fetched = calls.fetch(queue.connection, queue.keys, job_id)
    return job_info(queue.name, job_id, fetched, show_token)


def fetch_job(queue: Queue, job_id: str) -> Job:
    fetch_info(queue, job_id, False)  # raises JobNotFound for an unknown id
    return Job(job_id, queue)


def list_jobs(
    queue: Queue, status: str, offset: int, limit: int
) -> list[tuple[str, dict[str, Any]]]:
    """A page of (id, record) of the jobs in a state, their fencing tokens still in."""
    try:
        state_set = queue.keys.state_set(Status(status))
    except ValueError:
        raise InvalidOption(
            f"unknown status {status!r}: one of {', '.join(s.value for s in Status)}"
        ) from None
    ensure_loaded(queue.connection, queue.auto_load)
    page = calls.list_jobs(queue.connection, queue.keys, state_set, offset, limit)
    listed = [(job_id, parse_record(text)) for job_id, text in page]
    if state_set == queue.keys.finished:  # complete, cancelled and expired share one set
        listed = [(i, r) for i, r in listed if r.get("status") == status]
    return listed


def job_ids(queue: Queue, status: str, offset: int, limit: int) -> list[str]:
    return [job_id for job_id, _ in list_jobs(queue, status, offset, limit)]


def jobs(queue: Queue, status: str, offset: int, limit: int) -> list[Job]:
    return [Job(job_id, queue) for job_id in job_ids(queue, status, offset, limit)]


def job_records(
    queue: Queue, status: str, offset: int, limit: int
) -> list[tuple[str, dict[str, Any]]]:
    listed = list_jobs(queue, status, offset, limit)
    for _, record in listed:
        record.pop("token", None)
    return listed
