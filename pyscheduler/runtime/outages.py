"""Riding out outages: Redis out of reach, the library gone, an unexpected error.

A worker started while Redis is down waits for it, as a running one rides out an outage:
with back-off, a line when it starts and when it ends, and sleeps a signal cuts short.

On a Redis Cluster, redis-py's client follows MOVED and ASK itself and retries a few times
through a failover; what still reaches the worker (CLUSTERDOWN while a primary's replica is
being promoted, TRYAGAIN during a resharding, a slot no node serves yet, a write that reached
a demoted primary, redirections that ran out) is an outage like a lost connection: the
cluster heals by itself. A MOVED reply to a one-server client is not: the URL names a cluster
node without saying so (`redis+cluster://`), which no waiting fixes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis
from redis.exceptions import (
    ClusterDownError,
    ClusterError,
    ReadOnlyError,
    RedisClusterException,
    TryAgainError,
)

from ..exceptions import InvalidURL, LibraryError
from ..store.connection import Client, cluster_redirection, error_text, is_cluster_client
from ..store.library import auto_load_requested, ensure_loaded, load
from .signals import Backoff

log = logging.getLogger("pyscheduler.worker")

# A worker waiting for Redis at start says so again this often.
WAITING_REMINDER_SECONDS = 60.0

#: Errors a worker rides out with back-off: Redis (or a shard of a cluster) out of reach, or a
#: cluster moving slots or promoting a replica. `RedisClusterException` (e.g. "slot not
#: covered", no node reachable while the client rebuilds its slot map) is no `RedisError`.
OUTAGE_ERRORS: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    ClusterDownError,
    ClusterError,
    TryAgainError,
    ReadOnlyError,
    RedisClusterException,
)


def wrong_url_kind(connection: Client, exc: Exception) -> InvalidURL | None:
    """The error to stop with when a one-server client got a cluster redirection (None for
    anything else)."""
    redirection = cluster_redirection(exc)
    if redirection is None or is_cluster_client(connection):
        return None
    return InvalidURL(f"the worker's Redis URL names no cluster, but {redirection}")


class Outages:
    """Back-off and log lines for a worker's outages; `aborting` says when to stop waiting."""

    def __init__(
        self,
        connection: Client,
        auto_load: bool | None,
        sleep: Callable[[float], None],
        aborting: Callable[[], bool],
    ) -> None:
        self.connection = connection
        self.auto_load = auto_load
        self.aborting = aborting
        self.backoff = Backoff(sleep)
        self.errors = Backoff(sleep)  # unexpected errors in a row
        self.disconnected_since: float | None = None
        self.library_missing_since: float | None = None

    def wait_for_redis(self, stopping: Callable[[], bool]) -> bool:
        """Wait, with backoff, until Redis answers and has the library; False when the worker
        was stopped meanwhile. A library that is missing or outdated (and not auto-loaded)
        raises LibraryError: that is a deployment to do, not an outage to ride out."""
        since = time.monotonic()
        next_reminder = 0.0
        while True:
            try:
                ensure_loaded(self.connection, self.auto_load)
            except redis.AuthenticationError:
                raise  # waiting would not help
            except OUTAGE_ERRORS as exc:
                if self.disconnected_since is None:
                    self.disconnected_since = since
                now = time.monotonic()
                if now >= next_reminder:  # once, then now and then (a TLS set-up never heals)
                    next_reminder = now + WAITING_REMINDER_SECONDS
                    log.warning(
                        "cannot reach Redis (%s): waiting for it (%.0f s so far), with backoff",
                        error_text(exc),
                        now - since,
                    )
                if not stopping():
                    self._back_off()
                if stopping():
                    log.info("stopped while waiting for Redis")
                    return False
                continue
            self._connection_back()
            return True

    def _back_off(self) -> None:
        if not self.aborting():
            self.backoff.sleep()

    def connection_lost(self, exc: Exception) -> None:
        if self.disconnected_since is None:
            self.disconnected_since = time.monotonic()
            log.warning("lost the connection to Redis (%s): retrying with backoff", error_text(exc))
        self._back_off()

    def library_missing(self, exc: LibraryError) -> None:
        """The library vanished from Redis: load it when allowed, else wait for a deployment."""
        self._connection_back()  # Redis answered
        if auto_load_requested(self.auto_load):
            log.warning(
                "the pyscheduler Lua library is not loaded in Redis: loading it (auto-load)"
            )
            try:
                load(self.connection)
            except (redis.RedisError, RedisClusterException) as failed:
                log.warning("could not load the library (%s): retrying with backoff", failed)
                self._back_off()
            return
        if self.library_missing_since is None:
            self.library_missing_since = time.monotonic()
            log.warning("%s; retrying with backoff", exc)
        self._back_off()

    def turn_went_well(self) -> None:
        self._connection_back()
        self.errors.reset()
        if self.library_missing_since is not None:
            log.warning(
                "the pyscheduler library is back after %.1f s",
                time.monotonic() - self.library_missing_since,
            )
            self.library_missing_since = None
            self.backoff.reset()

    def _connection_back(self) -> None:
        if self.disconnected_since is not None:
            log.warning(
                "connection to Redis is back after %.1f s",
                time.monotonic() - self.disconnected_since,
            )
            self.disconnected_since = None
            self.backoff.reset()

    def unexpected(self, exc: Exception) -> None:
        """Something no job should be able to cause went wrong: log it, pause, go on (jobs held
        now come back through their leases if their bookkeeping was cut short). A cluster
        redirection to a one-server client raises `InvalidURL`: the worker stops."""
        wrong = wrong_url_kind(self.connection, exc)
        if wrong is not None:
            raise wrong from exc
        log.error("unexpected error in the worker loop (going on): %r", exc, exc_info=exc)
        if not self.aborting():
            self.errors.sleep()
        else:
            self.errors.attempts += 1
