"""The `pyscheduler` command line, run in-process with click's CliRunner against a real Redis.

Jobs are leased and failed with the `calls` wrappers directly; no worker is involved.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any

import pytest
import redis
from click.testing import CliRunner, Result
from helpers import wait_until

from pyscheduler import Queue, Status
from pyscheduler.dev.engine import free_port
from pyscheduler.ops.cli import EXIT_PROBLEM, EXIT_REDIS, EXIT_USAGE, main
from pyscheduler.store import calls
from pyscheduler.store.protocol import FailKind

pytestmark = pytest.mark.cluster  # also on a local Redis Cluster (conftest.py)

TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "tasks.py", line 3, in crunch\n'
    "    raise ValueError(f'bad row {row}')\n"
    "ValueError: bad row [7]\n"
)

COMMANDS = [
    "worker",
    "pool",
    "enqueue",
    "stats",
    "jobs",
    "job",
    "retry",
    "cancel",
    "purge",
    "pause",
    "resume",
    "limit",
    "load-scripts",
    "demo",
    "dashboard",
    "schedules",
]


def cli(*args: str, url: str | None = None, input: str | None = None) -> Result:
    """Run `pyscheduler COMMAND --url URL ARGS`; piped output is wide, whatever COLUMNS says."""
    argv = [args[0], "--url", url, *args[1:]] if url is not None else list(args)
    env: Mapping[str, str | None] = {"COLUMNS": None}
    return CliRunner().invoke(main, argv, input=input, env=env, catch_exceptions=False)


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def queue(conn: redis.Redis) -> Queue:
    return Queue("work", connection=conn)


def enqueue(queue: Queue, *args: Any, **options: Any) -> str:
    return queue.enqueue_call("tasks:add", list(args), None, **options).id


def failed_job(queue: Queue, error: str = TRACEBACK) -> str:
    """Enqueue a job without retries, lease it and fail it with `error`."""
    job_id = enqueue(queue, 1, 2, retries=0)
    (lease,) = calls.pop(queue.connection, queue.keys, 1, 10_000, "test").leases
    assert lease.id == job_id
    status, _ = calls.fail(
        queue.connection, queue.keys, lease.id, lease.token, FailKind.ERROR, error, 0.0
    )
    assert status == Status.FAILED
    return job_id


def popped(queue: Queue) -> list[str]:
    return [lease.id for lease in calls.pop(queue.connection, queue.keys, 10, 10_000, "t").leases]


# -- help and exit codes ----------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = ok(cli(command, "--help"))
    assert result.output.startswith("Usage: ")
    assert command in result.output.splitlines()[0]


def test_the_group_lists_every_command() -> None:
    output = ok(cli("--help")).output
    for command in COMMANDS:
        assert f"  {command} " in output


@pytest.mark.parametrize(
    "args",
    [
        ("stats",),
        ("jobs", "work"),
        ("job", "some-id"),
        ("enqueue", "work", "tasks:add", "1"),
        ("retry", "work", "--all"),
        ("cancel", "some-id"),
        ("purge", "work", "--status", "failed", "--yes"),
        ("pause", "work"),
        ("limit", "work"),
        ("load-scripts",),
    ],
    ids=lambda args: args[0],
)
def test_unreachable_redis_exits_3_naming_the_url(args: tuple[str, ...]) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    result = cli(*args, url=url)
    assert result.exit_code == EXIT_REDIS, result.output
    assert f"cannot reach Redis at {url}" in result.stderr
    assert "Traceback" not in result.output


def test_error_messages_hide_the_password() -> None:
    url = f"redis://app:s3cret@127.0.0.1:{free_port()}/0"
    result = cli("stats", url=url)
    assert result.exit_code == EXIT_REDIS
    assert "s3cret" not in result.output
    assert "redis://app:***@127.0.0.1" in result.stderr


def test_missing_library_exits_3_naming_load_scripts(conn: redis.Redis, redis_url: str) -> None:
    conn.function_flush()
    result = cli("jobs", "work", url=redis_url)
    assert result.exit_code == EXIT_REDIS, result.output
    assert "pyscheduler load-scripts" in result.stderr


def test_load_scripts_then_commands_work(conn: redis.Redis, redis_url: str) -> None:
    conn.function_flush()
    assert "loaded pyscheduler library" in ok(cli("load-scripts", url=redis_url)).output
    ok(cli("jobs", "work", url=redis_url))


def test_invalid_queue_name_exits_2(conn: redis.Redis, redis_url: str) -> None:
    result = cli("jobs", "no spaces", url=redis_url)
    assert result.exit_code == EXIT_USAGE
    assert "invalid queue name" in result.stderr


def test_url_comes_from_redis_url_env(queue: Queue, redis_url: str) -> None:
    enqueue(queue, 1, 2)
    result = CliRunner().invoke(main, ["stats", "--json"], env={"REDIS_URL": redis_url})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["queued"] == 1


# -- enqueue ----------------------------------------------------------------------------------


def test_enqueue_then_stats_shows_the_count(conn: redis.Redis, redis_url: str) -> None:
    for n in range(3):
        ok(cli("enqueue", "work", "tasks:add", str(n), "1", url=redis_url))
    (row,) = [
        line for line in ok(cli("stats", url=redis_url)).stdout.splitlines() if "work" in line
    ]
    cells = [cell.strip() for cell in row.strip("│┃ ").split("│")]
    assert cells[:3] == ["work", "3", "0"]  # queue, ready, delayed


def test_enqueue_prints_the_job_id_and_takes_json_args_and_options(
    queue: Queue, redis_url: str
) -> None:
    result = cli(
        "enqueue",
        *("work", "tasks:greet", '"Ada"', "[1, 2]", "null"),
        *("--kwargs", '{"loud": true}', "--priority", "7", "--job-id", "greet-1"),
        url=redis_url,
    )
    assert ok(result).stdout.strip() == "greet-1"
    info = queue.fetch_info("greet-1")
    assert (info.func, info.args, info.kwargs) == (
        "tasks:greet",
        ["Ada", [1, 2], None],
        {"loud": True},
    )
    assert info.priority == 7


def test_enqueue_takes_negative_numbers_after_double_dash(queue: Queue, redis_url: str) -> None:
    job_id = ok(cli("enqueue", "work", "tasks:add", "--", "-1", "2", url=redis_url)).stdout
    assert queue.fetch_info(job_id.strip()).args == [-1, 2]


def test_enqueue_with_delay_makes_a_delayed_job(queue: Queue, redis_url: str) -> None:
    ok(cli("enqueue", "work", "tasks:add", "1", "2", "--delay", "60", url=redis_url))
    assert queue.stats().delayed == 1


def test_enqueue_non_json_argument_exits_2(queue: Queue, redis_url: str) -> None:
    result = cli("enqueue", "work", "tasks:greet", "Ada", url=redis_url)
    assert result.exit_code == EXIT_USAGE
    assert "'Ada' is not a JSON value" in result.stderr
    assert queue.stats().queued == 0


def test_enqueue_kwargs_must_be_a_json_object(queue: Queue, redis_url: str) -> None:
    result = cli("enqueue", "work", "tasks:add", "--kwargs", "[1]", url=redis_url)
    assert result.exit_code == EXIT_USAGE
    assert "JSON object" in result.stderr


def test_enqueue_invalid_option_exits_2(queue: Queue, redis_url: str) -> None:
    result = cli("enqueue", "work", "tasks:add", "--priority", "5000", url=redis_url)
    assert result.exit_code == EXIT_USAGE
    assert "priority" in result.stderr


def test_enqueue_wait_prints_the_result(queue: Queue, redis_url: str) -> None:
    def serve() -> None:
        lease = wait_until(lambda: calls.pop(queue.connection, queue.keys, 1, 10_000, "t").leases)
        calls.complete(queue.connection, queue.keys, lease[0].id, lease[0].token, '{"sum": 3}')

    server = threading.Thread(target=serve)
    server.start()
    try:
        result = cli("enqueue", "work", "tasks:add", "1", "2", "--wait", "10", url=redis_url)
    finally:
        server.join(timeout=15)
    assert json.loads(ok(result).stdout) == {"sum": 3}
    assert "enqueued on work" in result.stderr


def test_enqueue_wait_exits_1_when_the_job_is_not_done_in_time(
    queue: Queue, redis_url: str
) -> None:
    result = cli("enqueue", "work", "tasks:add", "1", "2", "--wait", "0.2", url=redis_url)
    assert result.exit_code == EXIT_PROBLEM
    assert "still queued" in result.stderr


# -- stats ------------------------------------------------------------------------------------


def test_stats_json_lists_every_known_queue(conn: redis.Redis, redis_url: str) -> None:
    enqueue(Queue("alpha", connection=conn), 1, 2)
    enqueue(Queue("beta", connection=conn), 1, 2, delay=60)
    failed_job(Queue("gamma", connection=conn))
    data = json.loads(ok(cli("stats", "--json", url=redis_url)).stdout)
    by_name = {s["name"]: s for s in data}
    assert list(by_name) == ["alpha", "beta", "gamma"]
    assert (by_name["alpha"]["queued"], by_name["alpha"]["oldest_ready_age"] >= 0) == (1, True)
    assert (by_name["beta"]["delayed"], by_name["beta"]["oldest_ready_age"]) == (1, None)
    assert by_name["gamma"]["failed"] == 1


def test_stats_of_named_queues_only(conn: redis.Redis, redis_url: str) -> None:
    enqueue(Queue("alpha", connection=conn), 1, 2)
    enqueue(Queue("beta", connection=conn), 1, 2)
    data = json.loads(ok(cli("stats", "beta", "--json", url=redis_url)).stdout)
    assert [s["name"] for s in data] == ["beta"]


def test_stats_table_shows_paused_and_limits(queue: Queue, redis_url: str) -> None:
    enqueue(queue, 1, 2)
    queue.pause()
    queue.set_limits(concurrency=4, rate=10, period=2)
    output = ok(cli("stats", url=redis_url)).stdout
    for heading in ("ready", "delayed", "active", "failed", "paused", "oldest ready"):
        assert heading in output
    assert "concurrency 4, rate 10/2s" in output
    assert output.count("paused") == 2  # heading and cell


def test_stats_without_queues_says_so(conn: redis.Redis, redis_url: str) -> None:
    assert "no queues yet" in ok(cli("stats", url=redis_url)).stdout


def test_stats_watch_refreshes_until_count(queue: Queue, redis_url: str) -> None:
    enqueue(queue, 1, 2)
    result = ok(cli("stats", "--watch", "0.1", "--count", "2", url=redis_url))
    assert "work" in result.stdout
    assert "every 0.1s" in result.stdout
    assert result.stdout.endswith("\n")


def test_stats_watch_json_prints_a_line_per_refresh(queue: Queue, redis_url: str) -> None:
    enqueue(queue, 1, 2)
    result = ok(cli("stats", "--watch", "0.1", "--count", "3", "--json", url=redis_url))
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    assert all(json.loads(line)[0]["queued"] == 1 for line in lines)


# -- jobs and job -----------------------------------------------------------------------------


def test_jobs_lists_by_state(queue: Queue, redis_url: str) -> None:
    failed = failed_job(queue)
    queued = enqueue(queue, 1, 2)
    queued_out = ok(cli("jobs", "work", url=redis_url)).stdout
    assert queued in queued_out
    assert failed not in queued_out
    failed_out = ok(cli("jobs", "work", "--status", "failed", url=redis_url)).stdout
    assert failed in failed_out
    assert queued not in failed_out
    assert "ValueError: bad row [7]" in failed_out  # the error's last line, not markup


def test_jobs_json_is_paged(queue: Queue, redis_url: str) -> None:
    ids = [enqueue(queue, n, 0) for n in range(5)]
    args = ("jobs", "work", "--json", "--offset", "1", "--limit", "3")
    page = json.loads(ok(cli(*args, url=redis_url)).stdout)
    assert [j["id"] for j in page] == ids[1:4]
    assert {j["status"] for j in page} == {"queued"}


def test_jobs_table_names_the_next_page(queue: Queue, redis_url: str) -> None:
    for n in range(3):
        enqueue(queue, n, 0)
    output = ok(cli("jobs", "work", "--limit", "2", url=redis_url)).stdout
    assert "--offset 2" in output


def test_jobs_unknown_status_exits_2(queue: Queue, redis_url: str) -> None:
    assert cli("jobs", "work", "--status", "lost", url=redis_url).exit_code == EXIT_USAGE


def test_job_shows_the_traceback_of_a_failed_job(queue: Queue, redis_url: str) -> None:
    job_id = failed_job(queue)
    output = ok(cli("job", job_id, url=redis_url)).stdout
    assert job_id in output
    assert "failed" in output
    assert "[1, 2]" in output  # the args
    assert TRACEBACK.strip() in output


def test_job_json_with_queue(queue: Queue, redis_url: str) -> None:
    job_id = failed_job(queue)
    data = json.loads(ok(cli("job", job_id, "--queue", "work", "--json", url=redis_url)).stdout)
    assert (data["id"], data["status"], data["error"]) == (job_id, "failed", TRACEBACK)
    assert data["args"] == [1, 2]


def test_job_unknown_exits_1(conn: redis.Redis, redis_url: str) -> None:
    result = cli("job", "no-such-job", url=redis_url)
    assert result.exit_code == EXIT_PROBLEM
    assert "no-such-job" in result.stderr


# -- retry, cancel, purge ---------------------------------------------------------------------


def test_retry_moves_a_failed_job_back_to_queued(queue: Queue, redis_url: str) -> None:
    job_id = failed_job(queue)
    ok(cli("retry", "work", job_id, url=redis_url))
    assert queue.fetch_info(job_id).status == Status.QUEUED
    assert popped(queue) == [job_id]


def test_retry_all_moves_every_failed_job(queue: Queue, redis_url: str) -> None:
    ids = {failed_job(queue) for _ in range(3)}
    output = ok(cli("retry", "work", "--all", url=redis_url)).stdout
    assert "retried 3 failed jobs" in output
    assert set(popped(queue)) == ids


def test_retry_of_a_job_that_did_not_fail_exits_1(queue: Queue, redis_url: str) -> None:
    failed = failed_job(queue)
    queued = enqueue(queue, 1, 2)
    result = cli("retry", "work", failed, queued, url=redis_url)
    assert result.exit_code == EXIT_PROBLEM
    assert "1 job not retried" in result.stderr
    assert queue.fetch_info(failed).status == Status.QUEUED


def test_retry_needs_ids_or_all(queue: Queue, redis_url: str) -> None:
    assert cli("retry", "work", url=redis_url).exit_code == EXIT_USAGE


def test_cancel_cancels_queued_jobs(queue: Queue, redis_url: str) -> None:
    ids = [enqueue(queue, n, 0) for n in range(2)]
    output = ok(cli("cancel", *ids, url=redis_url)).stdout
    assert output.count("(was queued)") == 2
    assert {queue.fetch_info(i).status for i in ids} == {Status.CANCELLED}
    assert popped(queue) == []


def test_cancel_of_a_missing_or_ended_job_exits_1(queue: Queue, redis_url: str) -> None:
    failed = failed_job(queue)
    queued = enqueue(queue, 1, 2)
    result = cli("cancel", "missing", failed, queued, "--queue", "work", url=redis_url)
    assert result.exit_code == EXIT_PROBLEM
    assert "2 of 3 jobs not cancelled" in result.stderr
    assert queue.fetch_info(queued).status == Status.CANCELLED  # the others still go through


def test_purge_yes_deletes_failed_jobs(queue: Queue, redis_url: str) -> None:
    ids = [failed_job(queue) for _ in range(3)]
    kept = enqueue(queue, 1, 2)
    output = ok(cli("purge", "work", "--status", "failed", "--yes", url=redis_url)).stdout
    assert "deleted 3 failed jobs" in output
    assert queue.stats().failed == 0
    assert queue.job_ids(Status.QUEUED) == [kept]
    for job_id in ids:
        assert cli("job", job_id, url=redis_url).exit_code == EXIT_PROBLEM


def test_purge_listed_jobs_only(queue: Queue, redis_url: str) -> None:
    first, second = failed_job(queue), failed_job(queue)
    ok(cli("purge", "work", first, "--status", "failed", "--yes", url=redis_url))
    assert queue.job_ids(Status.FAILED) == [second]


def test_purge_asks_and_declining_keeps_the_jobs(queue: Queue, redis_url: str) -> None:
    failed_job(queue)
    result = cli("purge", "work", "--status", "failed", url=redis_url, input="n\n")
    assert result.exit_code == EXIT_PROBLEM
    assert "Delete the 1 failed job of queue work?" in result.output
    assert queue.stats().failed == 1


def test_purge_asks_and_confirming_deletes(queue: Queue, redis_url: str) -> None:
    failed_job(queue)
    ok(cli("purge", "work", "--status", "failed", url=redis_url, input="y\n"))
    assert queue.stats().failed == 0


def test_purge_needs_a_final_status(queue: Queue, redis_url: str) -> None:
    result = cli("purge", "work", "--status", "queued", "--yes", url=redis_url)
    assert result.exit_code == EXIT_USAGE


# -- pause, resume, limit ---------------------------------------------------------------------


def test_pause_then_pop_returns_nothing(queue: Queue, redis_url: str) -> None:
    job_id = enqueue(queue, 1, 2)
    ok(cli("pause", "work", url=redis_url))
    assert popped(queue) == []
    assert queue.stats().paused
    ok(cli("resume", "work", url=redis_url))
    assert popped(queue) == [job_id]


def test_limit_sets_and_shows(queue: Queue, redis_url: str) -> None:
    assert "no limits" in ok(cli("limit", "work", url=redis_url)).stdout
    ok(cli("limit", "work", "--concurrency", "3", url=redis_url))
    ok(cli("limit", "work", "--rate", "10", "--per", "2", url=redis_url))  # keeps concurrency
    assert "concurrency 3, rate 10/2s" in ok(cli("limit", "work", url=redis_url)).stdout
    data = json.loads(ok(cli("limit", "work", "--json", url=redis_url)).stdout)
    assert data == {"concurrency": 3, "rate": 10, "period": 2.0}


def test_limit_clears(queue: Queue, redis_url: str) -> None:
    queue.set_limits(concurrency=3, rate=10, period=2)
    ok(cli("limit", "work", "--no-rate", url=redis_url))
    assert queue.stats().limits.rate is None
    assert queue.stats().limits.concurrency == 3
    ok(cli("limit", "work", "--concurrency", "none", url=redis_url))
    assert queue.stats().limits.concurrency is None


def test_limit_concurrency_is_enforced(queue: Queue, redis_url: str) -> None:
    for n in range(3):
        enqueue(queue, n, 0)
    ok(cli("limit", "work", "--concurrency", "2", url=redis_url))
    assert len(popped(queue)) == 2


@pytest.mark.parametrize(
    "options",
    [
        ("--concurrency", "0"),
        ("--concurrency", "many"),
        ("--rate", "0"),
        ("--no-rate", "--rate", "3"),
    ],
)
def test_limit_bad_values_exit_2(queue: Queue, redis_url: str, options: tuple[str, ...]) -> None:
    assert cli("limit", "work", *options, url=redis_url).exit_code == EXIT_USAGE
