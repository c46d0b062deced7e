"""Threads sharing one client share round trips (store/pipelining.py), and nothing else.

Each caller gets its own jobs and its own errors back; a call returns only once its own reply
is in. Whether calls meet in one round trip depends on timing, so the tests that count round
trips hold the server's writes (CLIENT PAUSE WRITE) until the line of waiting calls is full.
No test here measures time.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
from collections.abc import Callable, Iterable
from typing import Any

import pytest
import redis
from helpers import counting_client, wait_until

from pyscheduler import Queue
from pyscheduler.exceptions import InvalidOption
from pyscheduler.store import pipelining

THREADS = 16


def in_threads(target: Callable[[int], Any], n: int = THREADS) -> list[Any]:
    """Run target(i) in n threads started together; their results (or exceptions) by i."""
    results: list[Any] = [None] * n
    start = threading.Barrier(n)

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = target(i)
        except Exception as exc:  # handed to the test to check
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    return results


def stored_args(conn: redis.Redis, queue: Queue, ids: Iterable[str]) -> dict[str, list[Any]]:
    ids = list(ids)
    payloads = conn.hmget(queue.keys.payloads, ids)
    return {i: json.loads(p)["args"] for i, p in zip(ids, payloads, strict=True) if p}


@pytest.fixture
def queue(conn: redis.Redis) -> Queue:
    queue = Queue("auto", connection=conn)
    queue.enqueue("tasks:noop")  # reads the limits, checks the library, registers the queue
    return queue


def test_every_job_of_16_threads_is_stored_and_each_caller_gets_its_own(
    conn: redis.Redis, queue: Queue
) -> None:
    def enqueue_some(thread: int) -> list[str]:
        return [queue.enqueue("tasks:add", thread, n).id for n in range(50)]

    results = in_threads(enqueue_some)

    ids = [job_id for found in results for job_id in found]
    assert len(set(ids)) == THREADS * 50
    args = stored_args(conn, queue, ids)
    for thread, found in enumerate(results):
        assert [args[job_id] for job_id in found] == [[thread, n] for n in range(50)]
    assert len(queue) == 1 + THREADS * 50


def test_each_caller_gets_its_own_error(conn: redis.Redis, queue: Queue) -> None:
    def enqueue_some(thread: int) -> list[Any]:
        outcomes: list[Any] = []
        for n in range(20):
            job = queue.prepare("tasks:add", (thread, n))
            if thread % 2:  # only the library's check stands between this job and Redis
                job = dataclasses.replace(job, timeout=-1.0)
            try:
                outcomes.append(queue.enqueue_many([job])[0].id)
            except InvalidOption as exc:
                outcomes.append(exc)
        return outcomes

    results = in_threads(enqueue_some)

    for thread, outcomes in enumerate(results):
        if thread % 2:
            assert all(isinstance(o, InvalidOption) for o in outcomes), outcomes
            assert all("timeout must be" in str(o) for o in outcomes)
        else:
            args = stored_args(conn, queue, outcomes)
            assert [args[job_id] for job_id in outcomes] == [[thread, n] for n in range(20)]
    assert len(queue) == 1 + THREADS // 2 * 20


def held_writes(conn: redis.Redis) -> Any:
    """Hold the server's writes (reads go on) until the block ends; at most 30 s."""

    class Held:
        def __enter__(self) -> None:
            conn.execute_command("CLIENT", "PAUSE", 30_000, "WRITE")

        def __exit__(self, *exc: object) -> None:
            conn.execute_command("CLIENT", "UNPAUSE")

    return Held()


def test_calls_made_while_one_is_in_flight_go_together_in_the_next_round_trip(
    conn: redis.Redis, redis_url: str
) -> None:
    client, trips = counting_client(redis_url)
    queue = Queue("auto", connection=client)
    queue.enqueue("tasks:noop")
    line = pipelining.for_client(client)
    trips.reset()
    jobs: list[Any] = []

    def enqueue(n: int) -> None:
        jobs.append(queue.enqueue("tasks:add", n, 0))

    with held_writes(conn):
        threads = [threading.Thread(target=enqueue, args=(n,)) for n in range(THREADS)]
        for thread in threads:
            thread.start()
        # One call is in flight (the server holds it), the others wait behind it.
        wait_until(lambda: line.waiting() == THREADS - 1, 30, what="the line to fill")
    for thread in threads:
        thread.join(60)

    assert trips.round_trips == 2
    args = stored_args(conn, queue, [job.id for job in jobs])
    assert sorted(a for a, _ in args.values()) == list(range(THREADS))


def test_a_call_alone_is_one_plain_command(redis_url: str, conn: redis.Redis) -> None:
    client, trips = counting_client(redis_url)
    queue = Queue("auto", connection=client)
    queue.enqueue("tasks:noop")
    trips.reset()

    for n in range(5):
        queue.enqueue("tasks:add", n, 0)

    assert trips.round_trips == 5
    assert len(queue) == 6


def test_a_forked_child_does_not_wait_behind_the_parents_call_in_flight(
    conn: redis.Redis, queue: Queue
) -> None:
    in_flight: list[Any] = []
    with held_writes(conn):
        thread = threading.Thread(target=lambda: in_flight.append(queue.enqueue("tasks:noop")))
        thread.start()
        wait_until(pipelining.for_client(conn).busy, 30, what="a call in flight")
        pid = os.fork()
        if pid == 0:  # the child: its own connection, and no call in flight
            code = 1
            try:
                queue.enqueue("tasks:add", 7, 7, job_id="from-child")
                code = 0
            finally:
                os._exit(code)
    exit_codes: list[int] = []

    def reaped() -> bool:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            exit_codes.append(os.waitstatus_to_exitcode(status))
        return bool(done)

    try:
        wait_until(reaped, 30, what="the child's enqueue")
    finally:
        if not exit_codes:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    thread.join(60)

    assert exit_codes == [0]
    assert len(in_flight) == 1
    assert queue.fetch_info("from-child").args == [7, 7]


def test_one_callers_commands_come_back_in_order_with_errors_in_place(conn: redis.Redis) -> None:
    line = pipelining.for_client(conn)
    replies = line.execute([("SET", "k", "1"), ("HGET", "k", "f"), ("INCR", "k")])

    assert replies[0] is True
    assert isinstance(replies[1], redis.ResponseError)
    assert replies[2] == 2
