"""A job whose lease expired (its worker died) goes back where it was popped, not to the back.

psq_pop reclaims it at the score it was popped with, as psq_release does for a job handed back
unstarted, so it runs before the jobs of its priority enqueued while it was leased, and jobs
reclaimed together keep their order. How many lost leases a job survives is the queue's
`max_lost_leases` setting.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import redis
from helpers import kill_worker, let_expire, server_ms, start_worker, wait_until

from pyscheduler import InvalidOption, Queue
from pyscheduler.store import calls
from pyscheduler.store.protocol import MAX_LOST_LEASES_LIMIT


def add(a: int, b: int = 0) -> int:
    return a + b


@pytest.fixture
def queue(conn: redis.Redis) -> Queue:
    return Queue("work", connection=conn)


def pop(queue: Queue, max_jobs: int = 1, lease_ms: int = 10_000) -> list[calls.Lease]:
    return calls.pop(queue.connection, queue.keys, max_jobs, lease_ms, "worker-1").leases


def configure(queue: Queue, **settings: str) -> dict[str, str]:
    return calls.configure(queue.connection, queue.keys, settings)


# -- the library ------------------------------------------------------------------------------


def test_reclaimed_job_is_popped_before_jobs_enqueued_after_it(
    conn: redis.Redis, queue: Queue
) -> None:
    first = queue.enqueue(add, 1)
    (lease,) = pop(queue, lease_ms=50)
    later = [queue.enqueue(add, i).id for i in (2, 3)]
    let_expire(conn, lease)
    assert [x.id for x in pop(queue, max_jobs=3)] == [first.id, *later]


def test_jobs_reclaimed_together_keep_their_order(conn: redis.Redis, queue: Queue) -> None:
    a, b = queue.enqueue(add, 1), queue.enqueue(add, 2)
    leases = pop(queue, max_jobs=2, lease_ms=50)
    assert [x.id for x in leases] == [a.id, b.id]
    c, d = queue.enqueue(add, 3), queue.enqueue(add, 4)
    let_expire(conn, *leases)
    assert [x.id for x in pop(queue, max_jobs=4)] == [a.id, b.id, c.id, d.id]


def test_reclaimed_job_stays_behind_more_urgent_jobs(conn: redis.Redis, queue: Queue) -> None:
    job = queue.enqueue(add, 1)
    (lease,) = pop(queue, lease_ms=50)
    same = queue.enqueue(add, 2)
    urgent = queue.enqueue(add, 3, priority=5)
    let_expire(conn, lease)
    assert [x.id for x in pop(queue, max_jobs=3)] == [urgent.id, job.id, same.id]


def test_reclaimed_job_keeps_its_place_under_aging(conn: redis.Redis, queue: Queue) -> None:
    queue.set_aging(1.0)
    job = queue.enqueue(add, 1)
    (lease,) = pop(queue, lease_ms=50)
    later = queue.enqueue(add, 2)
    let_expire(conn, lease)
    assert [x.id for x in pop(queue, max_jobs=2)] == [job.id, later.id]


# -- max_lost_leases ---------------------------------------------------------------------------


def lose_leases(conn: redis.Redis, queue: Queue, times: int) -> None:
    for _ in range(times):
        (lease,) = pop(queue, lease_ms=20)
        let_expire(conn, lease)


def test_max_lost_leases_setting_fails_a_job_sooner(conn: redis.Redis, queue: Queue) -> None:
    configure(queue, max_lost_leases="1")
    job = queue.enqueue(add, 1, retries=10)
    lose_leases(conn, queue, 2)
    assert pop(queue) == []
    info = job.info()
    assert info.status == "failed"
    assert info.record["lost"] == 2
    assert "lease expired 2 times" in (info.error or "")


def test_max_lost_leases_setting_lets_a_job_survive_more_losses(
    conn: redis.Redis, queue: Queue
) -> None:
    configure(queue, max_lost_leases="5")
    job = queue.enqueue(add, 1)
    lose_leases(conn, queue, 5)
    (lease,) = pop(queue)
    assert lease.id == job.id
    assert json.loads(lease.record)["lost"] == 5


def test_max_lost_leases_setting_can_be_removed(conn: redis.Redis, queue: Queue) -> None:
    assert configure(queue, max_lost_leases="7")["max_lost_leases"] == "7"
    assert "max_lost_leases" not in configure(queue, max_lost_leases="")


@pytest.mark.parametrize("value", ["0", str(MAX_LOST_LEASES_LIMIT + 1), "1.5", "-1", "x", " 2"])
def test_max_lost_leases_must_be_an_integer_in_range(queue: Queue, value: str) -> None:
    with pytest.raises(InvalidOption, match=r"max_lost_leases must be an integer in 1\.\.1000"):
        configure(queue, max_lost_leases=value)
    assert "max_lost_leases" not in configure(queue)


# -- a worker killed while it runs a job ------------------------------------------------------


def test_killed_workers_job_runs_before_jobs_enqueued_behind_it(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue = Queue("fast", connection=conn)
    tag = uuid.uuid4().hex
    runs = f"test:runs:{tag}"
    started = [f"test:started:{tag}:{i}" for i in range(5)]
    # Without prefetch the first worker leaves the jobs behind its own in `ready`.
    first, _ = start_worker(workers, "fast", lease=1.0, extra=("--no-prefetch",))
    job = queue.enqueue("tasks:counted_sleep", redis_url, runs, 3.0, timeout=60)
    wait_until(lambda: conn.get(runs) == b"1", what="the first worker to start the job")
    behind = [queue.enqueue("tasks:record_start", redis_url, key) for key in started]
    (deadline,) = conn.zmscore(queue.keys.active, [job.id])
    assert deadline is not None
    kill_worker(first)
    # Start the second worker only once the lease has run out, so its first pop reclaims the
    # job while every job behind it is still ready.
    wait_until(lambda: server_ms(conn) > deadline, timeout=10, what="the lease to expire")
    start_worker(workers, "fast", lease=5.0)

    wait_until(lambda: conn.get(runs) == b"2", timeout=15, what="the job to run again")
    # The rerun sleeps 3 s with the one slot: a job behind it that started has gone first.
    assert conn.exists(*started) == 0
    assert job.wait(timeout=15) == 2
    for later in behind:
        later.wait(timeout=15)
    starts = [int(conn.get(key) or 0) for key in started]
    assert starts == sorted(starts)
    assert job.info().record["lost"] == 1


def test_queue_sets_and_clears_max_lost_leases(conn: redis.Redis) -> None:
    from pyscheduler import Queue

    queue = Queue("lost", connection=conn)
    queue.set_max_lost_leases(5)
    assert conn.hget(queue.keys.config, "max_lost_leases") == b"5"
    queue.set_max_lost_leases(None)
    assert conn.hget(queue.keys.config, "max_lost_leases") is None
