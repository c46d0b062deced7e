"""Live workers: each worker's heartbeat in the queues it takes, and the list of those alive.

A worker sends `psq_heartbeat` once per queue it takes (one pipeline per beat), so every call
keeps to one queue's keys: on a Redis Cluster each queue's workers live in that queue's slot.
Each entry expires after two heartbeat intervals and a little more, unless the next beat
renews it, so a worker that is killed disappears by itself; one that stops cleanly leaves at
once (`Heartbeat.leave`). `list_workers` reads them back, one queue at a time, and keeps one
entry per worker.

The worker constructs one `Heartbeat` and calls `beat` on every turn of its loop: it sends
when a beat is due and is a cheap no-op otherwise. Heartbeats are best effort: a failed one
is logged and tried again at the next interval, never raised into the worker's loop.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import RedisClusterException

from ..exceptions import InvalidOption, PySchedulerError
from ..store.calls import raise_mapped
from ..store.connection import Client, error_text, pipeline
from ..store.keys import QUEUES_KEY, QueueKeys
from ..store.operations import keys_for
from ..store.protocol import (
    DELAY_MS_MAX,
    WORKER_CONCURRENCY_MAX,
    WORKER_HOST_MAX_BYTES,
    WORKER_JOBS_MAX,
    WORKER_NAME_MAX_BYTES,
    WORKER_QUEUES_MAX,
    WORKER_TTL_MS_MAX,
    WORKERS_PAGE_MAX,
)

log = logging.getLogger("pyscheduler.live_workers")

DEFAULT_HEARTBEAT_SECONDS = 5.0
# The library's bounds of a process id and of the counters (exact integers in a double).
PID_MAX = 2**32 - 1
COUNT_MAX = 2**53 - 1

# A job a worker holds: its id, its queue's name, and when its run started (seconds of
# time.monotonic(), the clock of `Heartbeat.beat`'s `now`), None while it waits to start
# (prefetched): such a job is not listed.
RunningJob = tuple[str, str, float | None]


def heartbeat_ttl(interval: float) -> float:
    """How long one heartbeat keeps a worker listed (seconds): two intervals, so one late beat
    does not hide a live worker, plus a little for a slow turn of the loop."""
    return 2 * interval + min(interval / 2, 1.0)


@dataclass(frozen=True, slots=True)
class CurrentJob:
    """A job a live worker runs: `started_ms` on the Redis server's clock."""

    id: str
    queue: str
    started_ms: int


@dataclass(frozen=True, slots=True)
class LiveWorker:
    """A worker as its last heartbeat described it (times in ms on the Redis server's clock).

    `processed` counts the jobs it finished (completed or failed), `failed` the runs of those
    that failed; `jobs` are the jobs it runs now.
    """

    name: str
    host: str
    pid: int
    queues: tuple[str, ...]
    concurrency: int
    started_ms: int
    jobs: tuple[CurrentJob, ...]
    processed: int
    failed: int
    last_beat_ms: int
    expires_ms: int


def _is_label(value: object, limit: int) -> bool:
    """1..limit bytes of UTF-8 with no control character (the library's rule for names)."""
    if not isinstance(value, str):
        return False
    try:
        size = len(value.encode())
    except UnicodeEncodeError:  # a lone surrogate is not text
        return False
    return 1 <= size <= limit and not any(ord(c) < 32 or ord(c) == 127 for c in value)


def _default_host() -> str:
    host = "".join(c for c in socket.gethostname() if ord(c) >= 32 and ord(c) != 127)
    return host.encode()[:WORKER_HOST_MAX_BYTES].decode(errors="ignore") or "unknown"


class Heartbeat:
    """The heartbeat of one worker in every queue it takes.

    `queues` are the worker's queues in its order; `interval` is the time between beats
    (seconds). Constructing it does no I/O and checks every setting (InvalidOption).
    """

    def __init__(
        self,
        connection: Client,
        queues: Sequence[QueueKeys],
        name: str,
        concurrency: int,
        interval: float = DEFAULT_HEARTBEAT_SECONDS,
        *,
        host: str | None = None,
        pid: int | None = None,
        started: float | None = None,
    ) -> None:
        names = [keys.queue for keys in queues]
        if not 1 <= len(names) <= WORKER_QUEUES_MAX or len(set(names)) != len(names):
            raise InvalidOption(f"a heartbeat takes 1..{WORKER_QUEUES_MAX} distinct queues")
        if not _is_label(name, WORKER_NAME_MAX_BYTES):
            raise InvalidOption(
                f"invalid worker name {name!r}: use 1..{WORKER_NAME_MAX_BYTES} bytes"
                " without control characters"
            )
        if (
            isinstance(concurrency, bool)
            or not isinstance(concurrency, int)
            or not 1 <= concurrency <= WORKER_CONCURRENCY_MAX
        ):
            raise InvalidOption(f"concurrency must be an integer in 1..{WORKER_CONCURRENCY_MAX}")
        ttl_ms = math.ceil(heartbeat_ttl(interval) * 1000) if math.isfinite(interval) else 0
        if not interval > 0 or not 1 <= ttl_ms <= WORKER_TTL_MS_MAX:
            raise InvalidOption(
                f"the heartbeat interval must be a positive number of seconds, at most"
                f" {(WORKER_TTL_MS_MAX / 1000 - 1) / 2:g}: {interval!r}"
            )
        host = _default_host() if host is None else host
        if not _is_label(host, WORKER_HOST_MAX_BYTES):
            raise InvalidOption(f"invalid host name {host!r}")
        pid = os.getpid() if pid is None else pid
        if isinstance(pid, bool) or not isinstance(pid, int) or not 1 <= pid <= PID_MAX:
            raise InvalidOption(f"pid must be an integer in 1..{PID_MAX}: {pid!r}")
        self.connection = connection
        self.queues = list(queues)
        self.name = name
        self.concurrency = concurrency
        self.interval = float(interval)
        self.ttl_ms = ttl_ms
        self.host = host
        self.pid = pid
        self._started = time.monotonic() if started is None else started
        self._next = -math.inf  # the first beat is due at once
        self._known = False  # the queues were added to the known queues (QUEUES_KEY)
        self._failing = False

    def due_in(self, now: float) -> float:
        """Seconds from `now` (time.monotonic()) until the next beat is due; 0 when it is due.
        A worker waiting for work wakes up by then."""
        return max(0.0, self._next - now)

    def beat(
        self,
        now: float,
        current_jobs: Iterable[RunningJob] = (),
        processed: int = 0,
        failed: int = 0,
    ) -> bool:
        """Send a heartbeat if one is due at `now` (time.monotonic()); True when one was sent
        and stored. `current_jobs`: the jobs the worker runs now."""
        if now < self._next:
            return False
        self._next = now + self.interval
        head = self._head(now, processed, failed)
        jobs = self._job_args(now, current_jobs)
        pipe = pipeline(self.connection)
        for keys in self.queues:
            call = keys_for("psq_heartbeat", keys)
            pipe.fcall("psq_heartbeat", len(call), *call, *head, *jobs)
        if not self._known:
            # A queue is known once a job was enqueued on it, or a worker takes it.
            pipe.sadd(QUEUES_KEY, *(keys.queue for keys in self.queues))
        return self._send(pipe, "heartbeat")

    def leave(self) -> None:
        """Remove the worker from every queue's list now (when it stops cleanly)."""
        pipe = pipeline(self.connection)
        for keys in self.queues:
            call = keys_for("psq_heartbeat", keys)
            pipe.fcall("psq_heartbeat", len(call), *call, self.name, 0)
        self._send(pipe, "leaving")

    def _head(self, now: float, processed: int, failed: int) -> list[Any]:
        uptime_ms = min(DELAY_MS_MAX, max(0, int((now - self._started) * 1000)))
        return [
            self.name,
            self.ttl_ms,
            self.host,
            self.pid,
            self.concurrency,
            uptime_ms,
            min(COUNT_MAX, max(0, int(processed))),
            min(COUNT_MAX, max(0, int(failed))),
            len(self.queues),
            *(keys.queue for keys in self.queues),
        ]

    def _job_args(self, now: float, current_jobs: Iterable[RunningJob]) -> list[Any]:
        """Triples of job id, queue and run time (ms), longest running first, as many as one
        heartbeat lists."""
        names = {keys.queue for keys in self.queues}
        running = sorted(
            (min(DELAY_MS_MAX, max(0, int((now - started) * 1000))), job_id, queue)
            for job_id, queue, started in current_jobs
            if started is not None and queue in names
        )
        out: list[Any] = []
        for ran_ms, job_id, queue in reversed(running[-WORKER_JOBS_MAX:]):
            out += (job_id, queue, ran_ms)
        return out

    def _send(self, pipe: Any, what: str) -> bool:
        try:
            replies = pipe.execute(raise_on_error=False)
            for reply in replies:
                if isinstance(reply, redis.ResponseError):
                    raise_mapped(reply)
        except (redis.RedisError, RedisClusterException, PySchedulerError) as exc:
            if not self._failing:
                log.warning(
                    "worker %s: %s not sent (%s): trying again later",
                    self.name,
                    what,
                    error_text(exc),
                )
            self._failing = True
            return False
        if self._failing:
            log.info("worker %s: %s sent again", self.name, what)
        self._failing = False
        self._known = True
        return True


# -- reading the list --------------------------------------------------------------------------


def _int(value: Any) -> int | None:
    """An integer of a record (cjson writes large ones in exponent form), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return int(value) if value == int(value) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _current_jobs(value: Any) -> tuple[CurrentJob, ...] | None:
    if value == {}:  # cjson writes an empty list as {}
        return ()
    if not isinstance(value, list):
        return None
    jobs = []
    for item in value:
        if not isinstance(item, dict):
            return None
        job_id, queue = _text(item.get("id")), _text(item.get("queue"))
        started = _int(item.get("started_ms"))
        if job_id is None or queue is None or started is None:
            return None
        jobs.append(CurrentJob(job_id, queue, started))
    return tuple(jobs)


def parse_record(name: str, expires_ms: int, raw: bytes | str) -> LiveWorker | None:
    """A worker record as psq_heartbeat stores it; None when it is not one (the hash is
    writable by anyone with access to Redis: nothing in it is trusted)."""
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    queues = record.get("queues")
    jobs = _current_jobs(record.get("jobs"))
    numbers = [
        _int(record.get(field))
        for field in ("pid", "concurrency", "started_ms", "processed", "failed", "last_beat_ms")
    ]
    host = _text(record.get("host"))
    if (
        host is None
        or jobs is None
        or not isinstance(queues, list)
        or not all(isinstance(q, str) for q in queues)
        or any(n is None for n in numbers)
    ):
        return None
    pid, concurrency, started_ms, processed, failed, last_beat_ms = (int(n or 0) for n in numbers)
    return LiveWorker(
        name=name,
        host=host,
        pid=pid,
        queues=tuple(queues),
        concurrency=concurrency,
        started_ms=started_ms,
        jobs=jobs,
        processed=processed,
        failed=failed,
        last_beat_ms=last_beat_ms,
        expires_ms=expires_ms,
    )


def _decoded(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def list_page(
    connection: Client, keys: QueueKeys, cursor: str = "0", count: int = WORKERS_PAGE_MAX
) -> tuple[str, int, list[LiveWorker]]:
    """One page of a queue's live workers: (next cursor, "0" after the last page; the server's
    clock in ms; the workers of the page whose records are well formed)."""
    call = keys_for("psq_list_workers", keys)
    try:
        reply = connection.fcall_ro("psq_list_workers", len(call), *call, cursor, count)
    except redis.ResponseError as exc:
        raise_mapped(exc)
    return _parsed_page(keys, reply)


def _parsed_page(keys: QueueKeys, reply: Any) -> tuple[str, int, list[LiveWorker]]:
    workers = []
    for i in range(2, len(reply) - 2, 3):
        name = _decoded(reply[i])
        worker = parse_record(name, int(reply[i + 1]), reply[i + 2])
        if worker is None:
            log.debug("queue %s: the record of worker %r is not well formed", keys.queue, name)
        else:
            workers.append(worker)
    return _decoded(reply[0]), int(reply[1]), workers


def queue_workers(connection: Client, keys: QueueKeys) -> list[LiveWorker]:
    """Every live worker registered in one queue."""
    found: list[LiveWorker] = []
    cursor = "0"
    while True:
        cursor, _, page = list_page(connection, keys, cursor)
        found += page
        if cursor == "0":
            return found


def list_workers(connection: Client, queue_names: Sequence[str] | None = None) -> list[LiveWorker]:
    """The live workers of `queue_names` (default: every known queue), one entry per worker
    (its newest heartbeat), sorted by name."""
    if queue_names is None:
        members: Any = connection.smembers(QUEUES_KEY)  # maybe-awaitable in some stubs
        queue_names = sorted(_decoded(m) for m in members)
    all_keys = [QueueKeys(name) for name in queue_names]  # checks every name first
    newest: dict[str, LiveWorker] = {}
    for keys, (cursor, _, page) in zip(all_keys, _first_pages(connection, all_keys), strict=True):
        while True:
            for worker in page:
                seen = newest.get(worker.name)
                if seen is None or worker.last_beat_ms > seen.last_beat_ms:
                    newest[worker.name] = worker
            if cursor == "0":
                break
            cursor, _, page = list_page(connection, keys, cursor)
    return [newest[name] for name in sorted(newest)]


def _first_pages(
    connection: Client, all_keys: Sequence[QueueKeys]
) -> list[tuple[str, int, list[LiveWorker]]]:
    """The first page of each queue's workers in one round trip (one pipeline; on a cluster,
    one per shard); a queue with more workers than a page pages on by itself."""
    if not all_keys:
        return []
    pipe = pipeline(connection)
    for keys in all_keys:
        call = keys_for("psq_list_workers", keys)
        pipe.fcall_ro("psq_list_workers", len(call), *call, "0", WORKERS_PAGE_MAX)
    pages = []
    for keys, reply in zip(all_keys, pipe.execute(raise_on_error=False), strict=True):
        if isinstance(reply, redis.ResponseError):
            raise_mapped(reply)
        pages.append(_parsed_page(keys, reply))
    return pages
