"""`Queue`: enqueue jobs and look at what a queue holds."""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import redis

from . import calls
from .exceptions import HandlerRefused, InvalidJobId, InvalidOption
from .handlers import reference_of, registered_tasks, stdlib_refusal
from .job import Job, JobInfo, parse_record
from .keys import QUEUES_KEY, QueueKeys
from .library import ensure_loaded
from .protocol import (
    DEFAULT_BACKOFF_S,
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_RESULT_TTL_S,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_S,
    ENQUEUE_BATCH_MAX,
    JOB_ID_RE,
    PAST_TOLERANCE_MS,
    PRIORITY_MAX,
    PRIORITY_MIN,
    Status,
)
from .serialization import decode_payload, decode_result, encode_payload


def default_connection() -> redis.Redis:
    """A client for REDIS_URL, else for the local default Redis."""
    return redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))


def _seconds(value: float | timedelta | None, what: str) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise InvalidOption(f"{what} must be a number of seconds or a timedelta, not {value!r}")
    if not math.isfinite(seconds):
        raise InvalidOption(f"{what} must be a finite number of seconds, not {value!r}")
    return float(seconds)


def _at_ms(at: datetime | float | None) -> int | None:
    if at is None:
        return None
    if isinstance(at, datetime):
        at_ms = int(at.timestamp() * 1000)
    elif isinstance(at, int | float) and not isinstance(at, bool):
        if not math.isfinite(at):
            raise InvalidOption(f"at must be a finite time, not {at!r}")
        at_ms = int(at * 1000)
    else:
        raise InvalidOption(f"at must be a datetime or epoch seconds, not {at!r}")
    # The library checks again against the server's clock; this catches the usual mistake
    # before anything is sent.
    if at_ms < time.time() * 1000 - PAST_TOLERANCE_MS:
        raise InvalidOption(f"at is in the past: {at!r}")
    return at_ms


def _handler_reference(func: Callable[..., Any] | str) -> str:
    """The "module:qualname" (or registered task name) a job names its handler by."""
    if not isinstance(func, str):
        ref = reference_of(func)
        if ref not in registered_tasks():
            why = stdlib_refusal(ref.partition(":")[0])
            if why:
                raise HandlerRefused(f"handler {ref!r} is refused: {why}")
        return ref
    ref = func
    if not ref:
        raise HandlerRefused("the handler reference must not be empty")
    # "package.module.function" is accepted for "package.module:function"; a name without a
    # dot or a registered task name (which may contain dots) is kept as it is.
    if ":" not in ref and "." in ref and ref not in registered_tasks():
        module, _, qualname = ref.rpartition(".")
        ref = f"{module}:{qualname}"
    return ref


class Queue:
    """A named queue in Redis.

    Jobs run in priority order (higher first), FIFO within a priority.
    """

    def __init__(
        self,
        name: str = "default",
        connection: redis.Redis | None = None,
        *,
        default_timeout: float = DEFAULT_TIMEOUT_S,
        default_retries: int = DEFAULT_RETRIES,
        default_backoff: float = DEFAULT_BACKOFF_S,
        result_ttl: float = DEFAULT_RESULT_TTL_S,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        auto_load: bool | None = None,
    ) -> None:
        self.keys = QueueKeys(name)  # validates the name
        self.name = name
        self.connection = connection if connection is not None else default_connection()
        self.default_timeout = default_timeout
        self.default_retries = default_retries
        self.default_backoff = default_backoff
        self.result_ttl = result_ttl
        self.max_payload_bytes = max_payload_bytes
        self.auto_load = auto_load
        self._registered = False

    def __repr__(self) -> str:
        return f"Queue({self.name!r})"

    def __len__(self) -> int:
        """The number of jobs ready to run."""
        return self.counts().queued

    # -- enqueueing -------------------------------------------------------------------------

    def prepare(
        self,
        func: Callable[..., Any] | str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        priority: int = 0,
        delay: float | timedelta | None = None,
        at: datetime | float | None = None,
        timeout: float | timedelta | None = None,
        retries: int | None = None,
        backoff: float | timedelta | None = None,
        job_id: str | None = None,
        result_ttl: float | timedelta | None = None,
    ) -> calls.NewJob:
        """Validate one call and build the job to enqueue; raises InvalidInput subclasses."""
        ref = _handler_reference(func)
        if job_id is None:
            job_id = uuid.uuid4().hex
        elif not isinstance(job_id, str) or not JOB_ID_RE.match(job_id):
            raise InvalidJobId(
                f"invalid job id {job_id!r}: use 1-128 characters from letters, digits and _.:-"
            )
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise InvalidOption(f"priority must be an integer, not {priority!r}")
        if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
            raise InvalidOption(f"priority must be in {PRIORITY_MIN}..{PRIORITY_MAX}")
        delay_s = _seconds(delay, "delay") or 0.0
        if delay_s < 0:
            raise InvalidOption(f"delay must not be negative (got {delay_s} s)")
        if delay is not None and at is not None:
            raise InvalidOption("give either delay or at, not both")
        timeout_s = _seconds(timeout, "timeout")
        timeout_s = self.default_timeout if timeout_s is None else timeout_s
        if timeout_s <= 0:
            raise InvalidOption(f"timeout must be positive (got {timeout_s} s)")
        retries = self.default_retries if retries is None else retries
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise InvalidOption(f"retries must be a non-negative integer, not {retries!r}")
        backoff_s = _seconds(backoff, "backoff")
        backoff_s = self.default_backoff if backoff_s is None else backoff_s
        ttl_s = _seconds(result_ttl, "result_ttl")
        ttl_s = self.result_ttl if ttl_s is None else ttl_s
        if backoff_s < 0 or ttl_s < 0:
            raise InvalidOption("backoff and result_ttl must not be negative")
        payload = encode_payload(args, kwargs or {}, self.max_payload_bytes)
        return calls.NewJob(
            id=job_id,
            func=ref,
            payload=payload,
            priority=priority,
            delay_ms=int(delay_s * 1000),
            at_ms=_at_ms(at),
            timeout=timeout_s,
            retries=retries,
            backoff=backoff_s,
            result_ttl=ttl_s,
        )

    def enqueue(
        self,
        func: Callable[..., Any] | str,
        *args: Any,
        priority: int = 0,
        delay: float | timedelta | None = None,
        at: datetime | float | None = None,
        timeout: float | timedelta | None = None,
        retries: int | None = None,
        backoff: float | timedelta | None = None,
        job_id: str | None = None,
        result_ttl: float | timedelta | None = None,
        **kwargs: Any,
    ) -> Job:
        """Enqueue `func(*args, **kwargs)`. An existing `job_id` is a no-op returning that job.

        Keyword arguments named like an option go through `enqueue_call(kwargs=...)`.
        """
        job = self.prepare(
            func,
            args,
            kwargs,
            priority=priority,
            delay=delay,
            at=at,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            job_id=job_id,
            result_ttl=result_ttl,
        )
        return self.enqueue_many([job])[0]

    def enqueue_call(
        self,
        func: Callable[..., Any] | str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Job:
        """Like `enqueue`, with the call's arguments passed apart from the options."""
        return self.enqueue_many([self.prepare(func, args, kwargs, **options)])[0]

    def enqueue_many(self, jobs: Iterable[calls.NewJob]) -> list[Job]:
        """Enqueue prepared jobs (see `prepare`): one library call per batch, one round trip."""
        batch = list(jobs)
        if not batch:
            return []
        ensure_loaded(self.connection, self.auto_load)
        pipe = self.connection.pipeline(transaction=False)
        if not self._registered:
            pipe.sadd(QUEUES_KEY, self.name)
        for start in range(0, len(batch), ENQUEUE_BATCH_MAX):
            call = calls.enqueue_args(
                self.keys, batch[start : start + ENQUEUE_BATCH_MAX], self.max_payload_bytes
            )
            pipe.fcall("psq_enqueue", calls.ENQUEUE_NUMKEYS, *call)
        try:
            replies = pipe.execute()
        except redis.ResponseError as exc:
            calls.raise_mapped(exc)
        if not self._registered:
            replies = replies[1:]
            self._registered = True
        return [
            Job(outcome.id, self)
            for reply in replies
            for outcome in calls.parse_enqueue_reply(reply)
        ]

    # -- inspection -------------------------------------------------------------------------

    def counts(self) -> calls.Counts:
        ensure_loaded(self.connection, self.auto_load)
        return calls.counts(self.connection, self.keys)

    def fetch_job(self, job_id: str) -> Job:
        self.fetch_info(job_id)
        return Job(job_id, self)

    def fetch_info(self, job_id: str) -> JobInfo:
        ensure_loaded(self.connection, self.auto_load)
        fetched = calls.fetch(self.connection, self.keys, job_id)
        record = parse_record(fetched.record)
        try:
            args, kwargs = decode_payload(fetched.payload) if fetched.payload else ([], {})
        except ValueError:
            args, kwargs = [], {}
        status = str(record.get("status", Status.FAILED.value))
        return JobInfo(
            id=job_id,
            queue=self.name,
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
        )

    def job_ids(self, status: str = Status.QUEUED, offset: int = 0, limit: int = 100) -> list[str]:
        """Ids of jobs in a state, a page at a time (queued ones in the order they will run)."""
        return [job_id for job_id, _ in self._list(status, offset, limit)]

    def jobs(self, status: str = Status.QUEUED, offset: int = 0, limit: int = 100) -> list[Job]:
        return [Job(job_id, self) for job_id in self.job_ids(status, offset, limit)]

    def _list(self, status: str, offset: int, limit: int) -> list[tuple[str, dict[str, Any]]]:
        try:
            state_set = self.keys.state_set(Status(status))
        except ValueError:
            raise InvalidOption(
                f"unknown status {status!r}: one of {', '.join(s.value for s in Status)}"
            ) from None
        ensure_loaded(self.connection, self.auto_load)
        page = calls.list_jobs(self.connection, self.keys, state_set, offset, limit)
        listed = [(job_id, parse_record(text)) for job_id, text in page]
        if state_set == self.keys.finished:  # complete and cancelled share one set
            listed = [(i, r) for i, r in listed if r.get("status") == status]
        return listed
