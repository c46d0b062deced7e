"""Callbacks: `enqueue(..., on_success=func, on_failure=func)`; enqueued atomically with the
outcome, as ordinary jobs of the same queue called with (job id, result) or (job id, error
text); real workers."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
import redis
from helpers import start_worker, wait_status, wait_until
from option_tasks import CALLBACKS_KEY, URL_ENV, on_failure, on_success

from pyscheduler import HandlerRefused, Queue, Status

# Not marked `cluster`: every call here touches one queue, whose keys share one slot, so a
# cluster run would repeat the one-server run (test_dependencies.py is the one that crosses shards).


def key() -> str:
    return f"test:{uuid.uuid4().hex[:12]}"


@pytest.fixture
def callbacks_to(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Callbacks report to this server (the workers inherit the variable)."""
    monkeypatch.setenv(URL_ENV, redis_url)
    return redis_url


def calls_made(conn: redis.Redis, count: int = 1) -> list[dict[str, Any]]:
    wait_until(lambda: conn.llen(CALLBACKS_KEY) >= count, what=f"{count} callbacks")
    return [json.loads(x) for x in conn.lrange(CALLBACKS_KEY, 0, -1)]


def test_on_success_runs_with_the_job_id_and_its_result(
    conn: redis.Redis, callbacks_to: str, workers: Any
) -> None:
    queue = Queue("cb", connection=conn)
    start_worker(workers, "cb")

    job = queue.enqueue("tasks:add", 2, 3, on_success=on_success, on_failure=on_failure)

    assert calls_made(conn) == [{"on": "success", "job": job.id, "value": 5}]


def test_on_failure_runs_with_the_error_text_once_the_job_fails_for_good(
    conn: redis.Redis, callbacks_to: str, workers: Any
) -> None:
    queue, steps = Queue("cb", connection=conn), key()
    start_worker(workers, "cb")

    job = queue.enqueue(
        "option_tasks:fail_step", callbacks_to, steps, "x",
        retries=1, backoff=0, on_success=on_success, on_failure=on_failure,
    )  # fmt: skip

    (made,) = calls_made(conn)
    assert conn.llen(steps) == 2  # the callback came after the last attempt
    assert made["on"] == "failure" and made["job"] == job.id
    assert "ValueError: step x failed" in made["value"]


def test_a_callback_is_an_ordinary_job_with_an_id_derived_from_the_job(
    conn: redis.Redis, callbacks_to: str, workers: Any
) -> None:
    queue = Queue("cb", connection=conn)
    start_worker(workers, "cb")

    job = queue.enqueue("tasks:add", 1, 1, on_success="option_tasks:on_success")

    calls_made(conn)
    callback = wait_status(queue, f"{job.id}.on_success", Status.COMPLETE)
    assert callback.func == "option_tasks:on_success"
    assert callback.args == [job.id, 2]
    assert queue.stats().counters["enqueued"] == 2


def test_a_cancelled_job_runs_no_callback(
    conn: redis.Redis, callbacks_to: str, workers: Any
) -> None:
    queue = Queue("cb", connection=conn)
    job = queue.enqueue("tasks:add", 1, 1, on_success=on_success, on_failure=on_failure)
    job.cancel()
    start_worker(workers, "cb")
    marker = queue.enqueue("tasks:add", 0, 0)

    wait_status(queue, marker.id, Status.COMPLETE)
    time.sleep(0.2)
    assert conn.llen(CALLBACKS_KEY) == 0


def test_a_job_without_callbacks_stores_none(conn: redis.Redis) -> None:
    queue = Queue("cb", connection=conn)

    record = queue.enqueue("tasks:add", 1, 1).info().record

    assert "on_success" not in record and "on_failure" not in record


def test_a_callback_reference_passes_the_checks_of_func(conn: redis.Redis) -> None:
    queue = Queue("cb", connection=conn)

    with pytest.raises(HandlerRefused):
        queue.enqueue("tasks:add", 1, 1, on_success=lambda job_id, result: None)
    with pytest.raises(HandlerRefused):
        queue.enqueue("tasks:add", 1, 1, on_failure="__main__:report")
    with pytest.raises(HandlerRefused):
        queue.enqueue("tasks:add", 1, 1, on_failure=json.dumps)
