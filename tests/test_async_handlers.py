"""`async def` handlers: one event-loop process per worker runs up to `concurrency` at once."""

from __future__ import annotations

import uuid
from typing import Any

import redis
from helpers import executor_pids, most_at_once, spans, start_worker, wait_until

from pyscheduler import Queue, Status


def test_async_jobs_share_one_event_loop_process(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue = Queue("aio", connection=conn)
    key = f"test:spans:{uuid.uuid4().hex}"
    proc, _ = start_worker(workers, "aio", concurrency=8)
    jobs = [queue.enqueue("tasks:async_span", redis_url, key, 0.5) for _ in range(8)]

    for job in jobs:
        job.wait(10)

    runs = spans(conn, key)
    assert most_at_once(runs) == 8
    assert len({run["pid"] for run in runs}) == 1
    assert runs[0]["pid"] != proc.pid
    assert runs[0]["pid"] in executor_pids(proc.pid)


def test_event_loop_runs_at_most_concurrency_jobs_at_once(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue = Queue("aio", connection=conn)
    key = f"test:spans:{uuid.uuid4().hex}"
    start_worker(workers, "aio", concurrency=3)
    # One first, so the worker knows the handler is `async def` before the rest arrive.
    queue.enqueue("tasks:async_span", redis_url, key, 0.0).wait(10)
    jobs = [queue.enqueue("tasks:async_span", redis_url, key, 0.3) for _ in range(12)]

    for job in jobs:
        job.wait(15)

    runs = spans(conn, key)[1:]
    loop_pid = spans(conn, key)[0]["pid"]
    on_loop = [run for run in runs if run["pid"] == loop_pid]
    assert len(on_loop) >= 3
    assert most_at_once(on_loop) <= 3
    # When the loop is full, async jobs run in the worker's free sync processes meanwhile.
    assert most_at_once(runs) <= 6


def test_async_job_past_its_timeout_is_cancelled_and_the_others_run_on(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue = Queue("aio", connection=conn)
    key = f"test:spans:{uuid.uuid4().hex}"
    start_worker(workers, "aio", concurrency=4)
    queue.enqueue("tasks:async_span", redis_url, key, 0.0).wait(10)
    sleeper = queue.enqueue("tasks:async_sleep", 30, timeout=0.5, retries=0)
    others = [queue.enqueue("tasks:async_span", redis_url, key, 1.0) for _ in range(3)]

    wait_until(lambda: sleeper.status == Status.FAILED, timeout=5, what="the timeout")
    info = sleeper.info()
    assert info.record["failure"] == "timeout"
    assert "cancelled" in (info.error or "")
    for job in others:
        assert job.wait(10) is not None
    # The cancellation left the loop process alive: every job ran in the same one.
    assert len({run["pid"] for run in spans(conn, key)}) == 1


def test_async_job_blocking_the_loop_fails_and_names_itself_to_its_neighbours(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue = Queue("aio", connection=conn)
    proc, _ = start_worker(workers, "aio", concurrency=4)
    queue.enqueue("tasks:async_add", 1, 1).wait(10)
    neighbour = queue.enqueue("tasks:async_sleep", 30, timeout=60, retries=0)
    wait_until(lambda: neighbour.status == Status.ACTIVE, what="the neighbour to start")
    blocker = queue.enqueue("tasks:async_stuck", 60, timeout=0.5, retries=0)

    wait_until(lambda: blocker.status == Status.FAILED, timeout=10, what="the blocker to fail")
    assert "blocked its event loop" in (blocker.info().error or "")
    wait_until(lambda: neighbour.status == Status.FAILED, timeout=5, what="the neighbour")
    assert blocker.id in (neighbour.info().error or "")
    # A new loop process takes the next async job.
    assert queue.enqueue("tasks:async_add", 2, 3).wait(10) == 5
    assert proc.poll() is None


def test_current_job_is_each_async_job_s_own(conn: redis.Redis, workers: Any) -> None:
    queue = Queue("aio", connection=conn)
    start_worker(workers, "aio", concurrency=6)
    jobs = [queue.enqueue("tasks:async_own_id", 0.2) for _ in range(6)]

    assert [job.wait(10) for job in jobs] == [job.id for job in jobs]
