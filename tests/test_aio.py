"""The asyncio client (`pyscheduler.aio`) on a real server: the sync client's API, awaited.

Each test runs its coroutine with `asyncio.run` on a `redis.asyncio` client of its own (a
`redis.asyncio.cluster.RedisCluster` on the cluster params). Round trips are counted by the
client's connections (every packet written is one), the way `helpers.counting_client` counts
them for the sync client. No test measures time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
from helpers import Traffic, start_worker, wait_until

from pyscheduler import Queue as SyncQueue
from pyscheduler import aio
from pyscheduler.exceptions import (
    HandlerRefused,
    InvalidJobId,
    InvalidOption,
    InvalidURL,
    JobFailed,
    JobNotFound,
    LibraryError,
    NotDurable,
    PayloadNotJSON,
    PayloadTooLarge,
    WaitTimeout,
)
from pyscheduler.store.connection import cluster_node_url, is_cluster_url
from pyscheduler.store.durability import Durability
from pyscheduler.store.protocol import ENQUEUE_BATCH_MAX, LIBRARY_NAME

pytestmark = pytest.mark.cluster

CONCURRENT = 200

AsyncClient = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _name(args: Sequence[Any]) -> str:
    name = _text(args[0]).upper()
    if name in ("FCALL", "FCALL_RO") and len(args) > 1:
        return f"{name} {_text(args[1])}"
    return name


def async_client(url: str, connection_class: type[Any] | None = None) -> AsyncClient:
    """A redis.asyncio client of `url`, a cluster's for a cluster URL."""
    if is_cluster_url(url):
        client = redis.asyncio.cluster.RedisCluster.from_url(cluster_node_url(url))
        if connection_class is not None:
            # No such parameter: the nodes it is told of and the ones it finds take it here.
            client.connection_kwargs["connection_class"] = connection_class
            for node in client.nodes_manager.startup_nodes.values():
                node.connection_class = connection_class
        return client
    if connection_class is None:
        return redis.asyncio.Redis.from_url(url)
    pool = redis.asyncio.ConnectionPool.from_url(url, connection_class=connection_class)
    return redis.asyncio.Redis(connection_pool=pool)


def counting_client(url: str) -> tuple[AsyncClient, Traffic]:
    """A redis.asyncio client whose connections record their commands and round trips."""
    traffic = Traffic()

    class CountingConnection(redis.asyncio.Connection):
        async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            traffic.round_trips += 1
            await super().send_packed_command(command, check_health)

        def pack_command(self, *args: Any) -> Any:  # a pipeline's `pack_commands` calls it too
            traffic.commands.append(_name(args))
            return super().pack_command(*args)

    return async_client(url, CountingConnection), traffic


def run(url: str, test: Callable[[Any], Awaitable[Any]]) -> Any:
    """`test(client)` in a fresh event loop, with a client of its own closed after."""

    async def main() -> Any:
        async with async_client(url) as client:
            return await test(client)

    return asyncio.run(main())


def run_counted(url: str, test: Callable[[Any, Traffic], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        client, traffic = counting_client(url)
        async with client:
            await client.ping()  # the connection's handshake is not what the tests count
            traffic.reset()
            return await test(client, traffic)

    return asyncio.run(main())


def primaries(conn: Any) -> int:
    """How many servers keep the library: 1, or a cluster's primaries."""
    return len(conn.get_primaries()) if hasattr(conn, "get_primaries") else 1


def queues_on_every_shard(conn: Any) -> list[str]:
    """Names of queues, one on each primary of a cluster (three names on one server)."""
    if not hasattr(conn, "get_node_from_key"):
        return ["aio-0", "aio-1", "aio-2"]
    by_node: dict[str, str] = {}
    for i in range(1000):
        name = f"aio-{i}"
        by_node.setdefault(conn.get_node_from_key(f"psq:{{{name}}}:jobs").name, name)
        if len(by_node) == primaries(conn):
            break
    return sorted(by_node.values())


# -- running jobs --------------------------------------------------------------------------------


def test_a_job_enqueued_with_await_runs_and_wait_returns_its_result(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    start_worker(workers, "aio")

    async def test(client: AsyncClient) -> Any:
        job = await aio.Queue("aio", connection=client).enqueue("tasks:add", 2, 3)
        return await job.wait(timeout=10)

    assert run(redis_url, test) == 5


def test_wait_raises_job_failed_for_a_job_that_fails(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    start_worker(workers, "aio")

    async def test(client: AsyncClient) -> None:
        job = await aio.Queue("aio", connection=client).enqueue(
            "tasks:boom", redis_url, "aio:boom", retries=0
        )
        with pytest.raises(JobFailed, match="boom: this handler always fails"):
            await job.wait(timeout=10)

    run(redis_url, test)


def test_wait_raises_wait_timeout_when_the_job_does_not_end_in_time(
    conn: redis.Redis, redis_url: str
) -> None:
    async def test(client: AsyncClient) -> None:
        job = await aio.Queue("aio", connection=client).enqueue("tasks:noop")  # no worker
        with pytest.raises(WaitTimeout, match="still queued"):
            await job.wait(timeout=0.2)

    run(redis_url, test)


def test_wait_blocks_in_redis_instead_of_polling(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    start_worker(workers, "aio")

    async def test(client: AsyncClient, traffic: Traffic) -> Any:
        job = await aio.Queue("aio", connection=client).enqueue("tasks:sleep_in_c", 1.0)
        traffic.reset()
        result = await job.wait(timeout=10)
        return result, traffic.counts()

    result, counts = run_counted(redis_url, test)

    assert result == "woke up"
    # A second's run seen through the job's events (started, completed): a poll every few
    # milliseconds would read the job hundreds of times.
    assert counts["XREAD"] <= 3, counts
    assert counts["FCALL_RO psq_fetch"] <= 3, counts


def test_a_job_waiting_for_another_runs_once_the_other_completed(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    start_worker(workers, "aio")

    async def test(client: AsyncClient) -> Any:
        queue = aio.Queue("aio", connection=client)
        first = await queue.enqueue("tasks:sleep_in_c", 0.2)
        second = await queue.enqueue("tasks:add", 3, 4, depends_on=[first])
        return await second.wait(timeout=10), await first.status()

    assert run(redis_url, test) == (7, "complete")


def test_a_job_waiting_for_jobs_of_other_shards_runs_once_they_completed(
    conn: Any, redis_url: str, workers: Any
) -> None:
    first, second, third = queues_on_every_shard(conn)[:3]
    start_worker(workers, first, second, third)

    async def test(client: AsyncClient) -> Any:
        a = await aio.Queue(first, connection=client).enqueue("tasks:sleep_in_c", 0.2)
        b = await aio.Queue(second, connection=client).enqueue("tasks:sleep_in_c", 0.2)
        last = aio.Queue(third, connection=client)
        after = await last.enqueue("tasks:add", 3, 4, depends_on=[a, b])
        return await after.wait(timeout=20), await a.status(), await b.status()

    assert run(redis_url, test) == (7, "complete", "complete")


# -- the same checks as the sync client ----------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error"),
    [
        ((("tasks:add", 1, 2), {"priority": "high"}), InvalidOption),
        ((("tasks:add", 1, 2), {"priority": 10**9}), InvalidOption),
        ((("tasks:echo", object()), {}), PayloadNotJSON),
        ((("tasks:echo", float("nan")), {}), PayloadNotJSON),
        ((("tasks:add", 1, 2), {"job_id": "no spaces"}), InvalidJobId),
        ((("tasks:add", 1, 2), {"delay": 1, "at": 2_000_000_000}), InvalidOption),
        ((("__main__:main",), {}), HandlerRefused),
        ((("tasks:add",), {"unique_key": "k"}), InvalidOption),
    ],
    ids=[
        "priority-type",
        "priority-range",
        "object",
        "nan",
        "job-id",
        "delay-and-at",
        "main",
        "key",
    ],
)
def test_a_bad_call_raises_what_the_sync_client_raises_and_writes_nothing(
    conn: redis.Redis, redis_url: str, call: Any, error: type[Exception]
) -> None:
    args, options = call
    with pytest.raises(error) as sync_error:
        SyncQueue("aio", connection=conn).enqueue(*args, **options)

    async def test(client: AsyncClient) -> None:
        with pytest.raises(error) as async_error:
            await aio.Queue("aio", connection=client).enqueue(*args, **options)
        assert str(async_error.value) == str(sync_error.value)

    run(redis_url, test)
    assert conn.hlen("psq:{aio}:jobs") == 0


def test_a_sentinel_url_is_refused_naming_the_sync_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis+sentinel://127.0.0.1:26379/primary")
    with pytest.raises(InvalidURL, match="sync client"):
        aio.Queue("aio")


def test_without_a_connection_the_queue_uses_redis_url(
    conn: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)

    async def main() -> str:
        queue = aio.Queue("aio")
        job = await queue.enqueue("tasks:noop")
        status = await job.status()
        await queue.connection.aclose()
        return status

    assert asyncio.run(main()) == "queued"


def test_a_queue_without_a_connection_works_in_one_event_loop_after_another(
    conn: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    queue = aio.Queue("aio")  # made outside any loop, as a module-level queue is

    async def enqueue_and_close() -> str:
        job = await queue.enqueue("tasks:add", 1, 2)
        await queue.connection.aclose()
        return job.id

    ids = [asyncio.run(enqueue_and_close()) for _ in range(2)]

    assert conn.hlen("psq:{aio}:jobs") == 2 and len(set(ids)) == 2


# -- shared round trips ---------------------------------------------------------------------------


def test_concurrent_enqueues_share_round_trips_and_every_job_exists(
    conn: redis.Redis, redis_url: str
) -> None:
    async def test(client: AsyncClient, traffic: Traffic) -> Any:
        queue = aio.Queue("aio", connection=client)
        await queue.enqueue("tasks:noop")  # the first call checks the library and registers
        traffic.reset()
        jobs = await asyncio.gather(*(queue.enqueue("tasks:add", i, i) for i in range(CONCURRENT)))
        return jobs, traffic.round_trips, traffic.counts()

    jobs, round_trips, counts = run_counted(redis_url, test)

    assert round_trips <= 5, counts
    assert counts["FCALL psq_enqueue"] <= round_trips  # merged into one call per round trip
    assert len({job.id for job in jobs}) == CONCURRENT
    stored = conn.hmget("psq:{aio}:jobs", [job.id for job in jobs])
    assert all(record is not None for record in stored)


def test_concurrent_first_calls_check_the_library_once(conn: redis.Redis, redis_url: str) -> None:
    async def test(client: AsyncClient, traffic: Traffic) -> Any:
        queue = aio.Queue("aio", connection=client)
        await asyncio.gather(*(queue.enqueue("tasks:add", i, i) for i in range(CONCURRENT)))
        return traffic.counts()

    counts = run_counted(redis_url, test)

    assert counts["FCALL_RO psq_version"] == primaries(conn), counts  # each asked once
    assert counts["HMGET"] == 1, counts  # the size limits, read once
    assert counts["SADD"] == 1, counts  # the registry written once


def test_concurrent_enqueues_on_queues_of_every_shard_all_exist_and_run(
    conn: Any, redis_url: str, workers: Any
) -> None:
    names = queues_on_every_shard(conn)
    start_worker(workers, *names)

    async def test(client: AsyncClient, traffic: Traffic) -> Any:
        queues = [aio.Queue(name, connection=client) for name in names]
        jobs = await asyncio.gather(
            *(queues[i % len(queues)].enqueue("tasks:add", i, i) for i in range(CONCURRENT))
        )
        return jobs, traffic.counts()

    jobs, counts = run_counted(redis_url, test)

    # The keys of a library call are read by the client, never asked of a node.
    assert not [name for name in counts if name.startswith("COMMAND")], counts
    assert len({job.id for job in jobs}) == CONCURRENT
    for name in names:
        ids = [job.id for job in jobs if job.queue.name == name]
        assert all(record is not None for record in conn.hmget(f"psq:{{{name}}}:jobs", ids))

    def finished() -> int:
        return sum(SyncQueue(name, connection=conn).stats().finished for name in names)

    wait_until(lambda: finished() == CONCURRENT, timeout=60, what="every job run")
    assert conn.smembers("psq:queues") == {name.encode() for name in names}


def test_one_refused_job_among_concurrent_ones_fails_only_its_caller(
    conn: redis.Redis, redis_url: str
) -> None:
    SyncQueue("aio", connection=conn).set_size_limits(payload=1000)

    async def test(client: AsyncClient) -> list[Any]:
        # The client's own limit is higher, so only the library can refuse the big one.
        queue = aio.Queue("aio", connection=client, max_payload_bytes=100_000)
        await queue.enqueue("tasks:noop")
        calls = [queue.enqueue("tasks:echo", "x" * (5000 if i == 7 else 10)) for i in range(20)]
        return await asyncio.gather(*calls, return_exceptions=True)

    outcomes = run(redis_url, test)

    assert isinstance(outcomes[7], PayloadTooLarge)
    others = [o for i, o in enumerate(outcomes) if i != 7]
    assert all(isinstance(o, aio.Job) for o in others), others
    assert conn.hlen("psq:{aio}:jobs") == 1 + len(others)


def test_enqueue_many_writes_every_batch(conn: redis.Redis, redis_url: str) -> None:
    n = ENQUEUE_BATCH_MAX + 500

    async def test(client: AsyncClient, traffic: Traffic) -> Any:
        queue = aio.Queue("aio", connection=client)
        await queue.enqueue("tasks:noop")
        traffic.reset()
        jobs = await queue.enqueue_many([queue.prepare("tasks:add", (i, i)) for i in range(n)])
        return jobs, traffic.round_trips

    jobs, round_trips = run_counted(redis_url, test)

    assert len(jobs) == n
    assert round_trips == 1
    assert conn.hlen("psq:{aio}:jobs") == n + 1


def test_a_server_without_the_library_is_named_by_the_first_call(conn: Any, redis_url: str) -> None:
    # On a cluster, one primary of three: the check asks every one.
    if hasattr(conn, "get_primaries"):
        node = sorted(conn.get_primaries(), key=lambda n: str(n.name))[-1]
        conn.execute_command("FUNCTION DELETE", LIBRARY_NAME, target_nodes=node)
        where = f"not loaded on {node.name}"
    else:
        conn.function_delete(LIBRARY_NAME)
        where = "not loaded in this Redis"

    async def test(client: AsyncClient) -> None:
        with pytest.raises(LibraryError, match=where):
            await aio.Queue("aio", connection=client).enqueue("tasks:noop")

    run(redis_url, test)
    assert conn.hlen("psq:{aio}:jobs") == 0


def test_a_durable_enqueue_without_a_replica_raises_not_durable(
    conn: redis.Redis, redis_url: str
) -> None:
    async def test(client: AsyncClient) -> None:
        queue = aio.Queue("aio", connection=client)
        with pytest.raises(NotDurable) as raised:
            await queue.enqueue("tasks:noop", durable=Durability(timeout=0.05))
        (job_id,) = raised.value.enqueued
        assert await (await queue.fetch_job(job_id)).status() == "queued"

    run(redis_url, test)


# -- looking at queues and jobs -------------------------------------------------------------------


def test_stats_count_the_queued_jobs(conn: redis.Redis, redis_url: str) -> None:
    async def test(client: AsyncClient) -> Any:
        queue = aio.Queue("aio", connection=client)
        for _ in range(3):
            await queue.enqueue("tasks:noop")
        await queue.enqueue("tasks:noop", delay=60)
        return await queue.stats()

    stats = run(redis_url, test)

    assert (stats.name, stats.queued, stats.delayed) == ("aio", 3, 1)
    sync_stats = SyncQueue("aio", connection=conn).stats()
    assert replace(stats, oldest_ready_age=None) == replace(sync_stats, oldest_ready_age=None)


def test_job_fetch_finds_a_job_by_id_with_or_without_its_queue(
    conn: redis.Redis, redis_url: str
) -> None:
    async def test(client: AsyncClient) -> None:
        job = await aio.Queue("aio", connection=client).enqueue("tasks:add", 1, 2)
        assert await aio.Job.fetch(job.id, client, queue="aio") == job
        found = await aio.Job.fetch(job.id, client)
        assert (found.id, found.queue.name) == (job.id, "aio")
        assert (await found.info()).args == [1, 2]
        with pytest.raises(JobNotFound):
            await aio.Job.fetch("missing", client)
        with pytest.raises(JobNotFound):
            await aio.Job.fetch("missing", client, queue="aio")

    run(redis_url, test)


def test_cancel_works_on_queues_of_every_shard(conn: Any, redis_url: str) -> None:
    names = queues_on_every_shard(conn)

    async def test(client: AsyncClient) -> list[tuple[str, str]]:
        outcomes = []
        for name in names:
            job = await aio.Queue(name, connection=client).enqueue_in(60, "tasks:noop")
            outcomes.append((await job.cancel(), await job.status()))
        return outcomes

    assert run(redis_url, test) == [("delayed", "cancelled")] * len(names)


def test_cancel_returns_the_status_the_job_had(conn: redis.Redis, redis_url: str) -> None:
    async def test(client: AsyncClient) -> tuple[str, str]:
        job = await aio.Queue("aio", connection=client).enqueue_in(60, "tasks:noop")
        return await job.cancel(), await job.status()

    assert run(redis_url, test) == ("delayed", "cancelled")
