"""Leases, fencing tokens, reclaim, retries with backoff, cancel and Job.wait, against the library.

The "workers" here are plain calls of the library (`calls.pop`, `calls.complete`, ...).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from helpers import other_token, server_ms

from pyscheduler import (
    InvalidJobState,
    InvalidOption,
    Job,
    JobCancelled,
    JobFailed,
    JobNotFound,
    LeaseLost,
    Queue,
    WaitTimeout,
)
from pyscheduler.store import calls
from pyscheduler.store.protocol import MAX_BACKOFF_MS, MAX_LOST_LEASES, FailKind

pytestmark = pytest.mark.cluster  # also on a local Redis Cluster (conftest.py)


def add(a: int, b: int = 0) -> int:
    return a + b


@pytest.fixture
def queue(conn: redis.Redis) -> Queue:
    return Queue("work", connection=conn)


def pop(
    queue: Queue, lease_ms: int = 10_000, worker: str = "worker-1", max_jobs: int = 1
) -> calls.PopResult:
    return calls.pop(queue.connection, queue.keys, max_jobs, lease_ms, worker)


def lease_one(queue: Queue, lease_ms: int = 10_000, worker: str = "worker-1") -> calls.Lease:
    (lease,) = pop(queue, lease_ms, worker).leases
    return lease


def complete(queue: Queue, lease: calls.Lease, result: Any = None) -> int:
    return calls.complete(queue.connection, queue.keys, lease.id, lease.token, json.dumps(result))


def fail(
    queue: Queue,
    lease: calls.Lease,
    error: str = "Traceback ...\nValueError: boom",
    kind: FailKind = FailKind.ERROR,
    jitter: float = 1.0,
) -> tuple[str, int]:
    return calls.fail(queue.connection, queue.keys, lease.id, lease.token, kind, error, jitter)


def renew(queue: Queue, lease: calls.Lease, lease_ms: int = 10_000) -> int:
    (deadline,) = calls.renew(queue.connection, queue.keys, lease_ms, [(lease.id, lease.token)])
    return deadline


# -- pop --------------------------------------------------------------------------------------


def test_pop_returns_lease_deadline_from_server_clock(conn: redis.Redis, queue: Queue) -> None:
    queue.enqueue(add, 1)
    before = server_ms(conn)
    lease = lease_one(queue, lease_ms=5000)
    after = server_ms(conn)
    assert before + 5000 <= lease.deadline_ms <= after + 5000
    assert conn.zscore(queue.keys.active, lease.id) == lease.deadline_ms


def test_pop_returns_a_128_bit_hex_fencing_token(queue: Queue) -> None:
    job = queue.enqueue(add, 1)
    lease = lease_one(queue)
    assert re.fullmatch("[0-9a-f]{32}", lease.token)
    assert json.loads(queue.connection.hget(queue.keys.jobs, job.id))["token"] == lease.token


def test_token_is_the_hash_of_the_pop_nonce_and_the_lease_sequence(queue: Queue) -> None:
    queue.enqueue(add, 1)
    nonce = "ab" * 16
    (lease,) = calls.pop(queue.connection, queue.keys, 1, 10_000, "w", nonce=nonce).leases
    seq = int(queue.connection.get(queue.keys.seq))
    assert lease.token == hashlib.sha1(f"{nonce}:{seq}".encode()).hexdigest()[:32]


def test_two_pops_with_the_same_nonce_get_different_tokens(queue: Queue) -> None:
    queue.enqueue(add, 1)
    queue.enqueue(add, 2)
    nonce = "cd" * 16
    first = calls.pop(queue.connection, queue.keys, 1, 10_000, "w", nonce=nonce).leases[0]
    second = calls.pop(queue.connection, queue.keys, 1, 10_000, "w", nonce=nonce).leases[0]
    assert first.token != second.token


@pytest.mark.parametrize("nonce", ["", "AB" * 16, "ab" * 15, "ab" * 17, "zz" * 16, "12345"])
def test_pop_with_a_malformed_nonce_is_refused(queue: Queue, nonce: str) -> None:
    queue.enqueue(add, 1)
    with pytest.raises(InvalidOption, match="nonce must be 32 lowercase hex"):
        calls.pop(queue.connection, queue.keys, 1, 10_000, "w", nonce=nonce)
    assert queue.counts().queued == 1


def test_pop_returns_the_record_and_payload(queue: Queue) -> None:
    job = queue.enqueue(add, 1, b=2)
    lease = lease_one(queue, worker="w-7")
    assert lease.id == job.id
    assert lease.queue == "work"
    record = json.loads(lease.record)
    assert (record["status"], record["attempts"], record["worker"]) == ("active", 1, "w-7")
    assert record["func"] == "test_leases:add"
    assert json.loads(lease.payload) == {"args": [1], "kwargs": {"b": 2}}


def test_pop_records_the_ready_score_as_rank_text(conn: redis.Redis, queue: Queue) -> None:
    # The lowest priority has the largest scores: too many digits for cjson's numbers.
    job = queue.enqueue(add, 1, priority=-1000)
    score = conn.zscore(queue.keys.ready, job.id)
    rank = json.loads(lease_one(queue).record)["rank"]
    assert isinstance(rank, str)
    assert float(rank) == score


def test_pop_moves_the_job_to_active(queue: Queue) -> None:
    job = queue.enqueue(add, 1)
    lease_one(queue)
    assert job.status == "active"
    assert queue.job_ids("active") == [job.id]
    assert len(queue) == 0


def test_each_lease_gets_a_distinct_token(queue: Queue) -> None:
    for i in range(5):
        queue.enqueue(add, i)
    tokens = [lease.token for lease in pop(queue, max_jobs=5).leases]
    assert len(set(tokens)) == 5


def test_a_pop_of_more_jobs_than_one_command_chunk_leases_each_in_full(
    conn: redis.Redis, queue: Queue
) -> None:
    """Pop reads and writes its jobs with one command per key, sent in chunks of 1,000 values."""
    n = 1_200
    jobs = queue.enqueue_many([queue.prepare(add, (i,)) for i in range(n)])
    with_checkpoint = {job.id: json.dumps({"done": i}) for i, job in enumerate(jobs) if i % 3 == 0}
    conn.hset(queue.keys.checkpoints, mapping=with_checkpoint)

    leases = pop(queue, max_jobs=n).leases

    assert [x.id for x in leases] == [job.id for job in jobs]
    assert len({x.token for x in leases}) == n
    assert all(re.fullmatch("[0-9a-f]{32}", x.token) for x in leases)
    deadline = leases[0].deadline_ms
    for i, lease in enumerate(leases):
        assert lease.deadline_ms == deadline
        assert json.loads(lease.payload)["args"] == [i]
        expected = with_checkpoint.get(lease.id)
        assert lease.checkpoint == (None if expected is None else expected.encode())
        record = json.loads(lease.record)
        assert (record["status"], record["token"], record["attempts"]) == ("active", lease.token, 1)
        assert conn.hget(queue.keys.jobs, lease.id) == lease.record
    active = conn.zrange(queue.keys.active, 0, -1, withscores=True)
    assert len(active) == n
    assert {score for _, score in active} == {deadline}
    assert len(queue) == 0


def test_pop_leases_at_most_max_jobs(queue: Queue) -> None:
    for i in range(5):
        queue.enqueue(add, i)
    assert len(pop(queue, max_jobs=3).leases) == 3
    assert len(queue) == 2


def test_pop_of_an_empty_queue_leases_nothing(queue: Queue) -> None:
    assert pop(queue).leases == []


def test_pop_refuses_a_non_positive_lease(queue: Queue) -> None:
    queue.enqueue(add, 1)
    with pytest.raises(InvalidOption, match="lease_ms"):
        pop(queue, lease_ms=0)
    assert len(queue) == 1


# -- wait_ms ----------------------------------------------------------------------------------


def test_pop_wait_ms_is_minus_one_when_nothing_is_scheduled(queue: Queue) -> None:
    assert pop(queue).wait_ms == -1


def test_pop_wait_ms_is_time_until_next_delayed_job(queue: Queue) -> None:
    queue.enqueue(add, 1, delay=2)
    queue.enqueue(add, 2, delay=0.5)
    result = pop(queue)
    assert result.leases == []
    assert 0 < result.wait_ms <= 500


def test_pop_wait_ms_is_time_until_next_lease_deadline(queue: Queue) -> None:
    queue.enqueue(add, 1)
    lease_one(queue, lease_ms=800)
    queue.enqueue(add, 2, delay=5)
    assert 0 < pop(queue).wait_ms <= 800


def test_pop_wait_ms_is_minus_one_when_jobs_were_leased(queue: Queue) -> None:
    queue.enqueue(add, 1)
    queue.enqueue(add, 2, delay=5)
    result = pop(queue)
    assert len(result.leases) == 1
    assert result.wait_ms == -1


# -- renew ------------------------------------------------------------------------------------


def test_renew_extends_the_deadline(conn: redis.Redis, queue: Queue) -> None:
    queue.enqueue(add, 1)
    lease = lease_one(queue, lease_ms=1000)
    time.sleep(0.02)
    deadline = renew(queue, lease, lease_ms=5000)
    assert deadline > lease.deadline_ms + 3000
    assert conn.zscore(queue.keys.active, lease.id) == deadline


def test_renew_keeps_an_expired_lease_not_yet_reclaimed(queue: Queue) -> None:
    queue.enqueue(add, 1)
    lease = lease_one(queue, lease_ms=20)
    time.sleep(0.05)
    assert renew(queue, lease) > lease.deadline_ms


def test_renewed_lease_is_not_reclaimed(queue: Queue) -> None:
    queue.enqueue(add, 1)
    lease = lease_one(queue, lease_ms=100)
    renew(queue, lease, lease_ms=10_000)
    time.sleep(0.15)
    assert pop(queue, worker="worker-2").leases == []
    assert queue.counts().stats.get("reclaimed", 0) == 0


def test_renew_with_a_stale_token_returns_zero(conn: redis.Redis, queue: Queue) -> None:
    queue.enqueue(add, 1)
    lease = lease_one(queue, lease_ms=5000)
    deadlines = calls.renew(conn, queue.keys, 60_000, [(lease.id, other_token(lease.token))])
    assert deadlines == [0]
    assert conn.zscore(queue.keys.active, lease.id) == lease.deadline_ms


def test_renew_answers_each_lease_of_a_batch(queue: Queue) -> None:
    queue.enqueue(add, 1)
    queue.enqueue(add, 2)
    held, stale = pop(queue, max_jobs=2).leases
    pairs = [(held.id, held.token), (stale.id, other_token(stale.token)), ("missing", "1" * 32)]
    deadlines = calls.renew(queue.connection, queue.keys, 5000, pairs)
    assert deadlines[0] > 0
    assert deadlines[1:] == [0, 0]


# -- complete and fencing ---------------------------------------------------------------------


def test_complete_stores_the_result_and_ends_the_lease(conn: redis.Redis, queue: Queue) -> None:
    job = queue.enqueue(add, 1)
    lease = lease_one(queue)
    run_ms = complete(queue, lease, [1, "two"])
    assert run_ms >= 0
    assert (job.status, job.result) == ("complete", [1, "two"])
    assert conn.zscore(queue.keys.active, job.id) is None
    assert queue.counts().stats["completed"] == 1


def test_complete_with_a_stale_token_is_refused(queue: Queue) -> None:
    job = queue.enqueue(add, 1)
    lease = lease_one(queue)
    stale = calls.Lease(lease.queue, lease.id, other_token(lease.token), 0, b"", b"")
    with pytest.raises(LeaseLost):
        complete(queue, stale, "late")
    assert job.status == "active"
    assert queue.connection.hget(queue.keys.results, job.id) is None


def test_fail_with_a_stale_token_is_refused(queue: Queue) -> None:
    job = queue.enqueue(add, 1)
    lease = lease_one(queue)
    stale = calls.Lease(lease.queue, lease.id, other_token(lease.token), 0, b"", b"")
    with pytest.raises(LeaseLost):
        fail(queue, stale)
    assert job.status == "active"
    assert job.error is None


def test_complete_twice_is_refused(queue: Queue) -> None:
    queue.enqueue(add, 1)
    lease = lease_one(queue)
    complete(queue, lease, "first")
    with pytest.raises(LeaseLost):
        complete(queue, lease, "second")
    assert queue.fetch_info(lease.id).result == "first"


def test_complete_of_an_unknown_job_raises_job_not_found(queue: Queue) -> None:
    with pytest.raises(JobNotFound):
        calls.complete(queue.connection, queue.keys, "missing", "1" * 32, "null")


def test_complete_of_a_queued_job_is_refused(queue: Queue) -> None:
    job = queue.enqueue(add, 1)
    with pytest.raises(LeaseLost):
        calls.complete(queue.connection, queue.keys, job.id, "1" * 32, "null")
    assert job.status == "queued"


# -- reclaim of expired leases ----------------------------------------------------------------


def test_pop_reclaims_an_expired_lease(queue: Queue) -> None:
    job = queue.enqueue(add, 1)
    first = lease_one(queue, lease_ms=50, worker="worker-1")
    time.sleep(0.08)
    second = lease_one(queue, worker="worker-2")
    assert second.id == job.id
    assert second.token != first.token
    record = json.loads(second.record)
    assert (record["attempts"], record["worker"], record["lost"]) == (2, "worker-2", 1)
    assert queue.counts().stats["reclaimed"] == 1


def test_unexpired_lease_is_not_reclaimed(queue: Queue) -> None:
    queue.enqueue(add, 1)
    lease_one(queue, lease_ms=10_000)
    assert pop(queue, worker="worker-2").leases == []


def test_reclaimed_job_refuses_the_old_token_and_keeps_the_new_result(queue: Queue) -> None:
    job = queue.enqueue(add, 1)
    old = lease_one(queue, lease_ms=50, worker="worker-1")
    time.sleep(0.08)
    new = lease_one(queue, worker="worker-2")
    with pytest.raises(LeaseLost):
        complete(queue, old, "from the paused worker")
    assert renew(queue, old) == 0
    complete(queue, new, "from the new owner")
    assert (job.status, job.result) == ("complete", "from the new owner")


def test_old_token_is_refused_once_reclaimed_before_a_new_lease(queue: Queue) -> None:
    job = queue.enqueue(add, 1)
    old = lease_one(queue, lease_ms=50)
    urgent = queue.enqueue(add, 2, priority=5)
    time.sleep(0.08)
    # This pop reclaims `job` into the ready set and leases the more urgent job instead.
    assert lease_one(queue, worker="worker-2").id == urgent.id
    assert job.status == "queued"
    with pytest.raises(LeaseLost):
        complete(queue, old, "late")
    assert job.status == "queued"


def test_reclaimed_job_popped_before_aging_was_set_goes_behind_newer_jobs(queue: Queue) -> None:
    # Its rank was computed without aging: not comparable with the scores aging gives.
    job = queue.enqueue(add, 1)
    lease_one(queue, lease_ms=50)
    queue.set_aging(1.0)
    later = queue.enqueue(add, 2)
    time.sleep(0.08)
    assert [x.id for x in pop(queue, max_jobs=2).leases] == [later.id, job.id]


def test_job_losing_its_lease_too_often_fails_for_good(queue: Queue) -> None:
    job = queue.enqueue(add, 1, retries=10)
    for _ in range(MAX_LOST_LEASES + 1):
        lease_one(queue, lease_ms=20)
        time.sleep(0.04)
    assert pop(queue).leases == []
    info = job.info()
    assert info.status == "failed"
    assert info.record["lost"] == MAX_LOST_LEASES + 1
    assert "lease expired" in (info.error or "")
    assert queue.job_ids("failed") == [job.id]


def test_job_losing_its_lease_max_times_still_runs(queue: Queue) -> None:
    job = queue.enqueue(add, 1)
    for _ in range(MAX_LOST_LEASES):
        lease_one(queue, lease_ms=20)
        time.sleep(0.04)
    lease = lease_one(queue)
    assert lease.id == job.id
    assert json.loads(lease.record)["lost"] == MAX_LOST_LEASES


# -- fail, retries and backoff ----------------------------------------------------------------


@pytest.mark.parametrize("jitter", [0.0, 0.5, 1.0])
def test_fail_with_retries_left_delays_with_exponential_backoff(
    conn: redis.Redis, queue: Queue, jitter: float
) -> None:
    base_ms = 40
    job = queue.enqueue(add, 1, retries=3, backoff=base_ms / 1000)
    for attempt in (1, 2, 3):
        lease = lease_one(queue)
        assert json.loads(lease.record)["attempts"] == attempt
        before = server_ms(conn)
        status, delay_ms = fail(queue, lease, jitter=jitter)
        expected = int(base_ms * 2 ** (attempt - 1) * (0.5 + jitter / 2))
        assert (status, delay_ms) == ("delayed", expected)
        assert base_ms * 2 ** (attempt - 1) * 0.5 <= delay_ms <= base_ms * 2 ** (attempt - 1)
        due = job.info().record["due"]
        assert before + delay_ms <= due <= server_ms(conn) + delay_ms
        assert conn.zscore(queue.keys.delayed, job.id) == due
        time.sleep(delay_ms / 1000 + 0.01)
    assert lease_one(queue).id == job.id


def test_retried_job_is_not_popped_before_its_backoff(queue: Queue) -> None:
    queue.enqueue(add, 1, retries=1, backoff=10)
    fail(queue, lease_one(queue), jitter=0)
    assert pop(queue).leases == []


def test_backoff_is_capped(queue: Queue) -> None:
    queue.enqueue(add, 1, retries=1, backoff=1_000_000)
    assert fail(queue, lease_one(queue), jitter=1) == ("delayed", MAX_BACKOFF_MS)


def test_fail_without_backoff_requeues_at_once(queue: Queue) -> None:
    job = queue.enqueue(add, 1, retries=1, backoff=0)
    assert fail(queue, lease_one(queue)) == ("queued", 0)
    assert job.status == "queued"
    assert lease_one(queue).id == job.id


def test_fail_with_retries_left_keeps_the_error_text(queue: Queue) -> None:
    job = queue.enqueue(add, 1, retries=1, backoff=10)
    fail(queue, lease_one(queue), error="first failure")
    assert job.error == "first failure"
    assert queue.counts().stats["retried"] == 1


def test_fail_with_no_retries_left_fails_for_good(queue: Queue) -> None:
    job = queue.enqueue(add, 1, retries=1, backoff=0)
    fail(queue, lease_one(queue), error="first")
    status = fail(queue, lease_one(queue), error="Traceback ...\nKeyError: 'second'")
    assert status == ("failed", 0)
    info = job.info()
    assert info.status == "failed"
    assert info.attempts == 2
    assert info.error == "Traceback ...\nKeyError: 'second'"
    assert queue.job_ids("failed") == [job.id]
    assert queue.counts().stats["failed"] == 1


def test_fail_without_retries_fails_at_the_first_error(queue: Queue) -> None:
    job = queue.enqueue(add, 1)
    assert fail(queue, lease_one(queue), error="boom")[0] == "failed"
    assert (job.status, job.error) == ("failed", "boom")


def test_refused_failure_never_retries(queue: Queue) -> None:
    job = queue.enqueue(add, 1, retries=5, backoff=0)
    status = fail(queue, lease_one(queue), error="handler refused", kind=FailKind.REFUSED)
    assert status == ("failed", 0)
    info = job.info()
    assert (info.attempts, info.record["failure"], info.error) == (1, "refused", "handler refused")


def test_timeout_failure_retries_while_attempts_remain(queue: Queue) -> None:
    job = queue.enqueue(add, 1, retries=1, backoff=0)
    assert fail(queue, lease_one(queue), kind=FailKind.TIMEOUT)[0] == "queued"
    assert job.info().record["failure"] == "timeout"


def test_failed_job_cannot_be_popped(queue: Queue) -> None:
    queue.enqueue(add, 1)
    fail(queue, lease_one(queue))
    assert pop(queue).leases == []


# -- cancel -----------------------------------------------------------------------------------


def test_cancel_of_a_queued_job(queue: Queue) -> None:
    job = queue.enqueue(add, 1)
    assert job.cancel() == "queued"
    assert job.status == "cancelled"
    assert len(queue) == 0
    assert pop(queue).leases == []
    assert queue.counts().stats["cancelled"] == 1


def test_cancel_of_a_delayed_job(queue: Queue) -> None:
    job = queue.enqueue(add, 1, delay=0.1)
    assert job.cancel() == "delayed"
    time.sleep(0.15)
    assert pop(queue).leases == []
    assert job.status == "cancelled"


def test_cancel_of_an_active_job_refuses_its_later_complete(queue: Queue) -> None:
    job = queue.enqueue(add, 1)
    lease = lease_one(queue)
    assert job.cancel() == "active"
    with pytest.raises(LeaseLost):
        complete(queue, lease, "too late")
    assert job.status == "cancelled"
    assert queue.connection.hget(queue.keys.results, job.id) is None


def test_cancel_of_an_active_job_makes_renew_return_zero(queue: Queue) -> None:
    job = queue.enqueue(add, 1)
    lease = lease_one(queue)
    job.cancel()
    assert renew(queue, lease) == 0


def test_cancel_of_an_active_job_refuses_its_later_fail(queue: Queue) -> None:
    job = queue.enqueue(add, 1, retries=3, backoff=0)
    lease = lease_one(queue)
    job.cancel()
    with pytest.raises(LeaseLost):
        fail(queue, lease)
    assert job.status == "cancelled"
    assert len(queue) == 0


def test_cancelled_active_job_is_not_reclaimed(queue: Queue) -> None:
    job = queue.enqueue(add, 1)
    lease_one(queue, lease_ms=20)
    job.cancel()
    time.sleep(0.04)
    assert pop(queue).leases == []
    assert job.status == "cancelled"


@pytest.fixture
def finished_jobs(queue: Queue) -> Iterator[dict[str, Job]]:
    done = queue.enqueue(add, 1)
    complete(queue, lease_one(queue), 1)
    failed = queue.enqueue(add, 2)
    fail(queue, lease_one(queue))
    cancelled = queue.enqueue(add, 3)
    cancelled.cancel()
    yield {"complete": done, "failed": failed, "cancelled": cancelled}


@pytest.mark.parametrize("status", ["complete", "failed", "cancelled"])
def test_cancel_of_a_finished_job_raises_invalid_job_state(
    finished_jobs: dict[str, Job], status: str
) -> None:
    job = finished_jobs[status]
    with pytest.raises(InvalidJobState, match=status):
        job.cancel()
    assert job.status == status


def test_cancel_of_an_unknown_job_raises_job_not_found(queue: Queue) -> None:
    with pytest.raises(JobNotFound):
        Job("missing", queue).cancel()


# -- Job.wait ---------------------------------------------------------------------------------


def _later(seconds: float, action: Any) -> threading.Timer:
    timer = threading.Timer(seconds, action)
    timer.start()
    return timer


def test_wait_returns_the_result(queue: Queue) -> None:
    job = queue.enqueue(add, 1)
    lease = lease_one(queue)
    timer = _later(0.1, lambda: complete(queue, lease, {"answer": 42}))
    try:
        assert job.wait(timeout=5) == {"answer": 42}
    finally:
        timer.join()


def test_wait_returns_at_once_for_a_complete_job(queue: Queue) -> None:
    job = queue.enqueue(add, 1)
    complete(queue, lease_one(queue), 3)
    assert job.wait(timeout=0) == 3


def test_wait_raises_job_failed_with_the_error(queue: Queue) -> None:
    job = queue.enqueue(add, 1)
    lease = lease_one(queue)
    timer = _later(0.05, lambda: fail(queue, lease, error="Traceback ...\nValueError: bad"))
    try:
        with pytest.raises(JobFailed) as caught:
            job.wait(timeout=5)
    finally:
        timer.join()
    assert not isinstance(caught.value, JobCancelled)
    assert caught.value.job_id == job.id
    assert caught.value.error == "Traceback ...\nValueError: bad"
    assert "ValueError: bad" in str(caught.value)


def test_wait_raises_job_cancelled(queue: Queue) -> None:
    job = queue.enqueue(add, 1)
    timer = _later(0.05, job.cancel)
    try:
        with pytest.raises(JobCancelled):
            job.wait(timeout=5)
    finally:
        timer.join()


def test_wait_raises_wait_timeout_for_a_job_still_queued(queue: Queue) -> None:
    job = queue.enqueue(add, 1)
    started = time.monotonic()
    with pytest.raises(WaitTimeout, match="queued"):
        job.wait(timeout=0.1)
    assert time.monotonic() - started >= 0.1


def test_wait_keeps_waiting_through_a_retry(queue: Queue) -> None:
    job = queue.enqueue(add, 1, retries=1, backoff=0)

    def fail_then_complete() -> None:
        fail(queue, lease_one(queue))
        complete(queue, lease_one(queue), "second run")

    timer = _later(0.05, fail_then_complete)
    try:
        assert job.wait(timeout=5) == "second run"
    finally:
        timer.join()
