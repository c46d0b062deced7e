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
run starts from the checkpoint.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from contextvars import ContextVar, Token
from functools import cache
from typing import Any, NoReturn

import redis

from . import calls, splitting
from .exceptions import LeaseLost
from .keys import QueueKeys
from .protocol import Status
from .serialization import encode_result


@cache
def _queue_keys(queue: str) -> QueueKeys:
    return QueueKeys(queue)  # immutable: one per queue serves every job of this process


class JobSuspended(BaseException):
    """Unwinds a handler whose job was paused or split; the library has recorded it."""


class JobContext:
    """What a handler can know and do about the job it runs."""

    def __init__(
        self,
        connection: redis.Redis,
        queue: str,
        job_id: str,
        token: int,
        record: dict[str, Any],
        checkpoint_text: str | None,
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
        self._checkpoint: Any = None if checkpoint_text is None else json.loads(checkpoint_text)

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

    def should_pause(self) -> bool:
        """True when the time slice is used up or the worker is shutting down."""
        if self.shutdown_requested:
            return True
        return self.time_slice is not None and time.monotonic() - self.started >= self.time_slice

    def save_checkpoint(self, value: Any, *, last: bool = False) -> None:
        """Save `value` (JSON) and renew the lease; pause the job here if its time is up.

        `last=True` marks the final checkpoint of a run that is about to return: it never
        pauses, so a job whose slice runs out on its last step is not queued again just to
        return its result. Raises LeaseLost when another worker owns the job now (nothing is
        saved).
        """
        text = encode_result(value)
        pause = not last and self.should_pause()
        calls.checkpoint(
            self.connection, self.keys, self.id, self.token, text, self.lease_ms, pause
        )
        self._checkpoint = value
        if pause:
            raise JobSuspended("paused")

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
        from .queue import Queue

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
        saved = None if checkpoint is None else encode_result(checkpoint)
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
    _current.reset(token)


def pause_all() -> None:
    """Pause this process's jobs at their next checkpoint, now and from now on."""
    global _pausing
    _pausing = True
    for running in list(_running):
        running.shutdown_requested = True


__all__ = ["JobContext", "JobSuspended", "LeaseLost", "current_job"]
