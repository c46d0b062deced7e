"""The exceptions pyscheduler raises.

    PySchedulerError
    ├── LibraryError             the Lua library is missing or outdated in this Redis
    ├── InvalidInput (ValueError) bad input caught before anything is written
    │   ├── InvalidQueueName
    │   ├── InvalidJobId
    │   ├── InvalidOption        negative delay/timeout, a due time in the past, bad priority, ...
    │   ├── PayloadNotJSON
    │   ├── PayloadTooLarge      a payload, result or checkpoint over the queue's size limit
    │   ├── InvalidKeys          a library call with keys of two queues, out of order, too few, or
    │   │                        a key another writer left holding the wrong type
    │   ├── InvalidURL           a Redis URL that cannot be used (no scheme, bad port or db)
    │   └── HandlerRefused       the function cannot be named, or a worker may not run it
    ├── HandlerUnavailable       the worker could not import the handler's module (retried)
    ├── JobNotFound
    ├── ScheduleNotFound         no schedule of that name in the queue (queue.pause_schedule, ...)
    ├── InvalidJobState          the job is not in a state that allows the call
    ├── LeaseLost                a stale fencing token: another worker owns the job now
    ├── NotDurable               a durable enqueue's jobs are on the primary, but too few replicas
    │                            (or no AOF fsync) confirmed them in time: they may be lost
    ├── JobFailed                Job.wait(): the job failed for good (carries the error text)
    │   └── JobCancelled
    │       └── JobExpired       not started before its `expires` time: never run
    └── WaitTimeout (TimeoutError) Job.wait(): no outcome within the time given

The library reports errors as replies starting with a code from `protocol.ErrorCode`;
`error_from_reply` maps each code to its class here.
"""

from __future__ import annotations

from .store.protocol import ErrorCode


class PySchedulerError(Exception):
    """Base of every error pyscheduler raises on purpose."""

    # Set by Queue.enqueue_many when a later batch failed after earlier ones were written:
    # the ids of the jobs that were enqueued.
    enqueued: tuple[str, ...] = ()


class LibraryError(PySchedulerError):
    """The Redis Functions library is missing or differs from this code's version."""


class InvalidInput(PySchedulerError, ValueError):
    """Bad input, refused before anything was written to Redis."""


class InvalidQueueName(InvalidInput):
    pass


class InvalidJobId(InvalidInput):
    pass


class InvalidOption(InvalidInput):
    pass


class PayloadNotJSON(InvalidInput):
    pass


class PayloadTooLarge(InvalidInput):
    pass


class InvalidKeys(InvalidInput):
    """A library call whose keys are not those its function takes (PSQ_BAD_KEYS): a client bug."""


class HandlerRefused(InvalidInput):
    pass


class InvalidURL(InvalidInput):
    pass


class HandlerUnavailable(PySchedulerError):
    """The handler's module could not be imported by this worker (wrong working directory,
    a missing dependency): a failed attempt like any other, retried while retries remain."""


class JobNotFound(PySchedulerError):
    pass


class ScheduleNotFound(PySchedulerError):
    """No periodic job of that name in the queue."""


class InvalidJobState(PySchedulerError):
    pass


class LeaseLost(PySchedulerError):
    """The call carried a stale fencing token; the job belongs to someone else now."""


class NotDurable(PySchedulerError):
    """A durable enqueue (`durable=`) wrote its jobs on the primary, but the acknowledgement it
    waited for (WAIT / WAITAOF) fell short within its timeout: the jobs exist on the primary
    and may be lost if it fails before a replica (or its AOF) has them. Their ids are in
    `enqueued`; `shortfall` says what was missing."""

    def __init__(self, message: str, shortfall: str = "") -> None:
        super().__init__(message)
        self.shortfall = shortfall


class JobFailed(PySchedulerError):
    """The job failed for good; `error` holds the error text (with the traceback)."""

    def __init__(self, job_id: str, error: str | None) -> None:
        first_line = (error or "").strip().splitlines()[-1:] or ["no error text"]
        super().__init__(f"job {job_id} failed: {first_line[0]}")
        self.job_id = job_id
        self.error = error


class JobCancelled(JobFailed):
    def __init__(self, job_id: str) -> None:
        PySchedulerError.__init__(self, f"job {job_id} was cancelled")
        self.job_id = job_id
        self.error = "cancelled"


class JobExpired(JobCancelled):
    def __init__(self, job_id: str) -> None:
        PySchedulerError.__init__(self, f"job {job_id} expired before it started")
        self.job_id = job_id
        self.error = "expired"


class WaitTimeout(PySchedulerError, TimeoutError):
    pass


_BY_CODE: dict[str, type[PySchedulerError]] = {
    ErrorCode.NOT_FOUND: JobNotFound,
    ErrorCode.STALE_TOKEN: LeaseLost,
    ErrorCode.BAD_ARGUMENT: InvalidOption,
    ErrorCode.BAD_STATE: InvalidJobState,
    ErrorCode.BAD_KEYS: InvalidKeys,
    ErrorCode.TOO_LARGE: PayloadTooLarge,
}


def error_from_reply(message: str) -> PySchedulerError | None:
    """Map an error reply of the library to its exception, or None when it is not ours."""
    code, _, text = message.partition(" ")
    cls = _BY_CODE.get(code)
    return cls(text or code) if cls else None
