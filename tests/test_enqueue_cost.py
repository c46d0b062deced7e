"""What an enqueue costs inside Redis: the commands `psq_enqueue` runs, counted (never timed).

`INFO commandstats` counts the commands a function runs as well as the client's own. An enqueue
of one job runs a fixed handful; a batch runs about as many, each touching all its jobs, so a
change that adds a command per job fails here (test_round_trips guards the network side).
"""

from __future__ import annotations

from collections import Counter

import redis

from pyscheduler import Queue
from pyscheduler.store.protocol import ENQUEUE_BATCH_MAX

# One ready no-op job: HMGET config, TIME, HMGET jobs, GET seq, LLEN wake, TYPE ready, TYPE
# events, HINCRBY stats, HSET jobs, INCRBY seq, ZADD ready, LPUSH wake, XADD events.
MAX_COMMANDS_PER_CALL = 13
# A full batch: the same, with the long writes in chunks and one event entry per 100 ids.
MAX_COMMANDS_PER_BATCH = 40
_NOT_COUNTED = {"fcall", "fcall_ro", "config", "info", "ping", "hello", "client"}


def commands_run(conn: redis.Redis) -> Counter[str]:
    stats = conn.info("commandstats")
    counts: Counter[str] = Counter()
    for key, value in stats.items():
        name = key.removeprefix("cmdstat_")
        if name.partition("|")[0] not in _NOT_COUNTED:
            counts[name] = int(value["calls"])
    return counts


def warm_queue(conn: redis.Redis) -> Queue:
    queue = Queue("cost", connection=conn)
    queue.enqueue("tasks:noop")  # the first call also reads limits and registers the queue
    conn.config_resetstat()
    return queue


def test_one_enqueue_runs_a_fixed_handful_of_commands(conn: redis.Redis) -> None:
    queue = warm_queue(conn)

    queue.enqueue("tasks:noop")

    counts = commands_run(conn)
    print(f"\none enqueue: {sum(counts.values())} commands {dict(counts)}")
    assert sum(counts.values()) <= MAX_COMMANDS_PER_CALL
    assert counts["hget"] == 0  # nothing read one job at a time


def test_a_batch_of_jobs_runs_about_as_many_commands_as_one_job(conn: redis.Redis) -> None:
    queue = warm_queue(conn)

    queue.enqueue_many([queue.prepare("tasks:noop") for _ in range(ENQUEUE_BATCH_MAX)])

    counts = commands_run(conn)
    print(f"\n{ENQUEUE_BATCH_MAX} jobs: {sum(counts.values())} commands {dict(counts)}")
    assert sum(counts.values()) <= MAX_COMMANDS_PER_BATCH
    assert len(queue) == 1 + ENQUEUE_BATCH_MAX


def test_a_job_without_arguments_stores_no_payload(conn: redis.Redis) -> None:
    queue = warm_queue(conn)

    bare = queue.enqueue("tasks:noop")
    with_args = queue.enqueue("tasks:add", 1, 2)

    assert conn.hexists(queue.keys.payloads, bare.id) == 0
    assert conn.hexists(queue.keys.payloads, with_args.id) == 1
    assert (bare.info().args, bare.info().kwargs) == ([], {})


def test_a_queued_record_leaves_out_the_defaults_and_reads_back_whole(conn: redis.Redis) -> None:
    queue = warm_queue(conn)

    job = queue.enqueue("tasks:noop")

    stored = conn.hget(queue.keys.jobs, job.id)
    assert stored is not None and len(stored) < 100, stored
    record = job.info().record
    assert (record["timeout"], record["retries"], record["attempts"], record["lost"]) == (
        queue.default_timeout,
        queue.default_retries,
        0,
        0,
    )
    assert record["queued_at"] == record["created"]
