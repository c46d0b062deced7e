"""pyscheduler on a Redis Cluster: one URL form everywhere, queues on different shards, the
registry, cluster errors in words, and a worker riding out a cluster that went down.

These run on the session's local 3-primary cluster of each kind only (`cluster_only`); the
modules marked `cluster` run their usual tests on it too (conftest.py).
"""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import DashboardServer, run_cli, start_worker, stop_worker, wait_result, wait_until
from prometheus_client import generate_latest
from redis.cluster import RedisCluster, key_slot

from pyscheduler import Queue
from pyscheduler.client import queue as queue_module
from pyscheduler.ops.metrics import registry_for
from pyscheduler.runtime.worker import Worker
from pyscheduler.store import registry
from pyscheduler.store.keys import QUEUES_KEY, QueueKeys

pytestmark = pytest.mark.cluster_only


def slot_of(name: str) -> int:
    return int(key_slot(QueueKeys(name).jobs.encode()))


def owner_port(conn: RedisCluster, name: str) -> int:
    node: Any = conn.get_node_from_key(QueueKeys(name).jobs)
    return int(node.port)


def names_on_each_shard(conn: RedisCluster, count: int = 3) -> list[str]:
    """Queue names that live on `count` different primaries."""
    found: dict[int, str] = {}
    for i in range(1000):
        found.setdefault(owner_port(conn, f"q{i}"), f"q{i}")
        if len(found) == count:
            return sorted(found.values())
    raise AssertionError("no queue names found on every shard")


@pytest.fixture
def shards(conn: RedisCluster) -> list[str]:
    return names_on_each_shard(conn)


def sadd_calls(conn: RedisCluster) -> int:
    stats: Any = conn.get_redis_connection(conn.get_node_from_key(QUEUES_KEY)).info("commandstats")
    return int(stats.get("cmdstat_sadd", {}).get("calls", 0))


def test_one_worker_runs_queues_that_live_on_different_shards(
    conn: RedisCluster, shards: list[str]
) -> None:
    jobs = [
        Queue(name, connection=conn).enqueue("tasks:add", i, 1) for i, name in enumerate(shards)
    ]

    done = Worker(shards, connection=conn).work(burst=True)

    assert done == 3
    assert [job.result for job in jobs] == [1, 2, 3]


def test_a_job_splits_into_subtasks_on_queues_of_other_shards(
    conn: RedisCluster, workers: Any, redis_url: str, shards: list[str]
) -> None:
    root, children, leaves = shards
    parent = Queue(root, connection=conn).enqueue(
        "long_tasks:tree", redis_url, "cluster-tree", 1, [children, leaves], timeout=60
    )
    proc, log = start_worker(workers, *shards, concurrency=2)

    assert wait_result(parent, timeout=30) == 4 + 5 + 6 + 7
    stop_worker(proc, log)
    assert sorted(int(v) for v in conn.lrange("cluster-tree:leaves", 0, -1)) == [4, 5, 6, 7]


def test_every_first_enqueue_lists_the_queue_whatever_its_shard(
    conn: RedisCluster, shards: list[str]
) -> None:
    for name in shards:
        Queue(name, connection=conn).enqueue("tasks:noop")

    assert Queue.known(conn) == shards


def test_the_registry_is_written_once_per_client_and_queue(
    conn: RedisCluster, shards: list[str]
) -> None:
    before = sadd_calls(conn)

    for _ in range(3):
        Queue(shards[0], connection=conn).enqueue("tasks:noop")  # a new Queue object each time

    assert sadd_calls(conn) - before == 1


def test_a_queue_is_listed_again_once_the_registry_was_emptied(
    conn: RedisCluster, shards: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = Queue(shards[0], connection=conn)
    queue.enqueue("tasks:noop")
    conn.delete(QUEUES_KEY)  # a FLUSHALL or a restored backup lost it
    monkeypatch.setattr(registry, "REGISTRY_REFRESH_S", 0.0)  # its time to write it again

    queue.enqueue("tasks:noop")

    assert shards[0] in Queue.known(conn)


def getkeys_calls(conn: RedisCluster) -> int:
    total = 0
    for node in conn.get_primaries():
        stats: Any = conn.get_redis_connection(node).info("commandstats")
        total += int(stats.get("cmdstat_command|getkeys", {}).get("calls", 0))
    return total


def test_library_calls_are_routed_without_asking_a_node_for_their_keys(
    conn: RedisCluster, shards: list[str]
) -> None:
    queue = Queue(shards[0], connection=conn)
    queue.enqueue("tasks:noop")  # the version check and the registry, once
    before = getkeys_calls(conn)

    job = queue.enqueue("tasks:add", 1, 2)
    job.info()
    Queue.stats_of(shards, conn)  # a pipeline over three shards

    assert getkeys_calls(conn) == before


def test_queue_without_a_connection_takes_the_cluster_url_and_shares_one_client(
    conn: RedisCluster, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)

    first, second = Queue("a"), Queue("b")

    assert isinstance(first.connection, RedisCluster)
    assert first.connection is second.connection
    assert first.enqueue("tasks:add", 2, 2).id


def test_default_connection_is_made_again_in_a_forked_child(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    parent = queue_module.default_connection()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a client of its own, never the parent's sockets
        os.write(write, b"1" if queue_module.default_connection() is not parent else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"


def test_cli_commands_take_the_cluster_url(
    conn: RedisCluster, redis_url: str, shards: list[str]
) -> None:
    code, out = run_cli("enqueue", shards[1], "tasks:noop", "--url", redis_url)
    assert code == 0, out

    code, out = run_cli("stats", "--url", redis_url)

    assert code == 0, out
    assert shards[1] in out


def test_events_of_queues_on_different_shards_are_read_together(
    conn: RedisCluster, redis_url: str, shards: list[str]
) -> None:
    for name in shards:
        Queue(name, connection=conn).enqueue("tasks:noop")

    code, out = run_cli("events", *shards, "--from-start", "--count", "3", "--url", redis_url)

    assert code == 0, out
    assert all(f"{name}  enqueued" in out for name in shards), out


def test_metrics_and_the_dashboard_list_the_queues_of_every_shard(
    conn: RedisCluster, redis_url: str, shards: list[str]
) -> None:
    for name in shards:
        Queue(name, connection=conn).enqueue("tasks:noop")

    metrics = generate_latest(registry_for(conn)).decode()
    with DashboardServer(redis_url) as server, urllib.request.urlopen(server.url + "/") as page:
        overview = page.read().decode()

    assert all(f'queue="{name}"' in metrics for name in shards)
    assert all(name in overview for name in shards)


def test_a_one_server_url_to_a_cluster_node_says_to_name_the_cluster(
    conn: RedisCluster, engine: Any
) -> None:
    name = next(
        n for n in names_on_each_shard(conn) if owner_port(conn, n) != engine.nodes.nodes[0].port
    )
    node_url = f"redis://127.0.0.1:{engine.nodes.nodes[0].port}/0"

    code, out = run_cli("stats", name, "--url", node_url)

    assert code == 3
    assert "MOVED" in out and "redis+cluster://" in out
    assert f"slot {slot_of(name)} is served by 127.0.0.1:{owner_port(conn, name)}" in out


def test_a_worker_given_a_cluster_node_as_one_server_stops_saying_why(
    conn: RedisCluster, engine: Any, workers: Any
) -> None:
    node = engine.nodes.nodes[0].port
    name = next(n for n in names_on_each_shard(conn) if owner_port(conn, n) != node)
    workers.redis_url = f"redis://127.0.0.1:{node}/0"

    proc = workers.start(name)
    out, _ = proc.communicate(timeout=30)

    assert proc.returncode == 2, out
    assert "names no cluster" in out and "redis+cluster://" in out


@pytest.fixture
def slot_taken_away(conn: RedisCluster) -> Iterator[Any]:
    """Yields a function that takes a queue's slot away from its primary (the cluster reports
    CLUSTERDOWN: not every slot is served) and one that gives it back."""
    taken: list[tuple[Any, int]] = []

    def take(name: str) -> None:
        node = conn.get_redis_connection(conn.get_node_from_key(QueueKeys(name).jobs))
        node.execute_command("CLUSTER", "DELSLOTS", slot_of(name))
        taken.append((node, slot_of(name)))

    def give_back() -> None:
        while taken:
            node, slot = taken.pop()
            node.execute_command("CLUSTER", "ADDSLOTS", slot)
        wait_until(
            lambda: all(
                conn.get_redis_connection(n).cluster("info")["cluster_state"] == "ok"
                for n in conn.get_primaries()
            ),
            timeout=15,
            what="the cluster back up",
        )

    try:
        yield take, give_back
    finally:
        give_back()


def test_a_worker_rides_out_a_cluster_that_is_down(
    conn: RedisCluster, workers: Any, shards: list[str], slot_taken_away: Any
) -> None:
    take, give_back = slot_taken_away
    queue = Queue(shards[0], connection=conn)
    proc, log = start_worker(workers, shards[0])
    job = queue.enqueue("tasks:add", 1, 1, delay=1.0)  # due while the cluster is down

    take(shards[0])
    log.wait_for("lost the connection to Redis", timeout=20)
    give_back()

    assert wait_result(job, timeout=30) == 2
    text = stop_worker(proc, log)
    assert "is back after" in text
    assert "cluster" in text.split("lost the connection to Redis", 1)[1].splitlines()[0]
    assert proc.returncode == 0


def test_worker_log_has_no_cluster_error_on_a_healthy_cluster(
    conn: RedisCluster, workers: Any, shards: list[str]
) -> None:
    proc, log = start_worker(workers, *shards)
    job = Queue(shards[2], connection=conn).enqueue("tasks:add", 5, 5)

    assert wait_result(job) == 10
    text = stop_worker(proc, log)
    assert "Warning" not in text and "unexpected error" not in text, text
