"""The running job's context, inside a handler: `current_job()`.

    from pyscheduler import current_job

    def crunch(rows):
        job = current_job()
        state = job.checkpoint or {"done": 0}
        for i in range(state["done"], rows):
            ...
            job.save_checkpoint({"done": i + 1})   # pauses here once the time slice is used up

A checkpoint is any JSON value. Saving one is a single library call that also renews the lease
and refuses a stale fencing token. When the job's time slice is used up, or its worker is
shutting down, the save also pauses the job: it goes back to its queue and the handler is
unwound (by `JobSuspended`, a BaseException, so `except Exception` does not catch it); the next
run starts from the checkpoint. So does preemption: the library pauses a `preemptible` run at a
checkpoint when a job of higher priority waits and every worker's slots are busy (see
lua/checkpoint.lua).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar, Token
from functools import cache
from typing import Any, NoReturn, TypeGuard

import orjson
from redis import RedisError

from ..client import splitting
from ..exceptions import InvalidOption, JobNotFound, LeaseLost, PayloadTooLarge, PySchedulerError
from ..store import calls
from ..store.connection import Client
from ..store.keys import QueueKeys
from ..store.protocol import (
    JOB_ID_RE,
    PROGRESS_DEPTH_MAX,
    PROGRESS_INTERVAL_S,
    PROGRESS_MAX_BYTES,
    QUEUE_NAME_RE,
    Status,
)
from ..store.serialization import decode_json, encode_result


@cache
def _queue_keys(queue: str) -> QueueKeys:
    return QueueKeys(queue)  # immutable: one per queue serves every job of this process


class BadRecord(ValueError):
    """A job record the worker cannot trust; the message says what is wrong with it. The job
    is refused (never retried): the same bytes would be refused again."""


# -- the job record, checked once -------------------------------------------------------------
#
# Anyone who can write the queue's keys can write a record, and the library passes through
# fields it does not read itself. Every field the worker or the handler's context reads is
# checked here, in the worker (before a child sees the job) and again in the child, so no
# forged value reaches arithmetic, a timer or a library call.


def _number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _count(value: object) -> bool:
    """A non-negative integer (cjson may write a large one as an integral float)."""
    return _number(value) and float(value) >= 0 and float(value).is_integer()


def _positive(value: object) -> bool:
    return _number(value) and float(value) > 0


def _not_negative(value: object) -> bool:
    return _number(value) and float(value) >= 0


def _parent_ref(value: object) -> bool:
    if not isinstance(value, dict) or set(value) != {"queue", "id", "split", "index"}:
        return False
    queue, job_id = value["queue"], value["id"]
    return (
        isinstance(queue, str)
        and QUEUE_NAME_RE.fullmatch(queue) is not None
        and isinstance(job_id, str)
        and JOB_ID_RE.fullmatch(job_id) is not None
        and _count(value["split"])
        and value["split"] >= 1
        and _count(value["index"])
        and value["index"] >= 1
    )


def _split_groups(value: object) -> bool:
    if value == {}:  # cjson writes an empty list as an empty object
        return True
    return isinstance(value, list) and all(
        isinstance(group, list)
        and len(group) == 2
        and isinstance(group[0], str)
        and QUEUE_NAME_RE.fullmatch(group[0]) is not None
        and _count(group[1])
        for group in value
    )


# field: (test, what a valid value is). A field that is absent or null is not checked.
_RECORD_FIELDS: Mapping[str, tuple[Callable[[object], bool], str]] = {
    "timeout": (_positive, "a positive finite number of seconds"),
    "time_slice": (_not_negative, "a finite number of seconds >= 0"),
    "attempts": (_count, "an integer >= 0"),
    "retries": (_count, "an integer >= 0"),
    "split": (_count, "an integer >= 0"),
    "split_total": (_count, "an integer >= 0"),
    "split_groups": (_split_groups, "a list of [queue name, count] pairs"),
    "results_arg": (lambda v: isinstance(v, bool), "true or false"),
    "parent": (_parent_ref, "an object {queue, id, split >= 1, index >= 1}"),
}
FUNC_MAX_LENGTH = 1000


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_record(raw: bytes | str | None) -> dict[str, Any]:
    """The job record in `raw` as a dict, its fields checked; raises BadRecord naming what is
    wrong (bytes that are not UTF-8, not a JSON object, a forged field)."""
    if raw is None:
        raise BadRecord("the job record is missing")
    data = raw.encode() if isinstance(raw, str) else raw
    try:
        # Every job start parses its record: orjson is several times faster than json, and
        # refuses what json would too (bad UTF-8, NaN, nesting past its depth limit).
        record = orjson.loads(data)
    except orjson.JSONDecodeError:
        # json names the fault (raises BadRecord), or reads what only orjson refuses (an
        # escaped lone surrogate).
        record = decode_json(data, "the job record", error=BadRecord)
    if not isinstance(record, dict):
        raise BadRecord("the job record is not a JSON object")
    func = record.get("func")
    if not isinstance(func, str) or not func or len(func) > FUNC_MAX_LENGTH:
        raise BadRecord(
            f"the job record's func must be a handler name of 1-{FUNC_MAX_LENGTH} characters,"
            f" not {_shown(func)}"
        )
    for name, (valid, meaning) in _RECORD_FIELDS.items():
        value = record.get(name)
        if value is not None and not valid(value):
            raise BadRecord(f"the job record's {name} must be {meaning}, not {_shown(value)}")
    return record


class JobSuspended(BaseException):
    """Unwinds a handler whose job was paused or split; the library has recorded it."""


class JobContext:
    """What a handler can know and do about the job it runs."""

    def __init__(
        self,
        connection: Client,
        queue: str,
        job_id: str,
        token: str,
        record: dict[str, Any],
        checkpoint_text: str | bytes | None,
        lease_ms: int,
    ) -> None:
        self.connection = connection
        self.queue = queue
        self.id = job_id
        self.token = token
        self.record = record
        self.lease_ms = lease_ms
        self.keys = _queue_keys(queue)
        self.started = time.monotonic()
        self.time_slice: float | None = record.get("time_slice") or None
        self.shutdown_requested = False
        # A handler may turn it off for the rest of its run (a step that must not be cut).
        self.preemptible = True
        self._checkpoint: Any = (
            None
            if checkpoint_text is None
            else decode_json(checkpoint_text, "the job's checkpoint", error=BadRecord)
        )
        self._progress = _Progress(self)

    @property
    def attempts(self) -> int:
        return int(self.record.get("attempts", 1))

    @property
    def checkpoint(self) -> Any:
        """The last saved checkpoint, or None on a first run."""
        return self._checkpoint

    @property
    def resumed(self) -> bool:
        return self._checkpoint is not None

    def _rate_wait_ms(self) -> int:
        """0 when the handler may start now under the queue's rate limit, else how long to
        wait before asking again (one call per opening of the window, no spinning)."""
        if self.record.get("rated") is not True:  # leased without a rate limit
            return 0
        try:
            return calls.start_run(self.connection, self.keys, self.id, self.token)
        except JobNotFound:  # purged meanwhile: nothing to run or to report
            raise LeaseLost(f"job {self.id} no longer exists") from None

    def wait_for_rate_slot(self) -> None:
        """Wait until the queue's rate limit lets this job's handler start, and count its start.

        Called right before the handler, after its module was imported, so a child that starts
        cold does not push its starts into the next window. Raises LeaseLost when the lease is
        gone (the run ends without a report)."""
        while (wait_ms := self._rate_wait_ms()) > 0:
            time.sleep(wait_ms / 1000)

    async def wait_for_rate_slot_async(self) -> None:
        """`wait_for_rate_slot` for a handler on an event loop: the other jobs run meanwhile."""
        while (wait_ms := self._rate_wait_ms()) > 0:
            await asyncio.sleep(wait_ms / 1000)

    def should_pause(self) -> bool:
        """True when the time slice is used up or the worker is shutting down."""
        if self.shutdown_requested:
            return True
        return self.time_slice is not None and time.monotonic() - self.started >= self.time_slice

    def save_checkpoint(self, value: Any, *, last: bool = False) -> None:
        """Save `value` (JSON) and renew the lease; pause the job here if its time is up.

        `last=True` marks the final checkpoint of a run that is about to return: it never
        pauses, so a job whose slice runs out on its last step is not queued again just to
        return its result. Unless `preemptible` is off (or the queue's preemption is), the
        save also pauses the job when a job of higher priority waits for a busy worker.
        Raises LeaseLost when another worker owns the job now (nothing is saved).
        """
        text = encode_result(value, what="the checkpoint is")
        pause = not last and self.should_pause()
        preemptible = not last and self.preemptible
        deadline = calls.checkpoint(
            self.connection, self.keys, self.id, self.token, text, self.lease_ms, pause, preemptible
        )
        self._checkpoint = value
        if pause or deadline == 0:
            raise JobSuspended("paused" if pause else "preempted")

    @property
    def progress(self) -> Any:
        """The latest value given to `set_progress` in this run (None before the first)."""
        return self._progress.value

    def set_progress(self, value: Any) -> None:
        """Show `value` (any JSON, at most PROGRESS_MAX_BYTES as text) as this job's progress:
        in `Job.info().progress`, `pyscheduler job` and the dashboard.

        Cheap to call often: at most one write per PROGRESS_INTERVAL_S reaches Redis (the
        latest value wins; a value held back is written when the interval is over, and at the
        end of the run at the latest). Raises PayloadNotJSON or PayloadTooLarge for a value
        that cannot be stored; a write that fails later (the lease was lost) is dropped."""
        self._progress.set(value)

    def flush_progress(self) -> None:
        """Write a progress value held back by the throttle now (done at the end of a run)."""
        self._progress.flush()

    def split(
        self,
        subtasks: Iterable[splitting.Subtask],
        *,
        collect: bool = False,
        checkpoint: Any = None,
    ) -> NoReturn:
        """Split this job into subtasks and wait for them; this run ends here.

        When the last subtask ends, the job is queued again; its next run finds the outcomes in
        `subtask_results()` (in subtask order) and `checkpoint` in `checkpoint`. A subtask that
        fails for good fails this job, unless `collect` is true (it then appears as a
        `SubtaskFailed` among the results).
        """
        from ..client.queue import Queue

        number = int(self.record.get("split") or 0) + 1
        queues: dict[str, Queue] = {}

        def queue_for(name: str) -> Queue:
            if name not in queues:
                queues[name] = Queue(name, connection=self.connection, auto_load=False)
            return queues[name]

        groups = splitting.enqueue_subtasks(
            self.connection, self.queue, self.id, number, subtasks, queue_for
        )
        if not groups:
            raise ValueError("split() needs at least one subtask")
        saved = None if checkpoint is None else encode_result(checkpoint, "the checkpoint is")
        status = calls.split(
            self.connection, self.keys, self.id, self.token, number, groups, collect, saved
        )
        if status == Status.FAILED:  # a subtask had already failed for good (e.g. a re-run)
            splitting.fail_upwards(self.connection, self.keys, self.id)
        raise JobSuspended("split")

    def iter_subtask_results(self) -> Iterator[Any]:
        """The outcomes of the latest split, in subtask order, read a page at a time."""
        number = self.record.get("split")
        if not number:
            return iter(())
        total = int(self.record.get("split_total") or 0)
        return splitting.iter_outcomes(self.connection, self.keys, self.id, int(number), total)

    def subtask_results(self) -> list[Any]:
        return list(self.iter_subtask_results())


def _depth(value: Any, limit: int) -> bool:
    """True when `value` nests at most `limit` deep (lists and objects)."""
    if isinstance(value, dict):
        return limit > 0 and all(_depth(v, limit - 1) for v in value.values())
    if isinstance(value, list):
        return limit > 0 and all(_depth(v, limit - 1) for v in value)
    return True


def progress_text(value: Any) -> str:
    """A progress value as the JSON text stored, checked as the library would store it (also
    used by eager queues, client/eager.py); raises PayloadNotJSON, PayloadTooLarge or
    InvalidOption."""
    text = encode_result(value, what="the progress is")
    if len(text.encode()) > PROGRESS_MAX_BYTES:
        raise PayloadTooLarge(
            f"progress of {len(text.encode())} bytes exceeds the limit of"
            f" {PROGRESS_MAX_BYTES} bytes"
        )
    if not _depth(value, PROGRESS_DEPTH_MAX):
        raise InvalidOption(f"progress must nest at most {PROGRESS_DEPTH_MAX} deep")
    return text


class _Progress:
    """A run's progress value and the throttle on its writes (see `JobContext.set_progress`).
    A value held back is written by a timer thread once the interval is over, or by `flush`."""

    def __init__(self, context: JobContext) -> None:
        self.context = context
        self.value: Any = None
        self._pending: str | None = None
        self._next_write = 0.0
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def set(self, value: Any) -> None:
        text = progress_text(value)
        with self._lock:
            self.value = value
            self._pending = text
            wait = self._next_write - time.monotonic()
            if wait > 0:
                if self._timer is None:
                    self._timer = threading.Timer(wait, self.flush)
                    self._timer.daemon = True
                    self._timer.start()
                return
        self.flush()

    def flush(self) -> None:
        with self._lock:
            text, self._pending = self._pending, None
            timer, self._timer = self._timer, None
            if timer is not None and timer is not threading.current_thread():
                timer.cancel()
            if text is None:
                return
            self._next_write = time.monotonic() + PROGRESS_INTERVAL_S
            context = self.context
            # Progress is shown, not relied on: a lost lease or connection drops the write.
            with contextlib.suppress(PySchedulerError, RedisError, OSError):
                calls.set_progress(
                    context.connection, context.keys, context.id, context.token, text
                )


# The running job's context. A ContextVar, so each job on an event loop (one asyncio task
# each) sees its own; `_running` lists them all, for a pause asked of the whole process.
_current: ContextVar[JobContext | None] = ContextVar("pyscheduler_current_job", default=None)
_running: set[JobContext] = set()
# Set once the worker asks this process to pause its jobs (it is shutting down): every run
# from then on pauses at its next checkpoint, including one whose handler was still loading.
_pausing = False


def current_job() -> JobContext:
    """The context of the job this handler runs; RuntimeError outside a worker's handler."""
    context = _current.get()
    if context is None:
        raise RuntimeError("current_job() is only available inside a handler run by a worker")
    return context


def set_current(context: JobContext) -> Token[JobContext | None]:
    """Make `context` the current job's; pass the result to `reset_current` when it ends."""
    _running.add(context)
    # Read after adding it, so a pause asked for in between is not lost.
    context.shutdown_requested = context.shutdown_requested or _pausing
    return _current.set(context)


def reset_current(token: Token[JobContext | None]) -> None:
    context = _current.get()
    if context is not None:
        _running.discard(context)
        context.flush_progress()  # before the outcome is reported: the lease still holds
    _current.reset(token)


def pause_all() -> None:
    """Pause this process's jobs at their next checkpoint, now and from now on."""
    global _pausing
    _pausing = True
    for running in list(_running):
        running.shutdown_requested = True


__all__ = ["JobContext", "JobSuspended", "LeaseLost", "current_job"]
