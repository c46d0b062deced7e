"""`Queue`: enqueue jobs and look at what a queue holds.

The bodies of its settings (client/queue_settings.py) and inspection (client/inspection.py)
calls live in modules of their own; the methods here delegate to them.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
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
    Status,
)
from . import dependencies, inspection, queue_settings, schedules, splitting
from . import eager as eager_mode
from .inspection import QueueStats, job_info, queue_stats
from .job import Job, JobInfo
from .metrics import QueueMetrics
from .preparing import (
    Dependency,
    after_registry_write,
    check_before_writing,
    enqueue_commands,
    enqueue_merge,
    enqueued_ids,
    not_durable,
    prepare_job,
    waiting_dependents,
)
from .queue_settings import LIMITS_CACHE_SECONDS, QueueLimits
from .schedules import Schedule
from .splitting import Subtask

# Moved to client/queue_settings.py and client/inspection.py, still imported from here.
__all__ = [
    "LIMITS_CACHE_SECONDS",
    "Queue",
    "QueueLimits",
    "QueueStats",
    "default_connection",
    "job_info",
    "queue_stats",
]

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
            replies = after_registry_write(replies)
            registry.mark_registered(conn, [self.name])
        ids = enqueued_ids(replies)
        enqueued = [Job(job_id, self) for job_id in ids]
        if any(job.depends_on for job in batch):
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

    # -- settings (stored in Redis, enforced by the library; client/queue_settings.py) -------

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
        return queue_settings.cached_limits(self)

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
        return queue_settings.set_size_limits(
            self, payload=payload, result=result, checkpoint=checkpoint, error=error
        )

    def pause(self) -> None:
        """Hand out no jobs from this queue until `resume()`; running jobs go on."""
        queue_settings.set_paused(self, True)

    def resume(self) -> None:
        queue_settings.set_paused(self, False)

    def set_limits(
        self, concurrency: int | None = None, rate: int | None = None, period: float | None = None
    ) -> QueueLimits:
        """Set both limits (None clears one): at most `concurrency` active jobs across all
        workers, at most `rate` starts per `period` seconds."""
        return queue_settings.set_limits(self, concurrency, rate, period)

    def limits(self) -> QueueLimits:
        return self.stats().limits

    def set_aging(self, levels_per_second: float | None) -> None:
        """Let a ready job gain `levels_per_second` priority levels per second of waiting, so
        a low-priority job is passed over for at most (priority gap / rate) seconds.

        Raises InvalidJobState while jobs are ready (set it on an empty or drained queue).
        """
        queue_settings.set_aging(self, levels_per_second)

    def set_max_lost_leases(self, times: int | None) -> None:
        """Fail a job for good once its lease expired more than `times` times (its worker died
        or stalled each time); None: the library's default (MAX_LOST_LEASES)."""
        queue_settings.set_max_lost_leases(self, times)

    def set_preemption(self, enabled: bool) -> None:
        """With preemption on (the default), a running job that saves checkpoints pauses at
        its next one when a job of higher priority is ready and every worker's slots are busy;
        off, running jobs of this queue keep their slots."""
        queue_settings.set_preemption(self, enabled)

    def _configure(self, changes: dict[str, str]) -> dict[str, str]:
        return queue_settings.configure(self, changes)

    # -- failed and ended jobs (client/queue_settings.py) --------------------------------------

    def retry(self, job_ids: Sequence[str] | None = None) -> int:
        """Move failed jobs back to the queue (all of them when no ids); returns how many."""
        return queue_settings.retry(self, job_ids)

    def purge(
        self,
        status: str,
        job_ids: Sequence[str] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Delete ended jobs (failed, complete, cancelled or expired): all, or the ids given.

        Returns how many were deleted; `progress` is called with each batch's count.
        """
        return queue_settings.purge(self, status, job_ids, progress)

    # -- inspection (client/inspection.py) ------------------------------------------------------

    @classmethod
    def known(cls, connection: Client | None = None) -> list[str]:
        """Names of the queues this Redis has seen jobs for, sorted."""
        return inspection.known(connection if connection is not None else default_connection())

    def stats(self) -> QueueStats:
        return inspection.stats(self)

    @classmethod
    def stats_of(cls, names: Sequence[str], connection: Client) -> list[QueueStats]:
        """The stats of many queues in one round trip (their `psq_counts` calls pipelined)."""
        return inspection.stats_of(names, connection)

    def counts(self) -> calls.Counts:
        return inspection.counts(self)

    def metrics(self, minutes: int = 60) -> QueueMetrics:
        """The queue's counters, wait and run time histograms, and its throughput over the
        last `minutes` minutes (1..1440), in one library call."""
        return inspection.metrics(self, minutes)

    def fetch_job(self, job_id: str) -> Job:
        return inspection.fetch_job(self, job_id)

    def fetch_info(self, job_id: str, *, show_token: bool = False) -> JobInfo:
        """A snapshot of one job. The fencing token of its lease is left out of `record`
        unless `show_token` (it lets its holder report for the job)."""
        return inspection.fetch_info(self, job_id, show_token)

    def job_ids(self, status: str = Status.QUEUED, offset: int = 0, limit: int = 100) -> list[str]:
        """Ids of jobs in a state, a page at a time (queued ones in the order they will run)."""
        return inspection.job_ids(self, status, offset, limit)

    def jobs(self, status: str = Status.QUEUED, offset: int = 0, limit: int = 100) -> list[Job]:
        return inspection.jobs(self, status, offset, limit)

    def job_records(
        self, status: str = Status.QUEUED, offset: int = 0, limit: int = 100
    ) -> list[tuple[str, dict[str, Any]]]:
        """A page of jobs in a state with their records, in one library call (no read per job;
        the fencing tokens left out)."""
        return inspection.job_records(self, status, offset, limit)

    def _list(self, status: str, offset: int, limit: int) -> list[tuple[str, dict[str, Any]]]:
        return inspection.list_jobs(self, status, offset, limit)
