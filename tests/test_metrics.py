"""The metrics the library keeps per queue: counters, wait and run time histograms, throughput.

The "workers" here are plain calls of the library (`calls.pop`, `calls.complete`, ...); the
metrics are read back with `Queue.metrics` (one `psq_metrics` call).
"""

from __future__ import annotations

import json
import time

import pytest
import redis

from pyscheduler import Queue
from pyscheduler.client.metrics import HISTOGRAM_BOUNDS_S, Histogram, metrics_of
from pyscheduler.exceptions import InvalidKeys
from pyscheduler.store import calls
from pyscheduler.store.protocol import THROUGHPUT_MINUTES, FailKind


def add(a: int, b: int = 0) -> int:
    return a + b


@pytest.fixture
def queue(conn: redis.Redis) -> Queue:
    return Queue("work", connection=conn)


def pop(queue: Queue, n: int = 1, lease_ms: int = 10_000) -> list[calls.Lease]:
    return calls.pop(queue.connection, queue.keys, n, lease_ms, "worker-1").leases


def complete_all(queue: Queue, leases: list[calls.Lease]) -> None:
    calls.complete_many(
        queue.connection, queue.keys, [(x.id, x.token, json.dumps(1)) for x in leases]
    )


def test_an_empty_queue_has_zero_counters_and_empty_histograms(queue: Queue) -> None:
    metrics = queue.metrics()
    assert metrics.queue == "work"
    for name in ("enqueued", "started", "completed", "failed", "retried", "lost_leases"):
        assert metrics.counters[name] == 0
    assert metrics.wait == Histogram(HISTOGRAM_BOUNDS_S, (0,) * (len(HISTOGRAM_BOUNDS_S) + 1), 0, 0)
    assert metrics.throughput == ()


def test_enqueue_pop_and_complete_count_enqueued_started_and_completed(queue: Queue) -> None:
    for n in range(3):
        queue.enqueue(add, n)
    complete_all(queue, pop(queue, 2))
    counters = queue.metrics().counters
    assert (counters["enqueued"], counters["started"], counters["completed"]) == (3, 2, 2)


def test_started_runs_fill_the_wait_histogram(queue: Queue) -> None:
    queue.enqueue(add, 1)
    queue.enqueue(add, 2)
    pop(queue, 2)
    wait = queue.metrics().wait
    assert wait.count == 2 and sum(wait.counts) == 2
    assert len(wait.counts) == len(wait.bounds) + 1
    assert 0 <= wait.sum_seconds < 60


def test_completed_runs_fill_the_run_histogram(queue: Queue) -> None:
    queue.enqueue(add, 1)
    (lease,) = pop(queue)
    time.sleep(0.03)
    complete_all(queue, [lease])
    run = queue.metrics().run
    assert run.count == 1 and run.sum_seconds >= 0.03
    # 30 ms or more is above the first bounds (5, 10, 25 ms).
    assert run.counts[:3] == (0, 0, 0) and sum(run.counts) == 1


def test_a_delayed_job_waits_from_its_due_time(queue: Queue, conn: redis.Redis) -> None:
    queue.enqueue(add, 1, delay=0.05)
    time.sleep(1.2)  # due long before it is popped: the wait counts from the due time
    pop(queue)
    wait = queue.metrics().wait
    assert wait.count == 1 and wait.sum_seconds >= 1.0


def test_throughput_counts_completed_and_failed_jobs_this_minute(queue: Queue) -> None:
    for n in range(3):
        queue.enqueue(add, n)
    first, second, third = pop(queue, 3)
    complete_all(queue, [first, second])
    calls.fail(queue.connection, queue.keys, third.id, third.token, FailKind.ERROR, "boom", 0.5)
    # One point, or two when a minute ended between the calls.
    points = queue.metrics().throughput
    assert 1 <= len(points) <= 2
    completed, failed = sum(p.completed for p in points), sum(p.failed for p in points)
    assert (completed, failed) == (2, 1)
    assert all(point.minute_start_ms % 60_000 == 0 for point in points)
    assert all(abs(point.minute_start_ms / 1000 - time.time()) < 120 for point in points)


def test_a_throughput_slot_from_another_day_is_not_reported(
    queue: Queue, conn: redis.Redis
) -> None:
    now_minute = int(conn.time()[0]) // 60
    stale = now_minute - THROUGHPUT_MINUTES  # the same slot, a day earlier
    conn.hset(queue.keys.metrics, f"minute:{now_minute % THROUGHPUT_MINUTES}", f"{stale}:9:9")
    assert queue.metrics().throughput == ()


def test_a_stale_throughput_slot_restarts_from_zero(queue: Queue, conn: redis.Redis) -> None:
    now_minute = int(conn.time()[0]) // 60
    stale = now_minute - THROUGHPUT_MINUTES
    conn.hset(queue.keys.metrics, f"minute:{now_minute % THROUGHPUT_MINUTES}", f"{stale}:9:9")
    queue.enqueue(add, 1)
    complete_all(queue, pop(queue))
    points = queue.metrics().throughput
    # The minute may have turned between the write and the completion: one or two slots.
    assert sum(p.completed for p in points) == 1 and sum(p.failed for p in points) == 0


def test_throughput_is_kept_in_one_slot_per_minute_of_a_day(
    queue: Queue, conn: redis.Redis
) -> None:
    queue.enqueue(add, 1)
    complete_all(queue, pop(queue))
    slots = [f.decode() for f in conn.hkeys(queue.keys.metrics) if f.startswith(b"minute:")]
    assert slots and all(0 <= int(f.split(":")[1]) < THROUGHPUT_MINUTES for f in slots)


def test_a_retried_failure_counts_as_retried(queue: Queue) -> None:
    queue.enqueue(add, 1, retries=1, backoff=0)
    (lease,) = pop(queue)
    calls.fail(queue.connection, queue.keys, lease.id, lease.token, FailKind.ERROR, "boom", 0.5)
    counters = queue.metrics().counters
    assert (counters["retried"], counters["failed"]) == (1, 0)


def test_an_expired_lease_counts_as_a_lost_lease(queue: Queue) -> None:
    queue.enqueue(add, 1)
    pop(queue, lease_ms=1)
    time.sleep(0.01)
    pop(queue)  # reclaims the expired lease and leases the job again
    counters = queue.metrics().counters
    assert (counters["lost_leases"], counters["started"]) == (1, 2)


def test_a_cancelled_job_counts_as_cancelled(queue: Queue) -> None:
    queue.enqueue(add, 1).cancel()
    assert queue.metrics().counters["cancelled"] == 1


def test_a_paused_run_counts_as_paused(queue: Queue) -> None:
    queue.enqueue(add, 1)
    (lease,) = pop(queue)
    calls.checkpoint(queue.connection, queue.keys, lease.id, lease.token, "1", 10_000, True)
    assert queue.metrics().counters["paused"] == 1


def test_a_start_under_a_rate_limit_is_counted_when_the_handler_starts(queue: Queue) -> None:
    queue.set_limits(rate=10, period=60)
    queue.enqueue(add, 1)
    (lease,) = pop(queue)
    assert queue.metrics().counters["started"] == 0
    assert calls.start_run(queue.connection, queue.keys, lease.id, lease.token) == 0
    metrics = queue.metrics()
    assert metrics.counters["started"] == 1 and metrics.wait.count == 1


def test_a_spoiled_histogram_field_is_reset_not_failing_the_call(
    queue: Queue, conn: redis.Redis
) -> None:
    conn.hset(queue.keys.metrics, "run:inf", "not a number")
    conn.hset(queue.keys.metrics, "run:count", "not a number")
    queue.enqueue(add, 1)
    complete_all(queue, pop(queue))
    assert queue.metrics().run.count == 1


def test_metrics_minutes_out_of_range_are_refused(queue: Queue) -> None:
    with pytest.raises(ValueError):
        queue.metrics(0)
    with pytest.raises(ValueError):
        queue.metrics(THROUGHPUT_MINUTES + 1)


def test_cumulative_buckets_end_with_the_total_at_infinity() -> None:
    histogram = Histogram((1.0, 2.0), (1, 2, 3), 10.0, 6)
    assert histogram.cumulative() == [(1.0, 1), (2.0, 3), (float("inf"), 6)]


def test_metrics_of_many_queues_come_in_one_pipeline(conn: redis.Redis) -> None:
    Queue("a", connection=conn).enqueue(add, 1)
    first, second = metrics_of(conn, ["a", "b"])
    assert (first.queue, first.counters["enqueued"]) == ("a", 1)
    assert (second.queue, second.counters["enqueued"]) == ("b", 0)


def test_a_metrics_key_of_another_type_is_refused_before_any_write(
    queue: Queue, conn: redis.Redis
) -> None:
    queue.enqueue(add, 1)
    conn.set(queue.keys.metrics, "not a hash")
    with pytest.raises(InvalidKeys):
        pop(queue)
    assert queue.counts().queued == 1 and queue.counts().active == 0


def test_an_events_key_of_another_type_is_refused_before_any_write(
    queue: Queue, conn: redis.Redis
) -> None:
    conn.set(queue.keys.events, "not a stream")
    with pytest.raises(InvalidKeys):
        queue.enqueue(add, 1)
    assert queue.counts().queued == 0


def test_a_worker_drain_counts_every_job_started_and_completed(conn: redis.Redis) -> None:
    from pyscheduler import Worker

    queue = Queue("drain", connection=conn)
    queue.enqueue_many([queue.prepare("tasks:noop") for _ in range(50)])
    assert Worker([queue]).work(burst=True) == 50
    metrics = queue.metrics()
    assert (metrics.counters["started"], metrics.counters["completed"]) == (50, 50)
    assert (metrics.wait.count, metrics.run.count) == (50, 50)
    assert sum(p.completed for p in metrics.throughput) == 50


def test_a_job_handed_back_unstarted_is_not_counted_as_started(queue: Queue) -> None:
    queue.enqueue(add, 1)
    queue.enqueue(add, 2)
    leases = calls.pop(queue.connection, queue.keys, 1, 10_000, "w", extra=1).leases
    calls.release(queue.connection, queue.keys, [(leases[1].id, leases[1].token)])
    assert queue.metrics().counters["started"] == 1


def test_a_job_handed_back_unstarted_has_its_wait_taken_back(queue: Queue) -> None:
    queue.enqueue(add, 1)
    queue.enqueue(add, 2)
    leases = calls.pop(queue.connection, queue.keys, 1, 10_000, "w", extra=1).leases
    calls.release(queue.connection, queue.keys, [(leases[1].id, leases[1].token)])

    wait = queue.metrics().wait
    assert wait.count == 1 and sum(wait.counts) == 1


def test_a_handed_back_job_started_later_counts_one_wait(queue: Queue) -> None:
    queue.enqueue(add, 1)
    (lease,) = pop(queue)
    calls.release(queue.connection, queue.keys, [(lease.id, lease.token)])

    pop(queue)

    assert queue.metrics().wait.count == 1


def test_a_take_back_after_the_metrics_were_reset_leaves_them_at_zero(
    queue: Queue, conn: redis.Redis
) -> None:
    queue.enqueue(add, 1)
    (lease,) = pop(queue)
    conn.delete(queue.keys.metrics)

    calls.release(queue.connection, queue.keys, [(lease.id, lease.token)])

    wait = queue.metrics().wait
    assert wait.count == 0 and wait.sum_seconds == 0 and set(wait.counts) == {0}
