"""Periodic jobs: `queue.schedule(name, func, *args, cron=... | every=...)`.

Ticks fire from the workers' own pops (no scheduler process), once per tick however many
workers run; missed ticks make one catch-up run, or all of them with catch_up=True; a schedule
is replaced by name, removed, paused and resumed; cron ticks follow the zone's daylight-saving
changes. Runs are ordinary jobs named `schedule:<name>:<tick ms>`.
"""

from __future__ import annotations

import itertools
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
from helpers import server_ms, start_workers, stop_worker, wait_idle, wait_until

from pyscheduler import InvalidOption, PayloadNotJSON, Queue, ScheduleNotFound
from pyscheduler.client.schedules import cron_ticks
from pyscheduler.store import calls
from pyscheduler.store.protocol import JOB_ID_RE, SCHEDULE_TICKS_MAX

# Not marked `cluster`: every call here touches one queue, whose keys share one slot, so a
# cluster run would repeat the one-server run (test_dependencies.py is the one that crosses shards).

PARIS = ZoneInfo("Europe/Paris")


def runs_of(conn: Any, key: str) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in conn.lrange(key, 0, -1)]


def pop_all(conn: Any, queue: Queue) -> list[calls.Lease]:
    return calls.pop(conn, queue.keys, 100, 10_000, "test-worker").leases


def tick_of(lease: calls.Lease) -> int:
    return int(json.loads(lease.record)["tick"])


def paris_ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=PARIS).timestamp() * 1000)  # type: ignore[misc]


# -- exactly once, from the workers' own calls ------------------------------------------------


def test_every_tick_runs_exactly_once_with_three_workers(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue = Queue("sch", connection=conn)
    logs = start_workers(workers, 3, "sch")
    queue.schedule("beat", "schedule_tasks:tick_run", redis_url, "runs", every=0.25)
    time.sleep(4.0)
    queue.unschedule("beat")
    time.sleep(0.5)  # a run made at the last tick may still be starting
    runs = runs_of(conn, "runs")

    ticks = sorted(r["tick"] for r in runs)
    assert len(ticks) == len(set(ticks)), "a tick ran twice"
    assert len({r["id"] for r in runs}) == len(runs)
    # Every tick from the first to the last, 250 ms apart: none skipped, none twice.
    assert ticks == list(range(ticks[0], ticks[-1] + 1, 250))
    assert len(ticks) >= 12
    for run in runs:
        assert run["id"] == f"schedule:beat:{run['tick']}"
        assert JOB_ID_RE.match(run["id"])
        # Idle workers wake for the tick (pop's wait_ms counts it): a loose bound only.
        assert 0 <= run["start"] / 1000 - run["tick"] < 1000
    for proc, log in zip(workers.procs, logs, strict=True):
        stop_worker(proc, log)


def test_ticks_stay_on_time_while_the_runs_outlast_the_interval(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    # Each run holds its worker for 0.7 s, ticks come every 0.3 s: the idle workers must know
    # the next tick while the one that made the last run is busy.
    queue = Queue("schl", connection=conn)
    logs = start_workers(workers, 3, "schl")
    queue.schedule("slow", "schedule_tasks:slow_tick_run", redis_url, "runs", 0.7, every=0.3)
    time.sleep(4.0)
    queue.unschedule("slow")
    time.sleep(1.0)
    runs = runs_of(conn, "runs")

    ticks = sorted(r["tick"] for r in runs)
    assert ticks == list(range(ticks[0], ticks[-1] + 1, 300))
    assert len(ticks) >= 10
    late = sorted(r["start"] / 1000 - r["tick"] for r in runs)
    assert late[len(late) // 2] < 100  # loose: the median run starts well within the interval
    for proc, log in zip(workers.procs, logs, strict=True):
        stop_worker(proc, log)


def test_cron_ticks_run_exactly_once_with_three_workers(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue = Queue("schc", connection=conn)
    logs = start_workers(workers, 3, "schc")
    queue.schedule(
        "seconds",
        "schedule_tasks:tick_run",
        redis_url,
        "runs",
        cron="* * * * * *",
        tz="Europe/Paris",
    )
    time.sleep(4.5)
    queue.unschedule("seconds")
    time.sleep(0.5)
    runs = runs_of(conn, "runs")

    ticks = sorted(r["tick"] for r in runs)
    assert len(ticks) >= 3
    assert ticks == list(range(ticks[0], ticks[-1] + 1, 1000))  # each second once
    assert all(tick % 1000 == 0 for tick in ticks)
    for proc, log in zip(workers.procs, logs, strict=True):
        stop_worker(proc, log)


def test_a_run_is_an_ordinary_job_named_after_its_schedule_and_tick(conn: redis.Redis) -> None:
    queue = Queue("scho", connection=conn)
    queue.schedule("job", "tasks:add", 2, 3, every=0.1, priority=5, retries=2, timeout=30)
    time.sleep(0.15)
    (lease,) = pop_all(conn, queue)

    info = queue.fetch_info(lease.id)
    assert lease.id == f"schedule:job:{tick_of(lease)}"
    assert (info.func, info.args, info.priority, info.retries, info.timeout) == (
        "tasks:add",
        [2, 3],
        5,
        2,
        30,
    )
    assert info.schedule == "job"
    assert queue.counts().stats["enqueued"] == 1


def test_a_queue_without_schedules_gets_no_tick_in_its_wait(conn: redis.Redis) -> None:
    queue = Queue("schn", connection=conn)
    assert calls.pop(conn, queue.keys, 1, 1000, "w").wait_ms == -1
    queue.schedule("soon", "tasks:noop", every=30)
    wait = calls.pop(conn, queue.keys, 1, 1000, "w").wait_ms
    assert 29_000 <= wait <= 30_000


# -- missed ticks -------------------------------------------------------------------------------


def test_missed_ticks_make_one_catch_up_run_by_default(conn: redis.Redis) -> None:
    queue = Queue("schm", connection=conn)
    queue.schedule("missed", "tasks:noop", every=0.2)
    time.sleep(1.1)  # no worker: five ticks pass
    leases = pop_all(conn, queue)

    assert len(leases) == 1
    (schedule,) = queue.schedules()
    assert schedule.next_run is not None
    next_ms = schedule.next_run.timestamp() * 1000
    # The run is the latest tick that passed; the next one is still to come.
    assert tick_of(leases[0]) + 200 == round(next_ms)
    assert next_ms > server_ms(conn) - 5
    assert pop_all(conn, queue) == []


def test_missed_ticks_all_run_with_catch_up(conn: redis.Redis) -> None:
    queue = Queue("schk", connection=conn)
    queue.schedule("missed", "tasks:noop", every=0.2, catch_up=True)
    first = queue.schedules()[0].next_run
    assert first is not None
    time.sleep(1.1)
    leases = pop_all(conn, queue)

    ticks = [tick_of(lease) for lease in leases]
    assert len(ticks) >= 5
    assert ticks == list(range(round(first.timestamp() * 1000), ticks[-1] + 1, 200))
    assert pop_all(conn, queue) == []


def test_a_worker_that_starts_after_an_outage_runs_one_catch_up(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue = Queue("scho2", connection=conn)
    queue.schedule("late", "schedule_tasks:tick_run", redis_url, "runs", every=0.3)
    time.sleep(1.0)  # three ticks pass with no worker
    (log,) = start_workers(workers, 1, "scho2")
    wait_until(lambda: runs_of(conn, "runs"), what="the catch-up run")
    queue.unschedule("late")
    time.sleep(0.4)
    runs = runs_of(conn, "runs")
    # One run for the ticks missed, then (at most) the ticks that came after the worker began.
    missed = [r for r in runs if r["start"] / 1000 - r["tick"] > 250]
    assert len(missed) <= 1
    stop_worker(workers.procs[0], log)


# -- defining, replacing, removing, pausing ----------------------------------------------------


def test_redefining_a_schedule_replaces_it_and_keeps_its_timing(conn: redis.Redis) -> None:
    queue = Queue("schr", connection=conn)
    first = queue.schedule("report", "tasks:add", 1, 2, every=60)
    again = queue.schedule("report", "tasks:add", 10, 20, every=60, priority=3)

    (listed,) = queue.schedules()
    assert listed.args == [10, 20]
    assert listed.options["priority"] == 3
    assert again.next_run == first.next_run  # the same timing: same next tick

    changed = queue.schedule("report", "tasks:add", 10, 20, every=120)
    assert changed.next_run is not None and first.next_run is not None
    assert changed.next_run > first.next_run
    assert len(queue.schedules()) == 1


def test_a_replaced_schedule_runs_the_new_definition(conn: redis.Redis) -> None:
    queue = Queue("schr2", connection=conn)
    queue.schedule("x", "tasks:add", 1, 2, every=0.1)
    queue.schedule("x", "tasks:add", 30, 40, every=0.1)
    time.sleep(0.15)
    (lease,) = pop_all(conn, queue)
    assert json.loads(lease.payload)["args"] == [30, 40]


def test_unschedule_stops_the_runs(conn: redis.Redis) -> None:
    queue = Queue("schu", connection=conn)
    queue.schedule("gone", "tasks:noop", every=0.1)
    assert queue.unschedule("gone") is True
    time.sleep(0.25)

    assert pop_all(conn, queue) == []
    assert queue.schedules() == []
    assert queue.unschedule("gone") is False


def test_a_paused_schedule_makes_no_runs_and_resumes_without_catching_up(
    conn: redis.Redis,
) -> None:
    queue = Queue("schp", connection=conn)
    queue.schedule("nap", "tasks:noop", every=0.2)
    paused = queue.pause_schedule("nap")
    assert paused.paused and paused.next_run is None
    time.sleep(0.5)
    assert pop_all(conn, queue) == []

    resumed = queue.resume_schedule("nap")
    assert not resumed.paused and resumed.next_run is not None
    assert pop_all(conn, queue) == []  # the ticks passed while paused are not run
    time.sleep(0.25)
    assert len(pop_all(conn, queue)) == 1


def test_pausing_an_unknown_schedule_raises(conn: redis.Redis) -> None:
    queue = Queue("schp2", connection=conn)
    with pytest.raises(ScheduleNotFound):
        queue.pause_schedule("nobody")


def test_a_cron_schedule_whose_ticks_run_low_is_refilled_by_the_worker(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue = Queue("schf", connection=conn)
    (log,) = start_workers(workers, 1, "schf")
    # Ticks counted from when the worker waits for work: a worker slow to start on a loaded
    # machine would otherwise miss both listed ticks (one catch-up run replaces them).
    wait_idle(conn)
    now = server_ms(conn)
    first = now - now % 1000 + 2000
    # A definition as psq_schedule stores it, with only two ticks listed.
    definition = {
        "func": "schedule_tasks:tick_run",
        "payload": json.dumps({"args": [redis_url, "runs"], "kwargs": {}}),
        "priority": 0,
        "timeout": 30,
        "retries": 0,
        "backoff": 1,
        "result_ttl": 60,
        "time_slice": 0,
        "catch_up": False,
        "cron": "* * * * * *",
        "tz": "UTC",
        "ticks": [first, first + 1000],
    }
    calls.schedule(conn, queue.keys, "short", json.dumps(definition))
    wait_until(lambda: len(runs_of(conn, "runs")) >= 4, timeout=15, what="runs after the list")
    ticks = [r["tick"] for r in runs_of(conn, "runs")]
    assert ticks[:4] == [first, first + 1000, first + 2000, first + 3000]
    stop_worker(workers.procs[0], log)


# -- daylight saving ---------------------------------------------------------------------------


def test_cron_ticks_follow_the_zone_when_clocks_go_forward() -> None:
    # Paris, 29 March 2026: 02:00 CET becomes 03:00 CEST; 02:30 does not exist that day.
    ticks = cron_ticks("30 2 * * *", "Europe/Paris", paris_ms(2026, 3, 28, 12), 3)
    assert ticks == [
        paris_ms(2026, 3, 29, 3, 0),  # the first time after the one skipped
        paris_ms(2026, 3, 30, 2, 30),
        paris_ms(2026, 3, 31, 2, 30),
    ]
    assert ticks[2] - ticks[1] == 86_400_000
    daily = cron_ticks("0 9 * * *", "Europe/Paris", paris_ms(2026, 3, 28, 8), 2)
    assert daily[1] - daily[0] == 23 * 3_600_000  # 9:00 local both days: a 23-hour day


def test_a_fixed_time_runs_once_when_clocks_go_back() -> None:
    # Paris, 25 October 2026: 03:00 CEST becomes 02:00 CET; 02:30 happens twice.
    ticks = cron_ticks("30 2 * * *", "Europe/Paris", paris_ms(2026, 10, 24, 12), 2)
    second_day = datetime(2026, 10, 26, 2, 30, tzinfo=PARIS)
    assert ticks == [
        int(datetime(2026, 10, 25, 2, 30, tzinfo=PARIS).timestamp() * 1000),
        int(second_day.timestamp() * 1000),
    ]


def test_an_hourly_expression_runs_in_both_hours_when_clocks_go_back() -> None:
    start = paris_ms(2026, 10, 25, 0, 30)
    ticks = cron_ticks("0 * * * *", "Europe/Paris", start, 4)
    assert [b - a for a, b in itertools.pairwise(ticks)] == [3_600_000] * 3
    local = [datetime.fromtimestamp(t / 1000, PARIS) for t in ticks]
    assert [(m.hour, m.utcoffset()) for m in local] == [
        (1, timedelta(hours=2)),
        (2, timedelta(hours=2)),
        (2, timedelta(hours=1)),
        (3, timedelta(hours=1)),
    ]


def test_a_cron_schedule_stores_its_ticks_in_its_zone(conn: redis.Redis) -> None:
    queue = Queue("schz", connection=conn)
    schedule = queue.schedule("morning", "tasks:noop", cron="0 9 * * *", tz="America/New_York")
    assert schedule.next_run is not None
    local = schedule.next_run.astimezone(ZoneInfo("America/New_York"))
    assert (local.hour, local.minute) == (9, 0)
    assert schedule.cron == "0 9 * * *" and schedule.tz == "America/New_York"
    assert schedule.next_run > datetime.now(UTC)


# -- bad definitions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "options"),
    [
        (("bad name!", "tasks:noop"), {"every": 1}),
        (("", "tasks:noop"), {"every": 1}),
        (("x", "tasks:noop"), {}),  # neither cron nor every
        (("x", "tasks:noop"), {"every": 1, "cron": "* * * * *"}),
        (("x", "tasks:noop"), {"cron": "every monday"}),
        (("x", "tasks:noop"), {"cron": "61 * * * *"}),
        (("x", "tasks:noop"), {"cron": "* * * * *", "tz": "Mars/Olympus"}),
        (("x", "tasks:noop"), {"every": 0}),
        (("x", "tasks:noop"), {"every": -5}),
        (("x", "tasks:noop"), {"every": float("nan")}),
        (("x", "tasks:noop"), {"every": 1, "tz": "Europe/Paris"}),
        (("x", "tasks:noop"), {"every": 1, "priority": 5000}),
        (("x", "tasks:noop"), {"every": 1, "catch_up": "yes"}),
    ],
)
def test_bad_definitions_are_refused(
    conn: redis.Redis, args: tuple[Any, ...], options: dict[str, Any]
) -> None:
    queue = Queue("schb", connection=conn)
    with pytest.raises(InvalidOption):
        queue.schedule(*args, **options)
    assert queue.schedules() == []


def test_options_that_make_no_sense_for_a_run_are_refused(conn: redis.Redis) -> None:
    queue = Queue("schb2", connection=conn)
    with pytest.raises(InvalidOption):
        queue.schedule("x", "tasks:noop", every=1, job_id="fixed")
    with pytest.raises(InvalidOption):
        queue.schedule("x", "tasks:noop", every=1, delay=5)
    with pytest.raises(PayloadNotJSON):
        queue.schedule("x", "tasks:add", {1, 2}, every=1)
    assert queue.schedules() == []


@pytest.mark.parametrize(
    "definition",
    [
        "not json",
        json.dumps({"func": "tasks:noop"}),
        json.dumps(
            {
                "func": "tasks:noop",
                "priority": 0,
                "timeout": 1,
                "retries": 0,
                "backoff": 1,
                "result_ttl": 1,
                "time_slice": 0,
                "catch_up": False,
                "every_ms": 1,
            }
        ),
        json.dumps(
            {
                "func": "tasks:noop",
                "priority": 0,
                "timeout": 1,
                "retries": 0,
                "backoff": 1,
                "result_ttl": 1,
                "time_slice": 0,
                "catch_up": False,
                "cron": "* * * * *",
                "tz": "UTC",
                "ticks": [3, 2, 1],
            }
        ),
        json.dumps(
            {
                "func": "tasks:noop",
                "priority": 0,
                "timeout": 1,
                "retries": 0,
                "backoff": 1,
                "result_ttl": 1,
                "time_slice": 0,
                "catch_up": False,
                "cron": "* * * * *",
                "tz": "UTC",
                "ticks": list(range(1, SCHEDULE_TICKS_MAX + 2)),
            }
        ),
        json.dumps(
            {
                "func": "tasks:noop",
                "priority": 0,
                "timeout": 1,
                "retries": 0,
                "backoff": 1,
                "result_ttl": 1,
                "time_slice": 0,
                "catch_up": False,
                "every_ms": 100,
                "payload": "{not json",
            }
        ),
    ],
)
def test_the_library_refuses_a_malformed_definition(conn: redis.Redis, definition: str) -> None:
    queue = Queue("schb3", connection=conn)
    with pytest.raises(InvalidOption):
        calls.schedule(conn, queue.keys, "x", definition)
    assert conn.exists(queue.keys.schedules, queue.keys.ticks) == 0


def test_a_corrupt_stored_definition_is_skipped_and_shown(conn: redis.Redis) -> None:
    queue = Queue("schb4", connection=conn)
    queue.schedule("ok", "tasks:noop", every=0.1)
    conn.hset(queue.keys.schedules, "ok", "{broken")
    time.sleep(0.15)

    assert pop_all(conn, queue) == []  # never raised on
    (shown,) = queue.schedules()
    assert shown.error
    assert conn.zcard(queue.keys.ticks) == 0


# -- the command line ----------------------------------------------------------------------------


def cli(redis_url: str, *args: str) -> tuple[int, str]:
    from click.testing import CliRunner

    from pyscheduler.ops.cli import main

    result = CliRunner().invoke(main, [*args, "--url", redis_url])
    return result.exit_code, result.output


def test_schedules_command_adds_lists_pauses_resumes_and_removes(
    conn: redis.Redis, redis_url: str
) -> None:
    code, out = cli(
        redis_url, "schedules", "add", "schcli", "nightly", "tasks:add", "1", "2",
        "--cron", "0 3 * * *", "--tz", "Europe/Paris", "--retries", "2",
    )  # fmt: skip
    assert code == 0, out
    assert "nightly" in out and "cron 0 3 * * * (Europe/Paris)" in out
    (schedule,) = Queue("schcli", connection=conn).schedules()
    assert (schedule.args, schedule.options["retries"]) == ([1, 2], 2)

    code, out = cli(redis_url, "schedules", "list", "schcli")
    assert code == 0 and "nightly" in out and "tasks:add" in out and "active" in out
    code, out = cli(redis_url, "schedules", "list", "schcli", "--json")
    assert code == 0 and json.loads(out)[0]["cron"] == "0 3 * * *"

    assert cli(redis_url, "schedules", "pause", "schcli", "nightly")[0] == 0
    assert Queue("schcli", connection=conn).schedules()[0].paused
    assert "paused" in cli(redis_url, "schedules", "list", "schcli")[1]
    assert cli(redis_url, "schedules", "resume", "schcli", "nightly")[0] == 0
    assert not Queue("schcli", connection=conn).schedules()[0].paused

    assert cli(redis_url, "schedules", "remove", "schcli", "nightly")[0] == 0
    assert Queue("schcli", connection=conn).schedules() == []
    assert "no schedules" in cli(redis_url, "schedules", "list", "schcli")[1]


def test_schedules_command_exits_1_for_an_unknown_schedule_and_2_for_bad_input(
    conn: redis.Redis, redis_url: str
) -> None:
    assert cli(redis_url, "schedules", "remove", "schcli2", "nobody")[0] == 1
    assert cli(redis_url, "schedules", "pause", "schcli2", "nobody")[0] == 1
    code, out = cli(redis_url, "schedules", "add", "schcli2", "x", "tasks:noop", "--cron", "nope")
    assert code == 2, out
    assert cli(redis_url, "schedules", "add", "schcli2", "x", "tasks:noop")[0] == 2  # no timing
    code, out = cli(redis_url, "schedules", "add", "schcli2", "x", "tasks:noop", "--every", "0.5")
    assert code == 0, out
    assert "every 0.5s" in out
