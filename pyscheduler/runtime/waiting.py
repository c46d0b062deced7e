"""Waiting for work: one blocking wait per queue, each waking the worker's loop.

An idle worker blocks inside Redis until an enqueue (or a due delayed job, a freed slot...)
pushes a wake-up token to a queue's `wake` list. Each queue gets a thread of its own doing
`BLPOP <that queue's wake key> <timeout>` on a client of its own, made for the node that owns
that key: one key per command, so it works on a Redis Cluster as on one server (a BLPOP over
several queues' keys is CROSSSLOT there), and only redis-py's public API (a client, its
`connection_pool`, the pool's `connection_class` and `connection_kwargs`; for a cluster,
`get_node_from_key` and `get_redis_connection`). A token that comes in is handed to the
worker's loop through its self-pipe (the file descriptor its `select` already watches for
signals and children), so the loop sleeps in one place and handles everything itself.

A thread waits only while the loop asks it to (`arm`): once it has a token it waits again
only when asked again, like one BLPOP sent per idle turn. A token that arrives when the
worker has no room after all is pushed back for another worker (`pass_on`).

The threads never touch the worker's own client, so a child forked by the worker (which uses
that client) never inherits a lock a waiting thread holds. (On a cluster a thread does read the
worker's client's map of slots to find the node of its key; after a failover, a MOVED reply
to its BLPOP names the new owner, which the thread then uses without asking that map again.)
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import deque
from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import MovedError, RedisClusterException

from ..store.connection import Client

log = logging.getLogger("pyscheduler.worker")

# How long one BLPOP blocks before the thread sends the next (the worker's own timer handles
# anything due sooner); the socket's read timeout is longer, so a server that vanished is
# noticed rather than waited on forever.
BLOCK_SECONDS = 5.0
_SOCKET_MARGIN_SECONDS = 5.0
# After an error (Redis down, a slot moved), the thread waits this long before it tries again.
_RETRY_SECONDS = 0.5


def client_for_key(
    connection: Client, key: str, moved_to: tuple[str, int] | None = None
) -> redis.Redis:
    """A new client of its own (one connection) to the server that owns `key`: for a
    `redis.Redis`, its server; for a `redis.cluster.RedisCluster`, the primary owning the
    key's slot, or `moved_to` (host, port) when a MOVED reply named it. Its reads may block
    for a whole BLPOP, which is why it is a one-server `redis.Redis` even on a cluster: a BLPOP
    through the cluster client would hold one of its pooled connections meanwhile."""
    if isinstance(connection, RedisCluster):  # one client (and pool) per node
        node: ClusterNode = connection.get_node_from_key(key)  # type: ignore[no-untyped-call]
        node_client = connection.get_redis_connection(node)
    else:
        node_client = connection
    pool = node_client.connection_pool
    kwargs = dict(pool.connection_kwargs)
    kwargs["socket_timeout"] = BLOCK_SECONDS + _SOCKET_MARGIN_SECONDS
    if moved_to is not None:
        kwargs["host"], kwargs["port"] = moved_to
    return redis.Redis(
        connection_pool=redis.ConnectionPool(
            connection_class=pool.connection_class, max_connections=1, **kwargs
        )
    )


class _Waiter:
    """The thread that waits on one wake key, until stopped."""

    def __init__(self, waiting: WorkWaiting, key: str) -> None:
        self.waiting = waiting
        self.key = key
        self.armed = threading.Event()
        self.stopping = threading.Event()
        self.client: redis.Redis | None = None
        self.moved_to: tuple[str, int] | None = None  # the node a MOVED reply named
        self.thread = threading.Thread(
            target=self._run, name=f"pyscheduler-wait {key}", daemon=True
        )
        self.thread.start()

    def _run(self) -> None:
        while True:
            self.armed.wait()
            if self.stopping.is_set():
                break
            try:
                if self.client is None:
                    self.client = client_for_key(self.waiting.connection, self.key, self.moved_to)
                reply = self.client.blpop([self.key], timeout=BLOCK_SECONDS)
            except (redis.RedisError, RedisClusterException) as exc:
                # After a failover the worker's map of slots may still name the old primary
                # (it learns at its own next call): go where the MOVED reply says.
                self.moved_to = (exc.host, exc.port) if isinstance(exc, MovedError) else None
                if self.stopping.is_set():
                    break
                log.debug("waiting for work on %s: %r; trying again", self.key, exc)
                self._drop_client()
                self.stopping.wait(_RETRY_SECONDS)
                continue
            if reply is not None:
                self.armed.clear()  # until the loop asks again: it has a wake-up to act on
                self.waiting.deliver(self.key, reply[1])
        self._drop_client()

    def _drop_client(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                client.connection_pool.disconnect()

    def stop(self) -> None:
        self.stopping.set()
        self.armed.set()
        client = self.client
        if client is not None:
            # Shuts the socket down: a BLPOP blocked on it returns (with an error) at once.
            with contextlib.suppress(redis.RedisError, OSError):
                client.connection_pool.disconnect()


class WorkWaiting:
    """The blocking waits of a worker on its queues' wake keys (see the module docstring).

    `wake_fd` is the write end of the worker loop's self-pipe (non-blocking). The threads start
    at the first `arm`; `stop_threads` ends them (before the worker forks a child: a process
    that forks while it has threads risks a child stuck on a lock one of them held, and Python
    3.12+ warns), and the next `arm` starts new ones."""

    def __init__(self, connection: Client, wake_keys: list[str], wake_fd: int) -> None:
        self.connection = connection
        self.wake_keys = wake_keys
        self.wake_fd = wake_fd
        self.closed = False
        # Guards `closed` against the self-pipe's write: once `close` returns, no thread
        # writes to `wake_fd` (the worker closes it, and its number may be reused).
        self._lock = threading.Lock()
        self._tokens: deque[tuple[str, Any]] = deque()
        self._waiters: list[_Waiter] = []

    def arm(self) -> None:
        """Wait on every queue (again), if not waiting already."""
        if self.closed:
            return
        if not self._waiters:
            self._waiters = [_Waiter(self, key) for key in self.wake_keys]
        for waiter in self._waiters:
            waiter.armed.set()

    def deliver(self, key: str, token: Any) -> None:
        """Called by a waiting thread: a token came in; wake the loop up."""
        with self._lock:
            if self.closed:
                return
            self._tokens.append((key, token))
            with contextlib.suppress(BlockingIOError, OSError):  # full: a wake-up is pending
                os.write(self.wake_fd, b"w")

    def take(self) -> list[tuple[str, Any]]:
        """The tokens that came in since the last call: (wake key, token)."""
        taken: list[tuple[str, Any]] = []
        while self._tokens:
            taken.append(self._tokens.popleft())
        return taken

    def stop_threads(self, join_seconds: float = 0.5) -> None:
        """End the waiting threads (their blocked BLPOPs are cut short)."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.stop()
        for waiter in waiters:
            waiter.thread.join(join_seconds)

    def close(self) -> None:
        """Stop waiting for good; no thread writes to `wake_fd` after this returns."""
        with self._lock:
            self.closed = True
        self.stop_threads()
