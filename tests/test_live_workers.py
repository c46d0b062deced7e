"""Live workers (issue 10, point 8): heartbeats in the keys of each queue a worker takes,
expiry of a worker that stops beating, leaving, the list in Python and on the command line.

A `Heartbeat` driven from the test process stands for a worker: one that stops calling
`beat` is a worker that died.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Any

import pytest
import redis
from click.testing import CliRunner, Result
from helpers import all_keys, counting_client, server_ms, snapshot, wait_until

from pyscheduler import Queue
from pyscheduler.dev.engine import free_port
from pyscheduler.exceptions import InvalidOption
from pyscheduler.ops.cli import EXIT_REDIS, EXIT_USAGE, main
from pyscheduler.runtime.live_workers import (
    Heartbeat,
    LiveWorker,
    heartbeat_ttl,
    list_page,
    list_workers,
)
from pyscheduler.store.keys import QUEUES_KEY, QueueKeys
from pyscheduler.store.operations import keys_for
from pyscheduler.store.protocol import WORKER_JOBS_MAX, WORKER_TTL_MS_MAX, WORKERS_PAGE_MAX

pytestmark = pytest.mark.cluster  # also on a local Redis Cluster (conftest.py)

Snapshot = dict[bytes, bytes | None]

SHORT = 0.2  # seconds between heartbeats where a test waits for an expiry


def heartbeat(
    conn: redis.Redis, *queues: str, name: str = "w1", interval: float = 5.0, **options: Any
) -> Heartbeat:
    return Heartbeat(
        conn, [QueueKeys(q) for q in queues or ("work",)], name, 4, interval, **options
    )


def names(conn: redis.Redis, queues: list[str] | None = None) -> list[str]:
    return [w.name for w in list_workers(conn, queues)]


def only_worker(conn: redis.Redis) -> LiveWorker:
    (worker,) = list_workers(conn)
    return worker


def cli(*args: str) -> Result:
    env: Mapping[str, str | None] = {"COLUMNS": None}
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


# -- registering ------------------------------------------------------------------------------


def test_heartbeat_registers_a_worker_with_its_fields(conn: redis.Redis) -> None:
    now = time.monotonic()
    beat = heartbeat(conn, "fast", "slow", started=now - 60)
    before = server_ms(conn)
    assert beat.beat(now, [("job-1", "slow", now - 3.0)], processed=12, failed=2)
    worker = only_worker(conn)
    assert worker.name == "w1"
    assert worker.host == socket.gethostname()
    assert worker.pid == os.getpid()
    assert worker.queues == ("fast", "slow")
    assert worker.concurrency == 4
    assert (worker.processed, worker.failed) == (12, 2)
    # Times on the server's clock, from run times the worker measured (loose bounds).
    assert before - 1000 <= worker.last_beat_ms <= server_ms(conn)
    assert 59_000 <= worker.last_beat_ms - worker.started_ms <= 61_000
    (job,) = worker.jobs
    assert (job.id, job.queue) == ("job-1", "slow")
    assert 2_900 <= worker.last_beat_ms - job.started_ms <= 3_100
    assert worker.expires_ms - worker.last_beat_ms == beat.ttl_ms


def test_heartbeat_keeps_the_worker_listed_for_two_intervals_and_a_little() -> None:
    for interval in (0.2, 1.0, 5.0, 60.0):
        assert 2 * interval < heartbeat_ttl(interval) <= 2 * interval + 1.0


def test_a_worker_on_several_queues_is_listed_once(conn: redis.Redis) -> None:
    heartbeat(conn, "a", "b", "c").beat(time.monotonic())
    assert names(conn) == ["w1"]
    assert names(conn, ["b"]) == ["w1"]
    assert names(conn, ["other"]) == []


def test_a_worker_taking_a_queue_makes_it_known(conn: redis.Redis) -> None:
    heartbeat(conn, "new-queue").beat(time.monotonic())
    assert Queue.known(conn) == ["new-queue"]


def test_beat_is_a_no_op_until_the_interval_has_passed(conn: redis.Redis) -> None:
    beat = heartbeat(conn, interval=5.0)
    now = time.monotonic()
    assert beat.beat(now, processed=1)
    assert not beat.beat(now + 1.0, processed=2)
    assert only_worker(conn).processed == 1
    assert beat.due_in(now + 1.0) == pytest.approx(4.0)
    assert beat.beat(now + 5.0, processed=3)
    assert only_worker(conn).processed == 3


def test_a_heartbeat_lists_the_longest_running_jobs_when_there_are_too_many(
    conn: redis.Redis,
) -> None:
    now = time.monotonic()
    jobs = [(f"j{i}", "work", now - i) for i in range(WORKER_JOBS_MAX + 5)]
    heartbeat(conn).beat(now, jobs)
    listed = {job.id for job in only_worker(conn).jobs}
    assert len(listed) == WORKER_JOBS_MAX
    assert f"j{WORKER_JOBS_MAX + 4}" in listed and "j0" not in listed


def test_a_job_that_has_not_started_is_not_listed(conn: redis.Redis) -> None:
    now = time.monotonic()
    heartbeat(conn).beat(now, [("running", "work", now - 1.0), ("prefetched", "work", None)])
    assert [job.id for job in only_worker(conn).jobs] == ["running"]


# -- leaving and dying ------------------------------------------------------------------------


def test_leave_removes_the_worker_at_once(conn: redis.Redis) -> None:
    beat = heartbeat(conn, "a", "b")
    beat.beat(time.monotonic())
    beat.leave()
    assert names(conn) == []
    for q in ("a", "b"):
        keys = QueueKeys(q)
        assert conn.zscore(keys.workers, "w1") is None
        assert not conn.hexists(keys.worker_info, "w1")


def test_a_worker_whose_heartbeats_stop_disappears_after_its_expiry(conn: redis.Redis) -> None:
    alive = heartbeat(conn, name="alive", interval=SHORT)
    dead = heartbeat(conn, name="dead", interval=SHORT)
    alive.beat(time.monotonic())
    dead.beat(time.monotonic())
    assert names(conn) == ["alive", "dead"]

    def only_alive_left() -> bool:
        alive.beat(time.monotonic())
        return names(conn) == ["alive"]

    wait_until(only_alive_left, timeout=30, what="the worker that stopped beating to disappear")


BEATING_PROCESS = """
import sys, time
from pyscheduler.store.connection import connect
from pyscheduler.store.keys import QueueKeys
from pyscheduler.runtime.live_workers import Heartbeat
beat = Heartbeat(connect(sys.argv[1]), [QueueKeys("work")], "doomed", 1, %r)
while True:
    beat.beat(time.monotonic())
    time.sleep(0.01)
"""


def test_a_killed_process_disappears_from_the_list(conn: redis.Redis, redis_url: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", BEATING_PROCESS % SHORT, redis_url])
    try:
        wait_until(lambda: names(conn) == ["doomed"], timeout=30, what="the process to register")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        wait_until(lambda: names(conn) == [], timeout=30, what="the killed process to disappear")
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_a_heartbeat_drops_the_records_of_expired_workers(conn: redis.Redis) -> None:
    keys = QueueKeys("work")
    heartbeat(conn, name="dead", interval=SHORT).beat(time.monotonic())
    wait_until(lambda: names(conn) == [], timeout=30, what="the worker to expire")
    heartbeat(conn, name="alive").beat(time.monotonic())
    assert conn.hkeys(keys.worker_info) == [b"alive"]
    assert conn.zrange(keys.workers, 0, -1) == [b"alive"]


def test_the_keys_of_a_queue_whose_workers_died_expire(conn: redis.Redis) -> None:
    keys = QueueKeys("work")
    heartbeat(conn, interval=SHORT).beat(time.monotonic())
    assert conn.exists(keys.workers, keys.worker_info) == 2
    wait_until(
        lambda: conn.exists(keys.workers, keys.worker_info) == 0,
        timeout=30,
        what="the keys to expire",
    )


# -- keys and bad input -----------------------------------------------------------------------


def test_heartbeat_keys_are_under_each_queues_hash_tag(conn: redis.Redis) -> None:
    heartbeat(conn, "a", "b").beat(time.monotonic())
    assert all_keys(conn) == sorted(
        [
            QUEUES_KEY.encode(),
            b"psq:{a}:workers",
            b"psq:{a}:worker_info",
            b"psq:{b}:workers",
            b"psq:{b}:worker_info",
        ]
    )
    assert keys_for("psq_heartbeat", QueueKeys("a")) == ["psq:{a}:workers", "psq:{a}:worker_info"]


@pytest.mark.one_server("keys of two queues: a cluster client refuses them before the library")
def test_heartbeat_refuses_keys_of_two_queues(conn: redis.Redis) -> None:
    keys = [QueueKeys("a").workers, QueueKeys("b").worker_info]
    with pytest.raises(redis.ResponseError, match=r"^PSQ_BAD_KEYS"):
        conn.fcall("psq_heartbeat", 2, *keys, "w", 0)


def good_args(queue: str = "work") -> list[Any]:
    """name, ttl_ms, host, pid, concurrency, uptime_ms, processed, failed, queue count,
    queues, then job triples."""
    return ["w2", 10_000, "host", 123, 2, 5000, 1, 0, 1, queue, "j1", queue, 250]


def with_arg(index: int, value: Any) -> list[Any]:
    args = good_args()
    args[index] = value
    return args


BAD_HEARTBEATS = {
    "empty name": with_arg(0, ""),
    "name with a newline": with_arg(0, "w\n2"),
    "name too long": with_arg(0, "w" * 257),
    "negative ttl": with_arg(1, -1),
    "ttl too long": with_arg(1, WORKER_TTL_MS_MAX + 1),
    "ttl not a number": with_arg(1, "soon"),
    "leaving with more arguments": ["w2", 0, "host"],
    "empty host": with_arg(2, ""),
    "pid 0": with_arg(3, 0),
    "concurrency 0": with_arg(4, 0),
    "fractional uptime": with_arg(5, "1.5"),
    "negative processed": with_arg(6, -1),
    "failed not a number": with_arg(7, "x"),
    "no queues": with_arg(8, 0),
    "more queues than given": with_arg(8, 5),
    "invalid queue name": with_arg(9, "bad name"),
    "queues without the call's queue": with_arg(9, "other"),
    "queue listed twice": [*good_args()[:8], 2, "work", "work"],
    "incomplete job triple": good_args()[:-1],
    "job of a queue not listed": with_arg(11, "other"),
    "invalid job id": with_arg(10, "bad id"),
    "negative run time": with_arg(12, -5),
    "too many jobs": [*good_args()[:10], *(["j", "work", 1] * (WORKER_JOBS_MAX + 1))],
}


@pytest.mark.parametrize("args", BAD_HEARTBEATS.values(), ids=BAD_HEARTBEATS.keys())
def test_bad_heartbeat_arguments_are_refused_with_nothing_written(
    conn: redis.Redis, args: list[Any]
) -> None:
    heartbeat(conn, "work", name="w2").beat(time.monotonic())  # an entry a bad call could spoil
    before = snapshot(conn)
    keys = keys_for("psq_heartbeat", QueueKeys("work"))
    with pytest.raises(redis.ResponseError, match=r"^PSQ_BAD_ARGUMENT"):
        conn.fcall("psq_heartbeat", len(keys), *keys, *args)
    assert snapshot(conn) == before


def test_a_good_heartbeat_call_is_stored(conn: redis.Redis) -> None:
    keys = keys_for("psq_heartbeat", QueueKeys("work"))
    expires = conn.fcall("psq_heartbeat", len(keys), *keys, *good_args())
    assert expires > server_ms(conn)
    assert [w.name for w in list_workers(conn, ["work"])] == ["w2"]


BAD_LIST_CALLS = {
    "cursor not a number": ["abc", 10],
    "cursor with a leading zero": ["01", 10],
    "cursor above 2^53-1": ["9007199254740992", 10],
    "count 0": ["0", 0],
    "count above the page size": ["0", WORKERS_PAGE_MAX + 1],
    "missing count": ["0"],
}


@pytest.mark.parametrize("args", BAD_LIST_CALLS.values(), ids=BAD_LIST_CALLS.keys())
def test_bad_list_workers_arguments_are_refused(conn: redis.Redis, args: list[Any]) -> None:
    keys = keys_for("psq_list_workers", QueueKeys("work"))
    with pytest.raises(redis.ResponseError, match=r"^PSQ_BAD_ARGUMENT"):
        conn.fcall_ro("psq_list_workers", len(keys), *keys, *args)


def test_list_workers_refuses_keys_it_does_not_take(conn: redis.Redis) -> None:
    keys = QueueKeys("work")
    with pytest.raises(redis.ResponseError, match=r"^PSQ_BAD_KEYS"):
        conn.fcall_ro("psq_list_workers", 2, keys.jobs, keys.worker_info, "0", 10)


@pytest.mark.parametrize(
    "options",
    [
        {"name": ""},
        {"name": "line\nbreak"},
        {"interval": 0},
        {"interval": float("nan")},
        {"interval": 1e9},
        {"host": ""},
        {"pid": 0},
    ],
    ids=[
        "empty name",
        "control character",
        "interval 0",
        "interval nan",
        "huge interval",
        "empty host",
        "pid 0",
    ],
)
def test_heartbeat_refuses_bad_settings_when_constructed(
    conn: redis.Redis, options: dict[str, Any]
) -> None:
    with pytest.raises(InvalidOption):
        heartbeat(conn, **options)
    assert all_keys(conn) == []


def test_heartbeat_needs_distinct_queues(conn: redis.Redis) -> None:
    with pytest.raises(InvalidOption):
        Heartbeat(conn, [QueueKeys("a"), QueueKeys("a")], "w", 1)
    with pytest.raises(InvalidOption):
        Heartbeat(conn, [], "w", 1)


# -- reading the list -------------------------------------------------------------------------


def test_list_workers_skips_a_record_that_is_not_well_formed(conn: redis.Redis) -> None:
    keys = QueueKeys("work")
    heartbeat(conn, name="good").beat(time.monotonic())
    future = server_ms(conn) + 60_000
    for name, record in (("text", "not json"), ("list", "[1]"), ("no-host", '{"pid": 1}')):
        conn.zadd(keys.workers, {name: future})
        conn.hset(keys.worker_info, name, record)
    assert names(conn) == ["good"]


def test_list_workers_pages_through_many_workers(conn: redis.Redis) -> None:
    keys = QueueKeys("work")
    now = time.monotonic()
    for i in range(40):
        heartbeat(conn, name=f"w{i:02d}").beat(now)
    seen: set[str] = set()
    cursor, pages = "0", 0
    while True:
        cursor, _, page = list_page(conn, keys, cursor, 5)
        seen |= {w.name for w in page}
        pages += 1
        if cursor == "0":
            break
    assert seen == {f"w{i:02d}" for i in range(40)}
    assert pages > 1
    assert len(list_workers(conn)) == 40


@pytest.mark.one_server("counts the round trips of a one-server client")
def test_listing_the_workers_of_many_queues_takes_one_round_trip(
    conn: redis.Redis, redis_url: str
) -> None:
    queues = [f"q{n}" for n in range(30)]
    for n, queue in enumerate(queues):
        heartbeat(conn, queue, name=f"w{n}").beat(time.monotonic())
    client, traffic = counting_client(redis_url)
    try:
        found = list_workers(client, queues)
    finally:
        client.close()
    assert [w.name for w in found] == sorted(f"w{n}" for n in range(30))
    assert traffic.round_trips == 1


def test_a_failed_heartbeat_is_not_raised(conn: redis.Redis) -> None:
    conn.function_flush()  # the library is gone: every call fails
    beat = heartbeat(conn)
    assert beat.beat(time.monotonic()) is False


# -- the command line -------------------------------------------------------------------------


def test_workers_command_json_lists_a_registered_worker(conn: redis.Redis, redis_url: str) -> None:
    now = time.monotonic()
    heartbeat(conn, "fast", "slow", name="cli-worker").beat(
        now, [("job-7", "fast", now - 2.0)], processed=3, failed=1
    )
    result = cli("workers", "--url", redis_url, "--json")
    assert result.exit_code == 0, result.output
    (shown,) = json.loads(result.output)
    assert shown["name"] == "cli-worker"
    assert shown["pid"] == os.getpid()
    assert shown["queues"] == ["fast", "slow"]
    assert (shown["processed"], shown["failed"], shown["concurrency"]) == (3, 1, 4)
    (job,) = shown["jobs"]
    assert job["id"] == "job-7" and job["queue"] == "fast"
    assert 1.5 <= job["running_s"] <= 60
    assert 0 <= shown["last_beat_age_s"] <= 60


def test_workers_command_table_shows_a_registered_worker(conn: redis.Redis, redis_url: str) -> None:
    now = time.monotonic()
    heartbeat(conn, "fast", name="table-worker").beat(now, [("job-9", "fast", now - 1.0)])
    result = cli("workers", "fast", "--url", redis_url)
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "table-worker" in line)
    assert str(os.getpid()) in row
    assert "fast" in row
    assert re.search(r"job-9 \(\d+\.\ds\)", row)


def test_workers_command_says_when_no_worker_is_alive(conn: redis.Redis, redis_url: str) -> None:
    result = cli("workers", "--url", redis_url)
    assert result.exit_code == 0, result.output
    assert "no live workers" in result.output


def test_workers_command_refuses_an_invalid_queue_name(redis_url: str) -> None:
    result = cli("workers", "bad name", "--url", redis_url)
    assert result.exit_code == EXIT_USAGE
    assert "invalid queue name" in result.output


def test_workers_command_reports_an_unreachable_redis() -> None:
    result = cli("workers", "--url", f"redis://127.0.0.1:{free_port()}/0")
    assert result.exit_code == EXIT_REDIS
    assert "cannot reach Redis" in result.output


def test_running_worker_is_listed_with_its_job_and_leaves_when_it_stops(
    conn: redis.Redis, workers: Any, redis_url: str
) -> None:
    from helpers import start_worker

    queue = Queue("work", connection=conn)
    proc, log = start_worker(workers, "work", "other", concurrency=2)
    job = queue.enqueue("tasks:sleep_in_c", 30)
    listed = wait_until(
        lambda: [w for w in list_workers(conn) if w.pid == proc.pid and w.jobs],
        timeout=15,
        what="the worker listed with its running job",
    )
    (worker,) = listed
    assert worker.queues == ("work", "other")
    assert worker.concurrency == 2
    assert [j.id for j in worker.jobs] == [job.id]

    proc.send_signal(signal.SIGINT)
    log.wait_for("finishing running jobs")
    proc.send_signal(signal.SIGINT)  # stop now: the job's lease brings it back
    print(log.finish())
    assert [w for w in list_workers(conn) if w.pid == proc.pid] == []
