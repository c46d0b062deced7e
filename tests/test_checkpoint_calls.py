"""Checkpoints and time slices, against the library (`psq_checkpoint`) and the client API.

The "workers" here are plain library calls (`calls.pop`, `calls.checkpoint`, ...): a pause is
what a worker does when a handler saves a checkpoint after its time slice is used up.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis
from helpers import server_ms

from pyscheduler import InvalidOption, JobNotFound, LeaseLost, Queue
from pyscheduler.runtime.context import JobContext, JobSuspended
from pyscheduler.store import calls
from pyscheduler.store.protocol import FailKind


def step(n: int) -> int:
    return n


@pytest.fixture
def queue(conn: redis.Redis) -> Queue:
    return Queue("work", connection=conn)


def lease_one(queue: Queue, lease_ms: int = 10_000, worker: str = "worker-1") -> calls.Lease:
    (lease,) = calls.pop(queue.connection, queue.keys, 1, lease_ms, worker).leases
    return lease


def pop_ids(queue: Queue, n: int) -> list[str]:
    return [lease.id for lease in calls.pop(queue.connection, queue.keys, n, 10_000, "w").leases]


def save(
    queue: Queue, lease: calls.Lease, value: Any, lease_ms: int = 10_000, pause: bool = False
) -> int:
    return calls.checkpoint(
        queue.connection, queue.keys, lease.id, lease.token, json.dumps(value), lease_ms, pause
    )


# -- saving -----------------------------------------------------------------------------------


def test_checkpoint_saves_the_value(queue: Queue) -> None:
    job = queue.enqueue(step, 1)
    lease = lease_one(queue)
    save(queue, lease, {"done": 3, "rows": [1, 2]})
    assert job.info().checkpoint == {"done": 3, "rows": [1, 2]}


def test_a_later_checkpoint_replaces_the_earlier_one(queue: Queue) -> None:
    job = queue.enqueue(step, 1)
    lease = lease_one(queue)
    save(queue, lease, {"done": 1})
    save(queue, lease, {"done": 2})
    assert job.info().checkpoint == {"done": 2}


def test_checkpoint_renews_the_lease(conn: redis.Redis, queue: Queue) -> None:
    queue.enqueue(step, 1)
    lease = lease_one(queue, lease_ms=1000)
    before = server_ms(conn)
    deadline = save(queue, lease, {"done": 1}, lease_ms=60_000)
    after = server_ms(conn)
    assert before + 60_000 <= deadline <= after + 60_000
    assert deadline > lease.deadline_ms
    assert conn.zscore(queue.keys.active, lease.id) == deadline


def test_checkpoint_without_pause_keeps_the_job_running(queue: Queue) -> None:
    job = queue.enqueue(step, 1)
    lease = lease_one(queue)
    save(queue, lease, {"done": 1})
    assert job.status == "active"
    assert len(queue) == 0
    assert calls.complete(queue.connection, queue.keys, lease.id, lease.token, "1") >= 0


def test_checkpoint_keeps_a_job_alive_past_its_first_lease(queue: Queue) -> None:
    job = queue.enqueue(step, 1)
    lease = lease_one(queue, lease_ms=100)
    save(queue, lease, {"done": 1}, lease_ms=10_000)
    time.sleep(0.15)
    assert pop_ids(queue, 1) == []  # not reclaimed: the checkpoint renewed the lease
    assert job.info().record["lost"] == 0


def test_checkpoint_with_a_stale_token_is_refused_and_saves_nothing(
    conn: redis.Redis, queue: Queue
) -> None:
    job = queue.enqueue(step, 1)
    old = lease_one(queue, lease_ms=50)
    save(queue, old, {"done": 1}, lease_ms=50)
    time.sleep(0.1)
    new = lease_one(queue, worker="worker-2")  # reclaims the expired lease
    assert new.token != old.token
    with pytest.raises(LeaseLost):
        save(queue, old, {"done": 99}, lease_ms=60_000)
    assert job.info().checkpoint == {"done": 1}
    assert conn.zscore(queue.keys.active, job.id) == new.deadline_ms
    assert json.loads(new.checkpoint or "null") == {"done": 1}


def test_checkpoint_with_a_stale_token_does_not_pause_the_new_owners_run(queue: Queue) -> None:
    job = queue.enqueue(step, 1)
    old = lease_one(queue, lease_ms=50)
    time.sleep(0.1)
    new = lease_one(queue, worker="worker-2")
    with pytest.raises(LeaseLost):
        save(queue, old, {"done": 99}, pause=True)
    assert job.status == "active"
    assert job.info(show_token=True).record["token"] == new.token
    assert len(queue) == 0


def test_checkpoint_after_the_job_completed_is_refused(queue: Queue) -> None:
    job = queue.enqueue(step, 1)
    lease = lease_one(queue)
    calls.complete(queue.connection, queue.keys, lease.id, lease.token, "1")
    with pytest.raises(LeaseLost):
        save(queue, lease, {"done": 1})
    assert job.info().checkpoint is None
    assert job.status == "complete"


def test_checkpoint_of_a_cancelled_job_is_refused(queue: Queue) -> None:
    job = queue.enqueue(step, 1)
    lease = lease_one(queue)
    job.cancel()
    with pytest.raises(LeaseLost):
        save(queue, lease, {"done": 1}, pause=True)
    assert job.status == "cancelled"
    assert job.info().checkpoint is None
    assert len(queue) == 0


def test_checkpoint_of_an_unknown_job_raises_job_not_found(queue: Queue) -> None:
    with pytest.raises(JobNotFound):
        calls.checkpoint(queue.connection, queue.keys, "nope", "1" * 32, "{}", 10_000, False)


def test_checkpoint_refuses_a_non_positive_lease_and_saves_nothing(queue: Queue) -> None:
    job = queue.enqueue(step, 1)
    lease = lease_one(queue)
    with pytest.raises(InvalidOption, match="lease_ms"):
        save(queue, lease, {"done": 1}, lease_ms=0)
    assert job.info().checkpoint is None
    assert job.status == "active"


# -- pausing ----------------------------------------------------------------------------------


def test_pause_returns_zero_and_queues_the_job(conn: redis.Redis, queue: Queue) -> None:
    job = queue.enqueue(step, 1)
    lease = lease_one(queue)
    assert save(queue, lease, {"done": 1}, pause=True) == 0
    assert job.status == "queued"
    assert conn.zscore(queue.keys.active, job.id) is None
    assert queue.job_ids("queued") == [job.id]


def test_paused_job_goes_behind_same_priority_jobs_already_waiting(queue: Queue) -> None:
    long_job = queue.enqueue(step, 0)
    lease = lease_one(queue)
    waiting = [queue.enqueue(step, i).id for i in (1, 2, 3)]
    save(queue, lease, {"done": 1}, pause=True)
    assert pop_ids(queue, 4) == [*waiting, long_job.id]


def test_paused_job_keeps_its_priority(queue: Queue) -> None:
    low = queue.enqueue(step, 1, priority=0)
    urgent = queue.enqueue(step, 2, priority=5)
    lease = lease_one(queue)
    assert lease.id == urgent.id
    save(queue, lease, {"done": 1}, pause=True)
    later_urgent = queue.enqueue(step, 3, priority=5)
    higher = queue.enqueue(step, 4, priority=9)
    assert pop_ids(queue, 4) == [higher.id, urgent.id, later_urgent.id, low.id]


def test_paused_job_runs_next_from_its_checkpoint(queue: Queue) -> None:
    job = queue.enqueue(step, 1)
    first = lease_one(queue, worker="worker-1")
    assert first.checkpoint is None
    save(queue, first, {"done": 40}, pause=True)
    second = lease_one(queue, worker="worker-2")
    assert second.id == job.id
    assert second.token != first.token
    assert json.loads(second.checkpoint or "null") == {"done": 40}
    assert json.loads(second.record)["worker"] == "worker-2"


def test_pause_is_not_a_failed_attempt(queue: Queue) -> None:
    job = queue.enqueue(step, 1, retries=0)
    for n in range(3):
        lease = lease_one(queue)
        assert json.loads(lease.record)["attempts"] == 1
        save(queue, lease, {"done": n}, pause=True)
    info = job.info()
    assert info.attempts == 0
    assert info.error is None
    stats = queue.counts().stats
    assert "failed" not in stats
    assert "retried" not in stats


def test_a_pause_does_not_use_up_a_retry(queue: Queue) -> None:
    job = queue.enqueue(step, 1, retries=1, backoff=0)
    lease = lease_one(queue)
    save(queue, lease, {"done": 1}, pause=True)
    lease = lease_one(queue)
    status, _ = calls.fail(
        queue.connection, queue.keys, lease.id, lease.token, FailKind.ERROR, "boom", 0.0
    )
    assert status == "queued"  # the pause did not use up the one retry
    lease = lease_one(queue)
    assert json.loads(lease.record)["attempts"] == 2
    status, _ = calls.fail(
        queue.connection, queue.keys, lease.id, lease.token, FailKind.ERROR, "boom", 0.0
    )
    assert status == "failed"
    assert job.status == "failed"


def test_pauses_are_counted_in_stats(queue: Queue) -> None:
    queue.enqueue(step, 1)
    for n in range(2):
        save(queue, lease_one(queue), {"done": n}, pause=True)
    stats = queue.counts().stats
    assert stats["paused"] == 2


def test_pauses_are_counted_in_the_record(queue: Queue) -> None:
    job = queue.enqueue(step, 1)
    for n in range(3):
        save(queue, lease_one(queue), {"done": n}, pause=True)
    assert job.info().record["pauses"] == 3


def test_job_info_shows_paused_while_queued_after_a_pause(queue: Queue) -> None:
    job = queue.enqueue(step, 1)
    assert job.info().paused is False
    lease = lease_one(queue)
    save(queue, lease, {"done": 1}, pause=True)
    info = job.info()
    assert (info.status, info.paused, info.checkpoint) == ("queued", True, {"done": 1})
    lease_one(queue)
    assert job.info().paused is False  # running again


def test_a_paused_run_cannot_complete(queue: Queue) -> None:
    job = queue.enqueue(step, 1)
    lease = lease_one(queue)
    save(queue, lease, {"done": 1}, pause=True)
    with pytest.raises(LeaseLost):
        calls.complete(queue.connection, queue.keys, lease.id, lease.token, "1")
    with pytest.raises(LeaseLost):
        save(queue, lease, {"done": 2})
    assert job.status == "queued"
    assert job.info().checkpoint == {"done": 1}


def test_a_paused_job_is_not_reclaimed_as_a_lost_lease(queue: Queue) -> None:
    job = queue.enqueue(step, 1)
    lease = lease_one(queue, lease_ms=50)
    save(queue, lease, {"done": 1}, lease_ms=50, pause=True)
    time.sleep(0.1)
    again = lease_one(queue)
    assert again.id == job.id
    assert json.loads(again.record)["lost"] == 0
    assert "reclaimed" not in queue.counts().stats


def test_pause_wakes_an_idle_worker(conn: redis.Redis, queue: Queue) -> None:
    queue.enqueue(step, 1)
    lease = lease_one(queue)
    conn.delete(queue.keys.wake)  # an idle worker took the enqueue's token
    save(queue, lease, {"done": 1}, pause=True)
    assert conn.llen(queue.keys.wake) == 1


def test_checkpoint_without_pause_wakes_nobody(conn: redis.Redis, queue: Queue) -> None:
    queue.enqueue(step, 1)
    lease = lease_one(queue)
    conn.delete(queue.keys.wake)
    save(queue, lease, {"done": 1})
    assert conn.llen(queue.keys.wake) == 0


def test_time_slice_reaches_the_worker_in_the_record(queue: Queue) -> None:
    queue.enqueue(step, 1, time_slice=2.5)
    lease = lease_one(queue)
    save(queue, lease, {"done": 1}, pause=True)
    assert json.loads(lease_one(queue).record)["time_slice"] == 2.5


def test_a_job_without_time_slice_has_none_in_its_record(queue: Queue) -> None:
    queue.enqueue(step, 1)
    assert "time_slice" not in json.loads(lease_one(queue).record)


def test_time_slice_must_not_be_negative(queue: Queue) -> None:
    with pytest.raises(InvalidOption, match="time_slice"):
        queue.enqueue(step, 1, time_slice=-1)
    assert len(queue) == 0


def test_checkpoint_is_dropped_with_the_finished_job(conn: redis.Redis, queue: Queue) -> None:
    job = queue.enqueue(step, 1, result_ttl=0)
    lease = lease_one(queue)
    save(queue, lease, {"done": 1})
    calls.complete(conn, queue.keys, lease.id, lease.token, "1")
    time.sleep(0.01)
    assert pop_ids(queue, 1) == []  # an idle pop sweeps expired records
    assert conn.hexists(queue.keys.checkpoints, job.id) == 0
    assert conn.hexists(queue.keys.jobs, job.id) == 0


def test_a_retry_of_a_once_paused_job_does_not_read_as_paused(queue: Queue) -> None:
    job = queue.enqueue(step, 1, retries=1, backoff=0)
    save(queue, lease_one(queue), {"done": 1}, pause=True)
    lease = lease_one(queue)
    calls.fail(queue.connection, queue.keys, lease.id, lease.token, FailKind.ERROR, "boom", 0.0)
    info = job.info()
    assert info.status == "queued"
    assert info.paused is False


# -- the handler's side: JobContext.save_checkpoint -------------------------------------------


def context_for(queue: Queue, lease: calls.Lease) -> JobContext:
    return JobContext(
        queue.connection,
        queue.name,
        lease.id,
        lease.token,
        json.loads(lease.record),
        lease.checkpoint,
        10_000,
    )


def test_save_checkpoint_within_the_time_slice_keeps_running(queue: Queue) -> None:
    job = queue.enqueue(step, 1, time_slice=60)
    context = context_for(queue, lease_one(queue))
    context.save_checkpoint({"done": 1})
    assert (job.status, job.info().checkpoint) == ("active", {"done": 1})
    assert context.checkpoint == {"done": 1}


def test_last_checkpoint_never_pauses_even_after_the_time_slice(queue: Queue) -> None:
    job = queue.enqueue(step, 1, time_slice=0.02)
    context = context_for(queue, lease_one(queue))
    time.sleep(0.03)
    context.save_checkpoint({"done": 1}, last=True)
    assert (job.status, job.info().checkpoint) == ("active", {"done": 1})


def test_save_checkpoint_after_the_time_slice_pauses_the_job(queue: Queue) -> None:
    job = queue.enqueue(step, 1, time_slice=0.02)
    context = context_for(queue, lease_one(queue))
    time.sleep(0.03)
    with pytest.raises(JobSuspended):
        context.save_checkpoint({"done": 5})
    info = job.info()
    assert (info.status, info.paused, info.checkpoint) == ("queued", True, {"done": 5})
    resumed = context_for(queue, lease_one(queue))
    assert (resumed.checkpoint, resumed.resumed, resumed.attempts) == ({"done": 5}, True, 1)


def test_save_checkpoint_without_time_slice_never_pauses(queue: Queue) -> None:
    job = queue.enqueue(step, 1)
    context = context_for(queue, lease_one(queue))
    time.sleep(0.02)
    context.save_checkpoint({"done": 1})
    assert job.status == "active"


def test_save_checkpoint_pauses_when_the_worker_shuts_down(queue: Queue) -> None:
    job = queue.enqueue(step, 1)
    context = context_for(queue, lease_one(queue))
    context.shutdown_requested = True
    with pytest.raises(JobSuspended):
        context.save_checkpoint({"done": 2})
    assert (job.status, job.info().checkpoint) == ("queued", {"done": 2})


def test_save_checkpoint_of_a_lost_lease_raises_lease_lost(queue: Queue) -> None:
    job = queue.enqueue(step, 1)
    context = context_for(queue, lease_one(queue, lease_ms=30))
    time.sleep(0.06)
    lease_one(queue, worker="worker-2")
    with pytest.raises(LeaseLost):
        context.save_checkpoint({"done": 9})
    assert job.info().checkpoint is None
    assert context.checkpoint is None
