"""The registry of known queues: one SET of queue names, `psq:queues` (`keys.QUEUES_KEY`).

It lists queues (`stats`, the dashboard, metrics, `workers` without names) and lets a job be
found by id alone. It is an index, not a source of truth: no library call reads it, and a
queue missing from it still works; it only goes unlisted until a client enqueues on it or a
worker takes it.

It stays one key without a hash tag, so on a Redis Cluster it lives on one shard while each
queue lives on its own (docs/cluster.md says why that is the choice). What keeps it cheap
there is how often it is written: once per client and queue name in a process (remembered
here, per client object, and `Queue(name)` without a connection shares one client per URL),
never per job; on its own call on a cluster, before the queue's first enqueue, so a failed
write stops the enqueue before anything is written and never touches the queue's shard.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from typing import Any

from .connection import Client
from .keys import QUEUES_KEY, validate_queue_name

__all__ = ["is_registered", "known_queues", "mark_registered", "register"]

_registered: weakref.WeakKeyDictionary[Client, set[str]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def is_registered(conn: Client, name: str) -> bool:
    """Whether this process already wrote `name` to the registry through `conn`."""
    with _lock:
        return name in _registered.get(conn, ())


def mark_registered(conn: Client, names: Iterable[str]) -> None:
    """Remember that `names` are in the registry `conn` writes to (after a write went through)."""
    with _lock:
        _registered.setdefault(conn, set()).update(names)


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
