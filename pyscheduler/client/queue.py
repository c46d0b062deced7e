"""`Queue`: enqueue jobs and look at what a queue holds."""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn, cast

import redis

from ..exceptions import (
    HandlerRefused,
    InvalidJobId,
    InvalidOption,
    NotDurable,
    PayloadTooLarge,
    PySchedulerError,
)
from ..store import calls, pipelining, registry
from ..store.connection import (
    Client,
    connect,
    is_cluster_client,
    local_fcall_keys,
    pipeline,
    resolve_url,
    validate_url,
)
from ..store.durability import Durability, durability_of, send_durably
from ..store.keys import QUEUES_KEY, QueueKeys
from ..store.library import ensure_loaded
from ..store.protocol import (
    DEFAULT_BACKOFF_S,
    DEFAULT_RESULT_TTL_S,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_S,
    DEPENDS_MAX,
    ENQUEUE_BATCH_MAX,
    JOB_ID_RE,
    PAST_TOLERANCE_MS,
    PRIORITY_MAX,
    PRIORITY_MIN,
    PURGE_BATCH_MAX,
    THROUGHPUT_MINUTES,
    UNIQUE_KEY_MAX_BYTES,
    Status,
)
from ..store.serialization import decode_payload, decode_result, encode_payload
from . import dependencies, schedules, splitting
from .job import Job, JobInfo, parse_record
from .metrics import QueueMetrics, queue_metrics
from .schedules import Schedule
from .splitting import Subtask
from .tasks import (
    MAIN_MODULE,
    exception_names,
    never_a_handler,
    reference_of,
    registered_task,
    task_options,
)

# How long a client trusts the size limits it read from Redis before it reads them again.
LIMITS_CACHE_SECONDS = 30.0


def _limits(settings: Mapping[str, str]) -> QueueLimits:
    concurrency, rate, period_ms = (settings.get(k) for k in ("concurrency", "rate", "period_ms"))
    return QueueLimits(
        concurrency=None if concurrency is None else int(concurrency),
        rate=None if rate is None else int(rate),
        period=None if period_ms is None else int(period_ms) / 1000,
    )


_default_clients: dict[tuple[int, str], Client] = {}
_default_lock = threading.Lock()


def default_connection() -> Client:
    """The client for REDIS_URL (a cluster client for a `redis+cluster://` URL), else for the
    local default Redis (InvalidURL for a bad one): one per process and URL, shared by every
    `Queue(name)` made without a connection, so a producer that makes a `Queue` per request
    neither connects (nor, on a cluster, reads the slot map) nor registers the queue again
    each time. Per process: a forked child makes its own."""
    url = validate_url(resolve_url(None))
    key = (os.getpid(), url)
    with _default_lock:
        client = _default_clients.get(key)
        if client is None:
            client = _default_clients[key] = connect(url)
    return client


def _not_durable(shortfall: str, enqueued: Sequence[Job]) -> NotDurable:
    ids = tuple(job.id for job in enqueued)
    which = f"job {ids[0]}" if len(ids) == 1 else f"{len(ids)} jobs ({ids[0]} .. {ids[-1]})"
    exc = NotDurable(
        f"{which} enqueued on the primary, but {shortfall}: stored on the primary only, it may"
        " be lost if the primary fails before a replica has it",
        shortfall,
    )
    exc.enqueued = ids
    return exc


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
        module = ref.partition(":")[0]
        # A registered task is named as registered; only `__main__` is never reachable by name.
        why = (
            never_a_handler(module)
            if module == MAIN_MODULE or registered_task(ref) is None
            else None
        )
        if why:
            raise HandlerRefused(f"handler {ref!r} is refused: {why}")
        return ref
    ref = func
    if not ref:
        raise HandlerRefused("the handler reference must not be empty")
    if ref.partition(":")[0] == MAIN_MODULE:
        raise HandlerRefused(f"handler {ref!r} is refused: {never_a_handler(MAIN_MODULE)}")
    # "package.module.function" is accepted for "package.module:function"; a name without a
    # dot or a registered task name (which may contain dots) is kept as it is.
    if ":" not in ref and "." in ref and registered_task(ref) is None:
        module, _, qualname = ref.rpartition(".")
        ref = f"{module}:{qualname}"
    return ref


# A dependency as `depends_on` takes it: a Job (of any queue), (queue name, id), or an id of
# this queue.
Dependency = Job | tuple[str, str] | str


def _dependency(dep: Dependency, queue: str) -> tuple[str, str]:
    if isinstance(dep, Job):
        return dep.queue.name, dep.id
    if isinstance(dep, str):
        ref = (queue, dep)
    elif isinstance(dep, tuple) and len(dep) == 2 and all(isinstance(x, str) for x in dep):
        ref = (dep[0], dep[1])
    else:
        raise InvalidOption(
            f"depends_on takes Jobs, (queue, id) pairs or ids of this queue, not {dep!r}"
        )
    QueueKeys(ref[0])  # validates the name
    if not JOB_ID_RE.match(ref[1]):
        raise InvalidJobId(f"invalid job id in depends_on: {ref[1]!r}")
    return ref


def _expires_ms(expires: float | timedelta | datetime) -> int:
    if isinstance(expires, datetime):
        return int(expires.timestamp() * 1000)
    seconds = _seconds(expires, "expires")
    if seconds is None or seconds <= 0:
        raise InvalidOption(
            f"expires must be a positive number of seconds or a datetime, not {expires!r}"
        )
    return int((time.time() + seconds) * 1000)


def _extra(
    job_id: str,
    queue: str,
    due_ms: int | None,
    *,
    depends_on: Sequence[Dependency] | None,
    on_dependency_failure: str,
    unique_for: float | timedelta | None,
    unique_key: str | None,
    expires: float | timedelta | datetime | None,
    on_success: Callable[..., Any] | str | None,
    on_failure: Callable[..., Any] | str | None,
    retry_on: Sequence[type[BaseException] | str] | None,
) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The `extra` field of the rarely used options (lua/enqueue.lua), '' when none is set,
    and the dependencies to register after the enqueue."""
    extra: dict[str, Any] = {}
    deps: tuple[tuple[str, str], ...] = ()
    if depends_on is not None:
        if isinstance(depends_on, Job | str | tuple):
            depends_on = [depends_on]
        deps = tuple(dict.fromkeys(_dependency(d, queue) for d in depends_on))
        if not deps:
            raise InvalidOption("depends_on needs at least one job (or leave it out)")
        if len(deps) > DEPENDS_MAX:
            raise InvalidOption(f"depends_on takes at most {DEPENDS_MAX} jobs, not {len(deps)}")
        if (queue, job_id) in deps:
            raise InvalidOption(f"job {job_id} cannot depend on itself")
        if due_ms is not None:
            raise InvalidOption("depends_on cannot be combined with delay or at")
        extra["depends_on"] = [list(d) for d in deps]
    if on_dependency_failure not in ("cancel", "run"):
        raise InvalidOption(
            f"on_dependency_failure must be 'cancel' or 'run', not {on_dependency_failure!r}"
        )
    if on_dependency_failure == "run":
        extra["on_dependency_failure"] = "run"
    if unique_for is not None:
        window = _seconds(unique_for, "unique_for")
        if window is None or window <= 0:
            raise InvalidOption(
                f"unique_for must be a positive number of seconds, not {unique_for!r}"
            )
        extra["unique_for"] = max(1, round(window * 1000))
        if unique_key is not None:
            if (
                not isinstance(unique_key, str)
                or not 1 <= len(unique_key.encode()) <= UNIQUE_KEY_MAX_BYTES
            ):
                raise InvalidOption(
                    f"unique_key must be a string of 1..{UNIQUE_KEY_MAX_BYTES} bytes,"
                    f" not {unique_key!r}"
                )
            extra["unique_key"] = unique_key
    elif unique_key is not None:
        raise InvalidOption("unique_key needs unique_for (the dedup window)")
    if expires is not None:
        at_ms = _expires_ms(expires)
        if at_ms <= (due_ms if due_ms is not None else time.time() * 1000):
            raise InvalidOption("expires must be after now and after the job's due time")
        extra["expires"] = at_ms
    for which, handler in (("on_success", on_success), ("on_failure", on_failure)):
        if handler is not None:
            extra[which] = _handler_reference(handler)
    if retry_on is not None:
        extra["retry_on"] = exception_names(retry_on)
    if not extra:
        return "", deps
    return json.dumps(extra, separators=(",", ":")), deps


@dataclass(frozen=True, slots=True)
class QueueLimits:
    """Limits enforced by the library across all workers (None: no limit)."""

    concurrency: int | None = None  # at most this many active jobs at once
    rate: int | None = None  # at most `rate` job starts ...
    period: float | None = None  # ... per this many seconds


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


def _stats(name: str, counts: calls.Counts) -> QueueStats:
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
        limits=_limits(settings),
        aging=None if aging is None else float(aging),
    )


class Queue:
    """A named queue in Redis.

    Jobs run in priority order (higher first), FIFO within a priority.
    """

    def __init__(
        self,
        name: str = "default",
        connection: Client | None = None,
        *,
        default_timeout: float = DEFAULT_TIMEOUT_S,
        default_retries: int = DEFAULT_RETRIES,
        default_backoff: float = DEFAULT_BACKOFF_S,
        result_ttl: float = DEFAULT_RESULT_TTL_S,
        max_payload_bytes: int | None = None,
        auto_load: bool | None = None,
        durable: bool | Durability = False,
    ) -> None:
        self.keys = QueueKeys(name)  # validates the name
        self.name = name
        self.connection = (
            local_fcall_keys(connection) if connection is not None else default_connection()
        )
        self.default_timeout = default_timeout
        self.default_retries = default_retries
        self.default_backoff = default_backoff
        self.result_ttl = result_ttl
        # A limit of this client's own, checked before anything is sent; without one, the
        # library's limit for this queue (read from Redis, kept for LIMITS_CACHE_SECONDS). The
        # library enforces its own limit whatever a client checks.
        self.max_payload_bytes = max_payload_bytes
        self._library_limits: tuple[float, dict[str, int]] | None = None
        self.auto_load = auto_load
        # Every enqueue waits for WAIT/WAITAOF unless told otherwise (store/durability.py).
        self.durable = durability_of(durable)
        self._merge = pipelining.Merge(
            ("psq_enqueue", name),
            calls.enqueue_size,
            ENQUEUE_BATCH_MAX,
            calls.join_enqueue_commands,
            calls.split_enqueue_reply,
        )

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
        time_slice: float | timedelta | None = None,
        parent: calls.ParentRef | None = None,
        split: calls.SplitPlan | None = None,
        depends_on: Sequence[Dependency] | None = None,
        on_dependency_failure: str = "cancel",
        unique_for: float | timedelta | None = None,
        unique_key: str | None = None,
        expires: float | timedelta | datetime | None = None,
        on_success: Callable[..., Any] | str | None = None,
        on_failure: Callable[..., Any] | str | None = None,
        retry_on: Sequence[type[BaseException] | str] | None = None,
    ) -> calls.NewJob:
        """Validate one call and build the job to enqueue; raises InvalidInput subclasses.

        Options left as None take the handler's `@task(...)` defaults, then the queue's.
        The rarely used options (README: dependencies, dedup windows, expiry, callbacks,
        retry_on) travel in one field, sent empty when none is set.
        """
        ref = _handler_reference(func)
        defaults = task_options(func)
        if defaults:
            timeout = defaults.get("timeout") if timeout is None else timeout
            retries = defaults.get("retries") if retries is None else retries
            time_slice = defaults.get("time_slice") if time_slice is None else time_slice
            retry_on = defaults.get("retry_on") if retry_on is None else retry_on
        if job_id is None:
            job_id = calls.new_job_id()
        elif not isinstance(job_id, str) or not JOB_ID_RE.match(job_id):
            raise InvalidJobId(
                f"invalid job id {job_id!r}: use 1-256 characters from letters, digits and _.:-"
            )
        if type(priority) is not int and (
            isinstance(priority, bool) or not isinstance(priority, int)
        ):
            raise InvalidOption(f"priority must be an integer, not {priority!r}")
        if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
            raise InvalidOption(f"priority must be in {PRIORITY_MIN}..{PRIORITY_MAX}")
        delay_ms = 0
        if delay is not None:
            delay_s = _seconds(delay, "delay") or 0.0
            if delay_s < 0:
                raise InvalidOption(f"delay must not be negative (got {delay_s} s)")
            if at is not None:
                raise InvalidOption("give either delay or at, not both")
            delay_ms = int(delay_s * 1000)
        timeout_s = self.default_timeout if timeout is None else _seconds(timeout, "timeout")
        if timeout_s is None or timeout_s <= 0:
            raise InvalidOption(f"timeout must be positive (got {timeout_s} s)")
        retries = self.default_retries if retries is None else retries
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise InvalidOption(f"retries must be a non-negative integer, not {retries!r}")
        backoff_s = self.default_backoff if backoff is None else _seconds(backoff, "backoff")
        ttl_s = self.result_ttl if result_ttl is None else _seconds(result_ttl, "result_ttl")
        if backoff_s is None or ttl_s is None or backoff_s < 0 or ttl_s < 0:
            raise InvalidOption("backoff and result_ttl must not be negative")
        slice_s = 0.0 if time_slice is None else (_seconds(time_slice, "time_slice") or 0.0)
        if slice_s < 0 or not math.isfinite(slice_s):
            raise InvalidOption(f"time_slice must be a positive number of seconds, not {slice_s}")
        # A call without arguments stores no payload at all (the library reads it as empty).
        payload = (
            encode_payload(args, kwargs or {}, self.payload_limit()) if len(args) or kwargs else ""
        )
        at_ms = None if at is None else _at_ms(at)
        extra, deps = "", cast(tuple[tuple[str, str], ...], ())
        if (
            depends_on is not None
            or unique_for is not None
            or unique_key is not None
            or expires is not None
            or on_success is not None
            or on_failure is not None
            or retry_on is not None
            or on_dependency_failure != "cancel"
        ):
            if depends_on is not None and split is not None:
                raise InvalidOption("depends_on cannot be combined with a group's subtasks")
            due_ms = int(time.time() * 1000) + delay_ms if delay_ms else at_ms
            extra, deps = _extra(
                job_id,
                self.name,
                due_ms,
                depends_on=depends_on,
                on_dependency_failure=on_dependency_failure,
                unique_for=unique_for,
                unique_key=unique_key,
                expires=expires,
                on_success=on_success,
                on_failure=on_failure,
                retry_on=retry_on,
            )
        return calls.NewJob(
            id=job_id,
            func=ref,
            payload=payload,
            priority=priority,
            delay_ms=delay_ms,
            at_ms=at_ms,
            timeout=timeout_s,
            retries=retries,
            backoff=backoff_s,
            result_ttl=ttl_s,
            time_slice=slice_s,
            parent=parent,
            split=split,
            extra=extra,
            depends_on=deps,
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
        time_slice: float | timedelta | None = None,
        depends_on: Sequence[Dependency] | None = None,
        on_dependency_failure: str = "cancel",
        unique_for: float | timedelta | None = None,
        unique_key: str | None = None,
        expires: float | timedelta | datetime | None = None,
        on_success: Callable[..., Any] | str | None = None,
        on_failure: Callable[..., Any] | str | None = None,
        retry_on: Sequence[type[BaseException] | str] | None = None,
        durable: bool | Durability | None = None,
        **kwargs: Any,
    ) -> Job:
        """Enqueue `func(*args, **kwargs)`. An existing `job_id` is a no-op returning that job.

        `depends_on`: Jobs (of any queue), (queue, id) pairs or ids of this queue: the job
        waits until all complete; one that fails for good, is cancelled or expires cancels it
        (reason in its error), unless `on_dependency_failure="run"`. `unique_for` seconds:
        another enqueue with the same `job_id` (or `unique_key`) within the window returns
        this job, even after it ended. `expires` (seconds from now or a datetime): not started
        by then, it is never run and ends `expired`. `on_success(job_id, result)` /
        `on_failure(job_id, error_text)`: handlers enqueued in this queue with the outcome.
        `retry_on`: exception classes (or "module.QualName" names) that are retried; any other
        error fails the job at once. `durable` (True or a `Durability`; None: the queue's
        setting): return only once a replica (or the AOF) has the job, else raise `NotDurable`.

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
            time_slice=time_slice,
            depends_on=depends_on,
            on_dependency_failure=on_dependency_failure,
            unique_for=unique_for,
            unique_key=unique_key,
            expires=expires,
            on_success=on_success,
            on_failure=on_failure,
            retry_on=retry_on,
        )
        return self.enqueue_many([job], durable=durable)[0]

    def enqueue_call(
        self,
        func: Callable[..., Any] | str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Job:
        """Like `enqueue`, with the call's arguments passed apart from the options."""
        durable = options.pop("durable", None)
        return self.enqueue_many([self.prepare(func, args, kwargs, **options)], durable=durable)[0]

    def enqueue_many(
        self, jobs: Iterable[calls.NewJob], durable: bool | Durability | None = None
    ) -> list[Job]:
        """Enqueue prepared jobs (see `prepare`): one library call per batch, one round trip.

        Every job is checked before the first is written, and the library checks each batch
        before it writes any of it. Should a later batch still be refused (a due time that the
        server's clock finds in the past, a limit lowered meanwhile), the exception raised
        carries the ids of the jobs the other batches enqueued in `enqueued`.

        `durable` (None: the queue's setting): return only once replicas (or the AOF) have the
        jobs, else raise `NotDurable` (docs/cluster.md, "Durable enqueues").
        """
        batch = jobs if type(jobs) is list else list(jobs)
        if not batch:
            return []
        self._check_before_writing(batch)
        conn = self.connection
        ensure_loaded(conn, self.auto_load)
        commands: list[Sequence[Any]] = []
        # The registry write, once per client and queue (store/registry.py): on a cluster a
        # call of its own (another shard), on one server in this round trip.
        register = not registry.is_registered(conn, self.name)
        if register and is_cluster_client(conn):
            registry.register(conn, [self.name])
            register = False
        if register:
            commands.append(("SADD", QUEUES_KEY, self.name))
        for start in range(0, len(batch), ENQUEUE_BATCH_MAX):
            commands.append(
                calls.enqueue_command(self.keys, batch[start : start + ENQUEUE_BATCH_MAX])
            )
        wanted = self.durable if durable is None else durability_of(durable)
        shortfall = None
        if wanted is not None:  # its own round trip, WAIT after the FCALLs (durability.py)
            replies, shortfall = send_durably(conn, self.keys.jobs, commands, wanted)
        elif isinstance(conn, redis.Redis):
            # Calls from other threads on this client share the round trip (pipelining.py),
            # their jobs one library call when they go to this queue.
            replies = pipelining.for_client(conn).execute(commands, self._merge)
        else:
            pipe = pipeline(conn)
            for command in commands:
                pipelining.issue(pipe, command)
            replies = pipe.execute(raise_on_error=False)
        if register:
            if isinstance(replies[0], redis.ResponseError):
                calls.raise_mapped(replies[0])
            replies = replies[1:]
            registry.mark_registered(conn, [self.name])
        enqueued: list[Job] = []
        refused: redis.ResponseError | None = None
        for reply in replies:
            if isinstance(reply, redis.ResponseError):
                refused = refused or reply
                continue
            if isinstance(reply, Exception):  # a cluster pipeline's lost connection: unknown
                raise reply
            enqueued += [Job(job_id, self) for job_id in calls.enqueued_ids(reply)]
        if refused is not None:
            self._raise_partly_enqueued(refused, enqueued)
        if not any(job.depends_on for job in batch):
            if shortfall is not None:
                raise _not_durable(shortfall, enqueued)
            return enqueued
        # Again for a job that existed (a producer that died before registering it):
        # registering is idempotent.
        waiting = [
            (job.id, job.depends_on)
            for job, made in zip(batch, enqueued, strict=True)
            if job.depends_on and made.id == job.id
        ]
        dependencies.register(conn, self.name, waiting)
        if shortfall is not None:  # raised once the jobs are whole (their dependencies known)
            raise _not_durable(shortfall, enqueued)
        return enqueued

    def _check_before_writing(self, batch: Sequence[calls.NewJob]) -> None:
        """What may have changed since `prepare`: a due time now in the past, a payload over
        this client's limit (the library enforces its own limit again)."""
        limit = self.payload_limit()
        quarter = limit // 4
        oldest_ms = None
        for job in batch:
            if job.at_ms is not None:
                if oldest_ms is None:
                    oldest_ms = time.time() * 1000 - PAST_TOLERANCE_MS
                if job.at_ms < oldest_ms:
                    raise InvalidOption(
                        f"job {job.id}: its due time is in the past; nothing enqueued"
                    )
            if len(job.payload) > quarter:  # else it fits for sure (4 bytes per character)
                size = len(job.payload.encode())
                if size > limit:
                    raise PayloadTooLarge(
                        f"job {job.id}: payload is {size} bytes, over the limit of"
                        f" {limit} bytes; nothing enqueued"
                    )

    @staticmethod
    def _raise_partly_enqueued(reply: redis.ResponseError, enqueued: list[Job]) -> NoReturn:
        try:
            calls.raise_mapped(reply)
        except PySchedulerError as exc:
            exc.enqueued = tuple(job.id for job in enqueued)
            if enqueued:
                exc.args = (
                    f"{exc}; that batch was not written, but the {len(enqueued)} jobs of the other"
                    f" batches were (ids in .enqueued, first {enqueued[0].id}, last"
                    f" {enqueued[-1].id})",
                )
            raise

    def enqueue_group(
        self,
        subtasks: Iterable[Subtask],
        then: Callable[..., Any] | str,
        *args: Any,
        collect: bool = False,
        **options: Any,
    ) -> Job:
        """Run `subtasks` (possibly on other queues), then `then(results, *args)` on this queue.

        `results` holds every subtask's result in subtask order. A subtask that fails for good
        (or is cancelled) fails the group, unless `collect` is true (it then appears as a
        `SubtaskFailed`). Returns the continuation's job, which shows as waiting with
        done/total progress. Every subtask is validated before anything is written; they are
        then enqueued in batches. With an explicit `job_id`, re-submitting the same group
        after a crash is a no-op for what already exists.
        """
        queues: dict[str, Queue] = {self.name: self}

        def queue_for(name: str) -> Queue:
            if name not in queues:
                queues[name] = Queue(name, connection=self.connection, auto_load=self.auto_load)
            return queues[name]

        # The specs are read twice (validate, then enqueue in batches); payloads are encoded
        # a batch at a time, so memory holds the specs but never every payload at once.
        subtasks = subtasks if isinstance(subtasks, Sequence) else list(subtasks)
        groups: list[tuple[str, int]] = []
        for sub in subtasks:  # validate all first: a bad one must not leave a waiting parent
            queue = queue_for(sub.queue_name(self.name))
            queue.prepare(sub.func, sub.args, sub.kwargs, **sub.options)
            if groups and groups[-1][0] == queue.name:
                groups[-1] = (queue.name, groups[-1][1] + 1)
            else:
                groups.append((queue.name, 1))
        if not groups:
            raise InvalidOption("enqueue_group() needs at least one subtask")
        plan = calls.SplitPlan(len(subtasks), groups, collect, results_arg=True)
        (job,) = self.enqueue_many([self.prepare(then, args, None, split=plan, **options)])
        splitting.enqueue_subtasks(self.connection, self.name, job.id, 1, subtasks, queue_for)
        return job

    def enqueue_in(
        self, delay: float | timedelta, func: Callable[..., Any] | str, *args: Any, **kwargs: Any
    ) -> Job:
        """`enqueue(func, *args, delay=delay, **kwargs)`: run no earlier than `delay` (seconds
        or a timedelta) from now."""
        return self.enqueue(func, *args, delay=delay, **kwargs)

    def enqueue_at(
        self, at: datetime | float, func: Callable[..., Any] | str, *args: Any, **kwargs: Any
    ) -> Job:
        """`enqueue(func, *args, at=at, **kwargs)`: run no earlier than `at` (a datetime, or
        epoch seconds)."""
        return self.enqueue(func, *args, at=at, **kwargs)

    # -- periodic jobs (client/schedules.py) --------------------------------------------------

    def schedule(
        self,
        name: str,
        func: Callable[..., Any] | str,
        *args: Any,
        cron: str | None = None,
        tz: str | None = None,
        every: float | timedelta | None = None,
        catch_up: bool = False,
        priority: int = 0,
        timeout: float | timedelta | None = None,
        retries: int | None = None,
        backoff: float | timedelta | None = None,
        result_ttl: float | timedelta | None = None,
        time_slice: float | timedelta | None = None,
        **kwargs: Any,
    ) -> Schedule:
        """Run `func(*args, **kwargs)` on this queue at every tick of `cron` (evaluated in zone
        `tz`, default UTC) or `every` (seconds or a timedelta; the first tick is one interval
        from now); stored in Redis as schedule `name`, which this replaces if it exists.

        Each tick runs once as an ordinary job, id `schedule:<name>:<tick ms>`, made by
        whichever worker's pop comes first after it. Ticks missed while no worker ran make one
        run, or with `catch_up=True` one run each (the latest SCHEDULE_CATCH_UP_MAX). The
        other options apply to each run, as in `enqueue`.
        """
        ensure_loaded(self.connection, self.auto_load)
        options = {
            name: value
            for name, value in (
                ("priority", priority),
                ("timeout", timeout),
                ("retries", retries),
                ("backoff", backoff),
                ("result_ttl", result_ttl),
                ("time_slice", time_slice),
            )
            if value is not None
        }
        return schedules.define(
            self,
            name,
            func,
            args,
            kwargs,
            cron=cron,
            tz=tz,
            every=every,
            catch_up=catch_up,
            options=options,
        )

    def schedules(self) -> list[Schedule]:
        """This queue's schedules, sorted by name."""
        ensure_loaded(self.connection, self.auto_load)
        return schedules.list_all(self)

    def unschedule(self, name: str) -> bool:
        """Remove schedule `name` (its runs made so far stay); False when there was none."""
        ensure_loaded(self.connection, self.auto_load)
        return calls.unschedule(self.connection, self.keys, schedules.validate_name(name))

    def pause_schedule(self, name: str) -> Schedule:
        """Make no runs of schedule `name` until `resume_schedule`; raises ScheduleNotFound."""
        ensure_loaded(self.connection, self.auto_load)
        return schedules.set_paused(self, name, True)

    def resume_schedule(self, name: str) -> Schedule:
        """Resume schedule `name` from its next tick after now (the ticks passed while paused
        are not run)."""
        ensure_loaded(self.connection, self.auto_load)
        return schedules.set_paused(self, name, False)

    # -- settings (stored in Redis, enforced by the library) ---------------------------------

    def payload_limit(self) -> int:
        """The largest payload this client sends: its own `max_payload_bytes`, else the
        library's limit for this queue."""
        if self.max_payload_bytes is not None:
            return self.max_payload_bytes
        return self._cached_limits()["max_payload_bytes"]

    def size_limits(self) -> dict[str, int]:
        """The sizes the library accepts on this queue, in bytes (max_payload_bytes,
        max_result_bytes, max_checkpoint_bytes, max_error_bytes); read from Redis at most once
        every LIMITS_CACHE_SECONDS."""
        return dict(self._cached_limits())

    def _cached_limits(self) -> dict[str, int]:
        now = time.monotonic()
        if self._library_limits is None or now - self._library_limits[0] > LIMITS_CACHE_SECONDS:
            self._library_limits = (now, calls.size_limits(self.connection, self.keys))
        return self._library_limits[1]

    def set_size_limits(
        self,
        *,
        payload: int | None = None,
        result: int | None = None,
        checkpoint: int | None = None,
        error: int | None = None,
    ) -> dict[str, int]:
        """Set the sizes the library accepts on this queue (None: the library's default).

        A payload or checkpoint over its limit is refused (PayloadTooLarge), a result over it
        fails its job for good, an error text over it is cut in the middle."""
        changes = {}
        for field, value in (
            ("max_payload_bytes", payload),
            ("max_result_bytes", result),
            ("max_checkpoint_bytes", checkpoint),
            ("max_error_bytes", error),
        ):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise InvalidOption(f"{field} must be an integer number of bytes, not {value!r}")
            changes[field] = "" if value is None else str(value)
        self._configure(changes)
        self._library_limits = None
        return self.size_limits()

    def pause(self) -> None:
        """Hand out no jobs from this queue until `resume()`; running jobs go on."""
        self._configure({"paused": "1"})

    def resume(self) -> None:
        self._configure({"paused": ""})

    def set_limits(
        self, concurrency: int | None = None, rate: int | None = None, period: float | None = None
    ) -> QueueLimits:
        """Set both limits (None clears one): at most `concurrency` active jobs across all
        workers, at most `rate` starts per `period` seconds."""
        for name, value in (("concurrency", concurrency), ("rate", rate)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise InvalidOption(f"{name} must be an integer, not {value!r}")
        if (rate is None) != (period is None):
            raise InvalidOption("give rate and period together")
        period_s = _seconds(period, "period")
        if period_s is not None and not (math.isfinite(period_s) and period_s > 0):
            raise InvalidOption(f"period must be a positive number of seconds, not {period!r}")
        period_ms = None if period_s is None else round(period_s * 1000)
        settings = self._configure(
            {
                "concurrency": "" if concurrency is None else str(concurrency),
                "rate": "" if rate is None else str(rate),
                "period_ms": "" if period_ms is None else str(period_ms),
            }
        )
        return _limits(settings)

    def limits(self) -> QueueLimits:
        return self.stats().limits

    def set_aging(self, levels_per_second: float | None) -> None:
        """Let a ready job gain `levels_per_second` priority levels per second of waiting, so
        a low-priority job is passed over for at most (priority gap / rate) seconds.

        Raises InvalidJobState while jobs are ready (set it on an empty or drained queue).
        """
        rate = _seconds(levels_per_second, "aging rate")
        if rate is not None and not (math.isfinite(rate) and rate > 0):
            raise InvalidOption(f"aging rate must be a positive number, not {levels_per_second!r}")
        self._configure({"aging": "" if rate is None else repr(rate)})

    def set_max_lost_leases(self, times: int | None) -> None:
        """Fail a job for good once its lease expired more than `times` times (its worker died
        or stalled each time); None: the library's default (MAX_LOST_LEASES)."""
        if times is not None and (isinstance(times, bool) or not isinstance(times, int)):
            raise InvalidOption(f"max_lost_leases must be an integer, not {times!r}")
        self._configure({"max_lost_leases": "" if times is None else str(times)})

    def set_preemption(self, enabled: bool) -> None:
        """With preemption on (the default), a running job that saves checkpoints pauses at
        its next one when a job of higher priority is ready and every worker's slots are busy;
        off, running jobs of this queue keep their slots."""
        self._configure({"no_preemption": "" if enabled else "1"})

    def _configure(self, changes: dict[str, str]) -> dict[str, str]:
        ensure_loaded(self.connection, self.auto_load)
        return calls.configure(self.connection, self.keys, changes)

    # -- failed and ended jobs -----------------------------------------------------------------

    def retry(self, job_ids: Sequence[str] | None = None) -> int:
        """Move failed jobs back to the queue (all of them when no ids); returns how many."""
        ensure_loaded(self.connection, self.auto_load)
        moved = 0
        if job_ids is not None:
            for start in range(0, len(job_ids), ENQUEUE_BATCH_MAX):
                chunk = job_ids[start : start + ENQUEUE_BATCH_MAX]
                moved += len(calls.retry(self.connection, self.keys, chunk))
            return moved
        while batch := calls.retry(self.connection, self.keys, (), ENQUEUE_BATCH_MAX):
            moved += len(batch)
        return moved

    def purge(
        self,
        status: str,
        job_ids: Sequence[str] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Delete ended jobs (failed, complete or cancelled): all, or the ids given.

        Returns how many were deleted; `progress` is called with each batch's count.
        """
        if status not in (Status.FAILED, Status.COMPLETE, Status.CANCELLED):
            raise InvalidOption(f"only failed, complete or cancelled jobs can be purged: {status}")
        ensure_loaded(self.connection, self.auto_load)
        deleted = 0
        if job_ids is not None:
            for start in range(0, len(job_ids), ENQUEUE_BATCH_MAX):
                chunk = job_ids[start : start + ENQUEUE_BATCH_MAX]
                done, _ = calls.purge(self.connection, self.keys, status, chunk)
                deleted += done
                if progress:
                    progress(done)
            return deleted
        offset = 0
        while True:
            done, looked = calls.purge(
                self.connection, self.keys, status, (), PURGE_BATCH_MAX, offset
            )
            if looked == 0:
                return deleted
            deleted += done
            offset += looked - done
            if progress:
                progress(done)

    # -- inspection -------------------------------------------------------------------------

    @classmethod
    def known(cls, connection: Client | None = None) -> list[str]:
        """Names of the queues this Redis has seen jobs for, sorted."""
        return registry.known_queues(connection if connection is not None else default_connection())

    def stats(self) -> QueueStats:
        return _stats(self.name, self.counts())

    @classmethod
    def stats_of(cls, names: Sequence[str], connection: Client) -> list[QueueStats]:
        """The stats of many queues in one round trip (their `psq_counts` calls pipelined)."""
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
            found.append(_stats(name, calls.parse_counts(reply)))
        return found

    def counts(self) -> calls.Counts:
        ensure_loaded(self.connection, self.auto_load)
        return calls.counts(self.connection, self.keys)

    def metrics(self, minutes: int = 60) -> QueueMetrics:
        """The queue's counters, wait and run time histograms, and its throughput over the
        last `minutes` minutes (1..1440), in one library call."""
        if not 1 <= minutes <= THROUGHPUT_MINUTES:
            raise ValueError(f"minutes must be in 1..{THROUGHPUT_MINUTES}, got {minutes!r}")
        ensure_loaded(self.connection, self.auto_load)
        return queue_metrics(self.name, calls.metrics(self.connection, self.keys, minutes))

    def fetch_job(self, job_id: str) -> Job:
        self.fetch_info(job_id)
        return Job(job_id, self)

    def fetch_info(self, job_id: str, *, show_token: bool = False) -> JobInfo:
        """A snapshot of one job. The fencing token of its lease is left out of `record`
        unless `show_token` (it lets its holder report for the job)."""
        ensure_loaded(self.connection, self.auto_load)
        fetched = calls.fetch(self.connection, self.keys, job_id)
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
            checkpoint=None if fetched.checkpoint is None else json.loads(fetched.checkpoint),
            subtasks_done=fetched.subtasks_done,
        )

    def job_ids(self, status: str = Status.QUEUED, offset: int = 0, limit: int = 100) -> list[str]:
        """Ids of jobs in a state, a page at a time (queued ones in the order they will run)."""
        return [job_id for job_id, _ in self._list(status, offset, limit)]

    def jobs(self, status: str = Status.QUEUED, offset: int = 0, limit: int = 100) -> list[Job]:
        return [Job(job_id, self) for job_id in self.job_ids(status, offset, limit)]

    def job_records(
        self, status: str = Status.QUEUED, offset: int = 0, limit: int = 100
    ) -> list[tuple[str, dict[str, Any]]]:
        """A page of jobs in a state with their records, in one library call (no read per job;
        the fencing tokens left out)."""
        listed = self._list(status, offset, limit)
        for _, record in listed:
            record.pop("token", None)
        return listed

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
        if state_set == self.keys.finished:  # complete, cancelled and expired share one set
            listed = [(i, r) for i, r in listed if r.get("status") == status]
        return listed
