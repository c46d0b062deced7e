"""Prefetch: a busy worker leases several short jobs per call, and never lets that hurt a job.

A child of the worker gets a queue of short jobs at once; jobs queued behind one that turns
out slow are handed back (psq_release) to run elsewhere; a stopping worker hands back what it
has not started; a timeout or a crash inside a prefetched batch costs only the job at fault.
"""

from __future__ import annotations

import signal
import time
import uuid
from typing import Any

import redis
from helpers import send, spans, start_worker, wait_until

from pyscheduler import Queue, Status, Worker
from pyscheduler.store.protocol import FailKind

WARM_UP = 300  # no-op jobs first, so the worker has measured that jobs here are short


def test_jobs_prefetched_behind_a_long_job_run_elsewhere_meanwhile(
    conn: redis.Redis, redis_url: str
) -> None:
    queue = Queue("pf", connection=conn)
    slow_key, fast_key = f"test:slow:{uuid.uuid4().hex}", f"test:fast:{uuid.uuid4().hex}"
    queue.enqueue_many([queue.prepare("tasks:noop") for _ in range(WARM_UP)])
    queue.enqueue("tasks:span", redis_url, slow_key, 1.5)
    fast = queue.enqueue_many(
        [queue.prepare("tasks:span", [redis_url, fast_key, 0.0]) for _ in range(40)]
    )
    worker = Worker([queue], concurrency=2)

    worker.work(burst=True)

    [slow] = spans(conn, slow_key)
    fast_spans = spans(conn, fast_key)
    assert len(fast_spans) == 40
    # The slow job's slot had prefetched jobs queued behind it: they were handed back and the
    # other slot ran them, all long before the slow job ended.
    assert worker.handed_back >= 1
    assert max(s["start"] for s in fast_spans) < slow["end"] - 1_000_000
    assert all(job.info().attempts == 1 for job in fast)


def test_stopping_worker_hands_back_prefetched_jobs_at_once(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue = Queue("pf", connection=conn)
    done_key = f"test:done:{uuid.uuid4().hex}"
    total = 3000
    queue.enqueue_many(
        [queue.prepare("tasks:span", [redis_url, done_key, 0.002]) for _ in range(total)]
    )
    proc, log = start_worker(workers, "pf")
    wait_until(lambda: conn.llen(done_key) >= 100, timeout=15, what="the drain to get going")

    asked = time.monotonic()
    send(proc, signal.SIGTERM)
    log.finish(timeout=10)
    took = time.monotonic() - asked

    counts = queue.counts()
    assert proc.returncode == 0
    assert took < 2.0, log.text
    assert counts.active == 0  # nothing is left leased to the exited worker
    assert counts.queued + conn.llen(done_key) == total
    assert counts.queued > 0
    # Handed-back jobs never ran: no attempt is counted against them.
    queued = queue.job_ids("queued", limit=50)
    assert all(queue.fetch_info(job_id).attempts == 0 for job_id in queued)


def test_timed_out_job_in_a_prefetched_batch_fails_alone(conn: redis.Redis) -> None:
    queue = Queue("pf", connection=conn)
    before = queue.enqueue_many([queue.prepare("tasks:noop") for _ in range(WARM_UP)])
    stuck = queue.enqueue("tasks:sleep_in_c", 30, timeout=0.5, retries=0)
    after = queue.enqueue_many([queue.prepare("tasks:noop") for _ in range(100)])

    Worker([queue]).work(burst=True)

    info = stuck.info()
    assert info.status == Status.FAILED
    assert info.record["failure"] == FailKind.TIMEOUT.value
    for job in [*before, *after]:
        other = job.info()
        assert (other.status, other.attempts) == (Status.COMPLETE, 1)


def test_child_dying_in_a_prefetched_batch_fails_only_its_job(conn: redis.Redis) -> None:
    queue = Queue("pf", connection=conn)
    before = queue.enqueue_many([queue.prepare("tasks:noop") for _ in range(WARM_UP)])
    dying = queue.enqueue("tasks:exit_hard", 3, retries=0)
    after = queue.enqueue_many([queue.prepare("tasks:noop") for _ in range(100)])

    Worker([queue]).work(burst=True)

    info = dying.info()
    assert info.status == Status.FAILED
    assert "died" in (info.error or "")
    for job in [*before, *after]:
        other = job.info()
        assert (other.status, other.attempts) == (Status.COMPLETE, 1)


def test_worker_without_prefetch_leases_one_job_per_idle_slot(conn: redis.Redis) -> None:
    queue = Queue("pf", connection=conn)
    queue.enqueue_many([queue.prepare("tasks:noop") for _ in range(50)])
    worker = Worker([queue], prefetch=False)

    assert worker.work(burst=True) == 50
    assert worker.handed_back == 0
    assert queue.counts().stats.get("completed") == 50


def test_big_prefetched_payloads_and_results_flow_both_ways(conn: redis.Redis) -> None:
    # Batches and outcomes far bigger than a pipe's buffer: neither side may block the other.
    queue = Queue("pf", connection=conn)
    queue.enqueue_many([queue.prepare("tasks:noop") for _ in range(WARM_UP)])
    blob = "x" * 200_000
    big = queue.enqueue_many([queue.prepare("tasks:echo", [blob]) for _ in range(40)])

    Worker([queue]).work(burst=True)

    assert all(job.info().result == blob for job in big)
