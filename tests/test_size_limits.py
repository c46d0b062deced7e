"""Size limits live in the library's settings in Redis: a client cannot lift them."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from helpers import start_worker, wait_until

from pyscheduler import InvalidOption, PayloadTooLarge, Queue, Status
from pyscheduler.store import calls
from pyscheduler.store.protocol import SIZE_LIMIT_DEFAULTS


def test_a_queue_reports_the_library_s_defaults(conn: redis.Redis) -> None:
    assert Queue("sized", connection=conn).size_limits() == SIZE_LIMIT_DEFAULTS


def test_client_refuses_a_payload_over_the_queue_s_library_limit(conn: redis.Redis) -> None:
    Queue("sized", connection=conn).set_size_limits(payload=200)
    producer = Queue("sized", connection=conn)  # another client: reads the limit from Redis

    with pytest.raises(PayloadTooLarge, match="over the limit of 200 bytes"):
        producer.enqueue("tasks:add", "x" * 500, 1)
    assert producer.counts().queued == 0


def test_a_client_s_own_larger_limit_does_not_lift_the_library_s(conn: redis.Redis) -> None:
    Queue("sized", connection=conn).set_size_limits(payload=200)
    lifted = Queue("sized", connection=conn, max_payload_bytes=10_000)

    with pytest.raises(PayloadTooLarge):
        lifted.enqueue("tasks:add", "x" * 500, 1)
    assert lifted.counts().queued == 0


def test_size_limits_must_be_whole_numbers_of_bytes(conn: redis.Redis) -> None:
    queue = Queue("sized", connection=conn)
    with pytest.raises(InvalidOption):
        queue.set_size_limits(result=1.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidOption):
        queue.set_size_limits(result=0)
    assert queue.size_limits() == SIZE_LIMIT_DEFAULTS


def test_result_over_the_limit_fails_the_job_for_good_with_its_size(
    conn: redis.Redis, workers: Any
) -> None:
    queue = Queue("sized", connection=conn)
    queue.set_size_limits(result=100)
    proc, _ = start_worker(workers, "sized")
    job = queue.enqueue("tasks:add", "y" * 300, "", retries=2)

    info = wait_until(lambda: (i := job.info()).status == Status.FAILED and i, timeout=20)
    assert "result of 302 bytes exceeds the limit of 100 bytes" in (info.error or "")
    assert info.attempts == 1
    assert conn.hget(queue.keys.results, job.id) is None
    assert calls.size_limits(conn, queue.keys)["max_result_bytes"] == 100
    assert queue.enqueue("tasks:add", 1, 2).wait(10) == 3
    assert proc.poll() is None
