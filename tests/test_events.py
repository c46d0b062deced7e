"""Job events: the library's calls write them to the queue's stream; Job.wait blocks on it;
`pyscheduler events` tails it."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
import redis
from helpers import cli_process, servers_of, terminate, wait_until

from pyscheduler import JobCancelled, JobFailed, Queue, WaitTimeout
from pyscheduler.client import events
from pyscheduler.store import calls
from pyscheduler.store.connection import connect
from pyscheduler.store.protocol import EVENT_IDS_MAX, EVENTS_MAXLEN, FailKind


def add(a: int, b: int = 0) -> int:
    return a + b


@pytest.fixture
def queue(conn: redis.Redis) -> Queue:
    return Queue("work", connection=conn)


def all_events(queue: Queue) -> list[tuple[str, str]]:
    """(event, job id) of every event kept, oldest first."""
    cursors = {queue.name: "0-0"}
    out: list[tuple[str, str]] = []
    while batch := events.read(queue.connection, cursors, None):
        out += ((e.event, e.job_id) for e in batch)
    return out


def pop(queue: Queue, n: int = 1) -> list[calls.Lease]:
    return calls.pop(queue.connection, queue.keys, n, 10_000, "w").leases


def test_a_job_run_to_completion_has_enqueued_started_and_completed_events(queue: Queue) -> None:
    job = queue.enqueue(add, 1)
    (lease,) = pop(queue)
    calls.complete(queue.connection, queue.keys, lease.id, lease.token, "1")
    assert all_events(queue) == [("enqueued", job.id), ("started", job.id), ("completed", job.id)]


def test_a_batch_of_jobs_is_one_entry_per_kind_of_event(queue: Queue, conn: redis.Redis) -> None:
    queue.enqueue_many([queue.prepare(add, (n,)) for n in range(5)])
    pop(queue, 5)
    assert conn.xlen(queue.keys.events) == 2  # enqueued, started
    assert [e for e, _ in all_events(queue)] == ["enqueued"] * 5 + ["started"] * 5


def test_an_entry_names_at_most_event_ids_max_jobs(queue: Queue, conn: redis.Redis) -> None:
    queue.enqueue_many([queue.prepare(add, (n,)) for n in range(EVENT_IDS_MAX + 1)])
    assert conn.xlen(queue.keys.events) == 2
    assert len(all_events(queue)) == EVENT_IDS_MAX + 1


def test_failures_retries_pauses_and_cancels_are_events(queue: Queue) -> None:
    retried = queue.enqueue(add, 1, retries=1, backoff=0)
    failed = queue.enqueue(add, 2)
    paused = queue.enqueue(add, 3)
    first, second, third = pop(queue, 3)
    conn, keys = queue.connection, queue.keys
    calls.fail(conn, keys, first.id, first.token, FailKind.ERROR, "boom", 0.5)
    calls.fail(conn, keys, second.id, second.token, FailKind.ERROR, "boom", 0.5)
    calls.checkpoint(conn, keys, third.id, third.token, "1", 10_000, True)
    cancelled = queue.enqueue(add, 4)
    cancelled.cancel()
    queue.retry([failed.id])
    seen = all_events(queue)
    for event in [
        ("retried", retried.id),
        ("failed", failed.id),
        ("paused", paused.id),
        ("cancelled", cancelled.id),
        ("retried", failed.id),
    ]:
        assert event in seen


def test_the_stream_is_trimmed_to_about_events_maxlen_entries(
    queue: Queue, conn: redis.Redis
) -> None:
    for n in range(EVENTS_MAXLEN + 300):
        queue.enqueue(add, n)
    # XADD MAXLEN ~ trims whole nodes of entries: a little over the bound, never far.
    assert EVENTS_MAXLEN <= conn.xlen(queue.keys.events) < EVENTS_MAXLEN + 300


def finish_later(queue: Queue, action: str, delay: float = 0.3) -> threading.Thread:
    """Lease the queue's next job and end it (`action`) in a thread, `delay` s from now."""

    def run() -> None:
        time.sleep(delay)
        (lease,) = pop(queue)
        conn, keys = queue.connection, queue.keys
        if action == "complete":
            calls.complete(conn, keys, lease.id, lease.token, "42")
        else:
            calls.fail(conn, keys, lease.id, lease.token, FailKind.ERROR, "boom", 0.5)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_wait_returns_the_result_once_the_job_completes(queue: Queue) -> None:
    job = queue.enqueue(add, 1)
    thread = finish_later(queue, "complete")
    assert job.wait(timeout=30) == 42
    thread.join()


def test_wait_raises_job_failed_once_the_job_fails(queue: Queue) -> None:
    job = queue.enqueue(add, 1)
    thread = finish_later(queue, "fail")
    with pytest.raises(JobFailed):
        job.wait(timeout=30)
    thread.join()


def test_wait_raises_job_cancelled_when_cancelled_while_waiting(queue: Queue) -> None:
    job = queue.enqueue(add, 1)
    timer = threading.Timer(0.3, job.cancel)
    timer.start()
    with pytest.raises(JobCancelled):
        job.wait(timeout=30)
    timer.join()


def test_wait_blocks_in_redis_instead_of_polling(queue: Queue, redis_url: str) -> None:
    job = queue.enqueue(add, 1)
    client = connect(redis_url)
    waiter = Queue("work", connection=client).fetch_job(job.id)
    before = command_calls(queue.connection)
    thread = finish_later(queue, "complete", delay=1.0)
    assert waiter.wait(timeout=30) == 42
    thread.join()
    used = command_calls(queue.connection) - before
    # A polling loop would have fetched the job (psq_fetch, an FCALL_RO) dozens of times in
    # that second; this one looks before it blocks and once the job ended.
    assert used["fcall_ro"] <= 3
    assert used["xread"] >= 1


def command_calls(conn: redis.Redis) -> Any:
    from collections import Counter

    out: Counter[str] = Counter()
    for server in servers_of(conn):
        stats: Any = server.info("commandstats")
        for name, value in stats.items():
            out[name.removeprefix("cmdstat_")] += int(value["calls"])
    return out


def test_wait_times_out_on_a_job_that_does_not_end(queue: Queue) -> None:
    job = queue.enqueue(add, 1)
    started = time.monotonic()
    with pytest.raises(WaitTimeout):
        job.wait(timeout=0.3)
    assert time.monotonic() - started < 10


def test_the_events_command_prints_a_line_per_job_and_event(queue: Queue, redis_url: str) -> None:
    job = queue.enqueue(add, 1)
    proc = cli_process("events", "work", "--from-start", "--count", "1", "--url", redis_url)
    output = terminate_after_exit(proc)
    assert f"work  enqueued   {job.id}" in output


def test_the_events_command_prints_json_lines(queue: Queue, redis_url: str) -> None:
    proc = cli_process("events", "work", "--json", "--count", "2", "--url", redis_url)
    job = wait_for_tail(queue, proc)
    (lease,) = pop(queue)
    output = terminate_after_exit(proc)
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert [(x["event"], x["id"]) for x in lines] == [("enqueued", job.id), ("started", lease.id)]


def wait_for_tail(queue: Queue, proc: Any) -> Any:
    """Enqueue a job once the tailing process reads the stream (its XREAD is blocked)."""

    def blocked() -> bool:
        clients: Any = [c for s in servers_of(queue.connection) for c in s.client_list()]
        return any("xread" in str(c.get("cmd", "")) for c in clients)

    wait_until(blocked, timeout=30, interval=0.05, what="the events command to block")
    return queue.enqueue(add, 1)


def terminate_after_exit(proc: Any) -> str:
    try:
        output, _ = proc.communicate(timeout=30)
        return str(output)
    except Exception:
        return terminate(proc)
