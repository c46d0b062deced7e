"""Throughput for the charts, from the metrics the library keeps (`psq_metrics`).

`all_queues` pipelines one read-only call per queue: one round trip for the overview,
however many queues and jobs there are.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis

from ...client.queue import Queue
from ...exceptions import PySchedulerError
from ...store import calls
from ...store.connection import Client, pipeline
from ...store.keys import QueueKeys
from .charts import Minute

CHART_MINUTES = 60

log = logging.getLogger("pyscheduler.dashboard")


@dataclass(frozen=True, slots=True)
class Activity:
    """Jobs ended per minute (summed over the queues read), live workers per queue."""

    minutes: list[Minute]
    server_ms: int
    workers: dict[str, int] = field(default_factory=dict)
    problem: str | None = None  # why there is no throughput (the page shows the rest)


def _summed(points: Sequence[tuple[int, int, int]], into: dict[int, list[int]]) -> None:
    for start, completed, failed in points:
        slot = into.setdefault(start, [0, 0])
        slot[0] += completed
        slot[1] += failed


def all_queues(connection: Client, names: Sequence[str]) -> Activity:
    try:
        return _all_queues(connection, names)
    except (redis.ResponseError, PySchedulerError) as exc:
        log.warning("no throughput: %s", exc)
        return Activity([], 0, problem=str(exc))


def _all_queues(connection: Client, names: Sequence[str]) -> Activity:
    by_minute: dict[int, list[int]] = {}
    workers: dict[str, int] = {}
    server_ms = 0
    if names:
        pipe = pipeline(connection)
        for name in names:
            calls.pipe_metrics(pipe, QueueKeys(name), CHART_MINUTES)
        for name, reply in zip(names, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(reply, redis.ResponseError):
                calls.raise_mapped(reply)
            parsed = calls.parse_metrics(reply)
            _summed(parsed.throughput, by_minute)
            workers[name] = parsed.live_workers
            server_ms = max(server_ms, parsed.server_ms)
    return Activity(_minutes(by_minute), server_ms, workers)


def one_queue(queue: Queue) -> Activity:
    try:
        reply = calls.metrics(queue.connection, queue.keys, CHART_MINUTES)
    except (redis.ResponseError, PySchedulerError) as exc:
        log.warning("no throughput for %s: %s", queue.name, exc)
        return Activity([], 0, problem=str(exc))
    by_minute: dict[int, list[int]] = {}
    _summed(reply.throughput, by_minute)
    return Activity(_minutes(by_minute), reply.server_ms, {queue.name: reply.live_workers})


def _minutes(by_minute: dict[int, list[int]]) -> list[Minute]:
    return [Minute(start, done, failed) for start, (done, failed) in sorted(by_minute.items())]
