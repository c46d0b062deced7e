"""Retry on chosen exceptions: `@task(retries=3, retry_on=(TimeoutError, ConnectionError))`
and the same enqueue option; any other exception fails the job at once; real workers."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis
from helpers import as_int, start_worker, wait_status
from option_tasks import FlakyError, task_with_retry_on

from pyscheduler import InvalidOption, Queue, Status

# Not marked `cluster`: every call here touches one queue, whose keys share one slot, so a
# cluster run would repeat the one-server run (test_dependencies.py is the one that crosses shards).


def key() -> str:
    return f"test:{uuid.uuid4().hex[:12]}"


def runs_of(conn: redis.Redis, queue: Queue, job_id: str, runs: str) -> int:
    wait_status(queue, job_id, Status.FAILED, timeout=20)
    return as_int(conn.get(runs))


def test_a_listed_exception_is_retried(conn: redis.Redis, redis_url: str, workers: Any) -> None:
    queue, runs = Queue("ro", connection=conn), key()
    start_worker(workers, "ro")

    job = queue.enqueue(
        "option_tasks:raise_named", redis_url, runs, "ConnectionError",
        retries=2, backoff=0, retry_on=[ConnectionError],
    )  # fmt: skip

    assert runs_of(conn, queue, job.id, runs) == 3


def test_an_exception_not_listed_fails_at_once(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue, runs = Queue("ro", connection=conn), key()
    start_worker(workers, "ro")

    job = queue.enqueue(
        "option_tasks:raise_named", redis_url, runs, "ValueError",
        retries=2, backoff=0, retry_on=[ConnectionError],
    )  # fmt: skip

    assert runs_of(conn, queue, job.id, runs) == 1
    assert "ValueError: raised ValueError" in (job.info().error or "")


def test_an_async_handler_follows_retry_on_too(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue, listed, other = Queue("ro", connection=conn), key(), key()
    start_worker(workers, "ro")
    options: dict[str, Any] = {"retries": 1, "backoff": 0, "retry_on": [ConnectionError]}

    retried = queue.enqueue(
        "option_tasks:async_raise_named", redis_url, listed, "ConnectionResetError", **options
    )
    not_retried = queue.enqueue(
        "option_tasks:async_raise_named", redis_url, other, "ValueError", **options
    )

    assert runs_of(conn, queue, retried.id, listed) == 2
    assert runs_of(conn, queue, not_retried.id, other) == 1


def test_a_subclass_of_a_listed_exception_is_retried(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue, runs = Queue("ro", connection=conn), key()
    start_worker(workers, "ro")

    job = queue.enqueue(
        "option_tasks:raise_flaky", redis_url, runs, retries=1, backoff=0, retry_on=[OSError]
    )

    assert issubclass(FlakyError, OSError)
    assert runs_of(conn, queue, job.id, runs) == 2


def test_the_task_decorator_sets_retry_on_for_its_jobs(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue, listed, other = Queue("ro", connection=conn), key(), key()
    start_worker(workers, "ro")

    retried = queue.enqueue(task_with_retry_on, redis_url, listed, "TimeoutError", backoff=0)
    not_retried = queue.enqueue(task_with_retry_on, redis_url, other, "KeyError", backoff=0)

    assert runs_of(conn, queue, retried.id, listed) == 4  # retries=3 from the decorator
    assert runs_of(conn, queue, not_retried.id, other) == 1


def test_a_timeout_counts_as_a_timeout_error(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue, listed, other = Queue("ro", connection=conn), key(), key()
    start_worker(workers, "ro", concurrency=2)
    options: dict[str, Any] = {"timeout": 0.3, "retries": 1, "backoff": 0}

    retried = queue.enqueue(
        "option_tasks:sleep_counted", redis_url, listed, 5, retry_on=[TimeoutError], **options
    )
    not_retried = queue.enqueue(
        "option_tasks:sleep_counted", redis_url, other, 5, retry_on=[ValueError], **options
    )

    assert runs_of(conn, queue, retried.id, listed) == 2
    assert runs_of(conn, queue, not_retried.id, other) == 1


def test_retry_on_is_stored_as_module_qualified_names(conn: redis.Redis) -> None:
    queue = Queue("ro", connection=conn)

    job = queue.enqueue("option_tasks:step", "u", "k", "v", retry_on=(FlakyError, "app.Error"))

    assert job.info().record["retry_on"] == ["option_tasks.FlakyError", "app.Error"]


def test_retry_on_refuses_what_is_not_an_exception(conn: redis.Redis) -> None:
    queue = Queue("ro", connection=conn)

    with pytest.raises(InvalidOption, match="retry_on"):
        queue.enqueue("option_tasks:step", "u", "k", "v", retry_on=[int])
    with pytest.raises(InvalidOption, match="retry_on"):
        queue.enqueue("option_tasks:step", "u", "k", "v", retry_on=["not a name"])
