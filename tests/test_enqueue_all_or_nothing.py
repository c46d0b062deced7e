"""enqueue_many checks every job before it writes the first one; a batch the library still
refuses later names the jobs enqueued before it."""

from __future__ import annotations

import dataclasses
import time

import pytest
import redis

from pyscheduler import InvalidOption, PayloadTooLarge, Queue
from pyscheduler.store.protocol import ENQUEUE_BATCH_MAX

JOBS = 2 * ENQUEUE_BATCH_MAX + 500  # three library calls


def test_due_time_now_in_the_past_in_a_later_batch_enqueues_nothing(conn: redis.Redis) -> None:
    queue = Queue("bulk", connection=conn)
    jobs = [queue.prepare("tasks:add", [n, n]) for n in range(JOBS)]
    late = JOBS - 300
    jobs[late] = dataclasses.replace(jobs[late], at_ms=int(time.time() * 1000) - 60_000)

    with pytest.raises(InvalidOption, match=f"job {jobs[late].id}: its due time is in the past"):
        queue.enqueue_many(jobs)
    assert conn.dbsize() == 0


def test_payload_over_the_limit_in_a_later_batch_enqueues_nothing(conn: redis.Redis) -> None:
    small = Queue("bulk", connection=conn, max_payload_bytes=1000)
    roomy = Queue("bulk", connection=conn)
    jobs = [small.prepare("tasks:add", [n, n]) for n in range(JOBS)]
    jobs[-1] = roomy.prepare("tasks:add", ["x" * 5000, 1])

    with pytest.raises(PayloadTooLarge, match=f"job {jobs[-1].id}: payload is"):
        small.enqueue_many(jobs)
    assert conn.dbsize() == 0


def test_batch_refused_by_the_library_names_the_jobs_the_other_batches_enqueued(
    conn: redis.Redis,
) -> None:
    queue = Queue("bulk", connection=conn)
    jobs = [queue.prepare("tasks:add", [n, n]) for n in range(JOBS)]
    # A job built by hand around `prepare` that only the library's own checks catch.
    jobs[ENQUEUE_BATCH_MAX + 10] = dataclasses.replace(jobs[ENQUEUE_BATCH_MAX + 10], priority=5000)

    with pytest.raises(InvalidOption) as caught:
        queue.enqueue_many(jobs)
    refused_batch = range(ENQUEUE_BATCH_MAX, 2 * ENQUEUE_BATCH_MAX)
    others = [job.id for n, job in enumerate(jobs) if n not in refused_batch]
    assert list(caught.value.enqueued) == others
    assert f"the {len(others)} jobs of the other batches were" in str(caught.value)
    assert queue.counts().queued == len(others)
