"""The benchmark's handler bodies, shared by every system `tools/bench.py` measures.

Each handler writes exactly one value to Redis (an RPUSH onto `OUT_KEY`) and nothing else, so
every system does the same work per job. Times are `time.time()` taken in the handler and in
the enqueuing process (one machine, one clock), the same way for every system.

With `BENCH_NOOP_MODE=count` in a worker's environment (W2's no-op variant), `noop_body`
writes nothing per job: it counts in memory and a thread flushes "<count> <time>" every 10 ms,
as an independent harness does, so the drain measures the scheduler and not the handler's
round trip. (RQ forks a work-horse per job: each one flushes its single count at once.)

This module imports nothing but redis: RQ's default worker imports it again in every forked
work-horse. `bench_tasks.py` registers pyscheduler's handlers (`@task`) around these bodies;
the peers' modules in `bench_peers/` wrap them for their libraries.
The URL of the benchmark's Redis comes from the environment variable `BENCH_REDIS_URL`.
"""

from __future__ import annotations

import os
import threading
import time

import redis

OUT_KEY = "bench:out"
URL_ENV = "BENCH_REDIS_URL"
NOOP_MODE_ENV = "BENCH_NOOP_MODE"
FLUSH_SECONDS = 0.01
_COUNTING = os.environ.get(NOOP_MODE_ENV) == "count"

_client: redis.Redis | None = None
_client_pid = 0


def _redis() -> redis.Redis:
    """One client per process (a forked child opens its own)."""
    global _client, _client_pid
    if _client is None or _client_pid != os.getpid():
        _client = redis.Redis.from_url(os.environ[URL_ENV])
        _client_pid = os.getpid()
    return _client


def noop_body() -> None:
    """W1, W2: record when the job ran (counted in memory with BENCH_NOOP_MODE=count)."""
    if _COUNTING:
        _count_one()
    else:
        _redis().rpush(OUT_KEY, repr(time.time()))


class _Counter:
    """This process's jobs not flushed yet, and the thread that flushes them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0
        self.flushed_at = 0.0
        self.pid = os.getpid()
        threading.Thread(target=self._run, name="bench-flush", daemon=True).start()

    def _run(self) -> None:
        while True:
            time.sleep(FLUSH_SECONDS)
            self.flush()

    def flush(self) -> None:
        with self.lock:
            count, self.count = self.count, 0
            now = self.flushed_at = time.time()
        if count:
            _redis().rpush(OUT_KEY, f"{count} {now!r}")


_counter: _Counter | None = None


def _count_one() -> None:
    global _counter
    if _counter is None or _counter.pid != os.getpid():  # first job of this (forked) process
        _counter = _Counter()
    with _counter.lock:
        _counter.count += 1
        due = time.time() - _counter.flushed_at >= FLUSH_SECONDS
    if due:
        _counter.flush()


def timed_body(enqueued: float) -> None:
    """W3: record when the job was enqueued and when it started."""
    _redis().rpush(OUT_KEY, f"{enqueued!r} {time.time()!r}")


def sleeper_body(kind: str, enqueued: float, seconds: float) -> None:
    """W4: sleep, then record kind, enqueue time, start and end."""
    start = time.time()
    time.sleep(seconds)
    record_sleeper(kind, enqueued, start)


def record_sleeper(kind: str, enqueued: float, start: float) -> None:
    """The record of a sleeper (async handlers sleep with asyncio, then call this)."""
    _redis().rpush(OUT_KEY, f"{kind} {enqueued!r} {start!r} {time.time()!r}")
