"""Eager queues (`Queue(name, eager=True)`): each job runs inline at enqueue, with the checks
a real enqueue and a worker make, and without any Redis."""

from __future__ import annotations

import asyncio
import os
import uuid

import eager_handlers as handlers
import pytest

from pyscheduler import (
    HandlerRefused,
    InvalidJobState,
    InvalidOption,
    JobFailed,
    PayloadNotJSON,
    Queue,
    Status,
    Subtask,
    current_job,
)
from pyscheduler.client.eager import EagerJob, jobs_of

# Nothing listens here: a test that reached Redis would fail.
NOWHERE = "redis://127.0.0.1:1/0"


@pytest.fixture(autouse=True)
def no_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", NOWHERE)


@pytest.fixture
def eager() -> Queue:
    return Queue("eager", eager=True)


def key() -> str:
    return uuid.uuid4().hex


def test_the_result_is_there_at_once(eager: Queue) -> None:
    job = eager.enqueue(handlers.add, 40, 2)

    assert (job.status, job.result) == (Status.COMPLETE, 42)


def test_wait_returns_the_result(eager: Queue) -> None:
    assert eager.enqueue(handlers.add, 1, 2).wait(timeout=0) == 3


def test_args_and_kwargs_make_a_json_round_trip(eager: Queue) -> None:
    job = eager.enqueue_call(handlers.echo, args=[(1, 2), "é"], kwargs={"n": None, "d": {"k": 1.5}})

    assert job.result == {"args": [[1, 2], "é"], "kwargs": {"n": None, "d": {"k": 1.5}}}


def test_arguments_json_cannot_carry_are_refused_at_enqueue(eager: Queue) -> None:
    with pytest.raises(PayloadNotJSON):
        eager.enqueue(handlers.echo, {1, 2})


def test_a_result_json_cannot_carry_fails_the_job(eager: Queue) -> None:
    job = eager.enqueue(handlers.returns_a_set)

    assert job.status == Status.FAILED
    assert "not JSON-serialisable" in (job.error or "")
    with pytest.raises(JobFailed):
        job.wait()


def test_failed_runs_are_retried_until_one_succeeds(eager: Queue) -> None:
    job = eager.enqueue(handlers.fails_then_succeeds, key(), 2, retries=2)

    assert isinstance(job, EagerJob)
    assert (job.status, job.attempts) == (Status.COMPLETE, 3)
    assert job.result == "done after 3 runs"


def test_a_job_fails_once_its_retries_are_used_up(eager: Queue) -> None:
    job = eager.enqueue(handlers.fails_then_succeeds, key(), 5, retries=1)

    assert (job.status, job.info().attempts) == (Status.FAILED, 2)
    assert "ConnectionError: run 2" in (job.error or "")


def test_an_error_retry_on_does_not_list_fails_at_once(eager: Queue) -> None:
    name = key()

    job = eager.enqueue(handlers.raises, name, "key", retries=3, retry_on=[ValueError])

    assert (job.status, job.info().attempts, handlers.runs[name]) == (Status.FAILED, 1, 1)


def test_an_error_retry_on_lists_is_retried(eager: Queue) -> None:
    name = key()

    job = eager.enqueue(handlers.raises, name, "value", retries=2, retry_on=[ValueError])

    assert (job.status, handlers.runs[name]) == (Status.FAILED, 3)


def test_a_standard_library_function_is_refused_at_enqueue(eager: Queue) -> None:
    with pytest.raises(HandlerRefused):
        eager.enqueue(os.system, "true")


def test_a_refused_reference_fails_the_job_for_good_as_on_a_worker(eager: Queue) -> None:
    job = eager.enqueue("os:system", "true", retries=3)

    assert (job.status, job.info().attempts) == (Status.FAILED, 1)
    assert "standard library" in (job.error or "")


def test_a_module_that_cannot_be_imported_fails_the_job(eager: Queue) -> None:
    job = eager.enqueue("no_such_module_here:handler", retries=1)

    assert (job.status, job.info().attempts) == (Status.FAILED, 2)
    assert "no module 'no_such_module_here'" in (job.error or "")


def test_an_async_handler_runs(eager: Queue) -> None:
    assert eager.enqueue(handlers.add_later, 2, 3).result == 5


def test_an_async_handler_is_cancelled_at_its_timeout(eager: Queue) -> None:
    job = eager.enqueue(handlers.sleeps, 30, timeout=0.05)

    assert job.status == Status.FAILED
    assert "JobTimeout" in (job.error or "")


def test_a_sync_handler_past_its_timeout_fails_once_it_returns(eager: Queue) -> None:
    job = eager.enqueue(handlers.sleeps_sync, 0.2, timeout=0.05)

    assert job.status == Status.FAILED
    assert "JobTimeout" in (job.error or "")


def test_an_enqueue_from_async_code_runs_an_async_handler(eager: Queue) -> None:
    async def producer() -> int:
        return eager.enqueue(handlers.add_later, 4, 5).result  # type: ignore[no-any-return]

    assert asyncio.run(producer()) == 9


def test_a_typed_task_enqueues_onto_an_eager_queue(eager: Queue) -> None:
    job = handlers.double.options(queue=eager).enqueue(21)

    assert job.result == 42


def test_an_eager_queue_needs_no_connection() -> None:
    queue = Queue("no-server", eager=True)

    assert queue.enqueue(handlers.add, 1, 1).result == 2


def test_depends_on_is_refused(eager: Queue) -> None:
    first = eager.enqueue(handlers.add, 1, 1)

    with pytest.raises(InvalidOption, match="depends_on"):
        eager.enqueue(handlers.add, 2, 2, depends_on=[first])


def test_subtasks_are_refused(eager: Queue) -> None:
    with pytest.raises(InvalidOption, match="subtasks"):
        eager.enqueue_group([Subtask(handlers.add, 1, 2)], handlers.echo)


def test_an_existing_job_id_returns_that_job_without_running_again(eager: Queue) -> None:
    name = key()
    first = eager.enqueue(handlers.fails_then_succeeds, name, 0, job_id=name)

    again = eager.enqueue(handlers.fails_then_succeeds, name, 0, job_id=name)

    assert again is first
    assert handlers.runs[name] == 1


def test_a_dedup_key_within_its_window_returns_the_first_job(eager: Queue) -> None:
    first = eager.enqueue(handlers.add, 1, 1, unique_for=60, unique_key="k")

    assert eager.enqueue(handlers.add, 2, 2, unique_for=60, unique_key="k") is first


def test_queue_methods_that_need_redis_raise_invalid_option(eager: Queue) -> None:
    with pytest.raises(InvalidOption, match="no connection"):
        eager.counts()


def test_an_eager_job_cannot_be_cancelled_once_ended(eager: Queue) -> None:
    job = eager.enqueue(handlers.add, 1, 1)

    with pytest.raises(InvalidJobState):
        job.cancel()


def test_a_delayed_job_runs_at_once(eager: Queue) -> None:
    assert eager.enqueue_in(3600, handlers.add, 1, 2).result == 3


def test_current_job_tells_the_attempt(eager: Queue) -> None:
    assert eager.enqueue(handlers.attempts_seen).result == 1


def test_current_job_outside_a_handler_still_raises() -> None:
    with pytest.raises(RuntimeError):
        current_job()


def test_a_run_past_its_time_slice_resumes_from_its_checkpoint(eager: Queue) -> None:
    job = eager.enqueue(handlers.counts_with_checkpoints, 5, time_slice=0.03)

    assert job.result["done"] == 5
    assert job.result["runs"] > 1
    assert job.info().checkpoint == 5


def test_a_split_inside_a_handler_fails_the_job(eager: Queue) -> None:
    job = eager.enqueue(handlers.splits)

    assert job.status == Status.FAILED
    assert "subtasks" in (job.error or "")


def test_on_success_runs_inline_with_the_result(eager: Queue) -> None:
    job = eager.enqueue(handlers.add, 2, 2, on_success=handlers.remember)

    assert handlers.outcomes[job.id] == [4]
    assert f"{job.id}.on_success" in [j.id for j in jobs_of(eager)]


def test_on_failure_runs_inline_with_the_error_text(eager: Queue) -> None:
    job = eager.enqueue(handlers.returns_a_set, on_failure=handlers.remember)

    assert handlers.outcomes[job.id] == [job.error]


def test_a_handler_may_enqueue_onto_an_eager_queue(eager: Queue) -> None:
    assert eager.enqueue(handlers.enqueues_another, "follow-up").result == "complete:3"
