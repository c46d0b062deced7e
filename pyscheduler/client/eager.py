"""Eager queues: `Queue(name, eager=True)` runs each job inline at enqueue, for unit tests.

No Redis is involved: the job runs in the caller's thread before `enqueue` returns, so
`job.result` is there at once. What a worker would do to the job is done here too: the handler
is resolved with the worker's allowlist (runtime/allowlist.py), the payload decoded from its
JSON, the result encoded as JSON and decoded again (so a value JSON cannot carry fails the job,
and a tuple comes back a list), retries and `retry_on` applied, callbacks run, time slices
pause and resume from the checkpoint. What needs a worker or time to pass is left out:
dependencies, subtasks, delays (a delayed job runs at once), backoff (no sleeping between
attempts), priorities, limits. docs/testing.md says which choice was made for each option.

The jobs an eager queue ran live in memory, with that `Queue` object (another `Queue` of the
same name does not see them); `jobs_of(queue)` lists them.

The runtime is imported inside the functions that use it: only an eager enqueue loads it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import inspect
import json
import threading
import time
import traceback
import weakref
from collections.abc import Coroutine, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from ..exceptions import (
    HandlerRefused,
    HandlerUnavailable,
    InvalidJobState,
    InvalidOption,
    JobFailed,
    PayloadNotJSON,
    PayloadTooLarge,
    WaitTimeout,
)
from ..store.calls import NewJob
from ..store.protocol import (
    DEFAULT_BACKOFF_S,
    DEFAULT_RESULT_TTL_S,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_S,
    JOB_ID_MAX,
    SIZE_LIMIT_DEFAULTS,
    Status,
)
from ..store.serialization import decode_json, decode_payload, decode_result, encode_result
from .job import Job, JobInfo
from .tasks import retried

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..runtime.allowlist import HandlerPolicy
    from .queue import Queue

MAX_RESULT_BYTES = SIZE_LIMIT_DEFAULTS["max_result_bytes"]
MAX_CHECKPOINT_BYTES = SIZE_LIMIT_DEFAULTS["max_checkpoint_bytes"]
MAX_ERROR_BYTES = SIZE_LIMIT_DEFAULTS["max_error_bytes"]


def _now_ms() -> int:
    return int(time.time() * 1000)


# -- which handlers may run ----------------------------------------------------------------

_policy: HandlerPolicy | None = None
_policy_lock = threading.Lock()


def set_handler_policy(*, strict: bool = False, allowed_modules: Iterable[str] = ()) -> None:
    """The allowlist eager jobs are resolved with, as a worker's `--strict` and `--import M`
    would set it (default: a worker started without either)."""
    from ..runtime.allowlist import HandlerPolicy

    global _policy
    with _policy_lock:
        _policy = HandlerPolicy(strict=strict, allowed_modules=allowed_modules)


def _handler_policy() -> HandlerPolicy:
    from ..runtime.allowlist import HandlerPolicy

    global _policy
    with _policy_lock:
        if _policy is None:
            _policy = HandlerPolicy()
        return _policy


# -- the jobs of one eager queue -----------------------------------------------------------


class EagerJob(Job):
    """A job of an eager queue: `Job`'s surface, answered from memory (no Redis)."""

    def __init__(self, new: NewJob, queue: Queue, extra: dict[str, Any]) -> None:
        super().__init__(new.id, queue)
        self.func = new.func
        self.args: list[Any] = []
        self.kwargs: dict[str, Any] = {}
        self.timeout = new.timeout
        self.retries = new.retries
        self.time_slice = new.time_slice or None
        self._status: str = Status.ACTIVE.value
        self._result: Any = None
        self._error: str | None = None
        self._checkpoint: Any = None
        self._ended = threading.Event()
        self.record: dict[str, Any] = {
            "func": new.func,
            "status": self._status,
            "priority": new.priority,
            "timeout": new.timeout,
            "retries": new.retries,
            "backoff": new.backoff,
            "result_ttl": new.result_ttl,
            "attempts": 0,
            "created": _now_ms(),
            "eager": True,
            **{k: v for k, v in extra.items() if k in ("on_success", "on_failure", "retry_on")},
        }
        if new.time_slice:
            self.record["time_slice"] = new.time_slice

    def __repr__(self) -> str:
        return f"EagerJob({self.id!r}, queue={self.queue.name!r}, status={self._status!r})"

    @property
    def attempts(self) -> int:
        """How many times the handler ran (a run paused at a checkpoint does not count)."""
        return int(self.record["attempts"])

    def info(self, *, show_token: bool = False) -> JobInfo:
        del show_token  # an eager job has no lease
        complete = self._status == Status.COMPLETE
        return JobInfo(
            id=self.id,
            queue=self.queue.name,
            status=self._status,
            func=self.func,
            args=list(self.args),
            kwargs=dict(self.kwargs),
            priority=int(self.record["priority"]),
            attempts=self.attempts,
            retries=self.retries,
            timeout=self.timeout,
            created_ms=self.record.get("created"),
            started_ms=self.record.get("started"),
            ended_ms=self.record.get("ended"),
            result=self._result if complete else None,
            error=None if complete else self._error,
            record=dict(self.record),
            checkpoint=self._checkpoint,
        )

    def wait(self, timeout: float | None = None, poll_interval: float | None = None) -> Any:
        """The result, or JobFailed. An eager job has ended once `enqueue` returned; only one
        still running in another thread makes this wait (WaitTimeout after `timeout`)."""
        del poll_interval
        if not self._ended.wait(timeout):
            raise WaitTimeout(f"job {self.id} is still {self._status} after {timeout} s")
        if self._status == Status.COMPLETE:
            return self._result
        raise JobFailed(self.id, self._error)

    def cancel(self) -> str:
        if self._ended.is_set():
            raise InvalidJobState(f"job {self.id} is {self._status} and cannot be cancelled")
        raise InvalidOption(f"job {self.id} runs inline on an eager queue: it cannot be cancelled")

    def _end(self, status: Status, result: Any = None, error: str | None = None) -> None:
        self._status = self.record["status"] = status.value
        self._result, self._error = result, error
        self.record["ended"] = _now_ms()
        self._ended.set()


class _QueueJobs:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.jobs: dict[str, EagerJob] = {}
        self.unique: dict[str, tuple[int, str]] = {}  # dedup key -> (window end ms, job id)


_queues: weakref.WeakKeyDictionary[Queue, _QueueJobs] = weakref.WeakKeyDictionary()
_queues_lock = threading.Lock()


def _jobs(queue: Queue) -> _QueueJobs:
    with _queues_lock:
        found = _queues.get(queue)
        if found is None:
            found = _queues[queue] = _QueueJobs()
        return found


def jobs_of(queue: Queue) -> list[EagerJob]:
    """The jobs this eager queue ran, callbacks included, in the order they were enqueued."""
    state = _jobs(queue)
    with state.lock:
        return list(state.jobs.values())


# -- enqueueing ----------------------------------------------------------------------------

_NEEDS_A_WORKER = "; test it with a private engine and a worker (docs/testing.md)"


def _refuse_what_cannot_run_inline(new: NewJob) -> None:
    if new.depends_on:
        raise InvalidOption(
            f"job {new.id}: depends_on cannot work on an eager queue (its jobs run at enqueue,"
            " so none can wait for another); enqueue the dependency first" + _NEEDS_A_WORKER
        )
    if new.split is not None or new.parent is not None:
        raise InvalidOption(
            f"job {new.id}: subtasks (enqueue_group, a job's split) cannot run on an eager"
            " queue" + _NEEDS_A_WORKER
        )


def run_inline(queue: Queue, batch: Sequence[NewJob]) -> list[Job]:
    """Run each prepared job now, in order; an existing id (or dedup key within its window)
    returns the job that has it. Every job is checked before the first runs."""
    extras = []
    for new in batch:
        _refuse_what_cannot_run_inline(new)
        extras.append(json.loads(new.extra) if new.extra else {})
    return [_enqueue_one(queue, new, extra) for new, extra in zip(batch, extras, strict=True)]


def _enqueue_one(queue: Queue, new: NewJob, extra: dict[str, Any]) -> EagerJob:
    state = _jobs(queue)
    window = extra.get("unique_for")
    key = str(extra.get("unique_key") or new.id)
    with state.lock:
        existing = state.jobs.get(new.id)
        held = state.unique.get(key) if window else None
        if held is not None and held[0] > _now_ms() and held[1] in state.jobs:
            existing = state.jobs[held[1]]
        if existing is not None:
            return existing
        job = EagerJob(new, queue, extra)
        state.jobs[new.id] = job  # before it runs: an enqueue from the handler sees it
        if window:
            state.unique[key] = (_now_ms() + int(window), new.id)
    _run(job, new.payload)
    _run_callback(queue, job, new.priority)
    return job


def callback_id(job_id: str, which: str) -> str:
    """The id a job's callback runs as (the library's rule: lua/_helpers.lua)."""
    derived = f"{job_id}.{which}"
    if len(derived) <= JOB_ID_MAX:
        return derived
    return f"cb.{hashlib.sha1(job_id.encode()).hexdigest()}.{which}"


def _run_callback(queue: Queue, job: EagerJob, priority: int) -> None:
    """on_success(job id, result) / on_failure(job id, error text), as an ordinary eager job
    of the same queue with the library's defaults (as the library enqueues it)."""
    which = "on_success" if job._status == Status.COMPLETE else "on_failure"
    func = job.record.get(which)
    if not isinstance(func, str):
        return
    value = job._result if which == "on_success" else job._error
    payload = json.dumps({"args": [job.id, value], "kwargs": {}}, ensure_ascii=False)
    callback = NewJob(
        id=callback_id(job.id, which),
        func=func,
        payload=payload,
        priority=priority,
        delay_ms=0,
        at_ms=None,
        timeout=DEFAULT_TIMEOUT_S,
        retries=DEFAULT_RETRIES,
        backoff=DEFAULT_BACKOFF_S,
        result_ttl=DEFAULT_RESULT_TTL_S,
    )
    _enqueue_one(queue, callback, {})


# -- running -------------------------------------------------------------------------------


class _RunTimedOut(Exception):
    """The run passed its timeout (its error text is the worker's)."""


class _Final(Exception):
    """A failure no retry can mend (a refused handler, a result over the size limit)."""


def _cut(error: str) -> str:
    """An error text over the library's default limit, cut in the middle as the library does."""
    data = error.encode()
    if len(data) <= MAX_ERROR_BYTES:
        return error
    marker = b"\n[... cut ...]\n"
    half = (MAX_ERROR_BYTES - len(marker)) // 2
    return (data[:half] + marker + data[-half:]).decode(errors="replace")


def _run(job: EagerJob, payload: str) -> None:
    """Attempts until one succeeds, one fails for good, or the retries are used up."""
    retry_on = job.record.get("retry_on")
    try:
        job.args, job.kwargs = decode_payload(payload) if payload else ([], {})
    except ValueError as exc:  # cannot happen for a payload the client encoded
        job._end(Status.FAILED, error=f"job payload is malformed: {exc}")
        return
    while True:
        job.record["attempts"] += 1
        job.record["started"] = _now_ms()
        try:
            result_text = _attempt(job)
        except _Final as exc:
            job._end(Status.FAILED, error=_cut(str(exc)))
            return
        except _RunTimedOut as exc:
            again = retried(TimeoutError, retry_on)
            error = str(exc)
        except HandlerUnavailable as exc:  # the set-up, not the job: retries apply
            again, error = True, str(exc)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            again = retried(type(exc), retry_on)
            error = str(exc) if isinstance(exc, PayloadNotJSON) else traceback.format_exc()
        else:
            job._end(Status.COMPLETE, result=decode_result(result_text))
            return
        if not again or job.attempts > job.retries:
            job._end(Status.FAILED, error=_cut(error))
            return
        job._error = _cut(error)  # the latest failed run's, while retries remain


def _attempt(job: EagerJob) -> str:
    """One run, resumed from its checkpoint after each pause; the result as JSON text."""
    from ..runtime.context import JobSuspended

    try:
        handler = _handler_policy().resolve(job.func)
    except HandlerRefused as exc:
        raise _Final(str(exc)) from None
    while True:
        context = EagerContext(job)
        try:
            value = _call(handler, job, context)
        except JobSuspended:
            job.record["pauses"] = job.record.get("pauses", 0) + 1
            continue
        text = encode_result(value)
        size = len(text.encode())
        if size > MAX_RESULT_BYTES:
            raise _Final(
                f"result of {size} bytes exceeds the limit of {MAX_RESULT_BYTES} bytes"
                " (max_result_bytes)"
            )
        return text


def _timed_out(job: EagerJob, how: str) -> _RunTimedOut:
    return _RunTimedOut(f"JobTimeout: the run passed its {job.timeout} s timeout{how}")


def _call(handler: Callable[..., Any], job: EagerJob, context: EagerContext) -> Any:
    """Call the handler with `context` as its `current_job()`.

    A sync handler runs to its end in this thread (nothing can stop it safely): a run that
    took longer than its timeout fails as a timeout once it returns, its result dropped. A
    coroutine runs under the timeout and is cancelled at the deadline."""
    from ..runtime import context as job_context

    began = time.monotonic()
    reset = job_context.set_current(context)  # type: ignore[arg-type]
    try:
        value = handler(*job.args, **job.kwargs)
    finally:
        job_context.reset_current(reset)
    if inspect.iscoroutine(value):
        return _run_coroutine(value, job, context)
    if time.monotonic() - began > job.timeout:
        raise _timed_out(job, " (checked when it returned: a sync handler is not stopped)")
    return value


def _run_coroutine(coro: Coroutine[Any, Any, Any], job: EagerJob, context: EagerContext) -> Any:
    """Run a coroutine handler to its end on a loop of its own: here, or in a helper thread
    when this thread's loop is running (an eager enqueue from async code; that loop waits)."""
    from ..runtime import context as job_context

    async def guarded() -> Any:
        reset = job_context.set_current(context)  # type: ignore[arg-type]
        deadline = asyncio.timeout(job.timeout)
        try:
            async with deadline:
                return await coro
        except TimeoutError:
            if deadline.expired():  # else the handler's own TimeoutError
                raise _timed_out(job, " (cancelled)") from None
            raise
        finally:
            job_context.reset_current(reset)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(guarded())
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pyscheduler-eager") as pool:
        return pool.submit(asyncio.run, guarded()).result()


# -- current_job() inside an eager handler --------------------------------------------------


class EagerContext:
    """What `current_job()` returns inside an eager handler: `JobContext`'s surface, kept in
    memory. Checkpoints, progress and time slices work; subtasks do not (InvalidOption)."""

    def __init__(self, job: EagerJob) -> None:
        self._job = job
        self.queue = job.queue.name
        self.id = job.id
        self.keys = job.queue.keys
        self.token = ""
        self.lease_ms = 0
        self.record = job.record
        self.started = time.monotonic()
        self.time_slice: float | None = job.time_slice
        self.shutdown_requested = False
        self.preemptible = True  # nothing preempts an eager run
        self._progress: Any = job.record.get("progress")

    @property
    def connection(self) -> NoReturn:
        raise InvalidOption(f"job {self.id} runs on an eager queue: there is no connection")

    @property
    def attempts(self) -> int:
        return self._job.attempts

    @property
    def checkpoint(self) -> Any:
        return self._job._checkpoint

    @property
    def resumed(self) -> bool:
        return self._job._checkpoint is not None

    def wait_for_rate_slot(self) -> None:
        """An eager queue has no rate limit."""

    async def wait_for_rate_slot_async(self) -> None:
        """An eager queue has no rate limit."""

    def should_pause(self) -> bool:
        return self.time_slice is not None and time.monotonic() - self.started >= self.time_slice

    def save_checkpoint(self, value: Any, *, last: bool = False) -> None:
        """Keep `value` (checked as the library would); once the time slice is used up, the
        run pauses here and runs again from it at once (unless `last`)."""
        from ..runtime.context import JobSuspended

        text = encode_result(value, what="the checkpoint is")
        size = len(text.encode())
        if size > MAX_CHECKPOINT_BYTES:
            raise PayloadTooLarge(
                f"checkpoint of {size} bytes exceeds the limit of {MAX_CHECKPOINT_BYTES} bytes"
            )
        self._job._checkpoint = decode_json(text, "the checkpoint")
        if not last and self.should_pause():
            raise JobSuspended("paused")

    @property
    def progress(self) -> Any:
        return self._progress

    def set_progress(self, value: Any) -> None:
        from ..runtime.context import progress_text  # the worker's checks

        text = progress_text(value)
        self._progress = self.record["progress"] = decode_json(text, "the progress")

    def flush_progress(self) -> None:
        """Progress is kept at once: nothing is held back."""

    def split(
        self, subtasks: Iterable[Any], *, collect: bool = False, checkpoint: Any = None
    ) -> NoReturn:
        raise InvalidOption(
            f"job {self.id}: a job on an eager queue cannot split into subtasks" + _NEEDS_A_WORKER
        )

    def iter_subtask_results(self) -> Iterator[Any]:
        return iter(())

    def subtask_results(self) -> list[Any]:
        return []
