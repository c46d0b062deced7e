"""The familiar aliases: `queue.enqueue_in(delay, func, ...)` and `queue.enqueue_at(when, func,
...)`, thin forms of `enqueue(func, ..., delay=)` and `enqueue(func, ..., at=)`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from helpers import server_ms, start_worker, stop_worker

from pyscheduler import InvalidOption, Queue

# Not marked `cluster`: every call here touches one queue, whose keys share one slot, so a
# cluster run would repeat the one-server run (test_dependencies.py is the one that crosses shards).


def due_ms(queue: Queue, job_id: str) -> int:
    return int(queue.fetch_info(job_id).record["due"])


def test_enqueue_in_seconds_delays_the_job(conn: redis.Redis) -> None:
    queue = Queue("al", connection=conn)
    before = server_ms(conn)
    job = queue.enqueue_in(30, "tasks:add", 1, 2)
    assert job.status == "delayed"
    assert before + 30_000 <= due_ms(queue, job.id) <= server_ms(conn) + 30_000
    assert queue.fetch_info(job.id).args == [1, 2]


def test_enqueue_in_takes_a_timedelta_and_the_enqueue_options(conn: redis.Redis) -> None:
    queue = Queue("al2", connection=conn)
    before = server_ms(conn)
    job = queue.enqueue_in(timedelta(minutes=2), "tasks:add", 1, b=2, priority=7, job_id="later")
    info = queue.fetch_info("later")
    assert job.id == "later" and info.priority == 7 and info.kwargs == {"b": 2}
    assert before + 120_000 <= due_ms(queue, "later") <= server_ms(conn) + 120_000


def test_enqueue_at_a_datetime_delays_the_job_until_then(conn: redis.Redis) -> None:
    queue = Queue("al3", connection=conn)
    when = datetime.now(UTC) + timedelta(minutes=5)
    job = queue.enqueue_at(when, "tasks:add", 3, 4)
    assert job.status == "delayed"
    assert due_ms(queue, job.id) == int(when.timestamp() * 1000)


def test_enqueue_at_a_time_in_the_past_is_refused(conn: redis.Redis) -> None:
    queue = Queue("al4", connection=conn)
    with pytest.raises(InvalidOption):
        queue.enqueue_at(datetime.now(UTC) - timedelta(hours=1), "tasks:noop")
    with pytest.raises(InvalidOption):
        queue.enqueue_in(-1, "tasks:noop")


def test_jobs_enqueued_with_the_aliases_run_when_due(conn: redis.Redis, workers: Any) -> None:
    queue = Queue("al5", connection=conn)
    proc, log = start_worker(workers, "al5")
    soon = queue.enqueue_in(0.2, "tasks:add", 1, 2)
    at = queue.enqueue_at(datetime.now(UTC) + timedelta(seconds=0.3), "tasks:add", 3, 4)
    assert soon.wait(timeout=10) == 3
    assert at.wait(timeout=10) == 7
    stop_worker(proc, log)
