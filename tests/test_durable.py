"""Durable enqueues: acknowledged only once a replica (or the AOF) has the job.

Each test starts its own primary with one replica (tests/servers.py `primary_with_replica`),
of Redis and of Valkey; the cluster tests start a cluster of 3 primaries with a replica each.
A paused replica (SIGSTOP) never acknowledges anything, which is how "the replica does not
have it" is made real.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from helpers import worker_process
from redis.cluster import RedisCluster
from servers import (
    AOF_ARGS,
    ReplicatedCluster,
    ReplicatedPair,
    cluster_with_replicas,
    primary_with_replica,
)

from pyscheduler import Durability, InvalidOption, NotDurable, Queue
from pyscheduler.store import library
from pyscheduler.store.connection import connect
from pyscheduler.store.keys import QueueKeys

pytestmark = pytest.mark.crash

# Short, so the tests that expect a shortfall do not wait long; loose enough for a busy box
# when the replica is up.
SHORT = Durability(timeout=0.3)


def on_replica(pair: ReplicatedPair, queue: str, job_id: str) -> bool:
    client = pair.replica_client()
    try:
        return bool(client.hexists(QueueKeys(queue).jobs, job_id))
    finally:
        client.close()


@pytest.fixture(params=["redis", "valkey"])
def pair(request: pytest.FixtureRequest) -> Iterator[ReplicatedPair]:
    with primary_with_replica(request.param) as started:
        yield started


@pytest.fixture
def conn(pair: ReplicatedPair) -> Iterator[redis.Redis]:
    client = connect(pair.url)
    assert isinstance(client, redis.Redis)
    library.load(client)
    yield client
    client.close()


@pytest.fixture
def paused_replica(pair: ReplicatedPair) -> Iterator[None]:
    pair.replica.pause()
    try:
        yield
    finally:
        pair.replica.resume()


def test_a_durable_enqueue_returns_once_the_replica_has_the_job(
    pair: ReplicatedPair, conn: redis.Redis
) -> None:
    job = Queue("d", connection=conn).enqueue("tasks:noop", durable=True)
    assert on_replica(pair, "d", job.id)  # at once: no waiting for replication here


def test_a_durable_queue_makes_every_enqueue_durable(
    pair: ReplicatedPair, conn: redis.Redis
) -> None:
    queue = Queue("d", connection=conn, durable=True)
    ids = [queue.enqueue("tasks:noop").id for _ in range(5)]
    assert all(on_replica(pair, "d", job_id) for job_id in ids)


def test_a_durable_enqueue_many_returns_once_the_replica_has_every_batch(
    pair: ReplicatedPair, conn: redis.Redis
) -> None:
    queue = Queue("d", connection=conn)
    jobs = queue.enqueue_many([queue.prepare("tasks:add", (i, i)) for i in range(1200)], True)
    assert len(jobs) == 1200
    replica = pair.replica_client()
    try:
        assert replica.hlen(QueueKeys("d").jobs) == 1200
    finally:
        replica.close()


@pytest.mark.usefixtures("paused_replica")
def test_a_durable_enqueue_raises_not_durable_while_the_replica_does_not_answer(
    conn: redis.Redis,
) -> None:
    queue = Queue("d", connection=conn)
    with pytest.raises(NotDurable, match="only 0 of the 1 replica wanted acknowledged it") as info:
        queue.enqueue("tasks:noop", job_id="kept-on-primary", durable=SHORT)
    assert info.value.enqueued == ("kept-on-primary",)
    assert "may be lost" in str(info.value)
    # It is stored, on the primary only: a worker connected there would run it.
    assert queue.fetch_info("kept-on-primary").status == "queued"


@pytest.mark.usefixtures("paused_replica")
def test_a_plain_enqueue_returns_while_the_replica_does_not_answer(conn: redis.Redis) -> None:
    queue = Queue("d", connection=conn)
    assert queue.enqueue("tasks:noop").id
    # A durable queue's enqueue can opt out too.
    assert Queue("d", connection=conn, durable=SHORT).enqueue("tasks:noop", durable=False).id


@pytest.mark.usefixtures("paused_replica")
def test_a_durable_enqueue_call_raises_not_durable_too(conn: redis.Redis) -> None:
    queue = Queue("d", connection=conn)
    with pytest.raises(NotDurable):
        queue.enqueue_call("tasks:add", (1, 2), durable=SHORT)


def test_two_replicas_wanted_of_one_is_not_durable(conn: redis.Redis) -> None:
    # (Not "only 1": a replica still loading the library acknowledges late.)
    with pytest.raises(NotDurable, match="of the 2 replicas wanted"):
        Queue("d", connection=conn).enqueue("tasks:noop", durable=Durability(2, timeout=0.5))


def test_a_durable_job_runs_like_any_other(pair: ReplicatedPair, conn: redis.Redis) -> None:
    job = Queue("d", connection=conn, durable=True).enqueue("tasks:add", 2, 3)
    worker = worker_process(pair.url, "d", args=["--burst"])
    try:
        worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    assert job.result == 5


@pytest.mark.parametrize("durable", ["yes", 1, 0.5, {"replicas": 1}])
def test_durable_takes_true_false_or_a_durability(conn: redis.Redis, durable: Any) -> None:
    queue = Queue("d", connection=conn)
    with pytest.raises(InvalidOption):
        queue.enqueue("tasks:noop", durable=durable)
    assert queue.counts().queued == 0


@pytest.mark.parametrize(
    "options",
    [{"replicas": 0}, {"replicas": -1}, {"timeout": 0}, {"timeout": float("inf")}, {"aof": 1}],
)
def test_a_durability_that_cannot_be_met_is_refused_when_made(options: dict[str, Any]) -> None:
    with pytest.raises(InvalidOption):
        Durability(**options)


def test_a_bad_durable_setting_is_refused_by_the_queue(conn: redis.Redis) -> None:
    with pytest.raises(InvalidOption):
        Queue("d", connection=conn, durable="always")  # type: ignore[arg-type]


# -- WAITAOF ---------------------------------------------------------------------------------


def has_waitaof(client: redis.Redis) -> bool:
    try:
        client.execute_command("WAITAOF", 0, 0, 1)  # waits for nothing: a reply at once
    except redis.ResponseError as exc:
        assert "unknown command" in str(exc).lower()
        return False
    return True


@pytest.fixture(params=["redis", "valkey"])
def aof_pair(request: pytest.FixtureRequest) -> Iterator[ReplicatedPair]:
    with primary_with_replica(request.param, AOF_ARGS) as started:
        yield started


def test_waitaof_confirms_the_aof_of_the_primary_and_of_the_replica(
    aof_pair: ReplicatedPair,
) -> None:
    conn = connect(aof_pair.url)
    assert isinstance(conn, redis.Redis)
    library.load(conn)
    if not has_waitaof(conn):
        pytest.skip(f"this {aof_pair.primary.kind} {aof_pair.primary.version} has no WAITAOF")
    queue = Queue("d", connection=conn)
    # A replica reports what it has fsynced in its next acknowledgement, which a loaded machine
    # can delay past 1 s; the call returns as soon as it comes (4 s: below the socket timeout).
    job = queue.enqueue("tasks:noop", durable=Durability(replicas=1, aof=True, timeout=4))
    assert on_replica(aof_pair, "d", job.id)
    alone = queue.enqueue("tasks:noop", durable=Durability(replicas=0, aof=True, timeout=4))
    assert queue.fetch_info(alone.id).status == "queued"


def test_without_waitaof_an_aof_durable_enqueue_says_the_server_cannot_confirm(
    pair: ReplicatedPair, conn: redis.Redis
) -> None:
    """A server without WAITAOF (Redis < 7.2), or without an AOF: the job is written, the
    enqueue raises NotDurable with the server's reason."""
    with pytest.raises(NotDurable, match="could not confirm it") as info:
        Queue("d", connection=conn).enqueue("tasks:noop", durable=Durability(aof=True))
    assert len(info.value.enqueued) == 1


# -- on a cluster ----------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["redis", "valkey"])
def replicated_cluster(request: pytest.FixtureRequest) -> Iterator[ReplicatedCluster]:
    with cluster_with_replicas(request.param) as started:
        yield started


def queues_on_each_primary(conn: RedisCluster) -> dict[int, str]:
    """{primary port: a queue name whose slot it owns}, for the three primaries."""
    found: dict[int, str] = {}
    for i in range(1000):
        node: Any = conn.get_node_from_key(QueueKeys(f"q{i}").jobs)
        found.setdefault(int(node.port), f"q{i}")
        if len(found) == 3:
            return found
    raise AssertionError("no queue names found on every primary")


def test_on_a_cluster_the_wait_goes_to_the_primary_of_the_queue(
    replicated_cluster: ReplicatedCluster,
) -> None:
    """Pausing one shard's replica fails the durable enqueues of that shard's queue only: each
    WAIT ran on its queue's primary, on the connection of its FCALL."""
    conn = connect(replicated_cluster.url)
    assert isinstance(conn, RedisCluster)
    conn.flushall()
    library.load(conn)
    queues = queues_on_each_primary(conn)
    for name in queues.values():
        Queue(name, connection=conn).enqueue("tasks:noop", durable=True)
    paused_port, paused_queue = next(iter(queues.items()))
    replica = replicated_cluster.replica_of(paused_port)
    replica.pause()
    try:
        with pytest.raises(NotDurable):
            Queue(paused_queue, connection=conn).enqueue("tasks:noop", durable=SHORT)
        for port, name in queues.items():
            if port != paused_port:
                Queue(name, connection=conn).enqueue("tasks:noop", durable=True)
    finally:
        replica.resume()
    assert all(Queue(name, connection=conn).counts().queued == 2 for name in queues.values())
    conn.close()
