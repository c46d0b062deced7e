"""Lease-safe starts: a worker's children start a job only while its lease is known held.

The worker's main process is stopped with a real SIGSTOP, by the job its child starts (so it
stops while jobs it prefetched wait behind that one), for longer than the lease; another
worker reclaims and completes those jobs; then the stopped worker's child gets free to start
them, and the main process gets SIGCONT. No job completed elsewhere may start again.
"""

from __future__ import annotations

import signal
import time
import uuid
from typing import Any

import pytest
import redis
from helpers import WorkerLog, is_stopped, send, start_worker, stop_worker, wait_until

from pyscheduler import Queue, Status, Worker

pytestmark = pytest.mark.crash

LEASE = 1.0
WARM_UP = 300  # no-op jobs first, so the worker has measured that jobs here are short
BEHIND = 10  # short jobs leased with the one that stops the worker
LABELS = ["first", *(f"behind-{i}" for i in range(BEHIND))]


def starts_of(conn: redis.Redis, key: str) -> list[str]:
    return [item.decode() for item in conn.lrange(key, 0, -1)]


def pause_worker_past_its_leases(
    conn: redis.Redis,
    queue: Queue,
    proc: Any,
    log: WorkerLog,
    starts: str,
    go: str,
    labels: list[str],
) -> None:
    """With `proc` stopped by the first job: wait past the lease, let another worker complete
    every job, let the stopped worker's child go on, then SIGCONT the worker."""
    wait_until(lambda: is_stopped(proc.pid), timeout=15, what="the worker to be stopped")
    try:
        time.sleep(LEASE * 1.5)  # past every lease the stopped worker holds
        Worker([queue], lease_seconds=LEASE, concurrency=2).work(burst=True)
        for label in labels:
            info = queue.fetch_info(label)
            assert info.status == Status.COMPLETE
            # Reclaimed from the stopped worker: it held them all through the pause (none was
            # handed back before the stop), so its child had them queued to start.
            assert info.record.get("lost") == 1, (label, info.record, log.text)
        conn.rpush(go, "go")  # the stopped worker's child finishes its job and goes on
        time.sleep(0.5)  # its next starts (if any) take milliseconds
    finally:
        send(proc, signal.SIGCONT)


def enqueue_first_and_behind(
    queue: Queue, redis_url: str, starts: str, go: str, worker_pid: int, stopper: str, appender: str
) -> None:
    """In one call, so the idle worker leases them in one pop (prefetch): `first`, whose run
    stops the worker, and BEHIND jobs behind it that note their starts."""
    queue.enqueue_many(
        [
            queue.prepare(stopper, [redis_url, starts, worker_pid, go, "first"], job_id="first"),
            *(
                queue.prepare(appender, [redis_url, starts, label], job_id=label)
                for label in LABELS[1:]
            ),
        ]
    )


def assert_none_started_again(conn: redis.Redis, starts: str) -> list[str]:
    """No job behind `first` started twice; the labels of every start."""
    recorded = starts_of(conn, starts)
    started_twice = [label for label in LABELS[1:] if recorded.count(label) > 1]
    assert started_twice == [], f"{len(started_twice)} jobs completed elsewhere started again"
    return recorded


def wait_for_first_job_settled(log: WorkerLog) -> None:
    """Wait until the resumed worker has dealt with the job that stopped it: its late result
    refused, or its lease found lost first (the worker may resume just before a renewal)."""
    try:
        wait_until(
            lambda: log.count("late result of job first refused") + log.count("job first lost"),
            timeout=10,
        )
    except AssertionError:
        raise AssertionError(f"the resumed worker did not settle; its log:\n{log.text}") from None


def test_worker_paused_past_its_leases_starts_no_prefetched_job(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue = Queue("ls", connection=conn)
    starts, go = f"test:starts:{uuid.uuid4().hex}", f"test:go:{uuid.uuid4().hex}"
    proc, log = start_worker(workers, "ls", lease=LEASE)
    # Its handlers imported once, and jobs here measured as short (so it prefetches).
    queue.enqueue("lease_tasks:stop_worker_then_wait", redis_url, starts, 0, go, "warm")
    queue.enqueue_many([queue.prepare("tasks:noop") for _ in range(WARM_UP)])
    wait_until(lambda: queue.counts().stats.get("completed") == WARM_UP + 1, timeout=30)
    # All for its one child.
    stopper, appender = "lease_tasks:stop_worker_then_wait", "tasks:append"
    enqueue_first_and_behind(queue, redis_url, starts, go, proc.pid, stopper, appender)

    pause_worker_past_its_leases(conn, queue, proc, log, starts, go, LABELS)

    wait_for_first_job_settled(log)
    recorded = assert_none_started_again(conn, starts)
    assert recorded.count("first") == 2  # its own run, and the other worker's
    stop_worker(proc, log)


def test_event_loop_blocked_past_its_leases_starts_no_job_read_with_the_blocker(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue = Queue("ls", connection=conn)
    starts, go = f"test:starts:{uuid.uuid4().hex}", f"test:go:{uuid.uuid4().hex}"
    proc, log = start_worker(workers, "ls", lease=LEASE, concurrency=BEHIND + 2)
    # One run of each handler first, so the worker knows both are `async def` and sends the
    # next ones straight to its event loop (no worker pid: the warm-up does not stop it).
    warm = [
        queue.enqueue("lease_tasks:async_stop_worker_then_block", redis_url, starts, 0, go, "warm"),
        queue.enqueue("lease_tasks:async_append", redis_url, starts, "warm"),
    ]
    for job in warm:
        assert job.wait(timeout=15) == "warm"
    stopper, appender = "lease_tasks:async_stop_worker_then_block", "lease_tasks:async_append"
    enqueue_first_and_behind(queue, redis_url, starts, go, proc.pid, stopper, appender)

    pause_worker_past_its_leases(conn, queue, proc, log, starts, go, LABELS)

    wait_for_first_job_settled(log)
    assert_none_started_again(conn, starts)
    stop_worker(proc, log)
