"""Handlers of the queue-settings tests; workers import them as module `settings_tasks`.

Each handler takes the Redis URL and a key the test names, and reports to it with times from
the Redis server clock (microseconds), so the test and every worker read one clock.
"""

from __future__ import annotations

from tasks import client, server_time_us, span

__all__ = ["interval", "started"]


def interval(url: str, key: str, seconds: float) -> int:
    """Sleep `seconds`; RPUSH {pid, start, end} (server clock) to the list `key`.

    Defined here, not imported: a worker runs only functions a module defines itself."""
    return span(url, key, seconds)


def started(url: str, key: str) -> int:
    """RPUSH the server time of the handler's start to the list `key`."""
    conn = client(url)
    now = server_time_us(conn)
    conn.rpush(key, now)
    return now
