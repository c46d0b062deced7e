"""Dependencies: `enqueue(..., depends_on=[job_a, job_b])`; the job waits until all complete,
then runs; one that fails for good, is cancelled or expires cancels it with a reason naming
it, unless `on_dependency_failure="run"`. Across queues (other Cluster shards) and worker
crashes, each dependency counts exactly once; real workers."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
import redis
from helpers import (
    as_int,
    kill_worker,
    let_expire,
    server_ms,
    start_worker,
    wait_status,
    wait_until,
)

from pyscheduler import InvalidOption, Queue, Status
from pyscheduler.client import splitting
from pyscheduler.store import calls
from pyscheduler.store.keys import QueueKeys
from pyscheduler.store.protocol import NOTICE_REDRIVE_MS

pytestmark = pytest.mark.cluster  # also on a local Redis Cluster (conftest.py)

STEP = "option_tasks:step"


def key() -> str:
    return f"test:{uuid.uuid4().hex[:12]}"


def ran(conn: redis.Redis, steps: str) -> list[str]:
    return [x.decode() for x in conn.lrange(steps, 0, -1)]


def test_a_dependent_waits_until_all_its_dependencies_complete(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue, steps = Queue("dep", connection=conn), key()
    a = queue.enqueue("option_tasks:slow_step", redis_url, steps, "a", 0.3)
    b = queue.enqueue("option_tasks:slow_step", redis_url, steps, "b", 0.1)

    c = queue.enqueue(STEP, redis_url, steps, "c", depends_on=[a, b])

    assert c.info().status == Status.WAITING
    start_worker(workers, "dep", concurrency=2)
    assert c.wait(timeout=10) == "c"
    assert ran(conn, steps)[-1] == "c" and sorted(ran(conn, steps)) == ["a", "b", "c"]


def test_dependencies_in_other_queues_release_the_dependent(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    steps = key()
    first, second, last = (Queue(n, connection=conn) for n in ("dep-a", "dep-b", "dep-c"))
    a = first.enqueue(STEP, redis_url, steps, "a")
    b = second.enqueue(STEP, redis_url, steps, "b")
    c = last.enqueue(STEP, redis_url, steps, "c", depends_on=[a, ("dep-b", b.id)])
    start_worker(workers, "dep-c")
    time.sleep(0.2)
    assert c.info().status == Status.WAITING

    start_worker(workers, "dep-a", "dep-b")

    assert c.wait(timeout=10) == "c"
    assert ran(conn, steps)[-1] == "c"


def test_a_dependency_that_fails_for_good_cancels_the_dependent_naming_it(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue, steps = Queue("dep", connection=conn), key()
    a = queue.enqueue("option_tasks:fail_step", redis_url, steps, "a")
    c = queue.enqueue(STEP, redis_url, steps, "c", depends_on=[a])
    start_worker(workers, "dep")

    info = wait_status(queue, c.id, Status.CANCELLED)

    assert f"dependency dep:{a.id} failed" in (info.error or "")
    assert ran(conn, steps) == ["a"]


def test_on_dependency_failure_run_runs_the_dependent_anyway(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue, steps = Queue("dep", connection=conn), key()
    a = queue.enqueue("option_tasks:fail_step", redis_url, steps, "a")
    c = queue.enqueue(STEP, redis_url, steps, "c", depends_on=[a], on_dependency_failure="run")
    start_worker(workers, "dep")

    assert c.wait(timeout=10) == "c"


def test_a_cancelled_dependency_cancels_the_dependent(conn: redis.Redis, redis_url: str) -> None:
    queue = Queue("dep", connection=conn)
    a = queue.enqueue(STEP, redis_url, key(), "a")
    c = queue.enqueue(STEP, redis_url, key(), "c", depends_on=[a])

    a.cancel()

    info = c.info()
    assert info.status == Status.CANCELLED
    assert f"dependency dep:{a.id} cancelled" in (info.error or "")


def test_a_cancellation_reaches_the_dependents_of_dependents(
    conn: redis.Redis, redis_url: str
) -> None:
    first, other = Queue("dep", connection=conn), Queue("dep-b", connection=conn)
    a = first.enqueue(STEP, redis_url, key(), "a")
    b = other.enqueue(STEP, redis_url, key(), "b", depends_on=[a])
    c = first.enqueue(STEP, redis_url, key(), "c", depends_on=[b])

    a.cancel()

    assert b.info().status == Status.CANCELLED
    assert c.info().status == Status.CANCELLED
    assert f"dependency dep-b:{b.id} cancelled" in (c.info().error or "")


def test_a_dependency_complete_at_enqueue_time_counts_as_done(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue, steps = Queue("dep", connection=conn), key()
    start_worker(workers, "dep")
    a = queue.enqueue(STEP, redis_url, steps, "a")
    a.wait(timeout=10)

    c = queue.enqueue(STEP, redis_url, steps, "c", depends_on=[a.id])

    assert c.wait(timeout=10) == "c"


def test_a_dependency_failed_at_enqueue_time_cancels_the_dependent_at_once(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue, steps = Queue("dep", connection=conn), key()
    start_worker(workers, "dep")
    a = queue.enqueue("option_tasks:fail_step", redis_url, steps, "a")
    wait_status(queue, a.id, Status.FAILED)

    c = queue.enqueue(STEP, redis_url, steps, "c", depends_on=[a])

    assert c.info().status == Status.CANCELLED


def test_a_missing_dependency_cancels_the_dependent(conn: redis.Redis, redis_url: str) -> None:
    queue = Queue("dep", connection=conn)

    c = queue.enqueue(STEP, redis_url, key(), "c", depends_on=["no-such-job"])

    info = c.info()
    assert info.status == Status.CANCELLED
    assert "dependency dep:no-such-job missing" in (info.error or "")


def test_re_enqueueing_a_dependent_with_its_id_registers_it_again(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue, steps = Queue("dep", connection=conn), key()
    a = queue.enqueue(STEP, redis_url, steps, "a")
    # A producer that died after the enqueue, before registering with its dependency:
    job = queue.prepare(STEP, (redis_url, steps, "c"), job_id="c", depends_on=[a])
    calls.enqueue(conn, queue.keys, [job])

    again = queue.enqueue(STEP, redis_url, steps, "c", job_id="c", depends_on=[a])
    start_worker(workers, "dep")

    assert again.wait(timeout=10) == "c"
    assert ran(conn, steps) == ["a", "c"]


def test_depends_on_refuses_a_due_time_and_itself(conn: redis.Redis) -> None:
    queue = Queue("dep", connection=conn)
    a = queue.enqueue(STEP, "u", "k", "a")

    with pytest.raises(InvalidOption, match="delay or at"):
        queue.enqueue(STEP, "u", "k", "c", depends_on=[a], delay=5)
    with pytest.raises(InvalidOption, match="itself"):
        queue.enqueue(STEP, "u", "k", "c", job_id="c", depends_on=["c"])


def test_a_job_without_dependencies_stores_none(conn: redis.Redis) -> None:
    queue = Queue("dep", connection=conn)

    record = queue.enqueue(STEP, "u", "k", "a").info().record

    assert not {"deps", "deps_left", "dependents"} & set(record)


def test_a_worker_killed_before_telling_the_dependents_still_tells_them_exactly_once(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    first, last = Queue("dep-a", connection=conn), Queue("dep-c", connection=conn)
    steps, runs = key(), key()
    a = first.enqueue(STEP, redis_url, steps, "a")
    c = last.enqueue("option_tasks:sleep_counted", redis_url, runs, 0, depends_on=[a])
    # The dependent's queue refuses the delivery for now (a key of the wrong type), so the
    # worker completes `a` and then fails to tell `c`: the notice stays in dep-a.
    blocker = QueueKeys("dep-c").events
    conn.set(blocker, "in the way")
    proc, log = start_worker(workers, "dep-a")
    wait_status(first, a.id, Status.COMPLETE)
    wait_until(lambda: log.count("not recorded") > 0, what="the delivery to fail")
    kill_worker(proc)
    assert conn.zscore(first.keys.notices, a.id) is not None
    conn.delete(blocker)

    # Delivered twice (a re-drive racing another): counted once.
    for _ in range(2):
        conn.zadd(first.keys.notices, {a.id: server_ms(conn) - NOTICE_REDRIVE_MS - 1000})
        splitting.redrive_notices(conn, first.keys)
    start_worker(workers, "dep-c")

    wait_status(last, c.id, Status.COMPLETE)
    time.sleep(0.3)
    assert as_int(conn.get(runs)) == 1
    assert conn.zscore(first.keys.notices, a.id) is None


def test_a_notice_left_by_a_killed_worker_is_redriven_by_another_worker(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    first, last = Queue("dep-a", connection=conn), Queue("dep-c", connection=conn)
    steps = key()
    a = first.enqueue(STEP, redis_url, steps, "a")
    c = last.enqueue(STEP, redis_url, steps, "c", depends_on=[a])
    blocker = QueueKeys("dep-c").events
    conn.set(blocker, "in the way")
    proc, log = start_worker(workers, "dep-a")
    wait_status(first, a.id, Status.COMPLETE)
    wait_until(lambda: log.count("not recorded") > 0, what="the delivery to fail")
    kill_worker(proc)
    conn.delete(blocker)
    conn.zadd(first.keys.notices, {a.id: server_ms(conn) - NOTICE_REDRIVE_MS - 1000})

    start_worker(workers, "dep-a", "dep-c")  # re-drives at its start

    assert c.wait(timeout=20) == "c"
    assert ran(conn, steps) == ["a", "c"]


def test_a_dependency_that_expires_unstarted_is_due_for_redrive_at_once(conn: redis.Redis) -> None:
    first, last = Queue("dep-a", connection=conn), Queue("dep-c", connection=conn)
    a = first.enqueue(STEP, "u", "k", "a", expires=0.05)
    c = last.enqueue(STEP, "u", "k", "c", depends_on=[a])
    expired_by = server_ms(conn) + 100
    wait_until(lambda: server_ms(conn) > expired_by, what="the job's expiry to pass")

    assert calls.pop(conn, first.keys, 1, 10_000, "test").leases == []  # the pop expires `a`
    assert first.fetch_info(a.id).status == Status.EXPIRED
    # No worker ran `a`, so none will tell `c`: the very next re-drive does.
    assert splitting.redrive_notices(conn, first.keys) == 1

    assert last.fetch_info(c.id).status == Status.CANCELLED


def test_a_dependency_that_loses_its_lease_too_often_is_due_for_redrive_at_once(
    conn: redis.Redis,
) -> None:
    first, last = Queue("dep-a", connection=conn), Queue("dep-c", connection=conn)
    first.set_max_lost_leases(1)
    a = first.enqueue(STEP, "u", "k", "a")
    c = last.enqueue(STEP, "u", "k", "c", depends_on=[a])
    for _ in range(2):
        leases = calls.pop(conn, first.keys, 1, 20, "test").leases
        let_expire(conn, *leases)

    assert calls.pop(conn, first.keys, 1, 10_000, "test").leases == []  # `a` fails for good
    assert first.fetch_info(a.id).status == Status.FAILED
    assert splitting.redrive_notices(conn, first.keys) == 1

    assert last.fetch_info(c.id).status == Status.CANCELLED


def test_the_dependents_of_an_expired_job_are_told_without_the_redrive_delay(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    first, last = Queue("dep-a", connection=conn), Queue("dep-c", connection=conn)
    a = first.enqueue(STEP, redis_url, key(), "a", expires=0.05)
    c = last.enqueue(STEP, redis_url, key(), "c", depends_on=[a])
    expired_by = server_ms(conn) + 100
    wait_until(lambda: server_ms(conn) > expired_by, what="the job's expiry to pass")
    start_worker(workers, "dep-a", "dep-c")

    # Well inside NOTICE_REDRIVE_MS, the delay a crashed worker's notice waits.
    info = wait_status(last, c.id, Status.CANCELLED, timeout=NOTICE_REDRIVE_MS / 1000 - 2)
    assert f"dep-a:{a.id}" in (info.error or "")


def test_a_spoiled_dependents_field_does_not_stop_the_worker(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue, steps = Queue("dep", connection=conn), key()
    a = queue.enqueue(STEP, redis_url, steps, "a")
    record = json.loads(conn.hget(queue.keys.jobs, a.id))
    record["dependents"] = ["not a pair", [1, 2], ["bad queue name", "x"]]
    conn.hset(queue.keys.jobs, a.id, json.dumps(record))  # another writer's doing
    start_worker(workers, "dep")

    wait_status(queue, a.id, Status.COMPLETE)
    later = queue.enqueue(STEP, redis_url, steps, "later")

    assert later.wait(timeout=10) == "later"


def test_a_batch_of_dependents_each_waits_for_its_own_dependencies(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    first, last = Queue("dep-a", connection=conn), Queue("dep-c", connection=conn)
    steps = key()
    a = first.enqueue(STEP, redis_url, steps, "a")
    b = first.enqueue("option_tasks:fail_step", redis_url, steps, "b")
    dependents = last.enqueue_many(
        [last.prepare(STEP, (redis_url, steps, f"after-a-{n}"), depends_on=[a]) for n in range(20)]
        + [last.prepare(STEP, (redis_url, steps, "after-b"), depends_on=[a, b])]
    )
    start_worker(workers, "dep-a", "dep-c", concurrency=4)

    for job in dependents[:20]:
        wait_status(last, job.id, Status.COMPLETE)
    assert wait_status(last, dependents[20].id, Status.CANCELLED)
    assert "after-b" not in ran(conn, steps)
