"""A worker on several queues: in the order given, or by weight."""

from __future__ import annotations

import pytest
import redis
import tasks

from pyscheduler import Queue, Worker


def run_order(
    conn: redis.Redis,
    redis_url: str,
    weights: dict[str, int] | None,
    jobs: int = 12,
    prefetch: bool = False,
) -> list[str]:
    """Enqueue `jobs` jobs on each of `a` and `b`, drain them with one worker, return the order."""
    queues = [Queue(name, connection=conn) for name in ("a", "b")]
    for queue in queues:
        for n in range(jobs):
            queue.enqueue(tasks.append, redis_url, "order", queue.name, job_id=f"{queue.name}{n}")
    Worker(queues, weights=weights, prefetch=prefetch).work(burst=True)
    return [v.decode() for v in conn.lrange("order", 0, -1)]


def test_queues_are_taken_in_the_order_given_without_weights(
    conn: redis.Redis, redis_url: str
) -> None:
    assert run_order(conn, redis_url, None) == ["a"] * 12 + ["b"] * 12


def test_weights_share_turns_between_backed_up_queues(conn: redis.Redis, redis_url: str) -> None:
    order = run_order(conn, redis_url, {"a": 3, "b": 1})
    assert order[:8].count("a") == 6
    assert order[:8].count("b") == 2
    assert sorted(order) == ["a"] * 12 + ["b"] * 12


def test_weights_share_prefetched_jobs_too(conn: redis.Redis, redis_url: str) -> None:
    # With prefetch a turn leases a batch, not one job: each turn's batch is split by weight.
    order = run_order(conn, redis_url, {"a": 3, "b": 1}, jobs=200, prefetch=True)
    first_half = order[:200]
    assert 130 <= first_half.count("a") <= 170, first_half
    assert sorted(order) == ["a"] * 200 + ["b"] * 200


def test_a_weight_for_a_queue_the_worker_does_not_take_is_refused(conn: redis.Redis) -> None:
    with pytest.raises(ValueError, match="does not take"):
        Worker([Queue("a", connection=conn)], weights={"z": 2})
