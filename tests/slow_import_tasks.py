"""A handler module that takes 0.3 s to import, so an executor's first job of it starts cold.

Workers import it as module `slow_import_tasks` in the child that runs the job, after the job
was leased: the handler starts well after its lease.
"""

from __future__ import annotations

import time

from tasks import client, server_time_us

IMPORT_SECONDS = 0.3
time.sleep(IMPORT_SECONDS)

__all__ = ["record_start", "record_start_async"]


def record_start(url: str, key: str) -> None:
    """RPUSH the Redis server time (us) of the handler's start to the list `key`.

    The client is made first: connecting is not part of the start."""
    conn = client(url)
    conn.ping()
    conn.rpush(key, server_time_us(conn))


async def record_start_async(url: str, key: str) -> None:
    """`record_start` as an `async def` handler: it runs on the worker's event loop."""
    record_start(url, key)
