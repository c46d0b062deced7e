"""How much Redis work a job costs: round trips and library calls, counted (never timed).

A regression that adds a round trip to enqueue, pop or complete fails here. Commands are
counted on the client (a redis-py connection class that records every command it packs and
every write it sends: one write of packed commands is one round trip) and, for the worker, also
on the server (`INFO commandstats`, which sees the worker's child processes too).
"""

from __future__ import annotations

import redis
from helpers import Traffic, counting_client

from pyscheduler import Queue, Worker
from pyscheduler.store import calls
from pyscheduler.store.protocol import ENQUEUE_BATCH_MAX


def fcalls_on_server(conn: redis.Redis) -> int:
    stats = conn.info("commandstats")
    return sum(int(stats.get(k, {}).get("calls", 0)) for k in ("cmdstat_fcall", "cmdstat_fcall_ro"))


def test_enqueue_is_one_round_trip_in_the_steady_state(redis_url: str, conn: redis.Redis) -> None:
    client, traffic = counting_client(redis_url)
    queue = Queue("rt", connection=client)

    # The first call reads the queue's size limits (again every LIMITS_CACHE_SECONDS), checks
    # the library and registers the queue.
    queue.enqueue("tasks:noop")
    first = traffic.commands[:]
    first_trips = traffic.round_trips
    traffic.reset()
    queue.enqueue("tasks:noop")

    assert first == ["HMGET", "FCALL_RO psq_version", "SADD", "FCALL psq_enqueue"]
    assert first_trips == 3
    assert traffic.commands == ["FCALL psq_enqueue"]
    assert traffic.round_trips == 1


def test_enqueue_many_of_5000_is_one_round_trip(redis_url: str, conn: redis.Redis) -> None:
    client, traffic = counting_client(redis_url)
    queue = Queue("rt", connection=client)
    queue.enqueue("tasks:noop")
    traffic.reset()

    jobs = queue.enqueue_many([queue.prepare("tasks:noop", [n]) for n in range(5000)])

    assert len(jobs) == 5000
    assert traffic.round_trips == 1
    assert traffic.commands == ["FCALL psq_enqueue"] * (5000 // ENQUEUE_BATCH_MAX)
    assert len(queue) == 5001


def test_pop_and_complete_are_one_library_call_each(redis_url: str, conn: redis.Redis) -> None:
    Queue("rt", connection=conn).enqueue("tasks:noop")
    client, traffic = counting_client(redis_url)
    keys = Queue("rt", connection=client).keys

    (lease,) = calls.pop(client, keys, 1, 10_000, "rt-worker").leases
    assert traffic.commands == ["FCALL psq_pop"]
    assert traffic.round_trips == 1

    traffic.reset()
    calls.complete(client, keys, lease.id, lease.token, "null")
    assert traffic.commands == ["FCALL psq_complete_many"]
    assert traffic.round_trips == 1


# The worker's whole conversation with Redis while it drains a queue with one executor. Without
# prefetch, per job: a pop that leases it and a complete that reports it, sent together (the
# result goes with the next pop) in one round trip; per drain, a few more (the library check,
# the subtask-notice re-drive, the pop that finds the queue empty, a lease renewal on a slow
# machine). With prefetch (the default), a child gets many short jobs per pop and their
# results go back in one pipeline: a fraction of a round trip per job. A change that adds a
# call or a round trip per job breaks these bounds.
JOBS = 200
MAX_FCALLS_PER_JOB = 2.05
MAX_ROUND_TRIPS_PER_JOB = 1.05
# Prefetch holds about 10 ms of work per child: no-op jobs take ~0.1-0.5 ms, so even a slow
# machine gets several jobs per pop.
MAX_ROUND_TRIPS_PER_JOB_PREFETCHED = 0.5


def drain(redis_url: str, conn: redis.Redis, prefetch: bool) -> tuple[Traffic, int]:
    setup = Queue("rt", connection=conn)
    setup.enqueue_many([setup.prepare("tasks:noop") for _ in range(JOBS)])
    client, traffic = counting_client(redis_url)
    queue = Queue("rt", connection=client)
    server_before = fcalls_on_server(conn)

    processed = Worker([queue], prefetch=prefetch).work(burst=True)

    server_fcalls = fcalls_on_server(conn) - server_before
    counts = traffic.counts()
    fcalls = sum(n for name, n in counts.items() if name.startswith("FCALL"))
    print(
        f"\nworker drain of {JOBS} jobs (prefetch {prefetch}): {traffic.round_trips} round"
        f" trips ({traffic.round_trips / JOBS:.3f} per job), {fcalls} FCALLs"
        f" ({fcalls / JOBS:.3f} per job), server saw {server_fcalls} FCALLs; {dict(counts)}"
    )
    assert processed == JOBS
    # Results go back with psq_complete_many: one call per report, whatever its size.
    assert 1 <= counts["FCALL psq_complete_many"] <= JOBS
    # The server's count includes the executors (child processes): they add no calls of their
    # own for a plain job.
    assert fcalls <= server_fcalls <= MAX_FCALLS_PER_JOB * JOBS
    return traffic, fcalls


def test_worker_drain_without_prefetch_costs_two_calls_and_one_round_trip_per_job(
    redis_url: str, conn: redis.Redis
) -> None:
    traffic, fcalls = drain(redis_url, conn, prefetch=False)

    assert traffic.counts()["FCALL psq_complete_many"] == JOBS
    # One pop per job (each leases one job: one executor is idle at a time) and the last one,
    # which finds the queue empty and ends the burst.
    assert traffic.counts()["FCALL psq_pop"] == JOBS + 1
    assert fcalls <= MAX_FCALLS_PER_JOB * JOBS
    assert traffic.round_trips <= MAX_ROUND_TRIPS_PER_JOB * JOBS


def test_worker_drain_with_prefetch_takes_many_jobs_per_round_trip(
    redis_url: str, conn: redis.Redis
) -> None:
    traffic, _ = drain(redis_url, conn, prefetch=True)

    assert traffic.counts()["FCALL psq_pop"] <= JOBS * MAX_ROUND_TRIPS_PER_JOB_PREFETCHED
    assert traffic.round_trips <= MAX_ROUND_TRIPS_PER_JOB_PREFETCHED * JOBS
