"""Dedup windows: `enqueue(..., unique_for=seconds)`; another enqueue with the same job_id (or
the same `unique_key=`) within the window returns the existing job, even after it ended,
whatever its result_ttl; real workers."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import redis
from helpers import start_worker, wait_status, wait_until

from pyscheduler import InvalidOption, Queue, Status

# Not marked `cluster`: every call here touches one queue, whose keys share one slot, so a
# cluster run would repeat the one-server run (test_dependencies.py is the one that crosses shards).


def key() -> str:
    return f"test:{uuid.uuid4().hex[:12]}"


def ran(conn: redis.Redis, steps: str) -> list[str]:
    return [x.decode() for x in conn.lrange(steps, 0, -1)]


def test_the_same_job_id_within_the_window_returns_the_job_even_after_its_record_expired(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue, steps = Queue("dd", connection=conn), key()
    start_worker(workers, "dd")
    first = queue.enqueue(
        "option_tasks:step", redis_url, steps, "1", job_id="report", unique_for=60, result_ttl=0
    )
    wait_until(lambda: ran(conn, steps) == ["1"], what="the first run")
    wait_until(lambda: not conn.hexists(queue.keys.jobs, "report"), what="its record to go")

    again = queue.enqueue(
        "option_tasks:step", redis_url, steps, "2", job_id="report", unique_for=60
    )

    assert again.id == first.id == "report"
    time.sleep(0.3)
    assert ran(conn, steps) == ["1"]
    assert queue.stats().counters["enqueued"] == 1


def test_the_same_unique_key_returns_the_first_job(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue, steps = Queue("dd", connection=conn), key()
    start_worker(workers, "dd")
    first = queue.enqueue("option_tasks:step", redis_url, steps, "1", unique_for=60, unique_key="u")
    wait_status(queue, first.id, Status.COMPLETE)

    second = queue.enqueue(
        "option_tasks:step", redis_url, steps, "2", unique_for=60, unique_key="u"
    )

    assert second.id == first.id
    assert ran(conn, steps) == ["1"]


def test_after_the_window_a_new_job_is_enqueued(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue, steps = Queue("dd", connection=conn), key()
    start_worker(workers, "dd")
    first = queue.enqueue(
        "option_tasks:step", redis_url, steps, "1", unique_for=0.2, unique_key="u"
    )
    wait_status(queue, first.id, Status.COMPLETE)
    time.sleep(0.3)

    second = queue.enqueue(
        "option_tasks:step", redis_url, steps, "2", unique_for=0.2, unique_key="u"
    )

    assert second.id != first.id
    wait_status(queue, second.id, Status.COMPLETE)
    assert ran(conn, steps) == ["1", "2"]


def test_duplicates_within_one_batch_make_one_job(conn: redis.Redis) -> None:
    queue = Queue("dd", connection=conn)

    jobs = queue.enqueue_many(
        [queue.prepare("option_tasks:step", ("u", "k", str(n)), unique_for=60, unique_key="u")
         for n in range(3)]
    )  # fmt: skip

    assert len({job.id for job in jobs}) == 1
    assert queue.counts().queued == 1


def test_closed_windows_are_swept_by_later_enqueues(conn: redis.Redis) -> None:
    queue = Queue("dd", connection=conn)
    for n in range(5):
        queue.enqueue("option_tasks:step", "u", "k", "v", unique_for=0.05, unique_key=f"k{n}")
    time.sleep(0.1)

    queue.enqueue("option_tasks:step", "u", "k", "v", unique_for=60, unique_key="last")

    assert conn.zrange(queue.keys.unique, 0, -1) == [b"last"]
    assert conn.hkeys(queue.keys.unique_ids) == [b"last"]


def test_a_job_without_unique_for_touches_no_dedup_key(conn: redis.Redis) -> None:
    queue = Queue("dd", connection=conn)

    queue.enqueue("option_tasks:step", "u", "k", "v", job_id="plain")

    assert not conn.exists(queue.keys.unique, queue.keys.unique_ids)


def test_unique_key_without_unique_for_is_refused(conn: redis.Redis) -> None:
    queue = Queue("dd", connection=conn)

    with pytest.raises(InvalidOption, match="unique_key needs unique_for"):
        queue.enqueue("option_tasks:step", "u", "k", "v", unique_key="u")
