"""psq_release hands back leased jobs that were never started, and psq_pop's `extra` prefetch.

The "workers" here are plain calls of the library (`calls.pop`, `calls.release`, ...).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from helpers import other_token, snapshot

from pyscheduler import LeaseLost, Queue
from pyscheduler.store import calls


def add(a: int, b: int = 0) -> int:
    return a + b


@pytest.fixture
def queue(conn: redis.Redis) -> Queue:
    return Queue("work", connection=conn)


def pop(queue: Queue, max_jobs: int = 1, extra: int = 0) -> calls.PopResult:
    return calls.pop(queue.connection, queue.keys, max_jobs, 10_000, "worker-1", extra)


def lease_one(queue: Queue) -> calls.Lease:
    (lease,) = pop(queue).leases
    return lease


def release(queue: Queue, *leases: calls.Lease) -> int:
    return calls.release(queue.connection, queue.keys, [(x.id, x.token) for x in leases])


def record(queue: Queue, job_id: str) -> dict[str, Any]:
    raw = queue.connection.hget(queue.keys.jobs, job_id)
    assert raw is not None
    result: dict[str, Any] = json.loads(raw)
    return result


# -- where a released job goes ----------------------------------------------------------------


def test_released_job_goes_back_ahead_of_jobs_enqueued_after_it(queue: Queue) -> None:
    first = queue.enqueue(add, 1)
    lease = lease_one(queue)
    later = [queue.enqueue(add, i).id for i in range(2, 4)]
    release(queue, lease)
    assert queue.job_ids("queued") == [first.id, *later]


def test_released_job_stays_behind_higher_priority_jobs(queue: Queue) -> None:
    first = queue.enqueue(add, 1)
    lease = lease_one(queue)
    urgent = queue.enqueue(add, 2, priority=5)
    later = queue.enqueue(add, 3)
    release(queue, lease)
    assert queue.job_ids("queued") == [urgent.id, first.id, later.id]


def test_release_restores_the_exact_ready_score(conn: redis.Redis, queue: Queue) -> None:
    # The lowest priority has the largest scores: too many digits for cjson's numbers.
    job = queue.enqueue(add, 1, priority=-1000)
    score = conn.zscore(queue.keys.ready, job.id)
    release(queue, lease_one(queue))
    assert conn.zscore(queue.keys.ready, job.id) == score


def test_pop_then_release_leaves_attempts_unchanged(queue: Queue) -> None:
    job = queue.enqueue(add, 1)
    release(queue, lease_one(queue))
    assert job.info().attempts == 0


def test_released_job_is_queued_without_a_lease(conn: redis.Redis, queue: Queue) -> None:
    job = queue.enqueue(add, 1)
    release(queue, lease_one(queue))
    assert job.status == "queued"
    assert conn.zscore(queue.keys.active, job.id) is None
    assert not {"token", "started", "worker"} & record(queue, job.id).keys()


def test_released_job_goes_to_the_back_when_aging_changed_since_its_pop(
    queue: Queue,
) -> None:
    first = queue.enqueue(add, 1)
    lease = lease_one(queue)
    queue.set_aging(1.0)  # the ready set is empty, so aging may change: scores follow a new rule
    later = queue.enqueue(add, 2)
    release(queue, lease)
    assert queue.job_ids("queued") == [later.id, first.id]


def test_released_job_without_a_rank_goes_to_the_back_of_its_priority(
    conn: redis.Redis, queue: Queue
) -> None:
    first = queue.enqueue(add, 1)
    lease = lease_one(queue)
    later = queue.enqueue(add, 2)
    old = record(queue, first.id)
    del old["rank"]
    conn.hset(queue.keys.jobs, first.id, json.dumps(old))
    release(queue, lease)
    assert queue.job_ids("queued") == [later.id, first.id]


# -- tokens -----------------------------------------------------------------------------------


def test_old_token_cannot_complete_a_released_job(queue: Queue) -> None:
    job = queue.enqueue(add, 1)
    lease = lease_one(queue)
    release(queue, lease)
    with pytest.raises(LeaseLost):
        calls.complete(queue.connection, queue.keys, lease.id, lease.token, "null")
    assert job.status == "queued"


def test_old_token_cannot_renew_a_released_job(queue: Queue) -> None:
    queue.enqueue(add, 1)
    lease = lease_one(queue)
    release(queue, lease)
    assert calls.renew(queue.connection, queue.keys, 10_000, [(lease.id, lease.token)]) == [0]


def test_released_job_is_popped_again_with_a_new_token(queue: Queue) -> None:
    job = queue.enqueue(add, 1)
    first = lease_one(queue)
    release(queue, first)
    second = lease_one(queue)
    assert second.id == job.id
    assert second.token != first.token
    assert json.loads(second.record)["attempts"] == 1


def test_release_with_a_stale_token_changes_nothing(conn: redis.Redis, queue: Queue) -> None:
    queue.enqueue(add, 1)
    lease = lease_one(queue)
    before = snapshot(conn)
    stale = calls.Lease(lease.queue, lease.id, other_token(lease.token), 0, b"", b"")
    assert release(queue, stale) == 0
    assert snapshot(conn) == before


def test_release_skips_the_pairs_whose_token_no_longer_holds(queue: Queue) -> None:
    queue.enqueue(add, 1)
    queue.enqueue(add, 2)
    held, lost = pop(queue, max_jobs=2).leases
    pairs = [(held.id, held.token), (lost.id, other_token(lost.token)), ("missing", "1" * 32)]
    assert calls.release(queue.connection, queue.keys, pairs) == 1
    assert queue.job_ids("queued") == [held.id]
    assert queue.job_ids("active") == [lost.id]


def test_release_returns_the_number_released(queue: Queue) -> None:
    for i in range(3):
        queue.enqueue(add, i)
    assert release(queue, *pop(queue, max_jobs=3).leases) == 3
    assert len(queue) == 3


def test_releasing_the_same_lease_twice_releases_it_once(queue: Queue) -> None:
    queue.enqueue(add, 1)
    lease = lease_one(queue)
    assert release(queue, lease) == 1
    assert release(queue, lease) == 0
    assert len(queue) == 1


def test_release_of_nothing_makes_no_call(queue: Queue, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any) -> Any:
        raise AssertionError("no call expected")

    monkeypatch.setattr(queue.connection, "fcall", refuse)
    assert calls.release(queue.connection, queue.keys, []) == 0


# -- limits and wake-ups ----------------------------------------------------------------------


def test_release_gives_back_a_rate_limit_slot(queue: Queue) -> None:
    queue.set_limits(rate=1, period=3600)
    job = queue.enqueue(add, 1)
    queue.enqueue(add, 2)
    lease = lease_one(queue)
    assert pop(queue).leases == []
    release(queue, lease)
    assert lease_one(queue).id == job.id


def test_release_gives_back_a_concurrency_slot(queue: Queue) -> None:
    queue.set_limits(concurrency=1)
    job = queue.enqueue(add, 1)
    queue.enqueue(add, 2)
    lease = lease_one(queue)
    release(queue, lease)
    assert lease_one(queue).id == job.id


def test_release_wakes_a_blocked_worker(conn: redis.Redis, queue: Queue) -> None:
    queue.enqueue(add, 1)
    lease = lease_one(queue)
    conn.delete(queue.keys.wake)  # the tokens of the enqueue were used up
    release(queue, lease)
    assert conn.blpop([queue.keys.wake], timeout=1) is not None


# -- pop with extra ---------------------------------------------------------------------------


def test_pop_with_extra_leases_max_jobs_plus_extra_when_unlimited(queue: Queue) -> None:
    for i in range(8):
        queue.enqueue(add, i)
    assert len(pop(queue, max_jobs=2, extra=3).leases) == 5
    assert len(queue) == 3


def test_pop_with_extra_leases_only_max_jobs_under_a_concurrency_limit(queue: Queue) -> None:
    queue.set_limits(concurrency=10)
    for i in range(8):
        queue.enqueue(add, i)
    assert len(pop(queue, max_jobs=2, extra=3).leases) == 2


def test_pop_with_extra_leases_only_max_jobs_under_a_rate_limit(queue: Queue) -> None:
    queue.set_limits(rate=10, period=60)
    for i in range(8):
        queue.enqueue(add, i)
    assert len(pop(queue, max_jobs=2, extra=3).leases) == 2


def test_pop_with_extra_of_a_paused_queue_leases_nothing(queue: Queue) -> None:
    queue.enqueue(add, 1)
    queue.pause()
    assert pop(queue, max_jobs=1, extra=3).leases == []
