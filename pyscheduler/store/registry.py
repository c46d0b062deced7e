"""The registry of known queues: one SET of queue names, `psq:queues` (`keys.QUEUES_KEY`).

It lists queues (`stats`, the dashboard, metrics, `workers` without names) and lets a job be
found by id alone. It is an index, not a source of truth: no library call reads it, and a
queue missing from it still works; it only goes unlisted until a client enqueues on it or a
worker takes it.

It stays one key without a hash tag, so on a Redis Cluster it lives on one shard while each
queue lives on its own (docs/cluster.md says why that is the choice). What keeps it cheap
there is how often it is written: once per client, queue name and `REGISTRY_REFRESH_S` in a
process (remembered here, per client object; `Queue(name)` without a connection shares one
client per URL), never per job, so a registry emptied meanwhile (a FLUSHALL, a restored
backup) lists the queue again within that time. On a cluster the write is a call of its own,
before the queue's first enqueue, so a failed write stops the enqueue before anything is
written and never touches the queue's shard.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterable
from typing import Any

from .connection import Client
from .keys import QUEUES_KEY, validate_queue_name

__all__ = ["forget", "is_registered", "known_queues", "mark_registered", "register"]

#: How long a registry write is trusted before the next enqueue writes it again.
REGISTRY_REFRESH_S = 60.0

# client -> queue name -> time.monotonic() of the write
_registered: weakref.WeakKeyDictionary[Client, dict[str, float]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def is_registered(conn: Client, name: str) -> bool:
    """Whether this process wrote `name` to the registry through `conn` in the last
    REGISTRY_REFRESH_S."""
    with _lock:
        written = _registered.get(conn, {}).get(name)
    return written is not None and time.monotonic() - written < REGISTRY_REFRESH_S


def mark_registered(conn: Client, names: Iterable[str]) -> None:
    """Remember that `names` are in the registry `conn` writes to (after a write went through)."""
    now = time.monotonic()
    with _lock:
        _registered.setdefault(conn, {}).update(dict.fromkeys(names, now))


def forget(conn: Client) -> None:
    """Forget the writes made through `conn` (the server was emptied): the next enqueue of each
    queue writes the registry again."""
    with _lock:
        _registered.pop(conn, None)


def register(conn: Client, names: Iterable[str]) -> None:
    """Add queue names to the registry in one call of their own (SADD), unless this process
    did so through `conn` already."""
    todo = sorted({validate_queue_name(n) for n in names if not is_registered(conn, n)})
    if todo:
        conn.sadd(QUEUES_KEY, *todo)
        mark_registered(conn, todo)


def known_queues(conn: Client) -> list[str]:
    """The names in the registry, sorted."""
    members: Any = conn.smembers(QUEUES_KEY)  # maybe-awaitable in some redis-py stubs
    return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)
