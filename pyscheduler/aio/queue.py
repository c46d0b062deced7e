"""`pyscheduler.aio.Queue`: the sync `Queue`'s enqueue and inspection calls, awaited.

A job is checked and built by the same code as the sync client's (`client/preparing.py`), so
the same mistakes raise the same exceptions, and the commands sent are the same. Enqueues that
coroutines make at once on one client share round trips (`batching.py`), their jobs one
library call per queue (on a Redis Cluster, each queue's calls share round trips of their own,
since each queue is on one shard).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from ..client import dependencies
from ..client.inspection import QueueStats, job_info, queue_stats
from ..client.job import JobInfo
from ..client.metrics import QueueMetrics, check_minutes, queue_metrics
from ..client.preparing import (
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
from ..client.queue_settings import LIMITS_CACHE_SECONDS
from ..store import calls as sync_calls
from ..store import registry
from ..store.calls import NewJob, ParentRef, SplitPlan
from ..store.durability import Durability, durability_of
from ..store.keys import QUEUES_KEY, QueueKeys
from ..store.operations import keys_for
from ..store.protocol import (
    DEFAULT_BACKOFF_S,
    DEFAULT_RESULT_TTL_S,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_S,
    SIZE_LIMIT_MAX,
)
from . import batching, calls
from .connection import (
    AsyncClient,
    async_url,
    default_connection,
    is_cluster,
    local_keys,
    sync_twin,
)
from .durability import send_durably
from .job import Job
from .library import ensure_loaded


class Queue:
    """A named queue in Redis, used from asyncio code.

    The options are the sync `pyscheduler.Queue`'s (there is no `eager` here). `connection`
    is a `redis.asyncio.Redis` or a `redis.asyncio.cluster.RedisCluster`. Without one, the
    queue uses one client per event loop for REDIS_URL (else the local default), which may
    name a cluster (`redis+cluster://HOST:PORT`); a Sentinel URL raises InvalidURL.
    """

    def __init__(
        self,
        name: str = "default",
        connection: AsyncClient | None = None,
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
        self._connection = None if connection is None else local_keys(connection)
        # Checked now, so a bad URL fails where the queue is made; connected in the loop.
        self._url = None if connection is not None else async_url()
        self.default_timeout = default_timeout
        self.default_retries = default_retries
        self.default_backoff = default_backoff
        self.result_ttl = result_ttl
        self.max_payload_bytes = max_payload_bytes
        self._library_limits: tuple[float, dict[str, int]] | None = None
        self._limits_read: asyncio.Task[dict[str, int]] | None = None
        self.auto_load = auto_load
        self.durable = durability_of(durable)
        self._merge = enqueue_merge(name)

    def __repr__(self) -> str:
        return f"aio.Queue({self.name!r})"

    @property
    def connection(self) -> AsyncClient:
        """The client given, else the default one of the running event loop."""
        if self._connection is not None:
            return self._connection
        assert self._url is not None
        return default_connection(self._url)

    # -- enqueueing -------------------------------------------------------------------------

    def _known_payload_limit(self) -> int:
        # Not awaited: the limit this client knows; `enqueue_many` checks the queue's own
        # before anything is written.
        if self.max_payload_bytes is not None:
            return self.max_payload_bytes
        known = self._library_limits
        return SIZE_LIMIT_MAX if known is None else known[1]["max_payload_bytes"]

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
        parent: ParentRef | None = None,
        split: SplitPlan | None = None,
        depends_on: Sequence[Dependency] | None = None,
        on_dependency_failure: str = "cancel",
        unique_for: float | timedelta | None = None,
        unique_key: str | None = None,
        expires: float | timedelta | datetime | None = None,
        on_success: Callable[..., Any] | str | None = None,
        on_failure: Callable[..., Any] | str | None = None,
        retry_on: Sequence[type[BaseException] | str] | None = None,
    ) -> NewJob:
        """Validate one call and build the job for `enqueue_many` (no I/O, so not awaited);
        the sync `Queue.prepare`, whose options and exceptions it shares. The payload is
        checked against this queue's size limit once it is known (`enqueue_many` checks it
        again before writing)."""
        return prepare_job(
            self,
            self._known_payload_limit,
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

    async def enqueue(
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
        """Enqueue `func(*args, **kwargs)`, with the options of the sync `Queue.enqueue`.

        Enqueues that other coroutines make meanwhile on this client go in the same round
        trip. Keyword arguments named like an option go through `enqueue_call(kwargs=...)`.
        """
        return await self.enqueue_call(
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
            durable=durable,
        )

    async def enqueue_call(
        self,
        func: Callable[..., Any] | str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Job:
        """Like `enqueue`, with the call's arguments passed apart from the options."""
        durable = options.pop("durable", None)
        limit = await self._limit_for(args, kwargs)
        job = prepare_job(self, lambda: limit, func, args, kwargs, **options)
        return (await self.enqueue_many([job], durable=durable))[0]

    async def _limit_for(self, args: Sequence[Any], kwargs: Mapping[str, Any] | None) -> int:
        # Read before the job is built (as the sync client does, inside `prepare`), and only
        # for a call with arguments: one without stores no payload.
        return await self.payload_limit() if len(args) or kwargs else 0

    async def enqueue_many(
        self, jobs: Iterable[NewJob], durable: bool | Durability | None = None
    ) -> list[Job]:
        """Enqueue prepared jobs (see `prepare`): one library call per batch, one round trip,
        with what the sync `Queue.enqueue_many` promises (every job checked before the first
        is written; the ids of the other batches in `enqueued` of an error; `durable`)."""
        batch = jobs if type(jobs) is list else list(jobs)
        if not batch:
            return []
        check_before_writing(batch, await self.payload_limit())
        client = self.connection
        await ensure_loaded(client, self.auto_load)
        batcher = batching.for_client(client, self.name)
        # The registry write, once per client and queue (store/registry.py, whose memory takes
        # either kind of client): on a cluster a call of its own before the enqueue (the
        # registry is on another shard), on one server carried by one of the calls made at once.
        register = self.name not in batcher.registering and not registry.is_registered(
            cast(Any, client), self.name
        )
        if register and is_cluster(client):
            await _register_apart(client, self.name)
            register = False
        commands: list[Sequence[Any]] = [("SADD", QUEUES_KEY, self.name)] if register else []
        commands += enqueue_commands(self.keys, batch)
        wanted = self.durable if durable is None else durability_of(durable)
        shortfall = None
        if register:
            batcher.registering.add(self.name)
        try:
            if wanted is not None:  # its own round trip, WAIT after the FCALLs (durability.py)
                replies, shortfall = await send_durably(client, self.keys.jobs, commands, wanted)
            else:
                replies = await batcher.execute(commands, self._merge)
        finally:
            if register:
                batcher.registering.discard(self.name)
        if register:
            replies = after_registry_write(replies)
            registry.mark_registered(cast(Any, client), [self.name])
        ids = enqueued_ids(replies)
        enqueued = [Job(job_id, self) for job_id in ids]
        if any(job.depends_on for job in batch):
            # The sync client's registration, in a thread (connection.py says why).
            waiting = waiting_dependents(batch, ids)
            await asyncio.to_thread(
                lambda: dependencies.register(sync_twin(client), self.name, waiting)
            )
        if shortfall is not None:  # raised once the jobs are whole (their dependencies known)
            raise not_durable(shortfall, ids)
        return enqueued

    async def enqueue_in(
        self, delay: float | timedelta, func: Callable[..., Any] | str, *args: Any, **kwargs: Any
    ) -> Job:
        """`enqueue(func, *args, delay=delay, **kwargs)`: run no earlier than `delay` (seconds
        or a timedelta) from now."""
        return await self.enqueue(func, *args, delay=delay, **kwargs)

    async def enqueue_at(
        self, at: datetime | float, func: Callable[..., Any] | str, *args: Any, **kwargs: Any
    ) -> Job:
        """`enqueue(func, *args, at=at, **kwargs)`: run no earlier than `at` (a datetime, or
        epoch seconds)."""
        return await self.enqueue(func, *args, at=at, **kwargs)

    # -- settings ---------------------------------------------------------------------------

    async def payload_limit(self) -> int:
        """The largest payload this client sends: its own `max_payload_bytes`, else the
        library's limit for this queue."""
        if self.max_payload_bytes is not None:
            return self.max_payload_bytes
        return (await self._cached_limits())["max_payload_bytes"]

    async def size_limits(self) -> dict[str, int]:
        """The sizes the library accepts on this queue, in bytes; read from Redis at most once
        every LIMITS_CACHE_SECONDS."""
        return dict(await self._cached_limits())

    async def _cached_limits(self) -> dict[str, int]:
        known = self._library_limits
        if known is not None and time.monotonic() - known[0] <= LIMITS_CACHE_SECONDS:
            return known[1]
        read = self._limits_read
        if read is None or read.done() or read.get_loop() is not asyncio.get_running_loop():
            # One read for the coroutines that ask at once.
            read = self._limits_read = asyncio.ensure_future(
                calls.size_limits(self.connection, self.keys)
            )
        limits = await asyncio.shield(read)
        self._library_limits = (time.monotonic(), limits)
        return limits

    # -- inspection -------------------------------------------------------------------------

    @classmethod
    async def known(cls, connection: AsyncClient | None = None) -> list[str]:
        """Names of the queues this Redis has seen jobs for, sorted."""
        client = connection if connection is not None else default_connection(async_url())
        return await calls.known_queues(client)

    async def counts(self) -> sync_calls.Counts:
        await ensure_loaded(self.connection, self.auto_load)
        return await calls.counts(self.connection, self.keys)

    async def stats(self) -> QueueStats:
        return queue_stats(self.name, await self.counts())

    async def metrics(self, minutes: int = 60) -> QueueMetrics:
        """The queue's counters, histograms and throughput (the sync `Queue.metrics`)."""
        check_minutes(minutes)
        await ensure_loaded(self.connection, self.auto_load)
        names = keys_for("psq_metrics", self.keys)
        reply = await calls.fcall_ro(self.connection, "psq_metrics", names, [minutes])
        return queue_metrics(self.name, sync_calls.parse_metrics(reply))

    async def fetch_job(self, job_id: str) -> Job:
        """The job with this id in this queue; raises JobNotFound."""
        await self.fetch_info(job_id)
        return Job(job_id, self)

    async def fetch_info(self, job_id: str, *, show_token: bool = False) -> JobInfo:
        """A snapshot of one job (the sync `Queue.fetch_info`)."""
        await ensure_loaded(self.connection, self.auto_load)
        fetched = await calls.fetch(self.connection, self.keys, job_id)
        return job_info(self.name, job_id, fetched, show_token)


# client -> queue name -> the registry write in flight, which concurrent first enqueues share
_registering: weakref.WeakKeyDictionary[AsyncClient, dict[str, asyncio.Task[None]]] = (
    weakref.WeakKeyDictionary()
)


async def _register_apart(client: AsyncClient, name: str) -> None:
    """Write `name` to the registry in a call of its own (SADD), once for the coroutines that
    ask at once; raises what the write raised, before any of them wrote a job."""
    writes = _registering.setdefault(client, {})
    write = writes.get(name)
    if write is None or write.done() or write.get_loop() is not asyncio.get_running_loop():
        write = writes[name] = asyncio.ensure_future(_sadd(client, name))
        write.add_done_callback(lambda done: writes.pop(name) if writes.get(name) is done else None)
    await asyncio.shield(write)


async def _sadd(client: AsyncClient, name: str) -> None:
    await client.sadd(QUEUES_KEY, name)
    registry.mark_registered(cast(Any, client), [name])
