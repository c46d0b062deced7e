"""The metrics the library keeps per queue, as `Queue.metrics` returns them.

The Lua calls that move jobs count them as they go (no extra round trip per job): counters in
the queue's stats hash, wait time (queued or due, to start) and run time in the fixed buckets
of `protocol.HISTOGRAM_BOUNDS_MS`, and jobs completed and failed per minute over the last day.
`psq_metrics` reads them back in one bounded call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import redis

from ..store import calls
from ..store.calls import MetricsReply
from ..store.connection import Client, pipeline
from ..store.keys import QueueKeys
from ..store.library import ensure_loaded
from ..store.protocol import HISTOGRAM_BOUNDS_MS, STAT_FIELDS, THROUGHPUT_MINUTES

# Bucket upper bounds in seconds; a last +Inf bucket follows them.
HISTOGRAM_BOUNDS_S: tuple[float, ...] = tuple(ms / 1000 for ms in HISTOGRAM_BOUNDS_MS)


@dataclass(frozen=True, slots=True)
class Histogram:
    """Observations in fixed buckets: `counts[i]` is the number of observations in bucket i
    (not cumulative: above `bounds[i - 1]`, at most `bounds[i]`); `counts` has one more entry
    than `bounds`, the +Inf bucket, last."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    sum_seconds: float
    count: int

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at most it) per bucket, +Inf last: Prometheus's form."""
        out: list[tuple[float, int]] = []
        total = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out


@dataclass(frozen=True, slots=True)
class ThroughputPoint:
    """Jobs that ended in the minute starting at `minute_start_ms` (server clock)."""

    minute_start_ms: int
    completed: int
    failed: int


@dataclass(frozen=True, slots=True)
class QueueMetrics:
    """One queue's metrics. `counters`: enqueued, started, completed, failed, retried,
    lost_leases, paused, cancelled (0 when never counted) and any other counter of the queue's
    stats hash; `throughput`: oldest first, minutes without a job ending left out."""

    queue: str
    counters: dict[str, int]
    wait: Histogram
    run: Histogram
    throughput: tuple[ThroughputPoint, ...]


def _histogram(counts: tuple[int, ...], sum_ms: int, count: int) -> Histogram:
    return Histogram(HISTOGRAM_BOUNDS_S, counts, sum_ms / 1000, count)


def queue_metrics(queue: str, reply: MetricsReply) -> QueueMetrics:
    """The metrics of `queue` from its `psq_metrics` reply (`calls.metrics`)."""
    counters = dict.fromkeys(STAT_FIELDS, 0)
    counters.update(reply.stats)
    return QueueMetrics(
        queue=queue,
        counters=counters,
        wait=_histogram(reply.wait_buckets, reply.wait_sum_ms, reply.wait_count),
        run=_histogram(reply.run_buckets, reply.run_sum_ms, reply.run_count),
        throughput=tuple(ThroughputPoint(*point) for point in reply.throughput),
    )


def check_minutes(minutes: int) -> None:
    """How much throughput history a metrics read may ask for (both clients check it)."""
    if not 1 <= minutes <= THROUGHPUT_MINUTES:
        raise ValueError(f"minutes must be in 1..{THROUGHPUT_MINUTES}, got {minutes!r}")


def metrics_of(connection: Client, names: Sequence[str], minutes: int = 60) -> list[QueueMetrics]:
    """The metrics of many queues in one round trip (their `psq_metrics` calls pipelined)."""
    check_minutes(minutes)
    all_keys = [QueueKeys(name) for name in names]  # checks every name first
    if not all_keys:
        return []
    ensure_loaded(connection)
    pipe = pipeline(connection)
    for keys in all_keys:
        calls.pipe_metrics(pipe, keys, minutes)
    try:
        replies = pipe.execute()
    except redis.ResponseError as exc:
        calls.raise_mapped(exc)
    return [
        queue_metrics(keys.queue, calls.parse_metrics(reply))
        for keys, reply in zip(all_keys, replies, strict=True)
    ]
