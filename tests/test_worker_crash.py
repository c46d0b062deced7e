"""Workers that die, stall or lose Redis: leases, fencing tokens and reconnection."""

from __future__ import annotations

import signal
import time
import uuid
from typing import Any

import pytest
import redis
from helpers import (
    as_int,
    executor_pids,
    kill_worker,
    pause_while_sleeping,
    send,
    start_worker,
    stop_worker,
    wait_idle,
    wait_until,
    worker_pid_of,
)

from pyscheduler import Queue, Status
from pyscheduler.store import library

pytestmark = pytest.mark.crash


def test_killed_worker_job_is_reclaimed_by_another_worker(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue = Queue("fast", connection=conn)
    runs = f"test:runs:{uuid.uuid4().hex}"
    first, _ = start_worker(workers, "fast", lease=1.0)
    job = queue.enqueue("tasks:sleep_on_first_run", redis_url, runs, 60.0, timeout=90)
    wait_until(lambda: as_int(conn.get(runs)) == 1, what="the job to start")
    [executor] = executor_pids(first.pid)
    assert worker_pid_of(job.info().record) == first.pid

    second, _ = start_worker(workers, "fast", lease=1.0)
    wait_idle(conn)  # the second worker waits for work
    kill_worker(first, executor)

    assert job.wait(timeout=15) == 2
    info = job.info()
    assert info.attempts == 2
    assert info.record["lost"] == 1
    assert worker_pid_of(info.record) == second.pid
    assert as_int(conn.get(runs)) == 2
    counts = queue.counts()
    assert (counts.queued, counts.delayed, counts.active, counts.failed) == (0, 0, 0, 0)
    assert counts.stats.get("reclaimed") == 1
    assert counts.stats.get("completed") == 1
    assert second.poll() is None


def test_paused_worker_cannot_overwrite_new_owners_result(
    conn: redis.Redis, redis_url: str, workers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = Queue("fast", connection=conn)
    runs = f"test:runs:{uuid.uuid4().hex}"
    monkeypatch.setenv("PSQ_TEST_WORKER", "A")
    worker_a, log_a = start_worker(workers, "fast", lease=1.0)
    job = queue.enqueue("tasks:whoami", redis_url, runs, 1.5, timeout=30)
    wait_until(lambda: as_int(conn.get(runs)) == 1, what="worker A to start the job")
    pause_while_sleeping(worker_a)
    try:
        monkeypatch.setenv("PSQ_TEST_WORKER", "B")
        start_worker(workers, "fast", lease=1.0)
        # B reclaims the job once A's lease has expired, and completes it.
        assert job.wait(timeout=15) == "B"
        assert as_int(conn.get(runs)) == 2
        time.sleep(0.2)  # A's run has ended by now; its outcome waits in A's pipe
    finally:
        send(worker_a, signal.SIGCONT)

    log_a.wait_for(f"late result of job {job.id} refused", timeout=5)
    info = job.info()
    assert info.status == Status.COMPLETE
    assert info.result == "B"
    assert info.attempts == 2
    assert worker_a.poll() is None  # A lives on after the refusal


def test_worker_survives_connection_loss(
    conn: redis.Redis, redis_url: str, workers: Any, owned_engine: Any
) -> None:
    proc, log = start_worker(workers, "fast", lease=1.0)
    wait_idle(conn)

    owned_engine.kill()
    log.wait_for("lost the connection", timeout=10)
    time.sleep(1.0)  # the worker retries (with backoff) while Redis is down
    owned_engine.restart()
    fresh = redis.Redis.from_url(redis_url)
    # No persistence: the restarted server is empty, without the library. Let the worker
    # reach it in that state (as when Redis comes back before the library is deployed) ...
    wait_until(lambda: len(fresh.client_list()) > 1, what="the worker to reconnect")
    log.wait_for("library is not loaded", timeout=10)
    library.load(fresh)  # ... then deploy the library

    queue = Queue("fast", connection=fresh)
    job = queue.enqueue("tasks:add", 3, 4)
    assert job.wait(timeout=20) == 7
    assert worker_pid_of(job.info().record) == proc.pid  # the same worker process

    text = stop_worker(proc, log)
    assert log.count("lost the connection") == 1, text
    assert log.count("library is not loaded") == 1, text
    assert log.count("connection to Redis is back") == 1, text
    fresh.close()


def test_second_signal_stops_worker_while_redis_is_down(
    conn: redis.Redis, redis_url: str, workers: Any, owned_engine: Any
) -> None:
    queue = Queue("fast", connection=conn)
    runs = f"test:runs:{uuid.uuid4().hex}"
    proc, log = start_worker(workers, "fast", lease=1.0)
    queue.enqueue("tasks:counted_sleep", redis_url, runs, 0.5, timeout=30)
    wait_until(lambda: as_int(conn.get(runs)) == 1, what="the job to start")

    owned_engine.kill()
    log.wait_for("lost the connection", timeout=10)
    time.sleep(0.6)  # the job has ended: its outcome waits for Redis to come back
    send(proc, signal.SIGTERM)
    log.wait_for("got SIGTERM")
    send(proc, signal.SIGTERM)
    log.finish(timeout=10)
    assert proc.returncode != 0, log.text
    assert "stopping now" in log.text


def test_auto_load_worker_reloads_library_after_redis_restart(
    conn: redis.Redis, redis_url: str, workers: Any, owned_engine: Any
) -> None:
    proc, log = start_worker(workers, "fast", lease=1.0, extra=("--auto-load",))
    wait_idle(conn)

    owned_engine.restart()  # comes back empty: no data, no library
    fresh = redis.Redis.from_url(redis_url)
    wait_until(
        lambda: library.deployed_version(fresh) == library.code_version(),
        timeout=15,
        what="the worker to load the library again",
    )
    job = Queue("fast", connection=fresh).enqueue("tasks:add", 4, 4)
    assert job.wait(timeout=15) == 8
    assert worker_pid_of(job.info().record) == proc.pid
    assert log.count("library is not loaded in Redis: loading it") == 1, log.text
    fresh.close()
