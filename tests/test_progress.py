"""Progress: `current_job().set_progress(value)` inside a handler, shown in `Job.info().progress`.

Any JSON value, size-capped; cheap to call often: at most one write per PROGRESS_INTERVAL_S
reaches Redis (the latest value wins), and the value held back is written by the end of the run.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis
from helpers import start_worker, stop_worker, wait_until

from pyscheduler import InvalidOption, LeaseLost, PayloadNotJSON, PayloadTooLarge, Queue
from pyscheduler.runtime.context import JobContext
from pyscheduler.store import calls
from pyscheduler.store.protocol import PROGRESS_DEPTH_MAX, PROGRESS_MAX_BYTES

# Not marked `cluster`: every call here touches one queue, whose keys share one slot, so a
# cluster run would repeat the one-server run (test_dependencies.py is the one that crosses shards).


def leased_context(conn: Any, queue: Queue) -> JobContext:
    """The context a worker would give the handler of the next job (leased here)."""
    (lease,) = calls.pop(conn, queue.keys, 1, 10_000, "test-worker").leases
    return JobContext(
        conn, queue.name, lease.id, lease.token, json.loads(lease.record), None, 10_000
    )


def fcalls(conn: Any) -> int:
    stats = conn.info("commandstats")
    if "cmdstat_fcall" in stats:
        return int(stats["cmdstat_fcall"]["calls"])
    # A cluster client answers per node.
    return sum(int(node.get("cmdstat_fcall", {}).get("calls", 0)) for node in stats.values())


def test_progress_reported_by_a_running_handler_shows_in_job_info(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue = Queue("prog", connection=conn)
    proc, log = start_worker(workers, "prog")
    job = queue.enqueue("schedule_tasks:report_progress", redis_url, "go", 50)

    wait_until(lambda: job.info().progress == {"done": 50}, what="the last progress value")
    assert job.info().status == "active"
    conn.set("go", "1")
    assert job.wait(timeout=10) == 50
    assert job.info().progress == {"done": 50}  # kept after the job ended
    stop_worker(proc, log)


def test_the_last_progress_of_a_run_that_returns_at_once_is_written(
    conn: redis.Redis, workers: Any
) -> None:
    queue = Queue("prog2", connection=conn)
    proc, log = start_worker(workers, "prog2")
    job = queue.enqueue("schedule_tasks:progress_then_return", 200)
    assert job.wait(timeout=10) == 200
    assert job.info().progress == 200
    stop_worker(proc, log)


def test_a_job_without_progress_shows_none(conn: redis.Redis) -> None:
    job = Queue("prog3", connection=conn).enqueue("tasks:noop")
    assert job.info().progress is None
    assert "progress" not in job.info().record


def test_frequent_progress_reaches_redis_a_few_times_a_second(conn: redis.Redis) -> None:
    queue = Queue("prog4", connection=conn)
    queue.enqueue("tasks:noop")
    context = leased_context(conn, queue)
    before = fcalls(conn)
    started = time.monotonic()
    for step in range(200):
        context.set_progress(step)
        time.sleep(0.005)
    elapsed = time.monotonic() - started
    context.flush_progress()
    writes = fcalls(conn) - before

    assert writes <= elapsed / 0.25 + 2  # one per interval, plus the first and the flush
    assert queue.fetch_info(context.id).progress == 199


def test_a_held_back_value_is_written_when_the_interval_is_over(conn: redis.Redis) -> None:
    queue = Queue("prog5", connection=conn)
    queue.enqueue("tasks:noop")
    context = leased_context(conn, queue)
    context.set_progress("first")
    context.set_progress("second")  # within the interval: held back
    wait_until(
        lambda: queue.fetch_info(context.id).progress == "second", timeout=2, what="the timer"
    )


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ({1, 2}, PayloadNotJSON),
        ("x" * (PROGRESS_MAX_BYTES + 1), PayloadTooLarge),
        (
            json.loads("[" * (PROGRESS_DEPTH_MAX + 1) + "]" * (PROGRESS_DEPTH_MAX + 1)),
            InvalidOption,
        ),
    ],
)
def test_progress_that_cannot_be_stored_is_refused(
    conn: redis.Redis, value: Any, error: type[Exception]
) -> None:
    queue = Queue("prog6", connection=conn)
    queue.enqueue("tasks:noop")
    context = leased_context(conn, queue)
    with pytest.raises(error):
        context.set_progress(value)
    assert queue.fetch_info(context.id).progress is None


def test_the_library_takes_progress_only_from_the_lease_holder(conn: redis.Redis) -> None:
    queue = Queue("prog7", connection=conn)
    queue.enqueue("tasks:noop")
    context = leased_context(conn, queue)
    with pytest.raises(LeaseLost):
        calls.set_progress(conn, queue.keys, context.id, "0" * 32, '"forged"')
    with pytest.raises(PayloadTooLarge):
        calls.set_progress(conn, queue.keys, context.id, context.token, '"' + "x" * 5000 + '"')
    deep = "[" * (PROGRESS_DEPTH_MAX + 1) + "]" * (PROGRESS_DEPTH_MAX + 1)
    with pytest.raises(InvalidOption):
        calls.set_progress(conn, queue.keys, context.id, context.token, deep)
    assert queue.fetch_info(context.id).progress is None


def test_the_command_line_shows_a_jobs_progress(conn: redis.Redis, redis_url: str) -> None:
    from click.testing import CliRunner

    from pyscheduler.ops.cli import main

    queue = Queue("prog8", connection=conn)
    queue.enqueue("tasks:noop")
    context = leased_context(conn, queue)
    context.set_progress({"rows": 1200})
    runner = CliRunner(env={"COLUMNS": None})  # piped output is wide, whatever COLUMNS says
    shown = runner.invoke(main, ["job", context.id, "--queue", "prog8", "--url", redis_url])
    assert shown.exit_code == 0, shown.output
    assert "progress" in shown.output and '"rows": 1200' in shown.output
    listed = runner.invoke(main, ["jobs", "prog8", "--status", "active", "--url", redis_url])
    assert listed.exit_code == 0 and '{"rows": 1200}' in listed.output
    as_json = runner.invoke(main, ["job", context.id, "--json", "--url", redis_url])
    assert json.loads(as_json.output)["progress"] == {"rows": 1200}
