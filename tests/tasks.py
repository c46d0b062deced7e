"""Handlers the worker tests enqueue; workers import them as module `tasks` (cwd: tests/).

Handlers that report to the test take the Redis URL as their first argument and write to a
key the test names, with times from the Redis server clock (microseconds), so the test and
the handler compare readings of one clock.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import socket
import time
from typing import Any

import redis

from pyscheduler import current_job, task
from pyscheduler.store.connection import Client, connect

_clients: dict[tuple[int, str], Client] = {}


def client(url: str) -> Client:
    """One client per process and URL (executors are forked: never share a parent's socket);
    a cluster client for a cluster URL."""
    key = (os.getpid(), url)
    if key not in _clients:
        _clients[key] = connect(url)
    return _clients[key]


def server_time_us(conn: redis.Redis) -> int:
    seconds, micros = conn.time()
    return int(seconds) * 1_000_000 + int(micros)


def quick_task() -> str:
    """The seed snippet's job."""
    return "quick"


def noop() -> None:
    return None


def frozen_objects() -> int:
    """How many objects the garbage collector leaves alone in this process (gc.freeze)."""
    return gc.get_freeze_count()


def add(a: int, b: int) -> int:
    return a + b


def record_start(url: str, key: str) -> int:
    """Write the server time of the handler's start into `key`; return it."""
    conn = client(url)
    started = server_time_us(conn)
    conn.set(key, started)
    return started


def span(url: str, key: str, seconds: float) -> int:
    """Sleep `seconds`; append {pid, start, end} (server clock, us) to the list `key`."""
    conn = client(url)
    start = server_time_us(conn)
    time.sleep(seconds)
    end = server_time_us(conn)
    conn.rpush(key, json.dumps({"pid": os.getpid(), "start": start, "end": end}))
    return os.getpid()


def meet(url: str, key: str, count: int, seconds: float) -> int:
    """A barrier: INCR `key`, then wait until `count` runs have arrived (each waits for the
    others, so they all run at once), at most `seconds` (then TimeoutError); return the pid."""
    conn = client(url)
    conn.incr(key)
    deadline = time.monotonic() + seconds
    while int(conn.get(key) or 0) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {int(conn.get(key) or 0)} of {count} runs met")
        time.sleep(0.01)
    return os.getpid()


def sleep_in_c(seconds: float) -> str:
    """Stuck inside a C call: time.sleep never returns to Python until it is done."""
    time.sleep(seconds)
    return "woke up"


def blocking_read() -> bytes:
    """Stuck in a socket read that never gets data."""
    ours, theirs = socket.socketpair()
    try:
        return ours.recv(1)
    finally:
        ours.close()
        theirs.close()


def boom(url: str, key: str) -> None:
    """Record the server time of this attempt in the list `key`, then raise."""
    conn = client(url)
    conn.rpush(key, server_time_us(conn))
    raise ValueError("boom: this handler always fails")


def returns_set() -> Any:
    """Returns a value JSON cannot carry."""
    return {1, 2, 3}


def mark(url: str, key: str, value: str) -> str:
    client(url).set(key, value)
    return value


def append(url: str, key: str, value: str) -> str:
    """RPUSH `value` to the list `key`: the order in which jobs ran."""
    client(url).rpush(key, value)
    return value


def counted_sleep(url: str, key: str, seconds: float) -> int:
    """INCR the run counter `key` at start, sleep, return the count of this run."""
    count = int(client(url).incr(key))
    time.sleep(seconds)
    return count


def sleep_on_first_run(url: str, key: str, seconds: float) -> int:
    """INCR the run counter `key`; only the first run sleeps (a run a test kills or stops
    cannot end before the test gets to it however slow the machine); return the count."""
    count = int(client(url).incr(key))
    if count == 1:
        time.sleep(seconds)
    return count


def whoami(url: str, key: str, seconds: float) -> str:
    """INCR the run counter `key`, sleep, return the $PSQ_TEST_WORKER of the worker."""
    client(url).incr(key)
    time.sleep(seconds)
    return os.environ.get("PSQ_TEST_WORKER", "?")


@task
def registered_add(a: int, b: int) -> int:
    """Registered with @task: a strict worker that imported this module runs it."""
    return a + b


def exit_hard(code: int) -> None:
    """The process running the handler dies without a word (like a crash in C code)."""
    os._exit(code)


async def async_add(a: int, b: int) -> int:
    """An `async def` handler: the executor runs it to completion in an event loop."""
    await asyncio.sleep(0.01)
    return a + b


async def async_stuck(seconds: float) -> str:
    """An `async def` handler that blocks its event loop (sync sleep inside a coroutine)."""
    time.sleep(seconds)
    return "woke"


async def async_span(url: str, key: str, seconds: float) -> int:
    """Like `span`, as a coroutine."""
    conn = client(url)
    start = server_time_us(conn)
    await asyncio.sleep(seconds)
    end = server_time_us(conn)
    conn.rpush(key, json.dumps({"pid": os.getpid(), "start": start, "end": end}))
    return os.getpid()


async def async_sleep(seconds: float) -> str:
    """Awaits (the event loop stays free) for `seconds`."""
    await asyncio.sleep(seconds)
    return "slept"


async def async_own_id(seconds: float) -> str:
    """The id `current_job()` gives after an await, while other jobs share the loop."""
    await asyncio.sleep(seconds)
    return current_job().id


def echo(value: Any) -> Any:
    return value
