"""Graceful shutdown of worker processes: SIGTERM, then a second signal that aborts."""

from __future__ import annotations

import signal
import time
import uuid
from typing import Any

import redis
from helpers import as_int, executor_pids, is_gone, send, start_worker, wait_until

from pyscheduler import Queue, Status


def test_sigterm_lets_running_job_finish_then_exits(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue = Queue("fast", connection=conn)
    runs = f"test:runs:{uuid.uuid4().hex}"
    proc, log = start_worker(workers, "fast")
    running = queue.enqueue("tasks:counted_sleep", redis_url, runs, 1.0, timeout=30)
    waiting = [queue.enqueue("tasks:add", i, i) for i in range(2)]
    wait_until(lambda: as_int(conn.get(runs)) == 1, what="the 1 s job to start")

    send(proc, signal.SIGTERM)
    assert log.finish(timeout=10) is not None
    assert proc.returncode == 0, log.text
    assert "got SIGTERM" in log.text

    # The running job finished and was reported before the worker exited ...
    info = running.info()
    assert info.status == Status.COMPLETE, info
    assert info.result == 1
    # ... and no other job was taken after the signal.
    for job in waiting:
        info = job.info()
        assert info.status == Status.QUEUED
        assert info.attempts == 0
    assert queue.counts().queued == 2


def test_second_signal_aborts_and_lease_brings_job_back(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue = Queue("fast", connection=conn)
    runs = f"test:runs:{uuid.uuid4().hex}"
    proc, log = start_worker(workers, "fast", lease=1.0)
    job = queue.enqueue("tasks:sleep_on_first_run", redis_url, runs, 60.0, timeout=90)
    wait_until(lambda: as_int(conn.get(runs)) == 1, what="the job's first (60 s) run to start")
    [executor] = executor_pids(proc.pid)

    send(proc, signal.SIGTERM)
    log.wait_for("got SIGTERM")
    send(proc, signal.SIGINT)
    aborted_at = time.monotonic()
    log.finish(timeout=10)
    exit_after = time.monotonic() - aborted_at
    # It did not wait for the job (whose first run needs 60 s) to end.
    assert exit_after < 1.0, f"worker took {exit_after:.2f} s to exit:\n{log.text}"
    assert proc.returncode != 0
    assert "stopping now" in log.text
    wait_until(lambda: is_gone(executor), timeout=5, what="the executor to die")
    assert job.info().status == Status.ACTIVE  # nobody reported it: its lease still holds it

    # Another worker takes the job once the lease has expired, and completes it.
    start_worker(workers, "fast", lease=1.0)
    assert job.wait(timeout=15) == 2
    info = job.info()
    assert info.attempts == 2
    assert info.record["lost"] == 1
    assert as_int(conn.get(runs)) == 2
