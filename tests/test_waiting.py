"""Waiting for work: an idle worker blocks in one BLPOP per queue, each on a client of its own
made with redis-py's public API for the node owning that queue's keys, and wakes up for a job
on any of its queues. The same waits work on a Redis Cluster (keys of several hash tags)."""

from __future__ import annotations

import os
import select
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from helpers import (
    blocked_clients,
    cluster_port,
    start_worker,
    stop_worker,
    wait_idle,
    wait_until,
)
from redis.cluster import RedisCluster

from pyscheduler import Queue
from pyscheduler.dev.engine import Engine
from pyscheduler.runtime.waiting import WorkWaiting
from pyscheduler.store.keys import QueueKeys

pytestmark = pytest.mark.cluster  # also on a local Redis Cluster (conftest.py)

QUEUES = ("wa", "wb", "wc")


def test_idle_worker_blocks_in_one_blpop_per_queue(conn: redis.Redis, workers: Any) -> None:
    start_worker(workers, *QUEUES)

    wait_until(lambda: blocked_clients(conn) == len(QUEUES), what="a blocked client per queue")
    time.sleep(0.3)
    assert blocked_clients(conn) == len(QUEUES)  # and no more


def test_idle_worker_starts_a_job_of_any_of_its_queues(conn: redis.Redis, workers: Any) -> None:
    start_worker(workers, *QUEUES)
    for name in reversed(QUEUES):
        wait_idle(conn, workers=len(QUEUES))
        job = Queue(name, connection=conn).enqueue("tasks:add", 1, 2)
        assert job.wait(timeout=10) == 3


def test_waiting_worker_raises_no_deprecation_warning(
    conn: redis.Redis, workers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Warnings raised on behalf of the worker's code (the client calls it makes) are errors.
    monkeypatch.setenv("PYTHONWARNINGS", "error::DeprecationWarning")
    proc, log = start_worker(workers, "wa")
    job = Queue("wa", connection=conn).enqueue("tasks:add", 2, 3)
    assert job.wait(timeout=10) == 5
    try:
        wait_idle(conn)
    except AssertionError:
        raise AssertionError(f"the worker does not wait; its log:\n{log.text}") from None

    text = stop_worker(proc, log)
    assert "Warning" not in text and "unexpected error" not in text, text


@pytest.fixture
def cluster(engine: Any) -> Iterator[RedisCluster]:
    """A one-node Redis Cluster (every slot on it) of the session's engine kind."""
    args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
    kind = engine.kind.removesuffix("-cluster") if engine.kind != "external" else None
    with Engine(kind=kind, port=cluster_port(), extra_args=args) as node:
        setup = redis.Redis(host="127.0.0.1", port=node.port)
        setup.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        wait_until(lambda: setup.cluster("info")["cluster_state"] == "ok", timeout=15)
        setup.close()
        client = RedisCluster(host="127.0.0.1", port=node.port)
        try:
            yield client
        finally:
            client.close()


def test_waits_work_on_a_cluster_with_each_queue_under_its_own_hash_tag(
    cluster: RedisCluster,
) -> None:
    keys = [QueueKeys(name).wake for name in QUEUES]  # three hash tags: CROSSSLOT in one BLPOP
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    os.set_blocking(write_end, False)
    waiting = WorkWaiting(cluster, keys, write_end)
    try:
        waiting.arm()
        node = cluster.get_redis_connection(cluster.get_node_from_key(keys[0]))  # type: ignore[no-untyped-call]
        wait_until(lambda: blocked_clients(node) == len(keys), what="a blocked client per key")

        cluster.lpush(keys[2], "token")

        readable, _, _ = select.select([read_end], [], [], 10)
        assert readable == [read_end]  # the loop's self-pipe was written to
        assert waiting.take() == [(keys[2], b"token")]
    finally:
        waiting.close()
        os.close(read_end)
        os.close(write_end)
