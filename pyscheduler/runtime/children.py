"""Sync child processes on demand: started when a sync job needs a slot, reaped when idle.

A worker with `concurrency` N has N sync slots, but a slot gets its child process only when a
job is sent to it (an idle slot with a warm child is preferred), and a child that has had
nothing to do for `idle_seconds` is stopped (it is started again at the next job). So a
worker whose handlers are all `async def` runs in two processes: itself and its event-loop
process, whatever its concurrency.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..store.connection import Client
from .allowlist import HandlerPolicy
from .executor import Executor

if TYPE_CHECKING:
    from .slots import Slot

log = logging.getLogger("pyscheduler.worker")

# How long a sync child may have nothing to do before it is stopped (`Worker`'s default).
DEFAULT_IDLE_CHILD_SECONDS = 60.0


@dataclass
class Children:
    """Starts and stops the sync children of a worker's slots."""

    policy: HandlerPolicy
    connection: Client
    idle_seconds: float = DEFAULT_IDLE_CHILD_SECONDS
    # Called before every fork (the worker ends its waiting threads, see waiting.py).
    before_fork: Callable[[], None] = field(default=lambda: None)
    started: int = 0  # children started so far (first starts and restarts)

    def ensure(self, slot: Slot) -> Executor:
        """The slot's child, started now if it has none."""
        if slot.executor is None:
            self.before_fork()
            slot.executor = Executor(self.policy, self.connection)
            self.started += 1
        return slot.executor

    def forget(self, slot: Slot) -> None:
        """After a kill: the slot has no child now; its next job starts one."""
        slot.executor = None
        slot.pace = None

    def reap(self, slots: list[Slot], now: float) -> None:
        """Stop the children that have been idle for `idle_seconds`."""
        for slot in slots:
            if (
                slot.executor is not None
                and not slot.runs
                and now >= slot.idle_since + self.idle_seconds
            ):
                log.debug("stopping an executor idle for %.0f s", now - slot.idle_since)
                slot.executor.kill()
                slot.executor = None
                slot.pace = None

    def next_reap(self, slots: list[Slot]) -> float:
        """When the next idle child is due to be stopped (monotonic; inf when none is idle)."""
        idle = [s.idle_since for s in slots if s.executor is not None and not s.runs]
        return min(idle) + self.idle_seconds if idle else math.inf

    @staticmethod
    def kill_all(slots: list[Slot]) -> None:
        for slot in slots:
            if slot.executor is not None:
                slot.executor.kill()
                slot.executor = None
