"""How commands reach Redis: a worker waits for a cluster that is not up yet, an admin command
gives up after `CONNECT_TIMEOUT_S` and remembers its URL for the error messages."""

from __future__ import annotations

import logging
import time
from typing import Any

import click
import redis
from redis.exceptions import RedisClusterException

from ...client.queue import Queue
from ...runtime.outages import WAITING_REMINDER_SECONDS
from ...store.connection import Client, error_text, redacted, resolve_url
from ...store.connection import connect as connect_any
from ...store.protocol import LIST_PAGE_MAX
from .errors import URL_META

BATCH = LIST_PAGE_MAX  # jobs per listing call when a command works through many
CONNECT_TIMEOUT_S = 10.0

# How often `worker` tries again to reach a cluster it could not reach at start.
CLUSTER_RETRY_S = 1.0


def connect(url: str | None) -> Client:
    """A client for `url` (None: $REDIS_URL, else the default; a `redis+cluster://` URL gives a
    cluster client); InvalidURL for a bad one."""
    return connect_any(url)


def worker_connection(url: str | None) -> Client:
    """`connect(url)`, waiting for a cluster that cannot be reached yet: a cluster client reads
    the map of slots when it is made, so without this a worker started before its cluster
    would exit where one started before its one server waits (a running worker rides outages
    out itself, see runtime/outages.py)."""
    since = time.monotonic()
    next_line = since
    while True:
        try:
            return connect(url)
        except (RedisClusterException, redis.ConnectionError) as exc:
            now = time.monotonic()
            if now >= next_line:
                next_line = now + WAITING_REMINDER_SECONDS
                logging.getLogger("pyscheduler.worker").warning(
                    "cannot reach the Redis Cluster at %s (%s): waiting for it (%.0f s so far)",
                    redacted(resolve_url(url)),
                    error_text(exc),
                    now - since,
                )
            time.sleep(CLUSTER_RETRY_S)


def admin_connection(url: str | None) -> Client:
    """A client for a command; remembers the URL for error messages."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.meta[URL_META] = url
    return connect_any(url, socket_connect_timeout=CONNECT_TIMEOUT_S)


def server_ms(conn: Client) -> int:
    reply: Any = conn.time()  # typed as maybe-awaitable by some redis-py versions
    seconds, micros = reply
    return int(seconds) * 1000 + int(micros) // 1000


def queue_of(conn: Client, name: str) -> Queue:
    return Queue(name, connection=conn)
