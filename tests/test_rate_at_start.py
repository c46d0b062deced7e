"""A queue's rate limit holds at the start of the handler, not only at the lease.

psq_pop admits at most `rate` leases per period; psq_start_run, which the worker calls right
before each handler of a job leased under a rate limit (after the handler's module is
imported), lets it start only while fewer than `rate` starts lie within the period, else says
how long to wait. The first part calls the library directly; the last runs real workers whose
executors start cold (`slow_import_tasks` takes 0.3 s to import).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis
from helpers import max_in_window, other_token, server_ms, snapshot, start_worker, wait_until

from pyscheduler import LeaseLost, Queue, Status
from pyscheduler.exceptions import InvalidKeys
from pyscheduler.store import calls
from pyscheduler.store.keys import QueueKeys
from pyscheduler.store.operations import keys_for


def add(a: int = 0) -> int:
    return a


@pytest.fixture
def queue(conn: redis.Redis) -> Queue:
    return Queue("limited", connection=conn)


def lease(queue: Queue, lease_ms: int = 10_000) -> calls.Lease:
    (leased,) = calls.pop(queue.connection, queue.keys, 1, lease_ms, "worker-1").leases
    return leased


def start(queue: Queue, leased: calls.Lease) -> int:
    return calls.start_run(queue.connection, queue.keys, leased.id, leased.token)


def record(queue: Queue, job_id: str) -> dict[str, Any]:
    raw = queue.connection.hget(queue.keys.jobs, job_id)
    assert raw is not None
    result: dict[str, Any] = json.loads(raw)
    return result


# -- the library ------------------------------------------------------------------------------


def test_pop_marks_only_jobs_leased_under_a_rate_limit(queue: Queue) -> None:
    queue.enqueue(add, 1)
    queue.enqueue(add, 2)
    assert "rated" not in json.loads(lease(queue).record)
    queue.set_limits(rate=5, period=1.0)
    assert json.loads(lease(queue).record)["rated"] is True


def test_start_is_counted_at_the_handler_start_not_at_the_lease(queue: Queue) -> None:
    queue.set_limits(rate=1, period=60.0)
    queue.enqueue(add, 1)
    leased = lease(queue)
    leased_at = json.loads(leased.record)["started"]
    time.sleep(0.05)
    assert start(queue, leased) == 0
    started = record(queue, leased.id)["started"]
    assert started > leased_at
    assert queue.connection.zscore(queue.keys.starts, leased.token) == started


def started_ago(queue: Queue, leased: calls.Lease, ms: int) -> None:
    """Date a job's entry in the rate window `ms` back on the server clock, as if its lease or
    start were that long ago (no sleep, so a stalled test process cannot move the window)."""
    queue.connection.zadd(queue.keys.starts, {leased.token: server_ms(queue.connection) - ms})


def test_start_is_refused_with_the_wait_when_the_window_is_full(queue: Queue) -> None:
    queue.set_limits(rate=1, period=60.0)
    queue.enqueue(add, 1)
    queue.enqueue(add, 2)
    late = lease(queue)
    started_ago(queue, late, 61_000)  # its lease left the window before its handler starts
    on_time = lease(queue)  # the window let the next lease in
    before = snapshot(queue.connection)
    wait_ms = start(queue, late)
    assert 1 <= wait_ms <= 60_000
    assert snapshot(queue.connection) == before  # not started, nothing counted
    assert start(queue, on_time) == 0


def test_start_goes_ahead_after_the_wait_it_was_told(queue: Queue) -> None:
    queue.set_limits(rate=1, period=60.0)
    queue.enqueue(add, 1)
    queue.enqueue(add, 2)
    late = lease(queue)
    started_ago(queue, late, 61_000)
    on_time = lease(queue)
    assert start(queue, on_time) == 0
    started_ago(queue, on_time, 60_000 - 1_500)  # leaves the window 1.5 s from now
    wait_ms = start(queue, late)
    assert 1 <= wait_ms <= 1_500
    time.sleep(wait_ms / 1000)
    assert start(queue, late) == 0


def test_start_without_a_rate_limit_goes_ahead_and_writes_nothing(queue: Queue) -> None:
    queue.set_limits(rate=1, period=60.0)
    queue.enqueue(add, 1)
    leased = lease(queue)
    queue.set_limits()  # the limit was lifted after the lease
    before = snapshot(queue.connection)
    assert start(queue, leased) == 0
    assert snapshot(queue.connection) == before


def test_start_with_a_stale_token_is_refused_and_writes_nothing(queue: Queue) -> None:
    queue.set_limits(rate=5, period=60.0)
    queue.enqueue(add, 1)
    leased = lease(queue)
    before = snapshot(queue.connection)
    with pytest.raises(LeaseLost):
        calls.start_run(queue.connection, queue.keys, leased.id, other_token(leased.token))
    assert snapshot(queue.connection) == before


def test_start_of_a_released_job_is_refused(queue: Queue) -> None:
    queue.set_limits(rate=5, period=60.0)
    queue.enqueue(add, 1)
    leased = lease(queue)
    calls.release(queue.connection, queue.keys, [(leased.id, leased.token)])
    with pytest.raises(LeaseLost):
        start(queue, leased)


def test_start_of_a_job_whose_lease_expired_is_refused_before_any_reclaim(queue: Queue) -> None:
    queue.set_limits(rate=5, period=60.0)
    queue.enqueue(add, 1)
    leased = lease(queue, lease_ms=20)
    time.sleep(0.05)
    before = snapshot(queue.connection)
    with pytest.raises(LeaseLost):
        start(queue, leased)
    assert snapshot(queue.connection) == before
    assert record(queue, leased.id)["status"] == Status.ACTIVE  # nobody reclaimed it yet


BAD_ARGUMENTS: dict[str, Callable[[calls.Lease], list[str]]] = {
    "no arguments": lambda lease: [],
    "no token": lambda lease: [lease.id],
    "one argument too many": lambda lease: [lease.id, lease.token, "x"],
    "malformed id": lambda lease: ["bad id!", lease.token],
    "short token": lambda lease: [lease.id, lease.token[:-1]],
    "uppercase token": lambda lease: [lease.id, lease.token.upper()],
}


@pytest.mark.parametrize("case", BAD_ARGUMENTS, ids=list(BAD_ARGUMENTS))
def test_start_with_bad_arguments_is_refused_and_writes_nothing(queue: Queue, case: str) -> None:
    queue.set_limits(rate=5, period=60.0)
    queue.enqueue(add, 1)
    leased = lease(queue)
    before = snapshot(queue.connection)
    keys = keys_for("psq_start_run", queue.keys)
    with pytest.raises(redis.ResponseError, match=r"^PSQ_BAD_ARGUMENT"):
        queue.connection.fcall("psq_start_run", len(keys), *keys, *BAD_ARGUMENTS[case](leased))
    assert snapshot(queue.connection) == before


BAD_KEYS: dict[str, Callable[[list[str]], list[str]]] = {
    "a key missing": lambda keys: keys[:-1],
    "a key of another queue": lambda keys: [*keys[:-1], QueueKeys("other").config],
    "keys out of order": lambda keys: [keys[0], keys[2], keys[1], keys[3]],
}


@pytest.mark.one_server("keys of two queues: a cluster client refuses them before the library")
@pytest.mark.parametrize("case", BAD_KEYS, ids=list(BAD_KEYS))
def test_start_with_bad_keys_is_refused_and_writes_nothing(queue: Queue, case: str) -> None:
    queue.set_limits(rate=5, period=60.0)
    queue.enqueue(add, 1)
    leased = lease(queue)
    before = snapshot(queue.connection)
    keys = BAD_KEYS[case](keys_for("psq_start_run", queue.keys))
    with pytest.raises(redis.ResponseError, match=r"^PSQ_BAD_KEYS"):
        queue.connection.fcall("psq_start_run", len(keys), *keys, leased.id, leased.token)
    assert snapshot(queue.connection) == before


def test_start_with_a_starts_key_of_the_wrong_type_is_refused(queue: Queue) -> None:
    queue.set_limits(rate=5, period=60.0)
    queue.enqueue(add, 1)
    leased = lease(queue)
    queue.connection.delete(queue.keys.starts)
    queue.connection.set(queue.keys.starts, "not a zset")
    with pytest.raises(InvalidKeys):
        start(queue, leased)
    assert queue.connection.get(queue.keys.starts) == b"not a zset"
    assert "started" in record(queue, leased.id)
    assert record(queue, leased.id)["started"] == json.loads(leased.record)["started"]


# -- real workers -----------------------------------------------------------------------------

RATE, PERIOD_MS = 4, 1000


@pytest.mark.parametrize("handler", ["record_start", "record_start_async"])
def test_handler_starts_never_exceed_the_rate_when_executors_start_cold(
    conn: redis.Redis, redis_url: str, workers: Any, handler: str
) -> None:
    queue = Queue("limited", connection=conn)
    queue.set_limits(rate=RATE, period=PERIOD_MS / 1000)
    for _ in range(2):
        start_worker(workers, "limited", concurrency=2, lease=5.0)
    starts = f"test:{uuid.uuid4().hex[:12]}"
    jobs = queue.enqueue_many(
        queue.prepare(f"slow_import_tasks:{handler}", (redis_url, starts)) for _ in range(12)
    )

    def done() -> bool:
        return all(queue.fetch_info(j.id).status == Status.COMPLETE for j in jobs)

    wait_until(done, 30, interval=0.05, what="12 rate-limited jobs to complete")

    handler_ms = [int(x) // 1000 for x in conn.lrange(starts, 0, -1)]
    started_ms = [int(queue.fetch_info(j.id).started_ms or 0) for j in jobs]
    print(
        f"\nrate {RATE} per {PERIOD_MS} ms, cold executors: most starts in a period"
        f" {max_in_window(started_ms, PERIOD_MS)} (library), most handler starts in"
        f" {PERIOD_MS - 200} ms {max_in_window(handler_ms, PERIOD_MS - 200)}"
    )
    assert len(handler_ms) == 12
    # The library's start times: exact, on the server clock.
    assert max_in_window(started_ms, PERIOD_MS) <= RATE
    # The handlers' own reports come a round trip later: 200 ms of slack (the executors' cold
    # 0.3 s import put a window's late starts within 0.7 s of the next window's on-time ones).
    assert max_in_window(handler_ms, PERIOD_MS - 200) <= RATE
