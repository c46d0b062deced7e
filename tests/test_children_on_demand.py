"""Children on demand: a sync child starts when a sync job needs a slot, and an idle one is
stopped after `--idle-child-seconds`; with `async def` handlers only, a worker of any
concurrency runs in two processes (itself and its event-loop process)."""

from __future__ import annotations

import uuid
from typing import Any

import psutil
import redis
from helpers import start_worker, wait_until

from pyscheduler import Queue

CONCURRENCY = 50


def tree(pid: int) -> set[int]:
    """The worker and every process under it."""
    worker = psutil.Process(pid)
    return {pid, *(child.pid for child in worker.children(recursive=True))}


def run_async_jobs(queue: Queue, redis_url: str, count: int) -> set[int]:
    """Run `count` async jobs; the pids that ran them."""
    key = f"test:spans:{uuid.uuid4().hex}"
    jobs = [queue.enqueue("tasks:async_span", redis_url, key, 0.05) for _ in range(count)]
    return {job.wait(15) for job in jobs}


def test_async_only_worker_of_concurrency_50_runs_in_two_processes(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue = Queue("on-demand", connection=conn)
    proc, _ = start_worker(workers, "on-demand", concurrency=CONCURRENCY)
    assert tree(proc.pid) == {proc.pid}  # nothing is started before a job needs it

    # Two rounds of as many jobs as the event loop takes at once (more would spill over into
    # sync children, each with an event loop of its own).
    pids = run_async_jobs(queue, redis_url, CONCURRENCY) | run_async_jobs(
        queue, redis_url, CONCURRENCY
    )

    [loop_pid] = pids
    assert tree(proc.pid) == {proc.pid, loop_pid}


def test_a_sync_job_starts_one_child(conn: redis.Redis, redis_url: str, workers: Any) -> None:
    queue = Queue("on-demand", connection=conn)
    proc, _ = start_worker(workers, "on-demand", concurrency=CONCURRENCY)
    [loop_pid] = run_async_jobs(queue, redis_url, 5)

    child = queue.enqueue("tasks:span", redis_url, f"test:spans:{uuid.uuid4().hex}", 0).wait(15)

    assert child not in (proc.pid, loop_pid)
    assert tree(proc.pid) == {proc.pid, loop_pid, child}


def test_idle_child_is_stopped_and_its_slot_starts_a_new_one(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue = Queue("on-demand", connection=conn)
    proc, _ = start_worker(
        workers, "on-demand", concurrency=4, extra=("--idle-child-seconds", "0.5")
    )
    key = f"test:spans:{uuid.uuid4().hex}"
    first = queue.enqueue("tasks:span", redis_url, key, 0).wait(15)
    assert tree(proc.pid) == {proc.pid, first}

    wait_until(lambda: tree(proc.pid) == {proc.pid}, timeout=10, what="the idle child to stop")

    second = queue.enqueue("tasks:span", redis_url, key, 0).wait(15)
    assert second != first
    assert tree(proc.pid) == {proc.pid, second}
