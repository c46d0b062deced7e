"""Splitting jobs into subtasks: the library's bookkeeping and the client layer, no worker.

The "workers" here are plain library calls: `calls.pop` / `calls.complete` / `calls.fail` /
`calls.split`, then `splitting.deliver_notice` for the cross-queue step a worker takes after a
subtask ends (record it in the parent's queue, then forget the notice in the subtask's queue).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from helpers import server_ms

from pyscheduler import InvalidOption, Job, JobNotFound, LeaseLost, Queue
from pyscheduler.client import splitting
from pyscheduler.client.splitting import Subtask, SubtaskFailed
from pyscheduler.exceptions import InvalidKeys, PayloadNotJSON
from pyscheduler.runtime.context import JobContext, JobSuspended
from pyscheduler.store import calls
from pyscheduler.store.keys import QueueKeys
from pyscheduler.store.protocol import (
    MAX_LOST_LEASES,
    NOTICE_REDRIVE_MS,
    OUTCOMES_PAGE_MAX,
    FailKind,
)

pytestmark = pytest.mark.cluster  # also on a local Redis Cluster (conftest.py)


def part(n: int) -> int:
    return n


def gather(results: list[Any], label: str = "") -> str:
    return label


def parent_of(lease: calls.Lease) -> calls.ParentRef:
    return calls.ParentRef(**json.loads(lease.record)["parent"])


def pop(conn: redis.Redis, queue: str, n: int = 1, lease_ms: int = 10_000) -> list[calls.Lease]:
    return calls.pop(conn, QueueKeys(queue), n, lease_ms, "w").leases


def pop_one(conn: redis.Redis, queue: str, lease_ms: int = 10_000) -> calls.Lease:
    (lease,) = pop(conn, queue, 1, lease_ms)
    return lease


def deliver(conn: redis.Redis, lease: calls.Lease, ok: bool, value: str) -> str:
    """The worker's step after a subtask ended: tell the parent's queue."""
    return splitting.deliver_notice(
        conn, QueueKeys(lease.queue), lease.id, parent_of(lease), ok, value
    )


def finish(conn: redis.Redis, lease: calls.Lease, result: Any) -> str:
    """Complete a subtask and deliver its notice; the delivery's outcome."""
    text = json.dumps(result)
    calls.complete(conn, QueueKeys(lease.queue), lease.id, lease.token, text)
    return deliver(conn, lease, True, text)


def fail_for_good(conn: redis.Redis, lease: calls.Lease, error: str = "ValueError: bad") -> str:
    """Fail a subtask that has no retries left and deliver its notice."""
    status, _ = calls.fail(
        conn, QueueKeys(lease.queue), lease.id, lease.token, FailKind.ERROR, error, 0.0
    )
    assert status == "failed"
    return deliver(conn, lease, False, error)


def outcomes(conn: redis.Redis, queue: str, parent_id: str, number: int = 1) -> list[Any]:
    record = json.loads(calls.fetch(conn, QueueKeys(queue), parent_id).record)
    total = int(record["split_total"])
    return list(splitting.iter_outcomes(conn, QueueKeys(queue), parent_id, number, total))


def status_of(conn: redis.Redis, queue: str, job_id: str) -> str:
    return str(json.loads(calls.fetch(conn, QueueKeys(queue), job_id).record)["status"])


def notices(conn: redis.Redis, queue: str) -> list[str]:
    return [m.decode() for m in conn.zrange(QueueKeys(queue).notices, 0, -1)]


def age_notice(conn: redis.Redis, queue: str, subtask: str) -> None:
    """Make a notice overdue without waiting NOTICE_REDRIVE_MS (a constant rendered into the
    library): its ZSET score is the time the subtask ended, so writing a score further in the
    past than NOTICE_REDRIVE_MS is what waiting that long would do."""
    now = server_ms(conn)
    assert conn.zscore(QueueKeys(queue).notices, subtask) is not None
    conn.zadd(QueueKeys(queue).notices, {subtask: now - NOTICE_REDRIVE_MS - 1000}, xx=True)


@pytest.fixture
def main(conn: redis.Redis) -> Queue:
    return Queue("main", connection=conn)


def start_split(
    conn: redis.Redis,
    queue: Queue,
    lease: calls.Lease,
    subtasks: list[Subtask],
    number: int = 1,
    collect: bool = False,
    saved: str | None = None,
) -> str:
    """What `current_job().split(...)` does: enqueue the subtasks, then psq_split."""
    groups = enqueue_split(conn, queue, lease.id, subtasks, number)
    return calls.split(conn, queue.keys, lease.id, lease.token, number, groups, collect, saved)


def enqueue_split(
    conn: redis.Redis, queue: Queue, parent_id: str, subtasks: list[Subtask], number: int = 1
) -> list[tuple[str, int]]:
    return splitting.enqueue_subtasks(
        conn, queue.name, parent_id, number, subtasks, lambda name: Queue(name, connection=conn)
    )


# -- enqueue_group: a client-side split --------------------------------------------------------


def test_group_parent_waits_with_zero_progress(conn: redis.Redis, main: Queue) -> None:
    parent = main.enqueue_group([Subtask(part, i) for i in range(3)], gather)
    info = parent.info()
    assert info.status == "waiting"
    assert (info.subtasks_done, info.subtasks_total) == (0, 3)
    assert main.job_ids("waiting") == [parent.id]
    assert parent.id not in main.job_ids("queued")


def test_group_queues_its_subtasks_in_order_with_derived_ids(main: Queue) -> None:
    parent = main.enqueue_group([Subtask(part, i) for i in range(3)], gather)
    ids = [f"{parent.id}.1.{i}" for i in (1, 2, 3)]
    assert main.job_ids("queued") == ids
    record = Job(ids[1], main).info().record
    assert record["parent"] == {"queue": "main", "id": parent.id, "split": 1, "index": 2}
    assert Job(ids[1], main).info().args == [1]


def test_group_puts_subtasks_in_the_queues_they_name(conn: redis.Redis, main: Queue) -> None:
    side = Queue("side", connection=conn)
    subtasks = [Subtask(part, 1), Subtask(part, 2, queue="side"), Subtask(part, 3, queue=side)]
    subtasks.append(Subtask(part, 4))
    parent = main.enqueue_group(subtasks, gather)
    assert main.job_ids("queued") == [f"{parent.id}.1.1", f"{parent.id}.1.4"]
    assert side.job_ids("queued") == [f"{parent.id}.1.2", f"{parent.id}.1.3"]
    assert parent.info().record["split_groups"] == [["main", 1], ["side", 2], ["main", 1]]


def test_group_subtask_options_apply_to_the_subtask(conn: redis.Redis, main: Queue) -> None:
    parent = main.enqueue_group(
        [Subtask(part, 1, options={"priority": 7, "retries": 2, "timeout": 5})], gather
    )
    record = Job(f"{parent.id}.1.1", main).info().record
    assert (record["priority"], record["retries"], record["timeout"]) == (7, 2, 5)


def test_group_with_no_subtasks_is_refused(main: Queue) -> None:
    with pytest.raises(InvalidOption, match="at least one subtask"):
        main.enqueue_group([], gather)
    assert main.job_ids("waiting") == []


def test_progress_counts_each_delivered_subtask(conn: redis.Redis, main: Queue) -> None:
    parent = main.enqueue_group([Subtask(part, i) for i in range(3)], gather)
    leases = pop(conn, "main", 3)
    for done, lease in enumerate(leases[:2], start=1):
        assert finish(conn, lease, done) == "recorded"
        assert parent.info().subtasks_done == done
    assert parent.status == "waiting"


def test_completing_without_delivery_does_not_count(conn: redis.Redis, main: Queue) -> None:
    parent = main.enqueue_group([Subtask(part, i) for i in range(2)], gather)
    lease = pop_one(conn, "main")
    calls.complete(conn, main.keys, lease.id, lease.token, "1")
    assert parent.info().subtasks_done == 0  # the cross-queue step has not run yet


def test_last_subtask_queues_the_parent(conn: redis.Redis, main: Queue) -> None:
    parent = main.enqueue_group([Subtask(part, i) for i in range(3)], gather, "label")
    leases = pop(conn, "main", 3)
    assert [finish(conn, lease, i) for i, lease in enumerate(leases)] == [
        "recorded",
        "recorded",
        "resumed",
    ]
    info = parent.info()
    assert (info.status, info.subtasks_done, info.subtasks_total) == ("queued", 3, 3)
    assert main.job_ids("waiting") == []
    lease = pop_one(conn, "main")
    assert lease.id == parent.id
    assert json.loads(lease.payload)["args"] == ["label"]
    assert json.loads(lease.record)["results_arg"] is True


def test_resumed_parent_runs_as_its_first_attempt(conn: redis.Redis, main: Queue) -> None:
    main.enqueue_group([Subtask(part, 1)], gather)
    finish(conn, pop_one(conn, "main"), 1)
    assert json.loads(pop_one(conn, "main").record)["attempts"] == 1


def test_parent_in_one_queue_resumes_after_subtasks_in_others(conn: redis.Redis) -> None:
    main = Queue("main", connection=conn)
    parent = main.enqueue_group(
        [Subtask(part, 1, queue="side"), Subtask(part, 2, queue="other")], gather
    )
    assert finish(conn, pop_one(conn, "other"), 2) == "recorded"
    assert finish(conn, pop_one(conn, "side"), 1) == "resumed"
    assert parent.status == "queued"
    assert outcomes(conn, "main", parent.id) == [1, 2]


def test_outcomes_are_in_subtask_order_whatever_the_completion_order(
    conn: redis.Redis, main: Queue
) -> None:
    subtasks = [Subtask(part, i, queue=("side" if i % 2 else "main")) for i in range(6)]
    parent = main.enqueue_group(subtasks, gather)
    leases = pop(conn, "side", 3) + pop(conn, "main", 3)
    for lease in sorted(leases, key=lambda le: le.id, reverse=True):
        finish(conn, lease, {"from": lease.id})
    assert outcomes(conn, "main", parent.id) == [
        {"from": f"{parent.id}.1.{i}"} for i in range(1, 7)
    ]


def test_delivering_a_notice_twice_counts_once(conn: redis.Redis, main: Queue) -> None:
    parent = main.enqueue_group([Subtask(part, i) for i in range(2)], gather)
    lease = pop_one(conn, "main")
    assert finish(conn, lease, 1) == "recorded"
    assert deliver(conn, lease, True, "1") == "duplicate"
    assert deliver(conn, lease, True, "999") == "duplicate"
    info = parent.info()
    assert (info.status, info.subtasks_done) == ("waiting", 1)
    assert outcomes(conn, "main", parent.id)[0] == 1


@pytest.mark.parametrize("stale_first", [True, False], ids=["stale-first", "stale-last"])
def test_a_subtask_that_ran_twice_counts_once(
    conn: redis.Redis, main: Queue, stale_first: bool
) -> None:
    parent = main.enqueue_group([Subtask(part, 1), Subtask(part, 2, queue="side")], gather)
    first = pop_one(conn, "main", lease_ms=50)  # this worker stalls past its lease
    time.sleep(0.1)
    second = pop_one(conn, "main")  # reclaims subtask 1
    assert (second.id, json.loads(second.record)["lost"]) == (first.id, 1)
    if stale_first:
        with pytest.raises(LeaseLost):
            calls.complete(conn, main.keys, first.id, first.token, '"first"')
        assert finish(conn, second, "second") == "recorded"
    else:
        assert finish(conn, second, "second") == "recorded"
        with pytest.raises(LeaseLost):
            calls.complete(conn, main.keys, first.id, first.token, '"first"')
    assert notices(conn, "main") == []
    assert parent.info().subtasks_done == 1
    assert outcomes(conn, "main", parent.id)[0] == "second"


def test_a_subtask_failing_for_good_fails_the_parent(conn: redis.Redis, main: Queue) -> None:
    parent = main.enqueue_group([Subtask(part, i) for i in range(3)], gather)
    first, second = pop(conn, "main", 2)
    assert finish(conn, first, 1) == "recorded"
    assert fail_for_good(conn, second, "Traceback ...\nValueError: bad row") == "parent_failed"
    info = parent.info()
    assert info.status == "failed"
    assert info.error is not None
    assert "subtask 2 of split 1 failed" in info.error
    assert "bad row" in info.error
    assert main.job_ids("waiting") == []
    assert set(main.job_ids("failed")) == {second.id, parent.id}


def test_a_failed_parent_cancels_its_pending_subtasks_in_every_queue(conn: redis.Redis) -> None:
    main = Queue("main", connection=conn)
    subtasks = [Subtask(part, 1), Subtask(part, 2), Subtask(part, 3, queue="side")]
    parent = main.enqueue_group(subtasks, gather)
    failing, running = pop(conn, "main", 2)
    fail_for_good(conn, failing)
    assert status_of(conn, "side", f"{parent.id}.1.3") == "cancelled"  # was queued
    assert status_of(conn, "main", running.id) == "cancelled"  # was active
    with pytest.raises(LeaseLost):
        calls.complete(conn, main.keys, running.id, running.token, "2")
    assert len(Queue("side", connection=conn)) == 0


def test_a_subtask_with_retries_left_does_not_touch_the_parent(
    conn: redis.Redis, main: Queue
) -> None:
    parent = main.enqueue_group([Subtask(part, 1, options={"retries": 1, "backoff": 0})], gather)
    lease = pop_one(conn, "main")
    status, _ = calls.fail(conn, main.keys, lease.id, lease.token, FailKind.ERROR, "boom", 0.0)
    assert status == "queued"
    assert notices(conn, "main") == []
    assert parent.status == "waiting"
    assert finish(conn, pop_one(conn, "main"), 5) == "resumed"
    assert outcomes(conn, "main", parent.id) == [5]


def test_a_subtask_reclaimed_too_often_fails_the_parent(conn: redis.Redis, main: Queue) -> None:
    parent = main.enqueue_group([Subtask(part, 1)], gather)
    sub_id = f"{parent.id}.1.1"
    for _ in range(MAX_LOST_LEASES + 1):  # its worker dies every time
        assert pop_one(conn, "main", lease_ms=20).id == sub_id
        time.sleep(0.05)
    assert pop(conn, "main") == []  # this pop reclaims it once more: failed for good
    assert status_of(conn, "main", sub_id) == "failed"
    assert notices(conn, "main") == [sub_id]
    parent_ref = calls.ParentRef("main", parent.id, 1, 1)
    error = calls.fetch(conn, main.keys, sub_id).error or ""
    assert "lease expired" in error
    assert splitting.deliver_notice(conn, main.keys, sub_id, parent_ref, False, error) == (
        "parent_failed"
    )
    assert parent.status == "failed"


def test_collected_failure_resumes_the_parent_with_subtask_failed(
    conn: redis.Redis, main: Queue
) -> None:
    parent = main.enqueue_group([Subtask(part, i) for i in range(3)], gather, collect=True)
    first, second, third = pop(conn, "main", 3)
    finish(conn, first, 10)
    assert fail_for_good(conn, second, "Traceback ...\nValueError: bad row") == "recorded"
    assert finish(conn, third, 30) == "resumed"
    assert parent.status == "queued"
    got = outcomes(conn, "main", parent.id)
    assert got == [10, SubtaskFailed(2, "Traceback ...\nValueError: bad row"), 30]
    assert str(got[1]) == "subtask 2 failed: ValueError: bad row"


def test_a_late_outcome_after_the_parent_failed_is_only_recorded(
    conn: redis.Redis, main: Queue
) -> None:
    parent = main.enqueue_group([Subtask(part, i) for i in range(3)], gather)
    done, failing = pop(conn, "main", 2)
    calls.complete(conn, main.keys, done.id, done.token, "1")  # delivery delayed
    assert fail_for_good(conn, failing) == "parent_failed"
    assert deliver(conn, done, True, "1") == "recorded"
    assert parent.status == "failed"
    assert status_of(conn, "main", done.id) == "complete"


def test_a_late_outcome_for_a_cancelled_parent_is_not_kept_forever(
    conn: redis.Redis, main: Queue
) -> None:
    parent = main.enqueue_group([Subtask(part, 1), Subtask(part, 2)], gather)
    lease = pop_one(conn, "main")
    calls.complete(conn, main.keys, lease.id, lease.token, "1")  # delivery delayed
    parent.cancel()
    assert deliver(conn, lease, True, "1") == "recorded"
    assert conn.pttl(main.keys.subtasks(parent.id)) != -1  # absent, or expiring with it
    assert notices(conn, "main") == []


# -- cancel -----------------------------------------------------------------------------------


def test_cancelling_a_waiting_parent_cancels_its_pending_subtasks(conn: redis.Redis) -> None:
    main = Queue("main", connection=conn)
    side = Queue("side", connection=conn)
    subtasks = [Subtask(part, 1), Subtask(part, 2, queue="side"), Subtask(part, 3, queue="side")]
    parent = main.enqueue_group(subtasks, gather)
    finish(conn, pop_one(conn, "side"), 2)  # subtask 2 ended before the cancel
    running = pop_one(conn, "side")  # subtask 3 runs
    assert parent.cancel() == "waiting"
    assert parent.status == "cancelled"
    assert status_of(conn, "main", f"{parent.id}.1.1") == "cancelled"
    assert status_of(conn, "side", f"{parent.id}.1.2") == "complete"
    assert status_of(conn, "side", running.id) == "cancelled"
    with pytest.raises(LeaseLost):
        calls.complete(conn, side.keys, running.id, running.token, "3")
    assert (len(main), len(side)) == (0, 0)


def test_cancelling_a_parent_cancels_nested_subtasks(conn: redis.Redis, main: Queue) -> None:
    parent = main.enqueue_group([Subtask(part, 1), Subtask(part, 2, queue="side")], gather)
    child = pop_one(conn, "side")
    side = Queue("side", connection=conn)
    grandchildren = [Subtask(part, 10, queue="deep"), Subtask(part, 11, queue="deep")]
    assert start_split(conn, side, child, grandchildren) == "waiting"
    parent.cancel()
    assert status_of(conn, "side", child.id) == "cancelled"
    assert [status_of(conn, "deep", f"{child.id}.1.{i}") for i in (1, 2)] == [
        "cancelled",
        "cancelled",
    ]
    assert status_of(conn, "main", f"{parent.id}.1.1") == "cancelled"
    assert len(Queue("deep", connection=conn)) == 0


def test_cancelled_subtasks_read_as_subtask_failed(conn: redis.Redis, main: Queue) -> None:
    parent = main.enqueue_group([Subtask(part, 1), Subtask(part, 2)], gather)
    finish(conn, pop_one(conn, "main"), 1)
    parent.cancel()
    got = outcomes(conn, "main", parent.id)
    assert got[0] == 1
    assert isinstance(got[1], SubtaskFailed)
    assert got[1].index == 2


# -- split from a handler ---------------------------------------------------------------------


def test_split_makes_the_running_job_wait(conn: redis.Redis, main: Queue) -> None:
    job = main.enqueue(part, 0)
    lease = pop_one(conn, "main")
    assert start_split(conn, main, lease, [Subtask(part, 1), Subtask(part, 2)]) == "waiting"
    info = job.info()
    assert (info.status, info.subtasks_done, info.subtasks_total) == ("waiting", 0, 2)
    assert conn.zscore(main.keys.active, job.id) is None
    assert main.job_ids("waiting") == [job.id]
    assert main.job_ids("queued") == [f"{job.id}.1.1", f"{job.id}.1.2"]
    assert info.record["results_arg"] is False


def test_waiting_for_subtasks_is_not_a_failed_attempt(conn: redis.Redis, main: Queue) -> None:
    job = main.enqueue(part, 0, retries=0)
    start_split(conn, main, pop_one(conn, "main"), [Subtask(part, 1)])
    assert job.info().attempts == 0
    finish(conn, pop_one(conn, "main"), 1)
    assert json.loads(pop_one(conn, "main").record)["attempts"] == 1


def test_a_split_lease_is_not_reclaimed(conn: redis.Redis, main: Queue) -> None:
    job = main.enqueue(part, 0)
    start_split(conn, main, pop_one(conn, "main", lease_ms=30), [Subtask(part, 1)])
    time.sleep(0.06)
    (sub,) = pop(conn, "main", 5)  # only the subtask is there; the parent was not reclaimed
    assert sub.id == f"{job.id}.1.1"
    assert job.status == "waiting"


def test_split_saves_the_checkpoint_for_the_next_run(conn: redis.Redis, main: Queue) -> None:
    job = main.enqueue(part, 0)
    start_split(conn, main, pop_one(conn, "main"), [Subtask(part, 1)], saved='{"phase": 2}')
    assert job.info().checkpoint == {"phase": 2}
    finish(conn, pop_one(conn, "main"), 1)
    assert json.loads(pop_one(conn, "main").checkpoint or "null") == {"phase": 2}


def test_split_without_checkpoint_keeps_the_last_one(conn: redis.Redis, main: Queue) -> None:
    job = main.enqueue(part, 0)
    lease = pop_one(conn, "main")
    calls.checkpoint(conn, main.keys, lease.id, lease.token, '{"phase": 1}', 10_000, False)
    start_split(conn, main, lease, [Subtask(part, 1)], saved=None)
    assert job.info().checkpoint == {"phase": 1}


def test_subtasks_that_ended_before_split_are_counted(conn: redis.Redis, main: Queue) -> None:
    job = main.enqueue(part, 0)
    lease = pop_one(conn, "main")
    groups = enqueue_split(conn, main, job.id, [Subtask(part, i) for i in range(3)])
    first, second = pop(conn, "main", 2)
    assert finish(conn, first, "a") == "recorded"  # the parent is not waiting yet
    assert finish(conn, second, "b") == "recorded"
    assert calls.split(conn, main.keys, lease.id, lease.token, 1, groups, False, None) == "waiting"
    assert job.info().subtasks_done == 2
    assert finish(conn, pop_one(conn, "main"), "c") == "resumed"
    assert outcomes(conn, "main", job.id) == ["a", "b", "c"]


def test_split_queues_the_job_at_once_when_all_subtasks_had_ended(
    conn: redis.Redis, main: Queue
) -> None:
    job = main.enqueue(part, 0)
    lease = pop_one(conn, "main")
    groups = enqueue_split(conn, main, job.id, [Subtask(part, 1, queue="side"), Subtask(part, 2)])
    finish(conn, pop_one(conn, "side"), 1)
    finish(conn, pop_one(conn, "main"), 2)
    assert calls.split(conn, main.keys, lease.id, lease.token, 1, groups, False, None) == "queued"
    assert job.status == "queued"
    assert main.job_ids("waiting") == []
    assert pop_one(conn, "main").id == job.id


def test_split_fails_the_job_when_a_subtask_had_failed(conn: redis.Redis, main: Queue) -> None:
    job = main.enqueue(part, 0)
    lease = pop_one(conn, "main")
    groups = enqueue_split(conn, main, job.id, [Subtask(part, 1), Subtask(part, 2)])
    assert fail_for_good(conn, pop_one(conn, "main"), "ValueError: early") == "recorded"
    assert calls.split(conn, main.keys, lease.id, lease.token, 1, groups, False, None) == "failed"
    info = job.info()
    assert info.status == "failed"
    assert "ValueError: early" in (info.error or "")
    assert main.job_ids("waiting") == []


def test_split_collecting_failures_ignores_an_earlier_failure(
    conn: redis.Redis, main: Queue
) -> None:
    job = main.enqueue(part, 0)
    lease = pop_one(conn, "main")
    groups = enqueue_split(conn, main, job.id, [Subtask(part, 1), Subtask(part, 2)])
    fail_for_good(conn, pop_one(conn, "main"), "ValueError: early")
    assert calls.split(conn, main.keys, lease.id, lease.token, 1, groups, True, None) == "waiting"
    assert finish(conn, pop_one(conn, "main"), 2) == "resumed"
    assert outcomes(conn, "main", job.id) == [SubtaskFailed(1, "ValueError: early"), 2]


@pytest.mark.parametrize("number", [0, 2, 5])
def test_split_number_must_follow_the_record(conn: redis.Redis, main: Queue, number: int) -> None:
    job = main.enqueue(part, 0)
    lease = pop_one(conn, "main")
    message = r"split number must be 1|split must be an integer >= 1"
    with pytest.raises(InvalidOption, match=message):
        calls.split(conn, main.keys, lease.id, lease.token, number, [("main", 1)], False, None)
    assert job.status == "active"
    assert conn.zscore(main.keys.active, job.id) == lease.deadline_ms
    assert "split" not in job.info().record


def test_a_second_split_takes_the_next_number(conn: redis.Redis, main: Queue) -> None:
    job = main.enqueue(part, 0)
    start_split(conn, main, pop_one(conn, "main"), [Subtask(part, 1)])
    finish(conn, pop_one(conn, "main"), "first")
    lease = pop_one(conn, "main")
    with pytest.raises(InvalidOption, match="split number must be 2"):
        calls.split(conn, main.keys, lease.id, lease.token, 1, [("main", 1)], False, None)
    subtasks = [Subtask(part, 2), Subtask(part, 3), Subtask(part, 4)]
    assert start_split(conn, main, lease, subtasks, number=2) == "waiting"
    info = job.info()
    assert (info.subtasks_done, info.subtasks_total, info.record["split"]) == (0, 3, 2)
    for n, sub in enumerate(pop(conn, "main", 3)):
        assert sub.id == f"{job.id}.2.{n + 1}"
        finish(conn, sub, f"second-{n}")
    assert job.status == "queued"
    assert outcomes(conn, "main", job.id, 2) == ["second-0", "second-1", "second-2"]
    assert list(splitting.iter_outcomes(conn, main.keys, job.id, 1, 1)) == ["first"]


def test_split_with_a_stale_token_is_refused(conn: redis.Redis, main: Queue) -> None:
    job = main.enqueue(part, 0)
    old = pop_one(conn, "main", lease_ms=30)
    time.sleep(0.06)
    new = pop_one(conn, "main")
    with pytest.raises(LeaseLost):
        calls.split(conn, main.keys, old.id, old.token, 1, [("main", 1)], False, '"x"')
    assert job.status == "active"
    assert job.info().checkpoint is None
    assert job.info(show_token=True).record["token"] == new.token


def test_split_of_an_unknown_job_raises_job_not_found(conn: redis.Redis, main: Queue) -> None:
    with pytest.raises(JobNotFound):
        calls.split(conn, main.keys, "nope", "1" * 32, 1, [("main", 1)], False, None)


def test_a_rerun_after_a_crash_re_enqueues_the_same_subtask_ids(
    conn: redis.Redis, main: Queue
) -> None:
    job = main.enqueue(part, 0)
    crashed = pop_one(conn, "main", lease_ms=30)
    subtasks = [Subtask(part, 1), Subtask(part, 2, queue="side")]
    enqueue_split(conn, main, job.id, subtasks)  # the worker dies before psq_split
    finish(conn, pop_one(conn, "side"), 2)  # a subtask of the first run ends meanwhile
    time.sleep(0.06)
    (rerun,) = [le for le in pop(conn, "main", 5) if le.id == job.id]
    assert json.loads(rerun.record)["lost"] == 1
    assert rerun.token != crashed.token
    number = int(json.loads(rerun.record).get("split") or 0) + 1
    assert number == 1
    groups = enqueue_split(conn, main, job.id, subtasks, number)
    assert conn.hlen(main.keys.jobs) == 2  # the job and its subtask 1: no duplicates
    assert conn.hlen(QueueKeys("side").jobs) == 1
    assert status_of(conn, "side", f"{job.id}.1.2") == "complete"  # not queued again
    assert len(Queue("side", connection=conn)) == 0
    assert calls.split(conn, main.keys, job.id, rerun.token, 1, groups, False, None) == "waiting"
    assert job.info().subtasks_done == 1


def test_nested_split_resumes_the_grandparent_after_its_child_completes(
    conn: redis.Redis, main: Queue
) -> None:
    side = Queue("side", connection=conn)
    parent = main.enqueue_group([Subtask(part, 1), Subtask(part, 2, queue="side")], gather)
    assert finish(conn, pop_one(conn, "main"), "one") == "recorded"
    child = pop_one(conn, "side")
    grandchildren = [Subtask(part, 20, queue="deep"), Subtask(part, 21, queue="deep")]
    assert start_split(conn, side, child, grandchildren) == "waiting"
    assert notices(conn, "side") == []  # a split is not an end
    assert parent.info().subtasks_done == 1
    first, second = pop(conn, "deep", 2)
    assert finish(conn, first, 20) == "recorded"
    assert finish(conn, second, 21) == "resumed"  # the child, not the grandparent
    assert parent.status == "waiting"
    again = pop_one(conn, "side")
    assert again.id == child.id
    assert outcomes(conn, "side", child.id) == [20, 21]
    assert finish(conn, again, "two") == "resumed"
    assert parent.status == "queued"
    assert outcomes(conn, "main", parent.id) == ["one", "two"]


def test_a_nested_failure_fails_the_grandparent_without_waiting_for_redrive(
    conn: redis.Redis, main: Queue
) -> None:
    side = Queue("side", connection=conn)
    parent = main.enqueue_group([Subtask(part, 1), Subtask(part, 2, queue="side")], gather)
    child = pop_one(conn, "side")
    start_split(conn, side, child, [Subtask(part, 20, queue="deep"), Subtask(part, 21)])
    grandchild = pop_one(conn, "deep")
    assert fail_for_good(conn, grandchild, "ValueError: deep") == "parent_failed"
    assert status_of(conn, "side", child.id) == "failed"
    assert status_of(conn, "side", f"{child.id}.1.2") == "cancelled"
    assert parent.status == "failed"
    assert "ValueError: deep" in (parent.info().error or "")
    assert status_of(conn, "main", f"{parent.id}.1.1") == "cancelled"
    assert notices(conn, "side") == []


# -- notices: the cross-queue step --------------------------------------------------------------


def test_completing_a_subtask_leaves_a_notice_in_its_own_queue(conn: redis.Redis) -> None:
    main = Queue("main", connection=conn)
    main.enqueue_group([Subtask(part, 1, queue="side")], gather)
    lease = pop_one(conn, "side")
    calls.complete(conn, QueueKeys("side"), lease.id, lease.token, "1")
    assert notices(conn, "side") == [lease.id]
    assert notices(conn, "main") == []


def test_failing_a_subtask_for_good_leaves_a_notice(conn: redis.Redis, main: Queue) -> None:
    main.enqueue_group([Subtask(part, 1)], gather)
    lease = pop_one(conn, "main")
    calls.fail(conn, main.keys, lease.id, lease.token, FailKind.REFUSED, "no handler", 0.0)
    assert notices(conn, "main") == [lease.id]


def test_a_job_without_parent_leaves_no_notice(conn: redis.Redis, main: Queue) -> None:
    main.enqueue(part, 1)
    main.enqueue(part, 2, retries=0)
    done, failed = pop(conn, "main", 2)
    calls.complete(conn, main.keys, done.id, done.token, "1")
    calls.fail(conn, main.keys, failed.id, failed.token, FailKind.ERROR, "boom", 0.0)
    assert notices(conn, "main") == []


def test_delivering_a_notice_forgets_it(conn: redis.Redis, main: Queue) -> None:
    main.enqueue_group([Subtask(part, 1, queue="side"), Subtask(part, 2)], gather)
    finish(conn, pop_one(conn, "side"), 1)
    assert notices(conn, "side") == []


def test_a_fresh_notice_is_not_stale(conn: redis.Redis, main: Queue) -> None:
    main.enqueue_group([Subtask(part, 1)], gather)
    lease = pop_one(conn, "main")
    calls.complete(conn, main.keys, lease.id, lease.token, "1")
    assert calls.stale_notices(conn, main.keys, 10) == []
    assert splitting.redrive_notices(conn, main.keys) == 0
    assert notices(conn, "main") == [lease.id]


def test_an_overdue_notice_is_returned_by_stale_notices(conn: redis.Redis, main: Queue) -> None:
    parent = main.enqueue_group([Subtask(part, 1, queue="side"), Subtask(part, 2)], gather)
    lease = pop_one(conn, "side")
    calls.complete(conn, QueueKeys("side"), lease.id, lease.token, '{"n": 1}')
    age_notice(conn, "side", lease.id)
    (notice,) = calls.stale_notices(conn, QueueKeys("side"), 10)
    assert notice == calls.Notice(
        lease.id, calls.ParentRef("main", parent.id, 1, 1), True, '{"n": 1}', "complete"
    )


def test_an_overdue_failure_notice_carries_the_error(conn: redis.Redis, main: Queue) -> None:
    main.enqueue_group([Subtask(part, 1)], gather)
    lease = pop_one(conn, "main")
    calls.fail(conn, main.keys, lease.id, lease.token, FailKind.ERROR, "ValueError: x", 0.0)
    age_notice(conn, "main", lease.id)
    (notice,) = calls.stale_notices(conn, main.keys, 10)
    assert (notice.ok, notice.value) == (False, "ValueError: x")


def test_stale_notices_returns_at_most_count(conn: redis.Redis, main: Queue) -> None:
    main.enqueue_group([Subtask(part, i) for i in range(5)], gather)
    for lease in pop(conn, "main", 5):
        calls.complete(conn, main.keys, lease.id, lease.token, "1")
        age_notice(conn, "main", lease.id)
    assert len(calls.stale_notices(conn, main.keys, 3)) == 3


def test_stale_notices_with_a_negative_count_is_refused(conn: redis.Redis, main: Queue) -> None:
    main.enqueue_group([Subtask(part, i) for i in range(3)], gather)
    for lease in pop(conn, "main", 3):
        calls.complete(conn, main.keys, lease.id, lease.token, "1")
        age_notice(conn, "main", lease.id)
    with pytest.raises(InvalidOption, match="count must be an integer"):
        calls.stale_notices(conn, main.keys, -1)  # LIMIT 0 -1 would be all
    assert len(calls.stale_notices(conn, main.keys, 1)) == 1


def test_redrive_delivers_an_overdue_notice_exactly_once(conn: redis.Redis, main: Queue) -> None:
    parent = main.enqueue_group([Subtask(part, 1, queue="side"), Subtask(part, 2)], gather)
    side = QueueKeys("side")
    lease = pop_one(conn, "side")
    calls.complete(conn, side, lease.id, lease.token, "7")  # the worker dies here
    age_notice(conn, "side", lease.id)
    assert splitting.redrive_notices(conn, side) == 1
    assert notices(conn, "side") == []
    assert parent.info().subtasks_done == 1
    assert splitting.redrive_notices(conn, side) == 0
    assert parent.info().subtasks_done == 1
    assert finish(conn, pop_one(conn, "main"), 8) == "resumed"
    assert outcomes(conn, "main", parent.id) == [7, 8]


def test_redrive_after_a_crash_between_record_and_forget_counts_once(
    conn: redis.Redis, main: Queue
) -> None:
    parent = main.enqueue_group([Subtask(part, 1), Subtask(part, 2)], gather)
    lease = pop_one(conn, "main")
    calls.complete(conn, main.keys, lease.id, lease.token, "1")
    assert calls.subtask_done(conn, parent_of(lease), True, "1") == "recorded"  # then it dies
    age_notice(conn, "main", lease.id)
    assert splitting.redrive_notices(conn, main.keys) == 1
    assert notices(conn, "main") == []
    assert parent.info().subtasks_done == 1


def test_redrive_of_a_failure_fails_the_parent_and_cancels_siblings(
    conn: redis.Redis, main: Queue
) -> None:
    parent = main.enqueue_group([Subtask(part, 1), Subtask(part, 2, queue="side")], gather)
    lease = pop_one(conn, "main")
    calls.fail(conn, main.keys, lease.id, lease.token, FailKind.ERROR, "ValueError: x", 0.0)
    age_notice(conn, "main", lease.id)
    assert splitting.redrive_notices(conn, main.keys) == 1
    assert parent.status == "failed"
    assert status_of(conn, "side", f"{parent.id}.1.2") == "cancelled"


def test_redrive_forgets_the_notice_of_a_purged_subtask(conn: redis.Redis, main: Queue) -> None:
    main.enqueue_group([Subtask(part, 1)], gather)
    lease = pop_one(conn, "main")
    calls.complete(conn, main.keys, lease.id, lease.token, "1")
    conn.hdel(main.keys.jobs, lease.id)  # its record is gone
    age_notice(conn, "main", lease.id)
    assert calls.stale_notices(conn, main.keys, 10) == [calls.Notice(lease.id, None, False, "")]
    assert splitting.redrive_notices(conn, main.keys) == 1
    assert notices(conn, "main") == []


def test_a_failed_delivery_keeps_the_notice_for_redrive(conn: redis.Redis) -> None:
    main = Queue("main", connection=conn)
    parent = main.enqueue_group([Subtask(part, 1, queue="side")], gather)
    side = QueueKeys("side")
    lease = pop_one(conn, "side")
    calls.complete(conn, side, lease.id, lease.token, "1")
    broken = main.keys.subtasks(parent.id)
    conn.set(broken, "not a hash")  # the parent's queue refuses the write
    with pytest.raises(InvalidKeys, match="holds a string, not a hash"):
        deliver(conn, lease, True, "1")
    assert notices(conn, "side") == [lease.id]
    conn.delete(broken)
    age_notice(conn, "side", lease.id)
    assert splitting.redrive_notices(conn, side) == 1
    assert parent.status == "queued"


# -- large fan-out ----------------------------------------------------------------------------

FAN_OUT = 10_000


def complete_and_deliver(conn: redis.Redis, leases: list[calls.Lease]) -> list[str]:
    """What workers do for each lease (psq_complete, psq_subtask_done, psq_forget_notices),
    pipelined to keep the test fast; the replies of psq_subtask_done."""
    pipe = conn.pipeline(transaction=False)
    for lease in leases:
        keys = QueueKeys(lease.queue)
        index = int(lease.id.rsplit(".", 1)[1])
        pipe.fcall(
            "psq_complete_many",
            calls.COMPLETE_NUMKEYS,
            *calls.complete_args(keys, lease.id, lease.token, str(index)),
        )
        done = calls.subtask_done_args(parent_of(lease), True, str(index))
        pipe.fcall("psq_subtask_done", calls.SUBTASK_DONE_NUMKEYS, *done)
        pipe.fcall("psq_forget_notices", 1, keys.notices, lease.id)
    replies = pipe.execute()
    return [r.decode() for r in replies[1::3]]


def test_a_group_of_10000_subtasks_from_a_generator(conn: redis.Redis, main: Queue) -> None:
    started = time.monotonic()
    parent = main.enqueue_group((Subtask(part, i) for i in range(FAN_OUT)), gather)
    info = parent.info()
    assert (info.status, info.subtasks_total, info.subtasks_done) == ("waiting", FAN_OUT, 0)
    assert main.counts().queued == FAN_OUT
    assert main.job_ids("queued", offset=FAN_OUT - 1, limit=5) == [f"{parent.id}.1.{FAN_OUT}"]
    assert time.monotonic() - started < 15


def test_10000_subtasks_complete_and_page_out_in_order(conn: redis.Redis, main: Queue) -> None:
    started = time.monotonic()
    parent = main.enqueue_group((Subtask(part, i) for i in range(FAN_OUT)), gather)
    deliveries: list[str] = []
    for _ in range(FAN_OUT // 1000):
        leases = pop(conn, "main", 1000, lease_ms=60_000)
        assert len(leases) == 1000
        deliveries += complete_and_deliver(conn, leases)
    assert deliveries.count("recorded") == FAN_OUT - 1
    assert deliveries[-1] == "resumed"
    info = parent.info()
    assert (info.status, info.subtasks_done) == ("queued", FAN_OUT)
    assert notices(conn, "main") == []
    assert pop_one(conn, "main").id == parent.id
    results = splitting.iter_outcomes(conn, main.keys, parent.id, 1, FAN_OUT)
    assert list(results) == list(range(1, FAN_OUT + 1))
    assert time.monotonic() - started < 15


def test_outcome_pages_are_bounded(conn: redis.Redis, main: Queue) -> None:
    parent = main.enqueue_group([Subtask(part, 1)], gather)
    with pytest.raises(InvalidOption, match="count"):
        calls.subtask_outcomes(conn, main.keys, parent.id, 1, 1, OUTCOMES_PAGE_MAX + 1)
    with pytest.raises(InvalidOption, match="first"):
        calls.subtask_outcomes(conn, main.keys, parent.id, 1, 0, 10)


# -- one queue per call -----------------------------------------------------------------------

HASH_TAG = re.compile(r"\{([^{}]+)\}")


@pytest.fixture
def library_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, list[str]]]]:
    """Every FCALL / FCALL_RO sent by any client or pipeline: (function, keys)."""
    seen: list[tuple[str, list[str]]] = []

    def spy(method: str) -> None:
        real = getattr(redis.Redis, method)

        def call(self: Any, function: str, numkeys: int, *rest: Any) -> Any:
            seen.append((function, [str(k) for k in rest[:numkeys]]))
            return real(self, function, numkeys, *rest)

        # On the class, so pipelines (a subclass of redis.Redis) are seen too.
        monkeypatch.setattr(redis.Redis, method, call)

    spy("fcall")
    spy("fcall_ro")
    yield seen


@pytest.mark.one_server("spies on redis.Redis, which a cluster client is not")
def test_every_library_call_of_a_cross_queue_group_touches_one_queue(
    conn: redis.Redis, library_calls: list[tuple[str, list[str]]]
) -> None:
    main = Queue("main", connection=conn)
    side = Queue("side", connection=conn)
    subtasks = [Subtask(part, 1), Subtask(part, 2, queue="side"), Subtask(part, 3, queue="far")]
    parent = main.enqueue_group(subtasks, gather, collect=True)
    finish(conn, pop_one(conn, "main"), 1)
    child = pop_one(conn, "side")
    calls.checkpoint(conn, side.keys, child.id, child.token, "{}", 10_000, False)
    start_split(conn, side, child, [Subtask(part, 9, queue="main"), Subtask(part, 10)])
    grandchild = pop_one(conn, "main")
    fail_for_good(conn, grandchild)
    far = pop_one(conn, "far")
    calls.complete(conn, QueueKeys("far"), far.id, far.token, "3")
    age_notice(conn, "far", far.id)
    splitting.redrive_notices(conn, QueueKeys("far"))
    outcomes(conn, "main", parent.id)
    other = main.enqueue_group([Subtask(part, 1, queue="side"), Subtask(part, 2)], gather)
    other.cancel()

    functions = {function for function, _ in library_calls}
    assert functions >= {
        "psq_enqueue",
        "psq_pop",
        "psq_complete_many",
        "psq_fail",
        "psq_checkpoint",
        "psq_split",
        "psq_subtask_done",
        "psq_forget_notices",
        "psq_stale_notices",
        "psq_subtask_outcomes",
        "psq_fetch",
        "psq_cancel",
    }
    assert {f for f, keys in library_calls if not keys} <= {"psq_version"}
    tags_seen = set()
    for function, keys in library_calls:
        if function == "psq_version":
            continue
        tags = {m.group(1) if (m := HASH_TAG.search(k)) else None for k in keys}
        assert len(tags) == 1 and None not in tags, f"{function} touches {keys}"
        tags_seen |= tags
    assert tags_seen == {"main", "side", "far"}


# -- bad input --------------------------------------------------------------------------------


def test_split_with_malformed_groups_changes_nothing(conn: redis.Redis, main: Queue) -> None:
    job = main.enqueue(part, 0)
    lease = pop_one(conn, "main")
    keys = main.keys
    split_keys = calls.split_keys(keys, job.id)
    with pytest.raises(redis.ResponseError, match="PSQ_BAD_ARGUMENT"):
        conn.fcall(
            "psq_split", len(split_keys), *split_keys, job.id, lease.token, 1, 1, "[[", "0", '"x"'
        )
    assert job.status == "active"
    assert conn.zscore(keys.active, job.id) == lease.deadline_ms  # still under its lease
    assert job.info().checkpoint is None


def test_a_group_with_a_bad_subtask_writes_nothing(conn: redis.Redis, main: Queue) -> None:
    subtasks = [Subtask(part, 1), Subtask(part, object())]
    with pytest.raises(PayloadNotJSON):
        main.enqueue_group(subtasks, gather)
    assert conn.hlen(main.keys.jobs) == 0


def test_cancelling_a_subtask_does_not_leave_its_parent_waiting_forever(
    conn: redis.Redis, main: Queue
) -> None:
    parent = main.enqueue_group([Subtask(part, 1), Subtask(part, 2)], gather, collect=True)
    Job(f"{parent.id}.1.1", main).cancel()
    for sub in notices(conn, "main"):
        age_notice(conn, "main", sub)
    splitting.redrive_notices(conn, main.keys)
    finish(conn, pop_one(conn, "main"), 2)
    assert parent.status != "waiting"


# -- the handler's side: JobContext.split -------------------------------------------------------


def context_for(conn: redis.Redis, lease: calls.Lease) -> JobContext:
    return JobContext(
        conn, lease.queue, lease.id, lease.token, json.loads(lease.record), lease.checkpoint, 10_000
    )


def test_context_split_enqueues_the_subtasks_and_waits(conn: redis.Redis, main: Queue) -> None:
    job = main.enqueue(part, 0)
    context = context_for(conn, pop_one(conn, "main"))
    with pytest.raises(JobSuspended):
        context.split([Subtask(part, 1), Subtask(part, 2, queue="side")], checkpoint={"p": 1})
    info = job.info()
    assert (info.status, info.subtasks_total, info.checkpoint) == ("waiting", 2, {"p": 1})
    finish(conn, pop_one(conn, "side"), "b")
    finish(conn, pop_one(conn, "main"), "a")
    resumed = context_for(conn, pop_one(conn, "main"))
    assert resumed.subtask_results() == ["a", "b"]
    assert resumed.checkpoint == {"p": 1}


def test_context_split_of_no_subtasks_is_refused(conn: redis.Redis, main: Queue) -> None:
    job = main.enqueue(part, 0)
    context = context_for(conn, pop_one(conn, "main"))
    with pytest.raises(ValueError, match="at least one subtask"):
        context.split([])
    assert job.status == "active"


def test_context_split_takes_the_next_number(conn: redis.Redis, main: Queue) -> None:
    job = main.enqueue(part, 0)
    with pytest.raises(JobSuspended):
        context_for(conn, pop_one(conn, "main")).split([Subtask(part, 1)])
    finish(conn, pop_one(conn, "main"), 1)
    with pytest.raises(JobSuspended):
        context_for(conn, pop_one(conn, "main")).split([Subtask(part, 2)])
    assert pop_one(conn, "main").id == f"{job.id}.2.1"


def test_context_split_that_fails_cancels_the_other_subtasks(
    conn: redis.Redis, main: Queue
) -> None:
    job = main.enqueue(part, 0)
    subtasks = [Subtask(part, 1), Subtask(part, 2, queue="side")]
    crashed = pop_one(conn, "main", lease_ms=30)
    enqueue_split(conn, main, job.id, subtasks)  # the first run dies here
    fail_for_good(conn, pop_one(conn, "main"))  # subtask 1 fails meanwhile
    time.sleep(0.06)
    rerun = pop_one(conn, "main")
    assert (rerun.id, rerun.token != crashed.token) == (job.id, True)
    with pytest.raises(JobSuspended):
        context_for(conn, rerun).split(subtasks)
    assert job.status == "failed"
    assert status_of(conn, "side", f"{job.id}.1.2") == "cancelled"
