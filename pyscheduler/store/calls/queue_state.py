"""Wrappers that read or change a queue: cancel, fetch, counts, metrics, settings, purge."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from ..connection import Client
from ..keys import QueueKeys
from ..operations import keys_for
from ..protocol import (
    CANCEL_BATCH_MAX,
    HISTOGRAM_BOUNDS_MS,
    SIZE_LIMIT_DEFAULTS,
    SIZE_LIMIT_MAX,
)
from .fcall import fcall, fcall_ro, text_of


@dataclass(frozen=True, slots=True)
class Cancelled:
    """What `psq_cancel` did to one job."""

    was: str  # the status it had, 'missing', or 'ended:<status>' (then nothing changed)
    record: str | None


def cancel(
    conn: Client, keys: QueueKeys, job_ids: Sequence[str], cascade: bool = False
) -> list[Cancelled]:
    """Cancel jobs; with `cascade`, their parent is being cancelled and is not told. Each
    library call takes at most `CANCEL_BATCH_MAX` ids (each such batch is atomic)."""
    done: list[Cancelled] = []
    for start in range(0, len(job_ids), CANCEL_BATCH_MAX):
        batch = job_ids[start : start + CANCEL_BATCH_MAX]
        reply = fcall(
            conn,
            "psq_cancel",
            keys_for("psq_cancel", keys, batch),
            ["1" if cascade else "0", *batch],
        )
        done += (
            Cancelled(text_of(reply[i]), None if reply[i + 1] is None else text_of(reply[i + 1]))
            for i in range(0, len(reply), 2)
        )
    return done


@dataclass(frozen=True, slots=True)
class FetchedJob:
    record: str
    payload: str | None
    result: str | None
    error: str | None
    checkpoint: str | None
    subtasks_done: int | None


def fetch(conn: Client, keys: QueueKeys, job_id: str) -> FetchedJob:
    """Read one job in full. Raises JobNotFound."""
    return parse_fetch_reply(
        fcall_ro(conn, "psq_fetch", keys_for("psq_fetch", keys, [job_id]), [job_id])
    )


def parse_fetch_reply(reply: Any) -> FetchedJob:
    """The job read by a `psq_fetch` call (of either client)."""
    record, payload, result, error, checkpoint, done = (
        None if x is None else text_of(x) for x in reply
    )
    assert record is not None  # the library raises NOT_FOUND instead
    return FetchedJob(
        record, payload, result, error, checkpoint, None if done is None else int(done)
    )


@dataclass(frozen=True, slots=True)
class Counts:
    queued: int
    delayed: int
    active: int
    failed: int
    finished: int
    stats: dict[str, int]
    waiting: int = 0
    oldest_ready_age_ms: int | None = None
    settings: dict[str, str] | None = None


def counts(conn: Client, keys: QueueKeys) -> Counts:
    return parse_counts(fcall_ro(conn, "psq_counts", keys_for("psq_counts", keys), []))


def pipe_counts(pipe: redis.client.Pipeline, keys: QueueKeys) -> None:
    """Queue one `psq_counts` call on a pipeline; `parse_counts` reads its reply."""
    names = keys_for("psq_counts", keys)
    pipe.fcall_ro("psq_counts", len(names), *names)


def parse_counts(reply: Any) -> Counts:
    queued, delayed, active, failed, finished, waiting, age = (int(x) for x in reply[:7])
    n_settings = int(reply[7])
    at = 8 + 2 * n_settings
    settings = {text_of(reply[i]): text_of(reply[i + 1]) for i in range(8, at, 2)}
    stats = {text_of(reply[i]): int(reply[i + 1]) for i in range(at, len(reply), 2)}
    return Counts(
        queued,
        delayed,
        active,
        failed,
        finished,
        stats,
        waiting,
        None if age < 0 else age,
        settings,
    )


@dataclass(frozen=True, slots=True)
class MetricsReply:
    """What `psq_metrics` read: bucket counts (not cumulative, +Inf last) in the order of
    `protocol.HISTOGRAM_BOUNDS_MS`; throughput as (minute start ms, completed, failed), oldest
    first; the live workers of the queue (heartbeat not expired)."""

    server_ms: int
    live_workers: int
    wait_buckets: tuple[int, ...]
    wait_sum_ms: int
    wait_count: int
    run_buckets: tuple[int, ...]
    run_sum_ms: int
    run_count: int
    throughput: tuple[tuple[int, int, int], ...]
    stats: dict[str, int]


def pipe_metrics(pipe: redis.client.Pipeline, keys: QueueKeys, minutes: int) -> None:
    """Queue one `psq_metrics` call on a pipeline; `parse_metrics` reads its reply."""
    names = keys_for("psq_metrics", keys)
    pipe.fcall_ro("psq_metrics", len(names), *names, minutes)


def parse_metrics(reply: Any) -> MetricsReply:
    n = len(HISTOGRAM_BOUNDS_MS) + 1
    values = [int(x) for x in reply[: 2 + 2 * (n + 2) + 1]]
    wait, run = values[2 : 2 + n + 2], values[2 + n + 2 : 2 + 2 * (n + 2)]
    points = values[-1]
    at = len(values)
    throughput = tuple(
        (int(reply[i]), int(reply[i + 1]), int(reply[i + 2])) for i in range(at, at + 3 * points, 3)
    )
    at += 3 * points
    stats = {text_of(reply[i]): int(reply[i + 1]) for i in range(at, len(reply), 2)}
    return MetricsReply(
        values[0],
        values[1],
        tuple(wait[:n]),
        wait[n],
        wait[n + 1],
        tuple(run[:n]),
        run[n],
        run[n + 1],
        throughput,
        stats,
    )


def metrics(conn: Client, keys: QueueKeys, minutes: int = 60) -> MetricsReply:
    """The queue's counters, wait and run time histograms, and the last `minutes` (1..
    THROUGHPUT_MINUTES) minutes of throughput, in one read-only call."""
    names = keys_for("psq_metrics", keys)
    return parse_metrics(fcall_ro(conn, "psq_metrics", names, [minutes]))


# The queue's config fields `size_limits` reads, in the order `parse_size_limits` takes them.
SIZE_LIMIT_FIELDS = list(SIZE_LIMIT_DEFAULTS)


def size_limits(conn: Client, keys: QueueKeys) -> dict[str, int]:
    """The size limits the library enforces on this queue, in bytes: max_payload_bytes,
    max_result_bytes, max_checkpoint_bytes and max_error_bytes, each the queue's setting
    (`configure`) or else the library's default (`protocol.SIZE_LIMIT_DEFAULTS`)."""
    return parse_size_limits(conn.hmget(keys.config, SIZE_LIMIT_FIELDS))


def parse_size_limits(values: Sequence[Any]) -> dict[str, int]:
    """The size limits from the queue's config values of SIZE_LIMIT_FIELDS (HMGET's reply,
    None where a field is not set)."""
    limits: dict[str, int] = {}
    for field, value in zip(SIZE_LIMIT_FIELDS, values, strict=True):
        # The library ignores a value it would not have stored; so does this.
        text = text_of(value) if value is not None else ""
        number = int(text) if text.isdigit() else 0
        limits[field] = number if 1 <= number <= SIZE_LIMIT_MAX else SIZE_LIMIT_DEFAULTS[field]
    return limits


def configure(conn: Client, keys: QueueKeys, changes: dict[str, str]) -> dict[str, str]:
    """Change queue settings ('' removes one); returns the settings after the change."""
    args: list[Any] = []
    for field, value in changes.items():
        args += (field, value)
    reply = fcall(conn, "psq_configure", keys_for("psq_configure", keys), args)
    return {text_of(reply[i]): text_of(reply[i + 1]) for i in range(0, len(reply), 2)}


def retry(
    conn: Client, keys: QueueKeys, job_ids: Sequence[str] = (), count: int = 1000
) -> list[str]:
    """Failed jobs back to the queue: the ids given, else the oldest `count`; returns moved ids."""
    reply = fcall(
        conn,
        "psq_retry",
        keys_for("psq_retry", keys),
        [count, *job_ids],
    )
    return [text_of(x) for x in reply]


def purge(
    conn: Client,
    keys: QueueKeys,
    status: str,
    job_ids: Sequence[str] = (),
    count: int = 1000,
    offset: int = 0,
) -> tuple[int, int]:
    """Delete ended jobs with `status`: the ids given, else a page of the state set from
    `offset`; returns (deleted, looked at)."""
    state = "failed" if status == "failed" else "finished"
    reply = fcall(
        conn,
        "psq_purge",
        keys_for("psq_purge", keys, state=state),
        [status, count, offset, *job_ids],
    )
    return int(reply[0]), int(reply[1])


def list_jobs(
    conn: Client, keys: QueueKeys, state_set: str, offset: int, count: int
) -> list[tuple[str, str | None]]:
    """A page of a state set: `state_set` is that set's key (`keys.state_set(status)`)."""
    state = state_set.removeprefix(keys.prefix)
    reply = fcall_ro(
        conn, "psq_list_jobs", keys_for("psq_list_jobs", keys, state=state), [offset, count]
    )
    return [
        (text_of(reply[i]), None if reply[i + 1] is None else text_of(reply[i + 1]))
        for i in range(0, len(reply), 2)
    ]
