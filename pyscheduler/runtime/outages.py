"""Riding out outages: Redis out of reach, the library gone, an unexpected error.

A worker started while Redis is down waits for it, as a running one rides out an outage:
with back-off, a line when it starts and when it ends, and sleeps a signal cuts short.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis

from ..exceptions import LibraryError
from ..store.library import auto_load_requested, ensure_loaded, load
from .signals import Backoff

log = logging.getLogger("pyscheduler.worker")

# A worker waiting for Redis at start says so again this often.
WAITING_REMINDER_SECONDS = 60.0


class Outages:
    """Back-off and log lines for a worker's outages; `aborting` says when to stop waiting."""

    def __init__(
        self,
        connection: redis.Redis,
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
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if self.disconnected_since is None:
                    self.disconnected_since = since
                now = time.monotonic()
                if now >= next_reminder:  # once, then now and then (a TLS set-up never heals)
                    next_reminder = now + WAITING_REMINDER_SECONDS
                    log.warning(
                        "cannot reach Redis (%s): waiting for it (%.0f s so far), with backoff",
                        exc,
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
            log.warning("lost the connection to Redis (%s): retrying with backoff", exc)
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
            except redis.RedisError as failed:
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
        now come back through their leases if their bookkeeping was cut short)."""
        log.error("unexpected error in the worker loop (going on): %r", exc, exc_info=exc)
        if not self.aborting():
            self.errors.sleep()
        else:
            self.errors.attempts += 1
