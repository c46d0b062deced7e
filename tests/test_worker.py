"""Worker behaviour with real worker processes against a real Redis/Valkey."""

from __future__ import annotations

import gc
import itertools
import json
import statistics
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from helpers import as_int, server_us, start_worker, summary_ms, wait_idle, wait_status, wait_until
from tasks import quick_task

from pyscheduler import Queue, Status, Worker
from pyscheduler.store.keys import QueueKeys

pytestmark = pytest.mark.cluster  # also on a local Redis Cluster (conftest.py)


def key() -> str:
    return f"test:{uuid.uuid4().hex[:12]}"


def test_seed_snippet_runs_as_written(conn: redis.Redis) -> None:
    redis_conn = conn
    fast_queue = Queue("fast", connection=redis_conn)
    job = fast_queue.enqueue(quick_task, timeout=30)
    processed = Worker([fast_queue]).work(burst=True)

    assert processed == 1
    info = job.info()
    assert info.status == Status.COMPLETE
    assert info.result == "quick"
    assert info.attempts == 1
    assert info.func == "tasks:quick_task"


def test_concurrency_runs_jobs_at_once(conn: redis.Redis, redis_url: str, workers: Any) -> None:
    queue = Queue("fast", connection=conn)
    arrived = key()
    start_worker(workers, "fast", concurrency=4)
    # Each run waits (up to 30 s) until all four have started: run one at a time, the first
    # would fail with TimeoutError, however fast or slow the machine.
    jobs = [
        queue.enqueue("tasks:meet", redis_url, arrived, 4, 30.0, timeout=60, retries=0)
        for _ in range(4)
    ]

    pids = [job.wait(timeout=60) for job in jobs]
    assert len(set(pids)) == 4  # in four executor processes


def test_worker_takes_queues_in_the_order_given(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    order = key()
    slow, fast = Queue("slow", connection=conn), Queue("fast", connection=conn)
    for i in range(3):
        slow.enqueue("tasks:append", redis_url, order, f"slow{i}", priority=10)
        fast.enqueue("tasks:append", redis_url, order, f"fast{i}")
    start_worker(workers, "fast", "slow")
    wait_until(lambda: conn.llen(order) == 6, what="all six jobs to run")
    ran = [x.decode() for x in conn.lrange(order, 0, -1)]
    assert ran == ["fast0", "fast1", "fast2", "slow0", "slow1", "slow2"]


def test_lease_is_renewed_while_a_long_job_runs(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue = Queue("fast", connection=conn)
    runs = key()
    start_worker(workers, "fast", lease=1.0)
    job = queue.enqueue("tasks:counted_sleep", redis_url, runs, 2.0, timeout=30)
    wait_until(lambda: as_int(conn.get(runs)) == 1, what="the job to start")
    start_worker(workers, "fast", lease=1.0)  # would reclaim the job if its lease ran out

    assert job.wait(timeout=10) == 1  # twice the lease, and still the first run
    info = job.info()
    assert (info.attempts, info.record["lost"]) == (1, 0)
    assert as_int(conn.get(runs)) == 1
    assert "reclaimed" not in queue.counts().stats


def test_idle_worker_starts_job_within_milliseconds(
    conn: redis.Redis, redis_url: str, workers: Any, engine: Any
) -> None:
    queue = Queue("fast", connection=conn)
    start_worker(workers, "fast")
    latencies_ms: list[float] = []
    for _ in range(21):
        marker = key()
        wait_idle(conn)  # the worker is blocked in Redis, waiting for work
        enqueued_us = server_us(conn)
        queue.enqueue("tasks:record_start", redis_url, marker, timeout=10)
        started_us = wait_until(lambda m=marker: conn.get(m), what="the job to start")
        latencies_ms.append((int(started_us) - enqueued_us) / 1000)
    latencies_ms = latencies_ms[1:]  # the first run imports the handler module

    print(f"\n[{engine.kind}] enqueue-to-start latency:", summary_ms(latencies_ms))
    assert statistics.median(latencies_ms) < 50, latencies_ms


@pytest.mark.one_server(
    "timed from inside handlers, whose first cluster client (slot map, COMMAND table) takes"
    " tens of ms in each new executor"
)
def test_delayed_job_starts_within_10_ms_of_due_time(
    conn: redis.Redis, redis_url: str, workers: Any, engine: Any
) -> None:
    queue = Queue("fast", connection=conn)
    start_worker(workers, "fast")
    # Warm up: the executor imports `tasks` and opens the handler's own connection, which the
    # first measured start would otherwise include (a connect and its handshake: 45-60 ms).
    queue.enqueue("tasks:record_start", redis_url, key()).wait(10)
    lateness_ms: list[float] = []
    for _ in range(10):
        marker = key()
        wait_idle(conn)
        job = queue.enqueue("tasks:record_start", redis_url, marker, delay=0.3, timeout=10)
        info = job.info()
        assert info.status == Status.DELAYED
        due_ms = int(info.record["due"])
        started_us = wait_until(lambda m=marker: conn.get(m), what="the delayed job to start")
        lateness_ms.append(int(started_us) / 1000 - due_ms)

    print(f"\n[{engine.kind}] delayed-job lateness vs due:", summary_ms(lateness_ms))
    assert min(lateness_ms) >= 0, "a delayed job started before its due time"
    assert statistics.median(lateness_ms) < 10, lateness_ms
    assert max(lateness_ms) < 50, lateness_ms


def test_async_handler_runs(conn: redis.Redis, workers: Any) -> None:
    queue = Queue("fast", connection=conn)
    start_worker(workers, "fast")
    job = queue.enqueue("tasks:async_add", 20, 22)
    info = wait_status(queue, job.id, Status.COMPLETE, Status.FAILED)
    assert (info.status, info.result, info.error) == (Status.COMPLETE, 42, None)


def test_async_handler_that_blocks_its_loop_is_stopped_by_the_timeout(
    conn: redis.Redis, workers: Any
) -> None:
    queue = Queue("fast", connection=conn)
    proc, _ = start_worker(workers, "fast")
    job = queue.enqueue("tasks:async_stuck", 60, timeout=0.5)
    info = wait_status(queue, job.id, Status.FAILED, Status.COMPLETE)
    assert (info.status, info.record["failure"]) == (Status.FAILED, "timeout")
    assert queue.enqueue("tasks:async_add", 1, 1).wait(10) == 2
    assert proc.poll() is None


def test_sync_and_async_handlers_run_at_once_in_one_worker(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue = Queue("fast", connection=conn)
    start_worker(workers, "fast", concurrency=2)
    jobs = [
        queue.enqueue("tasks:span", redis_url, "spans", 0.5),
        queue.enqueue("tasks:async_span", redis_url, "spans", 0.5),
    ]
    for job in jobs:
        job.wait(10)
    a, b = (json.loads(span) for span in conn.lrange("spans", 0, -1))
    assert a["start"] < b["end"] and b["start"] < a["end"]  # the two runs overlapped


def test_hard_timeout_stops_code_stuck_in_c(conn: redis.Redis, workers: Any) -> None:
    queue = Queue("fast", connection=conn)
    proc, _ = start_worker(workers, "fast")
    job = queue.enqueue("tasks:sleep_in_c", 60, timeout=0.5, retries=1, backoff=0.5)

    wait_status(queue, job.id, Status.ACTIVE)
    # After the first timeout the job waits for its retry, not failed yet.
    info = wait_status(queue, job.id, Status.DELAYED, Status.QUEUED, Status.FAILED)
    assert info.status in (Status.DELAYED, Status.QUEUED)
    assert info.attempts == 1
    assert "timeout" in (info.error or "")

    info = wait_status(queue, job.id, Status.FAILED)
    assert info.attempts == 2
    assert info.record["failure"] == "timeout"
    assert "timeout" in (info.error or "").lower()
    assert "0.5 s" in (info.error or "")

    # The worker process lived on and runs the next job.
    assert queue.enqueue("tasks:add", 2, 3).wait(10) == 5
    assert proc.poll() is None


def test_hard_timeout_stops_blocked_socket_read(conn: redis.Redis, workers: Any) -> None:
    queue = Queue("fast", connection=conn)
    proc, _ = start_worker(workers, "fast")
    job = queue.enqueue("tasks:blocking_read", timeout=0.5)

    info = wait_status(queue, job.id, Status.FAILED, Status.COMPLETE)
    assert info.status == Status.FAILED
    assert info.attempts == 1
    assert info.record["failure"] == "timeout"
    assert "timeout" in (info.error or "").lower()

    assert queue.enqueue("tasks:add", 1, 1).wait(10) == 2
    assert proc.poll() is None


def test_handler_that_kills_its_process_fails_the_job(conn: redis.Redis, workers: Any) -> None:
    queue = Queue("fast", connection=conn)
    proc, _ = start_worker(workers, "fast")
    job = queue.enqueue("tasks:exit_hard", 3)

    info = wait_status(queue, job.id, Status.FAILED)
    assert "the process running the job died (exit code 3)" in (info.error or "")
    assert queue.enqueue("tasks:add", 5, 5).wait(10) == 10
    assert proc.poll() is None


def test_failing_handler_retried_with_backoff_then_failed(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue = Queue("fast", connection=conn)
    attempts_key = key()
    start_worker(workers, "fast")
    job = queue.enqueue("tasks:boom", redis_url, attempts_key, retries=2, backoff=0.2)

    info = wait_status(queue, job.id, Status.FAILED)
    assert info.attempts == 3
    error = info.error or ""
    assert "Traceback (most recent call last)" in error
    assert "ValueError: boom: this handler always fails" in error
    assert 'tasks.py", line' in error  # the traceback reaches into the handler

    starts = [int(x) for x in conn.lrange(attempts_key, 0, -1)]
    assert len(starts) == 3
    # Exponential backoff, jitter scaling it by 0.5..1: at least 100 ms, then 200 ms.
    gaps_ms = [(b - a) / 1000 for a, b in itertools.pairwise(starts)]
    assert gaps_ms[0] >= 100, gaps_ms
    assert gaps_ms[1] >= 200, gaps_ms
    stats = queue.counts().stats
    assert stats.get("retried") == 2
    assert stats.get("failed") == 1


def test_stdlib_handler_is_refused(conn: redis.Redis, workers: Any, tmp_path: Path) -> None:
    queue = Queue("fast", connection=conn)
    proc, _ = start_worker(workers, "fast")
    witness = tmp_path / "os-system-ran"
    job = queue.enqueue("os:system", f"touch {witness}", retries=3)

    info = wait_status(queue, job.id, Status.FAILED)
    assert info.attempts == 1  # a refused handler is never retried
    assert info.record["failure"] == "refused"
    assert "'os:system' is refused" in (info.error or "")
    assert "standard library" in (info.error or "")
    assert not witness.exists()

    assert queue.enqueue("tasks:add", 20, 22).wait(10) == 42
    assert proc.poll() is None


def test_third_party_handlers_are_refused(conn: redis.Redis, workers: Any) -> None:
    queue = Queue("fast", connection=conn)
    proc, _ = start_worker(workers, "fast")
    for ref in ("redis.client:Redis", "jinja2:Template"):
        job = queue.enqueue(ref, "x")
        info = wait_status(queue, job.id, Status.FAILED)
        assert info.record["failure"] == "refused"
        assert f"{ref!r} is refused" in (info.error or "")
        assert "third-party" in (info.error or "")

    assert queue.enqueue("tasks:add", 1, 2).wait(10) == 3
    assert proc.poll() is None


def test_strict_mode_runs_registered_tasks_only(conn: redis.Redis, workers: Any) -> None:
    queue = Queue("fast", connection=conn)
    proc, _ = start_worker(workers, "fast", extra=("--strict", "--import", "tasks"))

    assert queue.enqueue("tasks:registered_add", 40, 2).wait(10) == 42
    # An application function nobody registered or allowed: refused in strict mode.
    job = queue.enqueue("helpers:as_int", "7")
    info = wait_status(queue, job.id, Status.FAILED)
    assert info.record["failure"] == "refused"
    assert "not a registered task (strict mode: only the tasks of tasks)" in (info.error or "")
    assert "'helpers:as_int'" in (info.error or "")
    assert proc.poll() is None


def test_strict_mode_needs_import_to_know_registered_tasks(conn: redis.Redis, workers: Any) -> None:
    queue = Queue("fast", connection=conn)
    proc, _ = start_worker(workers, "fast", extra=("--strict",))

    # The worker never imported `tasks`, so `registered_add` is not in its registry.
    job = queue.enqueue("tasks:registered_add", 1, 2)
    info = wait_status(queue, job.id, Status.FAILED)
    assert info.record["failure"] == "refused"
    assert "not a registered task (strict mode)" in (info.error or "")
    assert proc.poll() is None


def test_non_json_result_fails_clearly(conn: redis.Redis, workers: Any) -> None:
    queue = Queue("fast", connection=conn)
    proc, _ = start_worker(workers, "fast")
    job = queue.enqueue("tasks:returns_set")

    info = wait_status(queue, job.id, Status.FAILED)
    assert "returned set, which is not JSON-serialisable" in (info.error or "")
    assert info.result is None
    assert conn.hget(QueueKeys("fast").results, job.id) is None
    assert queue.enqueue("tasks:add", 2, 2).wait(10) == 4
    assert proc.poll() is None


def test_corrupt_job_record_moved_to_failed(conn: redis.Redis, workers: Any) -> None:
    queue = Queue("fast", connection=conn)
    keys = QueueKeys("fast")
    bad = queue.enqueue("tasks:add", 1, 1)
    conn.hset(keys.jobs, bad.id, "{not json")
    bad_payload = queue.enqueue("tasks:add", 1, 2)
    conn.hset(keys.payloads, bad_payload.id, "[1, 2")
    good = queue.enqueue("tasks:add", 2, 3)
    assert conn.zscore(keys.ready, bad.id) is not None  # still listed as ready

    proc, _ = start_worker(workers, "fast")
    assert good.wait(10) == 5

    info = bad.info()
    assert info.status == Status.FAILED
    assert "corrupt job record" in (info.error or "")
    assert conn.zscore(keys.failed, bad.id) is not None
    assert conn.zscore(keys.ready, bad.id) is None

    info = bad_payload.info()
    assert info.status == Status.FAILED
    assert "payload is malformed" in (info.error or "")

    counts = queue.counts()
    assert (counts.queued, counts.active, counts.failed) == (0, 0, 2)
    assert as_int(counts.stats.get("completed")) == 1
    assert proc.poll() is None


def test_a_worker_runs_with_its_start_up_frozen_and_unfreezes_at_exit(conn: redis.Redis) -> None:
    queue = Queue("freeze", connection=conn)
    job = queue.enqueue("tasks:frozen_objects")

    Worker([queue]).work(burst=True)

    assert job.info().result > 0  # the child was forked from the frozen worker
    assert gc.get_freeze_count() == 0


def test_a_worker_leaves_the_applications_own_freeze_alone(conn: redis.Redis) -> None:
    queue = Queue("freeze", connection=conn)
    queue.enqueue("tasks:noop")
    gc.freeze()
    try:
        Worker([queue]).work(burst=True)
        assert gc.get_freeze_count() > 0  # the worker did not unfreeze what it had not frozen
    finally:
        gc.unfreeze()
