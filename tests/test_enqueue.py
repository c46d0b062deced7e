"""Enqueueing and inspecting jobs through the client API, against the real library.

Workers are not involved: jobs are leased and finished with the `calls` wrappers directly.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from helpers import server_ms

from pyscheduler import Job, JobNotFound, Queue, Status, task
from pyscheduler.client.splitting import Subtask
from pyscheduler.exceptions import InvalidOption
from pyscheduler.store import calls
from pyscheduler.store.keys import QUEUES_KEY
from pyscheduler.store.protocol import ENQUEUE_BATCH_MAX

pytestmark = pytest.mark.cluster  # also on a local Redis Cluster (conftest.py)


def add(a: int, b: int = 0) -> int:
    return a + b


@task(name="custom-add")
def custom_named_add(a: int, b: int) -> int:
    return a + b


def pop(queue: Queue, max_jobs: int = 1, lease_ms: int = 10_000) -> calls.PopResult:
    return calls.pop(queue.connection, queue.keys, max_jobs, lease_ms, "test-worker")


def popped_ids(queue: Queue, max_jobs: int) -> list[str]:
    return [lease.id for lease in pop(queue, max_jobs).leases]


def finish(queue: Queue, result: Any = None) -> calls.Lease:
    """Lease the next job and complete it with `result`."""
    (lease,) = pop(queue).leases
    calls.complete(queue.connection, queue.keys, lease.id, lease.token, json.dumps(result))
    return lease


@pytest.fixture
def queue(conn: redis.Redis) -> Queue:
    return Queue("work", connection=conn)


# -- enqueue ----------------------------------------------------------------------------------


def test_enqueue_returns_job_with_queued_status(queue: Queue) -> None:
    job = queue.enqueue(add, 1, 2)
    assert isinstance(job, Job)
    assert job.queue is queue
    assert job.status == Status.QUEUED == "queued"


def test_enqueue_stores_handler_reference_args_and_kwargs(queue: Queue) -> None:
    info = queue.enqueue(add, 1, b=[2, {"x": None}]).info()
    assert info.func == "test_enqueue:add"
    assert info.args == [1]
    assert info.kwargs == {"b": [2, {"x": None}]}


def test_enqueue_records_options(queue: Queue) -> None:
    job = queue.enqueue(add, 1, priority=7, timeout=12.5, retries=3, backoff=0.25, result_ttl=9)
    record = job.info().record
    assert record["priority"] == 7
    assert record["timeout"] == 12.5
    assert record["retries"] == 3
    assert record["backoff"] == 0.25
    assert record["result_ttl"] == 9
    assert record["attempts"] == 0


def test_enqueue_uses_queue_defaults(conn: redis.Redis) -> None:
    queue = Queue("defaults", connection=conn, default_timeout=5, default_retries=2, result_ttl=3)
    record = queue.enqueue(add, 1).info().record
    assert (record["timeout"], record["retries"], record["result_ttl"]) == (5, 2, 3)


def test_enqueue_accepts_timedelta_options(queue: Queue) -> None:
    job = queue.enqueue(add, 1, timeout=timedelta(minutes=2), backoff=timedelta(seconds=3))
    record = job.info().record
    assert (record["timeout"], record["backoff"]) == (120, 3)


def test_enqueue_by_dotted_string_names_module_and_function(queue: Queue) -> None:
    assert queue.enqueue("app.tasks.resize", 1).info().func == "app.tasks:resize"


def test_enqueue_by_colon_reference_keeps_it(queue: Queue) -> None:
    assert queue.enqueue("app.tasks:Resizer.run").info().func == "app.tasks:Resizer.run"


def test_registered_task_keeps_its_custom_name(queue: Queue) -> None:
    # A worker finds registered tasks by this exact name.
    assert queue.enqueue(custom_named_add, 1, 2).info().func == "custom-add"


def test_enqueue_call_passes_option_named_kwargs_to_the_handler(queue: Queue) -> None:
    job = queue.enqueue_call(add, args=(1,), kwargs={"priority": 5, "timeout": 1})
    info = job.info()
    assert info.kwargs == {"priority": 5, "timeout": 1}
    assert info.priority == 0


def test_enqueue_generates_distinct_job_ids(queue: Queue) -> None:
    ids = {queue.enqueue(add, i).id for i in range(50)}
    assert len(ids) == 50


def test_enqueue_registers_the_queue_name(conn: redis.Redis, queue: Queue) -> None:
    queue.enqueue(add, 1)
    assert conn.smembers(QUEUES_KEY) == {b"work"}


def test_enqueue_counts_enqueued_jobs_in_stats(queue: Queue) -> None:
    queue.enqueue(add, 1)
    queue.enqueue(add, 2, delay=10)
    assert queue.counts().stats["enqueued"] == 2


# -- ordering ---------------------------------------------------------------------------------


def test_higher_priority_pops_first(queue: Queue) -> None:
    low = queue.enqueue(add, 1, priority=0)
    high = queue.enqueue(add, 2, priority=10)
    negative = queue.enqueue(add, 3, priority=-5)
    mid = queue.enqueue(add, 4, priority=5)
    assert popped_ids(queue, 4) == [high.id, mid.id, low.id, negative.id]


def test_priority_extremes_pop_in_order(queue: Queue) -> None:
    lowest = queue.enqueue(add, 1, priority=-1000)
    highest = queue.enqueue(add, 2, priority=1000)
    assert popped_ids(queue, 2) == [highest.id, lowest.id]


def test_fifo_within_a_priority(queue: Queue) -> None:
    ids = [queue.enqueue(add, i, priority=3).id for i in range(20)]
    assert popped_ids(queue, 20) == ids


def test_pop_takes_one_job_at_a_time_in_order(queue: Queue) -> None:
    ids = [queue.enqueue(add, i).id for i in range(3)]
    assert [popped_ids(queue, 1) for _ in range(4)] == [[ids[0]], [ids[1]], [ids[2]], []]


def test_job_ids_lists_queued_jobs_in_run_order(queue: Queue) -> None:
    first_low = queue.enqueue(add, 1, priority=1)
    high = queue.enqueue(add, 2, priority=2)
    second_low = queue.enqueue(add, 3, priority=1)
    assert queue.job_ids("queued") == [high.id, first_low.id, second_low.id]


def test_retried_job_goes_behind_jobs_of_its_priority(queue: Queue) -> None:
    first = queue.enqueue(add, 1, retries=1, backoff=0)
    second = queue.enqueue(add, 2)
    (lease,) = pop(queue).leases
    calls.fail(queue.connection, queue.keys, lease.id, lease.token, calls.FailKind.ERROR, "x", 1)
    assert queue.job_ids("queued") == [second.id, first.id]


# -- delay and at -----------------------------------------------------------------------------


def test_delayed_job_is_delayed_not_queued(queue: Queue) -> None:
    job = queue.enqueue(add, 1, delay=0.2)
    assert job.status == "delayed"
    assert queue.job_ids("delayed") == [job.id]
    assert queue.job_ids("queued") == []
    assert len(queue) == 0


def test_pop_leaves_delayed_job_until_due(queue: Queue) -> None:
    queue.enqueue(add, 1, delay=5)
    assert pop(queue).leases == []


def test_pop_promotes_delayed_job_once_due(queue: Queue) -> None:
    job = queue.enqueue(add, 1, delay=0.2)
    assert pop(queue).leases == []
    time.sleep(0.25)
    assert popped_ids(queue, 1) == [job.id]


def test_delayed_job_keeps_its_priority_when_promoted(queue: Queue) -> None:
    delayed_high = queue.enqueue(add, 1, delay=0.1, priority=9)
    ready_low = queue.enqueue(add, 2, priority=1)
    time.sleep(0.15)
    assert popped_ids(queue, 2) == [delayed_high.id, ready_low.id]


def test_delay_as_timedelta(queue: Queue) -> None:
    before = server_ms(queue.connection)
    job = queue.enqueue(add, 1, delay=timedelta(seconds=30))
    due = job.info().record["due"]
    assert before + 30_000 <= due <= server_ms(queue.connection) + 30_000


def test_zero_delay_queues_at_once(queue: Queue) -> None:
    assert queue.enqueue(add, 1, delay=0).status == "queued"


def test_at_epoch_seconds_sets_the_due_time(queue: Queue) -> None:
    at = time.time() + 30
    job = queue.enqueue(add, 1, at=at)
    assert job.status == "delayed"
    assert job.info().record["due"] == int(at * 1000)


def test_at_datetime_sets_the_due_time(queue: Queue) -> None:
    at = datetime.now(UTC) + timedelta(seconds=30)
    job = queue.enqueue(add, 1, at=at)
    assert job.info().record["due"] == int(at.timestamp() * 1000)


def test_pop_promotes_job_once_its_at_time_is_reached(queue: Queue) -> None:
    job = queue.enqueue(add, 1, at=time.time() + 0.2)
    assert pop(queue).leases == []
    time.sleep(0.25)
    assert popped_ids(queue, 1) == [job.id]


def test_at_now_queues_at_once(queue: Queue) -> None:
    assert queue.enqueue(add, 1, at=time.time()).status == "queued"


# -- an existing job id -----------------------------------------------------------------------


def test_enqueue_existing_job_id_returns_the_existing_job(queue: Queue) -> None:
    first = queue.enqueue(add, 1, job_id="report-1")
    again = queue.enqueue(add, 2, job_id="report-1")
    assert again == first
    assert again.id == "report-1"


def test_enqueue_existing_job_id_leaves_payload_and_options_unchanged(queue: Queue) -> None:
    queue.enqueue(add, 1, job_id="report-1", priority=1)
    queue.enqueue(add, 2, b=3, job_id="report-1", priority=9, delay=60)
    info = queue.fetch_info("report-1")
    assert (info.args, info.kwargs, info.priority, info.status) == ([1], {}, 1, "queued")
    assert len(queue) == 1
    assert queue.counts().stats["enqueued"] == 1


def test_enqueue_existing_job_id_of_active_job_does_not_requeue_it(queue: Queue) -> None:
    queue.enqueue(add, 1, job_id="report-1")
    (lease,) = pop(queue).leases
    job = queue.enqueue(add, 1, job_id="report-1")
    assert job.status == "active"
    assert len(queue) == 0
    assert job.info(show_token=True).record["token"] == lease.token


def test_enqueue_existing_job_id_of_complete_job_keeps_its_result(queue: Queue) -> None:
    queue.enqueue(add, 1, job_id="report-1")
    finish(queue, result=41)
    job = queue.enqueue(add, 1, job_id="report-1")
    assert (job.status, job.result) == ("complete", 41)
    assert len(queue) == 0


def test_same_job_id_twice_in_one_batch_creates_one_job(queue: Queue) -> None:
    jobs = queue.enqueue_many(
        [queue.prepare(add, (1,), job_id="dup"), queue.prepare(add, (2,), job_id="dup")]
    )
    assert [j.id for j in jobs] == ["dup", "dup"]
    assert queue.fetch_info("dup").args == [1]
    assert len(queue) == 1


def test_same_job_id_in_two_queues_are_two_jobs(conn: redis.Redis) -> None:
    a = Queue("a", connection=conn).enqueue(add, 1, job_id="same")
    b = Queue("b", connection=conn).enqueue(add, 2, job_id="same")
    assert (a.info().args, b.info().args) == ([1], [2])


# -- enqueue_many -----------------------------------------------------------------------------


def test_enqueue_many_of_2500_jobs_queues_all_in_order(queue: Queue) -> None:
    prepared = [queue.prepare(add, (i,)) for i in range(2500)]
    jobs = queue.enqueue_many(prepared)
    assert [job.id for job in jobs] == [p.id for p in prepared]
    assert len(queue) == 2500
    listed = [
        job_id
        for offset in range(0, 2500, 1000)
        for job_id in queue.job_ids("queued", offset=offset, limit=1000)
    ]
    assert listed == [p.id for p in prepared]


@pytest.mark.one_server("counts the command stack of a one-server pipeline")
def test_enqueue_many_sends_one_pipeline(conn: redis.Redis, queue: Queue, monkeypatch: Any) -> None:
    queue.enqueue(add, 0)  # the library check and the queue registration are done once
    sent: list[str] = []
    real_pipeline = conn.pipeline

    def counting_pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = real_pipeline(*args, **kwargs)
        real_execute = pipe.execute

        def execute(*a: Any, **k: Any) -> Any:
            sent.append(f"pipeline of {len(pipe.command_stack)}")
            return real_execute(*a, **k)

        pipe.execute = execute
        return pipe

    def counting_command(*args: Any, **kwargs: Any) -> Any:
        sent.append(str(args[0]))
        return type(conn).execute_command(conn, *args, **kwargs)

    monkeypatch.setattr(conn, "pipeline", counting_pipeline)
    monkeypatch.setattr(conn, "execute_command", counting_command)
    queue.enqueue_many([queue.prepare(add, (i,)) for i in range(2500)])
    batches = -(-2500 // ENQUEUE_BATCH_MAX)
    assert sent == [f"pipeline of {batches}"]
    monkeypatch.undo()
    assert len(queue) == 2501


def test_enqueue_many_with_mixed_options(queue: Queue) -> None:
    jobs = queue.enqueue_many(
        [
            queue.prepare(add, (1,), priority=1),
            queue.prepare(add, (2,), delay=30),
            queue.prepare(add, (3,), priority=5),
        ]
    )
    assert [job.status for job in jobs] == ["queued", "delayed", "queued"]
    assert queue.job_ids("queued") == [jobs[2].id, jobs[0].id]


def test_enqueue_many_of_nothing_returns_nothing(conn: redis.Redis, queue: Queue) -> None:
    assert queue.enqueue_many([]) == []
    assert conn.dbsize() == 0


# -- result_ttl -------------------------------------------------------------------------------


def test_result_is_stored_on_complete(queue: Queue) -> None:
    job = queue.enqueue(add, 1)
    finish(queue, result={"sum": 1})
    assert job.status == "complete"
    assert job.result == {"sum": 1}


def test_expired_result_is_swept_by_a_later_complete(conn: redis.Redis, queue: Queue) -> None:
    short = queue.enqueue(add, 1, result_ttl=0.1)
    other = queue.enqueue(add, 2, result_ttl=60)
    finish(queue, result=1)
    assert short.result == 1
    time.sleep(0.15)
    finish(queue, result=2)
    with pytest.raises(JobNotFound):
        short.info()
    for key in (queue.keys.jobs, queue.keys.payloads, queue.keys.results):
        assert not conn.hexists(key, short.id)
    assert conn.zscore(queue.keys.finished, short.id) is None
    assert other.result == 2


def test_result_is_kept_until_its_ttl_passes(queue: Queue) -> None:
    kept = queue.enqueue(add, 1, result_ttl=60)
    queue.enqueue(add, 2)
    finish(queue, result="kept")
    finish(queue, result="other")
    assert (kept.status, kept.result) == ("complete", "kept")


def test_finished_record_expiry_is_complete_time_plus_ttl(conn: redis.Redis, queue: Queue) -> None:
    job = queue.enqueue(add, 1, result_ttl=30)
    finish(queue)
    ended = job.info().ended_ms
    assert ended is not None
    assert conn.zscore(queue.keys.finished, job.id) == ended + 30_000


def test_result_ttl_zero_drops_the_record_at_once(queue: Queue) -> None:
    job = queue.enqueue(add, 1, result_ttl=0)
    finish(queue, result=5)
    with pytest.raises(JobNotFound):
        job.info()


# -- inspection -------------------------------------------------------------------------------


def test_len_counts_ready_jobs_only(queue: Queue) -> None:
    for i in range(3):
        queue.enqueue(add, i)
    queue.enqueue(add, 9, delay=30)
    pop(queue)
    assert len(queue) == 2


def test_len_of_empty_queue_is_zero(queue: Queue) -> None:
    assert len(queue) == 0


def test_counts_report_every_state(queue: Queue) -> None:
    queue.enqueue(add, 1)
    queue.enqueue(add, 2)
    queue.enqueue(add, 3, delay=30)
    pop(queue)
    counts = queue.counts()
    assert (counts.queued, counts.delayed, counts.active, counts.failed, counts.finished) == (
        1,
        1,
        1,
        0,
        0,
    )


def _one_job_in_each_state(queue: Queue) -> dict[str, str]:
    conn, keys = queue.connection, queue.keys
    ids = {}
    ids["expired"] = queue.enqueue(add, 0, job_id="e", expires=0.05).id
    time.sleep(0.1)
    assert pop(queue).leases == []  # not started before its expiry: ends expired
    ids["complete"] = queue.enqueue(add, 1, job_id="c").id
    finish(queue)
    ids["failed"] = queue.enqueue(add, 2, job_id="f").id
    (lease,) = pop(queue).leases
    calls.fail(conn, keys, lease.id, lease.token, calls.FailKind.ERROR, "boom", 1)
    ids["active"] = queue.enqueue(add, 3, job_id="a").id
    pop(queue)
    ids["cancelled"] = queue.enqueue(add, 4, job_id="x").id
    queue.fetch_job("x").cancel()
    ids["queued"] = queue.enqueue(add, 5, job_id="q").id
    ids["delayed"] = queue.enqueue(add, 6, job_id="d", delay=30).id
    ids["waiting"] = queue.enqueue_group([Subtask(add, 7, 8, queue="elsewhere")], add, 9).id
    return ids


@pytest.mark.parametrize("status", [s.value for s in Status])
def test_job_ids_lists_the_jobs_in_a_state(queue: Queue, status: str) -> None:
    ids = _one_job_in_each_state(queue)
    assert queue.job_ids(status) == [ids[status]]


def test_jobs_returns_handles_in_the_listed_order(queue: Queue) -> None:
    first = queue.enqueue(add, 1)
    second = queue.enqueue(add, 2)
    jobs = queue.jobs("queued")
    assert jobs == [first, second]
    assert all(job.queue is queue for job in jobs)


def test_job_ids_pages_with_offset_and_limit(queue: Queue) -> None:
    ids = [queue.enqueue(add, i).id for i in range(10)]
    assert queue.job_ids("queued", offset=3, limit=4) == ids[3:7]


def test_job_ids_of_unknown_status_is_refused(queue: Queue) -> None:
    with pytest.raises(InvalidOption, match="unknown status"):
        queue.job_ids("running")


def test_fetch_info_reports_attempts_and_times(queue: Queue) -> None:
    job = queue.enqueue(add, 1)
    created = job.info().created_ms
    finish(queue, result=1)
    info = job.info()
    assert info.attempts == 1
    assert created is not None and info.started_ms is not None and info.ended_ms is not None
    assert created <= info.started_ms <= info.ended_ms


# -- Job.fetch --------------------------------------------------------------------------------


def test_job_fetch_without_queue_finds_the_job(conn: redis.Redis) -> None:
    Queue("alpha", connection=conn).enqueue(add, 1)
    job = Queue("beta", connection=conn).enqueue(add, 2, job_id="wanted")
    found = Job.fetch("wanted", connection=conn)
    assert found == job
    assert found.queue.name == "beta"
    assert found.info().args == [2]


def test_job_fetch_with_queue_name(conn: redis.Redis) -> None:
    Queue("beta", connection=conn).enqueue(add, 2, job_id="wanted")
    assert Job.fetch("wanted", connection=conn, queue="beta").queue.name == "beta"


def test_job_fetch_of_unknown_id_raises_job_not_found(conn: redis.Redis) -> None:
    Queue("alpha", connection=conn).enqueue(add, 1)
    with pytest.raises(JobNotFound):
        Job.fetch("missing", connection=conn)


def test_job_fetch_of_unknown_id_in_a_queue_raises_job_not_found(conn: redis.Redis) -> None:
    Queue("alpha", connection=conn).enqueue(add, 1)
    with pytest.raises(JobNotFound):
        Job.fetch("missing", connection=conn, queue="alpha")


def test_job_fetch_with_no_queues_raises_job_not_found(conn: redis.Redis) -> None:
    with pytest.raises(JobNotFound):
        Job.fetch("missing", connection=conn)


def test_queue_fetch_job_of_unknown_id_raises_job_not_found(queue: Queue) -> None:
    with pytest.raises(JobNotFound):
        queue.fetch_job("missing")
