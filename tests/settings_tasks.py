"""Handlers of the queue-settings tests; workers import them as module `settings_tasks`.

Each handler takes the Redis URL and a key the test names, and reports to it with times from
the Redis server clock (microseconds), so the test and every worker read one clock.
"""

from __future__ import annotations

import json
import os
import time

import redis

_clients: dict[tuple[int, str], redis.Redis] = {}


def client(url: str) -> redis.Redis:
    """One client per process and URL (executors are forked: never share a parent's socket)."""
    key = (os.getpid(), url)
    if key not in _clients:
        _clients[key] = redis.Redis.from_url(url)
    return _clients[key]


def server_time_us(conn: redis.Redis) -> int:
    seconds, micros = conn.time()
    return int(seconds) * 1_000_000 + int(micros)


def interval(url: str, key: str, seconds: float) -> int:
    """Sleep `seconds`; RPUSH {pid, start, end} (server clock, us) to the list `key`."""
    conn = client(url)
    start = server_time_us(conn)
    time.sleep(seconds)
    end = server_time_us(conn)
    conn.rpush(key, json.dumps({"pid": os.getpid(), "start": start, "end": end}))
    return os.getpid()


def started(url: str, key: str) -> int:
    """RPUSH the server time of the handler's start to the list `key`."""
    conn = client(url)
    now = server_time_us(conn)
    conn.rpush(key, now)
    return now
