"""Expiry before start: `enqueue(..., expires=seconds or datetime)`; a job not started by then
is never run and ends `expired`, counted; real workers."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from helpers import start_worker, wait_status, wait_until

from pyscheduler import InvalidOption, JobExpired, Queue, Status

# Not marked `cluster`: every call here touches one queue, whose keys share one slot, so a
# cluster run would repeat the one-server run (test_dependencies.py is the one that crosses shards).


def key() -> str:
    return f"test:{uuid.uuid4().hex[:12]}"


def ran(conn: redis.Redis, steps: str) -> list[str]:
    return [x.decode() for x in conn.lrange(steps, 0, -1)]


def expire_one(conn: redis.Redis, redis_url: str, workers: Any, queue: Queue, steps: str) -> str:
    """A job that expires before any worker runs; a worker then starts; returns its id once
    a job enqueued after it has run (the worker reached it)."""
    job = queue.enqueue("option_tasks:step", redis_url, steps, "late", expires=0.2)
    time.sleep(0.4)
    start_worker(workers, queue.name)
    marker = queue.enqueue("option_tasks:step", redis_url, steps, "marker")
    wait_status(queue, marker.id, Status.COMPLETE)
    return job.id


def test_a_job_not_started_before_it_expires_is_never_run(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue, steps = Queue("exp", connection=conn), key()

    job_id = expire_one(conn, redis_url, workers, queue, steps)

    assert ran(conn, steps) == ["marker"]
    info = queue.fetch_info(job_id)
    assert info.status == Status.EXPIRED
    assert info.attempts == 0
    assert "JobExpired" in (info.error or "")


def test_waiting_on_an_expired_job_raises_job_expired(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue, steps = Queue("exp", connection=conn), key()
    job_id = expire_one(conn, redis_url, workers, queue, steps)

    with pytest.raises(JobExpired):
        queue.fetch_job(job_id).wait(timeout=5)


def test_expired_jobs_are_counted_and_listed(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue, steps = Queue("exp", connection=conn), key()

    job_id = expire_one(conn, redis_url, workers, queue, steps)

    assert queue.stats().counters["expired"] == 1
    assert queue.job_ids(Status.EXPIRED) == [job_id]
    assert queue.metrics().counters["expired"] == 1


def test_purge_deletes_expired_jobs_and_keeps_the_others(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue, steps = Queue("exp", connection=conn), key()
    job_id = expire_one(conn, redis_url, workers, queue, steps)
    (marker_id,) = queue.job_ids(Status.COMPLETE)

    assert queue.purge(Status.EXPIRED) == 1

    assert queue.job_ids(Status.EXPIRED) == []
    assert not conn.hexists(queue.keys.jobs, job_id)
    assert queue.fetch_info(marker_id).status == Status.COMPLETE


def test_a_job_started_before_it_expires_runs_to_its_end(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue, steps = Queue("exp", connection=conn), key()
    start_worker(workers, "exp")

    job = queue.enqueue("option_tasks:slow_step", redis_url, steps, "a", 0.5, expires=0.3)

    assert job.wait(timeout=10) == "a"  # started in time: the expiry no longer applies


def test_a_delayed_job_expires_when_not_started_by_its_expiry(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue, steps = Queue("exp", connection=conn), key()
    queue.pause()
    job = queue.enqueue("option_tasks:step", redis_url, steps, "late", delay=0.1, expires=0.3)
    start_worker(workers, "exp")
    time.sleep(0.5)

    queue.resume()

    wait_status(queue, job.id, Status.EXPIRED)
    assert ran(conn, steps) == []


def test_expires_takes_a_datetime(conn: redis.Redis, redis_url: str, workers: Any) -> None:
    queue, steps = Queue("exp", connection=conn), key()
    start_worker(workers, "exp")

    soon = datetime.now(UTC) + timedelta(seconds=30)
    job = queue.enqueue("option_tasks:step", redis_url, steps, "a", expires=soon)

    assert job.wait(timeout=10) == "a"
    assert job.info().record["expires"] == int(soon.timestamp() * 1000)


def test_an_expiry_before_the_due_time_is_refused(conn: redis.Redis) -> None:
    queue = Queue("exp", connection=conn)

    with pytest.raises(InvalidOption, match="expires"):
        queue.enqueue("option_tasks:step", "u", "k", "v", delay=10, expires=5)
    with pytest.raises(InvalidOption, match="expires"):
        queue.enqueue("option_tasks:step", "u", "k", "v", expires=-1)


def test_a_job_without_expiry_stores_no_expiry_field(conn: redis.Redis) -> None:
    queue = Queue("exp", connection=conn)

    job = queue.enqueue("option_tasks:step", "u", "k", "v")

    assert "expires" not in job.info().record
    wait_until(lambda: queue.stats().counters.get("expired", 0) == 0)
