"""A group's worker processes as the supervisor sees them: `WorkerProcess` (one child) and
`Group` (its processes, size, restart backoff, and the look at its queues)."""

from __future__ import annotations

import functools
import math
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from ...client.queue import Queue
from ...runtime import parent_death
from ...store.connection import Client
from .config import GroupConfig
from .scaling import Backlog, Scaler

# Counters of the queues' stats that mark the end of a run (the group's throughput).
RUN_END_COUNTERS = ("completed", "failed", "paused")


def child_setup() -> Callable[[], None]:
    """A function run in each worker before exec, so that it gets SIGTERM when the pool dies."""
    parent_death.prepare()
    return functools.partial(parent_death.signal_on_parent_death, signal.SIGTERM)


@dataclass
class WorkerProcess:
    popen: subprocess.Popen[bytes]
    started: float  # monotonic
    draining: bool = False  # sent SIGTERM: its exit is expected

    @property
    def pid(self) -> int:
        return self.popen.pid


class Group:
    """A group's processes, size and restart backoff."""

    def __init__(self, config: GroupConfig, connection: Client, now: float) -> None:
        self.config = config
        self.size = config.min
        self.processes: list[WorkerProcess] = []
        self.scaler = Scaler(config, now)
        self.queues = [Queue(name, connection=connection) for name in config.queues]
        self.quick_deaths = 0
        self.last_death = -math.inf
        self.restart_at = -math.inf
        self.held_logged = False

    @property
    def running(self) -> list[WorkerProcess]:
        """Processes that are not draining."""
        return [p for p in self.processes if not p.draining]

    def backlog(self) -> Backlog:
        queued = active = ended = 0
        oldest: float | None = None
        slots: list[int | None] = []
        rates: list[float | None] = []
        for queue in self.queues:
            stats = queue.stats()
            active += stats.active
            ended += sum(stats.counters.get(name, 0) for name in RUN_END_COUNTERS)
            limits = stats.limits
            slots.append(limits.concurrency)
            rates.append(limits.rate / limits.period if limits.rate and limits.period else None)
            if stats.paused:
                continue
            queued += stats.queued
            if stats.oldest_ready_age is not None:
                oldest = max(oldest or 0.0, stats.oldest_ready_age)
        return Backlog(
            queued,
            active,
            oldest,
            ended,
            slot_limit=None if None in slots else sum(s for s in slots if s is not None),
            rate_limit=None if None in rates else sum(r for r in rates if r is not None),
        )
