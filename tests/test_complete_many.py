"""psq_complete_many, the one function that completes jobs: one result (`calls.complete`) or
many of one queue in one call, the once-per-call work (clock, stats, sweep, freed-slot
wake-ups) done once.

The "workers" here are plain calls of the library (`calls.pop`, `calls.complete_many`, ...).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis
from helpers import other_token

from pyscheduler import JobNotFound, LeaseLost, Queue
from pyscheduler.client import splitting
from pyscheduler.client.splitting import Subtask
from pyscheduler.store import calls
from pyscheduler.store.keys import QueueKeys
from pyscheduler.store.protocol import COMPLETE_BATCH_MAX


def add(a: int, b: int = 0) -> int:
    return a + b


def part(n: int) -> int:
    return n


def gather(results: list[Any], label: str = "") -> str:
    return label


@pytest.fixture
def queue(conn: redis.Redis) -> Queue:
    return Queue("work", connection=conn)


def pop(conn: redis.Redis, keys: QueueKeys, n: int) -> list[calls.Lease]:
    return calls.pop(conn, keys, n, 10_000, "worker-1").leases


def items(
    leases: list[calls.Lease], results: list[Any] | None = None
) -> list[tuple[str, int, str]]:
    values = results if results is not None else [i for i, _ in enumerate(leases)]
    return [(x.id, x.token, json.dumps(v)) for x, v in zip(leases, values, strict=True)]


def record(conn: redis.Redis, keys: QueueKeys, job_id: str) -> dict[str, Any]:
    raw = conn.hget(keys.jobs, job_id)
    assert raw is not None
    result: dict[str, Any] = json.loads(raw)
    return result


def notices(conn: redis.Redis, queue: str) -> set[str]:
    return {m.decode() for m in conn.zrange(QueueKeys(queue).notices, 0, -1)}


def command_calls(conn: redis.Redis) -> dict[str, int]:
    """Calls per command as the server counts them (commands run by a function included)."""
    return {k: int(v["calls"]) for k, v in conn.info("commandstats").items()}


def test_completes_several_jobs_in_one_call(conn: redis.Redis, queue: Queue) -> None:
    for i in range(5):
        queue.enqueue(add, i)
    leases = pop(conn, queue.keys, 5)

    outcomes = calls.complete_many(conn, queue.keys, items(leases, [10, 11, 12, 13, 14]))

    assert len(outcomes) == 5
    assert all(isinstance(x, int) and x >= 0 for x in outcomes)
    for lease, value in zip(leases, [10, 11, 12, 13, 14], strict=True):
        rec = record(conn, queue.keys, lease.id)
        assert rec["status"] == "complete"
        assert isinstance(rec["ended"], int)
        assert conn.hget(queue.keys.results, lease.id) == str(value).encode()
    assert set(queue.job_ids("complete")) == {x.id for x in leases}
    assert conn.zcard(queue.keys.active) == 0
    assert queue.counts().stats["completed"] == 5


def test_a_full_batch_completes_every_job(conn: redis.Redis, queue: Queue) -> None:
    """Its writes of each key are one command, sent in chunks of 1,000 values: several here."""
    n = COMPLETE_BATCH_MAX
    queue.enqueue_many([queue.prepare(add, (i,)) for i in range(n)])
    leases = pop(conn, queue.keys, n)

    outcomes = calls.complete_many(conn, queue.keys, items(leases))

    assert len(outcomes) == n
    assert all(isinstance(x, int) and x >= 0 for x in outcomes)
    for i, lease in enumerate(leases):
        assert record(conn, queue.keys, lease.id)["status"] == "complete"
        assert conn.hget(queue.keys.results, lease.id) == str(i).encode()
    assert conn.zcard(queue.keys.active) == 0
    assert conn.zcard(queue.keys.finished) == n
    assert queue.counts().stats["completed"] == n


def test_run_time_is_from_lease_start_to_now(conn: redis.Redis, queue: Queue) -> None:
    queue.enqueue(add, 1)
    leases = pop(conn, queue.keys, 1)
    time.sleep(0.05)
    (run_ms,) = calls.complete_many(conn, queue.keys, items(leases))
    assert isinstance(run_ms, int)
    assert 40 <= run_ms < 10_000


def test_a_stale_token_in_the_middle_is_skipped_and_reported(
    conn: redis.Redis, queue: Queue
) -> None:
    for i in range(3):
        queue.enqueue(add, i)
    first, middle, last = pop(conn, queue.keys, 3)
    batch = items([first, middle, last])
    stale = other_token(middle.token)
    batch[1] = (middle.id, stale, '"stale"')

    outcomes = calls.complete_many(conn, queue.keys, batch)

    assert isinstance(outcomes[0], int)
    assert isinstance(outcomes[1], LeaseLost)
    assert f"job {middle.id}: token {stale} does not hold the lease" in str(outcomes[1])
    assert isinstance(outcomes[2], int)
    assert record(conn, queue.keys, middle.id)["status"] == "active"
    assert conn.hget(queue.keys.results, middle.id) is None
    assert set(queue.job_ids("complete")) == {first.id, last.id}
    assert queue.job_ids("active") == [middle.id]
    assert queue.counts().stats["completed"] == 2


def test_an_unknown_job_is_reported_as_not_found(conn: redis.Redis, queue: Queue) -> None:
    queue.enqueue(add, 1)
    (lease,) = pop(conn, queue.keys, 1)
    outcomes = calls.complete_many(conn, queue.keys, [("ghost", "1" * 32, "1"), *items([lease])])
    assert isinstance(outcomes[0], JobNotFound)
    assert isinstance(outcomes[1], int)
    assert queue.counts().stats["completed"] == 1


def test_a_job_given_twice_is_completed_once(conn: redis.Redis, queue: Queue) -> None:
    queue.enqueue(add, 1)
    (lease,) = pop(conn, queue.keys, 1)
    outcomes = calls.complete_many(
        conn, queue.keys, [(lease.id, lease.token, '"a"'), (lease.id, lease.token, '"b"')]
    )
    assert isinstance(outcomes[0], int)
    assert isinstance(outcomes[1], LeaseLost)
    assert conn.hget(queue.keys.results, lease.id) == b'"a"'
    assert queue.counts().stats["completed"] == 1


def test_only_stale_tokens_write_nothing(conn: redis.Redis, queue: Queue) -> None:
    queue.enqueue(add, 1)
    (lease,) = pop(conn, queue.keys, 1)
    before = {key: conn.dump(key) for key in conn.keys("*")}
    (outcome,) = calls.complete_many(conn, queue.keys, [(lease.id, other_token(lease.token), "1")])
    assert isinstance(outcome, LeaseLost)
    assert {key: conn.dump(key) for key in conn.keys("*")} == before


def test_no_items_makes_no_call(conn: redis.Redis, queue: Queue) -> None:
    before = command_calls(conn).get("fcall", 0)
    assert calls.complete_many(conn, queue.keys, []) == []
    assert command_calls(conn).get("fcall", 0) == before


def test_completed_subtasks_notice_their_parent(conn: redis.Redis) -> None:
    main = Queue("main", connection=conn)
    parent = main.enqueue_group(
        [Subtask(part, 1, queue="side"), Subtask(part, 2, queue="side")], gather
    )
    side = QueueKeys("side")
    leases = pop(conn, side, 2)

    outcomes = calls.complete_many(conn, side, items(leases, [1, 2]))

    assert all(isinstance(x, int) for x in outcomes)
    assert notices(conn, "side") == {x.id for x in leases}
    assert notices(conn, "main") == set()
    delivered = [
        splitting.deliver_notice(
            conn, side, x.id, calls.ParentRef(**json.loads(x.record)["parent"]), True, v
        )
        for x, v in zip(leases, ["1", "2"], strict=True)
    ]
    assert sorted(delivered) == ["recorded", "resumed"]
    assert notices(conn, "side") == set()
    assert parent.status == "queued"


def test_a_finished_parent_s_subtask_outcomes_expire_with_it(conn: redis.Redis) -> None:
    """Each job's own subtasks key (KEYS[12 + i]) is the one that expires with it."""
    main = Queue("main", connection=conn)
    main.enqueue(add, 0, job_id="plain")
    parent = main.enqueue_group([Subtask(part, 1)], gather, result_ttl=60)
    plain, sub = pop(conn, main.keys, 2)
    assert sub.id != parent.id
    calls.complete(conn, main.keys, sub.id, sub.token, "1")
    splitting.deliver_notice(
        conn, main.keys, sub.id, calls.ParentRef(**json.loads(sub.record)["parent"]), True, "1"
    )
    (resumed,) = pop(conn, main.keys, 1)
    assert resumed.id == parent.id
    assert conn.ttl(main.keys.subtasks(parent.id)) == -1

    outcomes = calls.complete_many(conn, main.keys, items([plain, resumed], [0, "done"]))

    assert all(isinstance(x, int) for x in outcomes)
    assert 0 < conn.pttl(main.keys.subtasks(parent.id)) <= 60_000
    assert parent.status == "complete"


def test_with_a_concurrency_limit_completing_k_jobs_wakes_k_workers(
    conn: redis.Redis, queue: Queue
) -> None:
    queue.set_limits(concurrency=3)
    for i in range(6):
        queue.enqueue(add, i)
    leases = pop(conn, queue.keys, 3)
    assert pop(conn, queue.keys, 1) == []
    assert conn.llen(queue.keys.wake) == 0  # the empty pop dropped the stale wake-ups

    calls.complete_many(conn, queue.keys, items(leases))

    assert conn.llen(queue.keys.wake) == 3
    assert len(pop(conn, queue.keys, 5)) == 3  # exactly the freed slots


def test_skipped_jobs_free_no_slot(conn: redis.Redis, queue: Queue) -> None:
    queue.set_limits(concurrency=2)
    for i in range(4):
        queue.enqueue(add, i)
    first, second = pop(conn, queue.keys, 2)
    assert pop(conn, queue.keys, 1) == []
    calls.complete_many(
        conn, queue.keys, [*items([first]), (second.id, other_token(second.token), "1")]
    )
    assert conn.llen(queue.keys.wake) == 1


def test_without_a_concurrency_limit_no_wake_tokens(conn: redis.Redis, queue: Queue) -> None:
    for i in range(3):
        queue.enqueue(add, i)
    leases = pop(conn, queue.keys, 3)
    conn.delete(queue.keys.wake)
    calls.complete_many(conn, queue.keys, items(leases))
    assert conn.llen(queue.keys.wake) == 0


def test_expired_records_are_swept(conn: redis.Redis, queue: Queue) -> None:
    for i in range(3):
        queue.enqueue(add, i, result_ttl=0)
    leases = pop(conn, queue.keys, 3)
    calls.complete_many(conn, queue.keys, items(leases))
    assert conn.zcard(queue.keys.finished) == 0
    assert all(conn.hget(queue.keys.jobs, x.id) is None for x in leases)


def test_n_jobs_are_one_fcall_with_the_fixed_work_done_once(
    conn: redis.Redis, queue: Queue
) -> None:
    n = 50
    queue.set_limits(concurrency=n)
    queue.enqueue_many([queue.prepare(add, (i,)) for i in range(n)])
    leases = pop(conn, queue.keys, n)
    before = command_calls(conn)

    outcomes = calls.complete_many(conn, queue.keys, items(leases))

    after = command_calls(conn)

    def delta(command: str) -> int:
        return after.get(f"cmdstat_{command}", 0) - before.get(f"cmdstat_{command}", 0)

    assert all(isinstance(x, int) for x in outcomes)
    assert delta("fcall") == 1
    assert delta("time") == 1
    assert delta("hincrby") == 1
    assert delta("hexists") == 1
    assert delta("zrangebyscore") == 1
    assert delta("lpush") == 1
    assert queue.counts().stats["completed"] == n


def test_pipelined_args_match_the_wrapper(conn: redis.Redis, queue: Queue) -> None:
    for i in range(2):
        queue.enqueue(add, i)
    leases = pop(conn, queue.keys, 2)
    numkeys, flat = calls.complete_many_args(queue.keys, items(leases))
    assert numkeys == calls.COMPLETE_MANY_FIXED_KEYS + 2
    assert flat[numkeys - 2 : numkeys + 1] == [
        *(queue.keys.subtasks(x.id) for x in leases),
        leases[0].id,
    ]
    pipe = conn.pipeline(transaction=False)
    pipe.fcall("psq_complete_many", numkeys, *flat)
    (reply,) = pipe.execute()
    assert all(isinstance(x, int) for x in calls.parse_complete_many_reply(reply))
    assert queue.counts().stats["completed"] == 2
