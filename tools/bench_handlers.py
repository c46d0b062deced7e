"""The benchmark's handler bodies, shared by every system `tools/bench.py` measures.

Each handler writes exactly one value to Redis (an RPUSH onto `OUT_KEY`) and nothing else, so
every system does the same work per job. Times are `time.time()` taken in the handler and in
the enqueuing process (one machine, one clock), the same way for every system.

This module imports nothing but redis: RQ's default worker imports it again in every forked
work-horse. `bench_tasks.py` registers pyscheduler's handlers (`@task`) around these bodies;
the peers' modules in `bench_peers/` wrap them for their libraries.
The URL of the benchmark's Redis comes from the environment variable `BENCH_REDIS_URL`.
"""

from __future__ import annotations

import os
import time

import redis

OUT_KEY = "bench:out"
URL_ENV = "BENCH_REDIS_URL"

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
    """W1, W2: record when the job ran."""
    _redis().rpush(OUT_KEY, repr(time.time()))


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
