"""Handlers of the periodic-job and progress tests; workers import them as `schedule_tasks`
(cwd: tests/). Times are read from the Redis server's clock."""

from __future__ import annotations

import json
import time

from tasks import client, server_time_us

from pyscheduler import current_job


def tick_run(url: str, key: str) -> str:
    """RPUSH {id, tick (ms), start (server clock, us)} of this run to the list `key`."""
    conn = client(url)
    job = current_job()
    started = server_time_us(conn)
    conn.rpush(key, json.dumps({"id": job.id, "tick": job.record.get("tick"), "start": started}))
    return job.id


def report_progress(url: str, go_key: str, steps: int) -> int:
    """Report progress 1..steps quickly, then {"done": steps}, and wait until `go_key` is set."""
    job = current_job()
    for step in range(1, steps + 1):
        job.set_progress({"step": step, "of": steps})
    job.set_progress({"done": steps})
    conn = client(url)
    deadline = time.monotonic() + 30
    while not conn.exists(go_key) and time.monotonic() < deadline:
        time.sleep(0.01)
    return steps


def progress_then_return(steps: int) -> int:
    """Report progress 1..steps in a tight loop and return at once: the last value must still
    reach Redis (the end of the run flushes what the throttle held back)."""
    job = current_job()
    for step in range(1, steps + 1):
        job.set_progress(step)
    return steps


def slow_tick_run(url: str, key: str, seconds: float) -> str:
    """`tick_run`, then sleep `seconds` (longer than the schedule's interval)."""
    job_id = tick_run(url, key)
    time.sleep(seconds)
    return job_id
