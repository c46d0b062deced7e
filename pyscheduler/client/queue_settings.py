"""A queue's settings, stored in Redis and enforced by the library: size limits (and the
client's cache of them), pause, concurrency and rate limits, aging, lost leases, preemption;
and the two calls that act on ended jobs, `retry` and `purge`.

`Queue`'s methods of the same names delegate here (client/queue.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..exceptions import InvalidOption
from ..store import calls
from ..store.library import ensure_loaded
from ..store.protocol import ENDED_STATES, ENQUEUE_BATCH_MAX, PURGE_BATCH_MAX
from .preparing import seconds_of

if TYPE_CHECKING:
    from .queue import Queue

# How long a client trusts the size limits it read from Redis before it reads them again.
LIMITS_CACHE_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class QueueLimits:
    """Limits enforced by the library across all workers (None: no limit)."""

    concurrency: int | None = None  # at most this many active jobs at once
    rate: int | None = None  # at most `rate` job starts ...
    period: float | None = None  # ... per this many seconds


def limits_of(settings: Mapping[str, str]) -> QueueLimits:
    """The limits in a queue's `config` hash (as `psq_configure` and `psq_counts` return it)."""
    concurrency, rate, period_ms = (settings.get(k) for k in ("concurrency", "rate", "period_ms"))
    return QueueLimits(
        concurrency=None if concurrency is None else int(concurrency),
        rate=None if rate is None else int(rate),
        period=None if period_ms is None else int(period_ms) / 1000,
    )


def configure(queue: Queue, changes: dict[str, str]) -> dict[str, str]:
    ensure_loaded(queue.connection, queue.auto_load)
    return calls.configure(queue.connection, queue.keys, changes)


# -- size limits ------------------------------------------------------------------------------


def cached_limits(queue: Queue) -> dict[str, int]:
    now = time.monotonic()
    known = queue._library_limits
    if known is None or now - known[0] > LIMITS_CACHE_SECONDS:
        known = queue._library_limits = (now, calls.size_limits(queue.connection, queue.keys))
    return known[1]


def set_size_limits(
    queue: Queue,
    *,
    payload: int | None,
    result: int | None,
    checkpoint: int | None,
    error: int | None,
) -> dict[str, int]:
    changes = {}
    for field, value in (
        ("max_payload_bytes", payload),
        ("max_result_bytes", result),
        ("max_checkpoint_bytes", checkpoint),
        ("max_error_bytes", error),
    ):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidOption(f"{field} must be an integer number of bytes, not {value!r}")
        changes[field] = "" if value is None else str(value)
    configure(queue, changes)
    queue._library_limits = None  # read the new limits back, not the cached ones
    return dict(cached_limits(queue))


# -- scheduling settings ------------------------------------------------------------------------


def set_paused(queue: Queue, paused: bool) -> None:
    configure(queue, {"paused": "1" if paused else ""})


def set_limits(
    queue: Queue, concurrency: int | None, rate: int | None, period: float | None
) -> QueueLimits:
    for name, value in (("concurrency", concurrency), ("rate", rate)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidOption(f"{name} must be an integer, not {value!r}")
    if (rate is None) != (period is None):
        raise InvalidOption("give rate and period together")
    period_s = seconds_of(period, "period")
    if period_s is not None and not (math.isfinite(period_s) and period_s > 0):
        raise InvalidOption(f"period must be a positive number of seconds, not {period!r}")
    period_ms = None if period_s is None else round(period_s * 1000)
    settings = configure(
        queue,
        {
            "concurrency": "" if concurrency is None else str(concurrency),
            "rate": "" if rate is None else str(rate),
            "period_ms": "" if period_ms is None else str(period_ms),
        },
    )
    return limits_of(settings)


def set_aging(queue: Queue, levels_per_second: float | None) -> None:
    rate = seconds_of(levels_per_second, "aging rate")
    if rate is not None and not (math.isfinite(rate) and rate > 0):
        raise InvalidOption(f"aging rate must be a positive number, not {levels_per_second!r}")
    configure(queue, {"aging": "" if rate is None else repr(rate)})


def set_max_lost_leases(queue: Queue, times: int | None) -> None:
    if times is not None and (isinstance(times, bool) or not isinstance(times, int)):
        raise InvalidOption(f"max_lost_leases must be an integer, not {times!r}")
    configure(queue, {"max_lost_leases": "" if times is None else str(times)})


def set_preemption(queue: Queue, enabled: bool) -> None:
    configure(queue, {"no_preemption": "" if enabled else "1"})


# -- failed and ended jobs ----------------------------------------------------------------------


def retry(queue: Queue, job_ids: Sequence[str] | None) -> int:
    ensure_loaded(queue.connection, queue.auto_load)
    moved = 0
    if job_ids is not None:
        for start in range(0, len(job_ids), ENQUEUE_BATCH_MAX):
            chunk = job_ids[start : start + ENQUEUE_BATCH_MAX]
            moved += len(calls.retry(queue.connection, queue.keys, chunk))
        return moved
    while batch := calls.retry(queue.connection, queue.keys, (), ENQUEUE_BATCH_MAX):
        moved += len(batch)
    return moved


def purge(
    queue: Queue,
    status: str,
    job_ids: Sequence[str] | None,
    progress: Callable[[int], None] | None,
) -> int:
    if status not in ENDED_STATES:
        raise InvalidOption(
            f"only failed, complete, cancelled or expired jobs can be purged: {status}"
        )
    ensure_loaded(queue.connection, queue.auto_load)
    deleted = 0
    if job_ids is not None:
        for start in range(0, len(job_ids), ENQUEUE_BATCH_MAX):
            chunk = job_ids[start : start + ENQUEUE_BATCH_MAX]
            done, _ = calls.purge(queue.connection, queue.keys, status, chunk)
            deleted += done
            if progress:
                progress(done)
        return deleted
    offset = 0  # deleted jobs leave the set, so the next page starts after those kept
    while True:
        done, looked = calls.purge(
            queue.connection, queue.keys, status, (), PURGE_BATCH_MAX, offset
        )
        if looked == 0:
            return deleted
        deleted += done
        offset += looked - done
        if progress:
            progress(done)
