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
from typing import Any

import redis

from ..exceptions import InvalidOption
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
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_RESULT_TTL_S,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_S,
    ENDED_STATES,
    ENQUEUE_BATCH_MAX,
    PURGE_BATCH_MAX,
    THROUGHPUT_MINUTES,
    Status,
)
from ..store.serialization import decode_payload, decode_result
from . import dependencies, schedules, splitting
from . import eager as eager_mode
from .job import Job, JobInfo, parse_record
from .metrics import QueueMetrics, queue_metrics
from .preparing import (
    Dependency,
    check_before_writing,
    enqueue_commands,
    enqueue_merge,
    enqueued_ids,
    not_durable,
    prepare_job,
    seconds_of,
    waiting_dependents,
)
from .schedules import Schedule
from .splitting import Subtask

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
        limits=_limits(settings),
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
        eager: bool = False,
    ) -> None:
        self.keys = QueueKeys(name)  # validates the name
        self.name = name
        # `eager`: every job runs inline at enqueue, in this process, and no Redis is needed
        # (client/eager.py; for users' unit tests).
        self.eager = eager
        self._connection: Client | None = (
            local_fcall_keys(connection)
            if connection is not None
            else None
            if eager
            else default_connection()
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
        self._merge = enqueue_merge(name)

    def __repr__(self) -> str:
        return f"Queue({self.name!r}, eager=True)" if self.eager else f"Queue({self.name!r})"

    @property
    def connection(self) -> Client:
        if self._connection is None:
            raise InvalidOption(
                f"{self!r} has no connection: an eager queue only enqueues (its jobs run inline)"
            )
        return self._connection

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
        return prepare_job(
            self,
            self.payload_limit,
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
            parent=parent,
            split=split,
            depends_on=depends_on,
            on_dependency_failure=on_dependency_failure,
            unique_for=unique_for,
            unique_key=unique_key,
            expires=expires,
            on_success=on_success,
            on_failure=on_failure,
            retry_on=retry_on,
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
        check_before_writing(batch, self.payload_limit())
        if self.eager:
            return eager_mode.run_inline(self, batch)
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
        commands += enqueue_commands(self.keys, batch)
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
        ids = enqueued_ids(replies)
        enqueued = [Job(job_id, self) for job_id in ids]
        if not any(job.depends_on for job in batch):
            if shortfall is not None:
                raise not_durable(shortfall, ids)
            return enqueued
        dependencies.register(conn, self.name, waiting_dependents(batch, ids))
        if shortfall is not None:  # raised once the jobs are whole (their dependencies known)
            raise not_durable(shortfall, ids)
        return enqueued

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
        if self._connection is None:  # eager: the library's default
            return DEFAULT_MAX_PAYLOAD_BYTES
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
        period_s = seconds_of(period, "period")
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
        rate = seconds_of(levels_per_second, "aging rate")
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
        """Delete ended jobs (failed, complete, cancelled or expired): all, or the ids given.

        Returns how many were deleted; `progress` is called with each batch's count.
        """
        if status not in ENDED_STATES:
            raise InvalidOption(
                f"only failed, complete, cancelled or expired jobs can be purged: {status}"
            )
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
        return queue_stats(self.name, self.counts())

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
            found.append(queue_stats(name, calls.parse_counts(reply)))
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
        return job_info(
            self.name, job_id, calls.fetch(self.connection, self.keys, job_id), show_token
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
