"""`Job`: a handle on one job, fetched from Redis on demand."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeGuard, TypeVar

import orjson

from ..exceptions import (
    InvalidJobState,
    JobCancelled,
    JobExpired,
    JobFailed,
    JobNotFound,
    WaitTimeout,
)
from ..store import calls
from ..store.connection import Client, pipeline
from ..store.keys import QueueKeys
from ..store.library import ensure_loaded
from ..store.protocol import Status
from . import dependencies, events, splitting

if TYPE_CHECKING:  # named in `Job`'s base, a string ruff does not read as a use
    from .queue import Queue  # noqa: F401

FINAL_STATUSES = frozenset({Status.COMPLETE, Status.FAILED, Status.CANCELLED, Status.EXPIRED})


@dataclass(frozen=True, slots=True)
class JobInfo:
    """A snapshot of one job as stored in Redis."""

    id: str
    queue: str
    status: str
    func: str | None
    args: list[Any]
    kwargs: dict[str, Any]
    priority: int
    attempts: int
    retries: int
    timeout: float | None
    created_ms: int | None
    started_ms: int | None
    ended_ms: int | None
    result: Any
    error: str | None
    record: dict[str, Any]
    checkpoint: Any = None  # the last saved checkpoint (JSON value)
    subtasks_done: int | None = None  # of the current split; see `subtasks_total`

    @property
    def subtasks_total(self) -> int | None:
        total = self.record.get("split_total")
        return None if total is None else int(total)

    @property
    def paused(self) -> bool:
        """Queued again after a pause (time slice used up, or worker shutdown)."""
        return self.status == Status.QUEUED and bool(self.record.get("paused"))

    @property
    def progress(self) -> Any:
        """The latest progress its handler reported (`current_job().set_progress`), or None."""
        return self.record.get("progress")

    @property
    def schedule(self) -> str | None:
        """The name of the schedule this job is a run of (`queue.schedule`), or None."""
        name = self.record.get("schedule")
        return name if isinstance(name, str) else None


def _usable(record: object) -> TypeGuard[dict[str, Any]]:
    """The library's test of a record (`decode_job`): a JSON object with these fields."""
    if not isinstance(record, dict):
        return False
    priority = record.get("priority")
    return (
        isinstance(record.get("status"), str)
        and isinstance(record.get("func"), str)
        and isinstance(priority, int | float)
        and not isinstance(priority, bool)
    )


def parse_record(text: str | bytes | None) -> dict[str, Any]:
    """A job record as a dict; a corrupt one reads as failed with the reason."""
    try:
        # orjson: records are the library's own (cjson-made) JSON, parsed once per job or more.
        record = orjson.loads(text) if text else None
    except ValueError:
        record = None
    if not _usable(record):
        return {"status": Status.FAILED.value, "corrupt": True}
    return record


class _NamedQueue(Protocol):
    @property
    def name(self) -> str: ...


QueueT = TypeVar("QueueT", bound=_NamedQueue)


class JobHandle(Generic[QueueT]):
    """What both clients' `Job` are: a job's id and its queue, the same job when both are."""

    # Which client's handle: its repr's name; handles of different clients are never equal.
    kind: ClassVar[str] = "Job"

    def __init__(self, job_id: str, queue: QueueT) -> None:
        self.id = job_id
        self.queue = queue

    def __repr__(self) -> str:
        return f"{self.kind}({self.id!r}, queue={self.queue.name!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, JobHandle)
            and other.kind == self.kind
            and (other.id, other.queue.name) == (self.id, self.queue.name)
        )

    def __hash__(self) -> int:
        return hash((self.id, self.queue.name))


def end_error(info: JobInfo) -> JobFailed | None:
    """What waiting for the job raises, once it ended without a result: JobFailed,
    JobCancelled or JobExpired; None while it may still complete (or once it did)."""
    if info.status == Status.CANCELLED:
        return JobCancelled(info.id)
    if info.status == Status.EXPIRED:
        return JobExpired(info.id)
    if info.status == Status.FAILED:
        return JobFailed(info.id, info.error)
    return None


def wait_left(info: JobInfo, deadline: float | None, timeout: float | None) -> float:
    """For `wait` (of either client) on a job that has not completed: how long to block for
    its next event (at most `events.BLOCK_SLICE_S`). Raises its `end_error`, or WaitTimeout
    once `deadline` (monotonic; None: no limit) has passed."""
    ended = end_error(info)
    if ended is not None:
        raise ended
    left = events.BLOCK_SLICE_S
    if deadline is not None:
        left = min(left, deadline - time.monotonic())
        if left <= 0:
            raise WaitTimeout(f"job {info.id} is still {info.status} after {timeout} s")
    return left


class Job(JobHandle["Queue"]):
    """A handle on a job. Reading a property asks Redis, so it is always current."""

    @classmethod
    def fetch(cls, job_id: str, connection: Client | None = None, queue: str | None = None) -> Job:
        """The job with this id. Without `queue`, the queues known to this Redis are searched."""
        from .queue import Queue

        if queue is not None:
            q = Queue(queue, connection=connection)
            q.fetch_info(job_id)  # raises JobNotFound
            return cls(job_id, q)
        q0 = Queue("default", connection=connection)
        names = Queue.known(q0.connection)
        pipe = pipeline(q0.connection)
        for name in names:
            pipe.hexists(QueueKeys(name).jobs, job_id)
        for name, exists in zip(names, pipe.execute(), strict=True):
            if exists:
                return cls(job_id, Queue(name, connection=q0.connection))
        raise JobNotFound(f"job {job_id} does not exist in any known queue")

    def info(self, *, show_token: bool = False) -> JobInfo:
        """A snapshot of the job; its lease's fencing token only with `show_token`."""
        return self.queue.fetch_info(self.id, show_token=show_token)

    @property
    def status(self) -> str:
        return self.info().status

    @property
    def result(self) -> Any:
        """The handler's return value once complete, else None."""
        return self.info().result

    @property
    def error(self) -> str | None:
        """The error text (with traceback) of the latest failed run, else None."""
        return self.info().error

    def cancel(self) -> str:
        """Cancel the job; returns the status it had. Raises InvalidJobState when it ended.

        Cancelling a job that waits for subtasks cancels its pending subtasks too.
        """
        connection = self.queue.connection
        ensure_loaded(connection, self.queue.auto_load)
        (outcome,) = calls.cancel(connection, self.queue.keys, [self.id])
        was = outcome.was
        if was == "missing":
            raise JobNotFound(f"job {self.id} does not exist")
        if was.startswith("ended:"):
            raise InvalidJobState(
                f"job {self.id} is {was.partition(':')[2]} and cannot be cancelled"
            )
        record = parse_record(outcome.record)
        if was == Status.WAITING:
            splitting.cancel_subtasks(connection, self.id, record)
        dependents = calls.dependent_refs(record.get("dependents"))
        if dependents:  # they are told it was cancelled
            dependencies.tell_dependents(
                connection, self.queue.keys, self.id, dependents, False, Status.CANCELLED
            )
        parent = record.get("parent")
        if isinstance(parent, dict):  # a cancelled subtask is a failed one for its parent
            splitting.deliver_notice(
                connection, self.queue.keys, self.id, calls.ParentRef(**parent), False, "cancelled"
            )
        elif dependents:
            dependencies.forget(connection, self.queue.keys, self.id)
        return was

    def wait(self, timeout: float | None = None, poll_interval: float | None = None) -> Any:
        """Wait for the job to end: its result, or JobFailed / JobCancelled / WaitTimeout.

        Blocks inside Redis on the queue's event stream until an event ends this job, and
        looks at the job then (and at least every `events.BLOCK_SLICE_S`). `poll_interval` is
        ignored: kept for callers of the polling version."""
        del poll_interval
        deadline = None if timeout is None else time.monotonic() + timeout
        connection, keys = self.queue.connection, self.queue.keys
        # The cursor is read before the job, so an end between the two is still seen.
        after = events.last_event_id(connection, keys)
        while True:
            info = self.info()
            if info.status == Status.COMPLETE:
                return info.result
            left = wait_left(info, deadline, timeout)
            after = events.wait_for_end(connection, keys, self.id, after, left)
