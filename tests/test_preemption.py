"""Preemptive priorities: a running job that saves checkpoints gives its slot to a job of
higher priority when every slot is busy, and resumes from its checkpoint later.

Real workers (`pyscheduler worker`) and the checkpointing `long_tasks.stepper`, then the
library's rule call by call; no timed assertions: each test reads what the library recorded
(pauses, the `preempted` counter, the steps the handler ran, the wake-up tokens left).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import redis
from helpers import start_worker, wait_idle, wait_until

from pyscheduler import Job, Queue, Status
from pyscheduler.store import calls

STEPS, STEP_S = 30, 0.05  # a long job of about 1.5 s, a checkpoint every 50 ms


def new_key() -> str:
    return f"t:{uuid.uuid4().hex[:8]}"


def start_long(
    conn: redis.Redis, queue: Queue, url: str, key: str, func: str = "long_tasks:stepper"
) -> Job:
    """Enqueue a long checkpointing job at priority 0 and wait until it has run two steps."""
    job = queue.enqueue(func, url, key, STEPS, STEP_S, priority=0, timeout=60)
    wait_until(lambda: conn.llen(f"{key}:steps") >= 2, what="the long job to run two steps")
    return job


def finished_whole(conn: redis.Redis, job: Job, key: str) -> dict[str, Any]:
    """Check that the long job completed with every step run exactly once; its record."""
    assert job.wait(timeout=20) == sum(range(STEPS))
    assert [int(x) for x in conn.lrange(f"{key}:steps", 0, -1)] == list(range(STEPS))
    return job.info().record


def preempted(queue: Queue) -> int:
    return int(queue.counts().stats.get("preempted", 0))


def test_a_checkpointing_job_pauses_for_a_higher_priority_job_when_every_slot_is_busy(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue = Queue("work", connection=conn)
    key = new_key()
    start_worker(workers, "work")  # one slot, busy with the long job
    long = start_long(conn, queue, redis_url, key)

    fast = queue.enqueue("long_tasks:short", 7, priority=10)

    assert fast.wait(timeout=10) == 7
    record = finished_whole(conn, long, key)
    assert record["pauses"] >= 1
    assert preempted(queue) >= 1
    assert record["attempts"] == 1  # a pause is not a failed attempt
    runs = [json.loads(r)["from"] for r in conn.lrange(f"{key}:runs", 0, -1)]
    assert len(runs) >= 2 and runs[0] == 0 and runs[1] >= 2  # resumed from its checkpoint
    assert fast.info().record["started"] < record["ended"]  # it did not wait for the long job


def test_no_job_is_paused_while_a_slot_is_free(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue = Queue("work", connection=conn)
    key = new_key()
    start_worker(workers, "work", concurrency=2)
    long = start_long(conn, queue, redis_url, key)
    wait_idle(conn)  # the free slot waits in Redis for work

    fast = queue.enqueue("long_tasks:short", 7, priority=10)

    assert fast.wait(timeout=10) == 7
    assert "pauses" not in finished_whole(conn, long, key)
    assert preempted(queue) == 0


def test_no_job_is_paused_on_a_queue_with_preemption_off(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue = Queue("work", connection=conn)
    queue.set_preemption(False)
    key = new_key()
    start_worker(workers, "work")
    long = start_long(conn, queue, redis_url, key)

    fast = queue.enqueue("long_tasks:short", 7, priority=10)

    record = finished_whole(conn, long, key)
    assert fast.wait(timeout=10) == 7
    assert "pauses" not in record
    assert preempted(queue) == 0
    assert fast.info().record["started"] >= record["ended"]


def test_a_task_registered_not_preemptible_keeps_its_slot(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue = Queue("work", connection=conn)
    key = new_key()
    start_worker(workers, "work")
    long = start_long(conn, queue, redis_url, key, "long_tasks:unpreemptible_stepper")

    fast = queue.enqueue("long_tasks:short", 7, priority=10)

    record = finished_whole(conn, long, key)
    assert fast.wait(timeout=10) == 7
    assert "pauses" not in record
    assert preempted(queue) == 0


def test_a_job_of_the_same_priority_waits_for_the_running_one(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue = Queue("work", connection=conn)
    key = new_key()
    start_worker(workers, "work")
    long = start_long(conn, queue, redis_url, key)

    fast = queue.enqueue("long_tasks:short", 7, priority=0)

    record = finished_whole(conn, long, key)
    assert fast.wait(timeout=10) == 7
    assert "pauses" not in record
    assert preempted(queue) == 0


# -- the library's rule, call by call (plain library calls stand in for workers) --------------


def step(n: int) -> int:
    return n


def lease_all(queue: Queue, n: int) -> list[calls.Lease]:
    return calls.pop(queue.connection, queue.keys, n, 10_000, "w").leases


def save(queue: Queue, lease: calls.Lease, preemptible: bool = True) -> int:
    return calls.checkpoint(
        queue.connection, queue.keys, lease.id, lease.token, "{}", 10_000, False, preemptible
    )


def test_one_waiting_job_preempts_one_running_job(conn: redis.Redis) -> None:
    queue = Queue("work", connection=conn)
    queue.enqueue(step, 1, priority=0)
    queue.enqueue(step, 2, priority=0)
    first, second = lease_all(queue, 2)
    assert conn.llen(queue.keys.wake) == 0  # the pop took the tokens of the jobs it leased
    fast = queue.enqueue(step, 3, priority=10)  # its token stays: no worker is idle
    time.sleep(0.01)  # past the 2 ms a worker between jobs has to take it first

    assert save(queue, first) == 0  # paused: its slot goes to the waiting job
    assert save(queue, second) > 0  # the waiting job has its slot already
    assert conn.llen(queue.keys.wake) == 0
    assert fast.info().status == Status.QUEUED
    assert [lease.id for lease in lease_all(queue, 1)] == [fast.id]


def test_a_checkpoint_that_is_not_preemptible_keeps_running(conn: redis.Redis) -> None:
    queue = Queue("work", connection=conn)
    queue.enqueue(step, 1, priority=0)
    (running,) = lease_all(queue, 1)
    queue.enqueue(step, 2, priority=10)
    time.sleep(0.01)

    assert save(queue, running, preemptible=False) > 0
    assert conn.llen(queue.keys.wake) == 1  # still there for a worker that frees up


def test_no_preemption_when_an_idle_worker_took_the_wake_up(conn: redis.Redis) -> None:
    queue = Queue("work", connection=conn)
    queue.enqueue(step, 1, priority=0)
    (running,) = lease_all(queue, 1)
    queue.enqueue(step, 2, priority=10)
    conn.delete(queue.keys.wake)  # what an idle worker's BLPOP does at once
    time.sleep(0.01)

    assert save(queue, running) > 0
