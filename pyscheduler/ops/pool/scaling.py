"""The scaling policy: from each look at a group's queues (`Backlog`), the group's new size
(`Decision`) or none; `Scaler` keeps the measured throughput and capacity between looks."""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass

from .config import GroupConfig

# The least time between two steps up of one group: new processes need a moment to start.
SCALE_UP_SETTLE = 1.0
# The time constant (seconds) of the moving averages of throughput and capacity.
RATE_WINDOW = 5.0


@dataclass(frozen=True)
class Backlog:
    """One look at a group's queues (paused queues count as having no ready jobs)."""

    queued: int
    active: int
    oldest_ready_age: float | None  # seconds
    runs_ended: int  # a monotonic counter: completed + failed + paused runs
    slot_limit: int | None = None  # the queues' concurrency limits (when all have one)
    rate_limit: float | None = None  # the queues' rate limits in jobs/s (when all have one)


@dataclass(frozen=True)
class Decision:
    size: int
    reason: str


class Scaler:
    """The scaling policy of one group: pure bookkeeping, with the time passed in."""

    def __init__(self, config: GroupConfig, now: float) -> None:
        self.config = config
        self.throughput = 0.0  # runs ended per second, moving average (for the log)
        self.per_process: float | None = None  # capacity: jobs/s per process under backlog
        self._previous: Backlog | None = None
        self._previous_at = now
        self._previous_processes = 0
        self._last_up = -math.inf
        self.held: str | None = None  # why a backlog does not make the group grow
        self._calm_since: float | None = None
        self._last_busy = now
        self._active: collections.deque[tuple[float, int]] = collections.deque()

    def observe(self, backlog: Backlog, size: int, processes: int, now: float) -> Decision | None:
        """Take a look at the group's queues; a new size when the group should change.

        `size` is the group's current size, `processes` how many of its processes are running.
        """
        cfg = self.config
        ended = self._measure(backlog, processes, now)
        oldest = backlog.oldest_ready_age or 0.0
        capacity = (self.per_process or 0.0) * size
        drain = backlog.queued / capacity if capacity > 0 else None
        if backlog.active > 0 or backlog.queued > 0 or ended > 0:
            self._last_busy = now
        self._active.append((now, backlog.active))  # the last cooldown's samples
        while self._active[0][0] < now - cfg.cooldown:
            self._active.popleft()

        # Up: quickly, as far as the queues' limits leave work for more processes.
        reason = None
        if size == 0 and backlog.queued > 0:
            reason = f"{backlog.queued} queued and no process"
        elif oldest > cfg.target_latency:
            reason = f"oldest ready job {oldest:.1f} s > target {cfg.target_latency:g} s"
        elif drain is not None and drain > cfg.target_latency:
            reason = (
                f"{backlog.queued} queued would take {drain:.1f} s to drain"
                f" > target {cfg.target_latency:g} s"
            )
        cap, limit = self._useful_size(backlog)
        if reason is None or size >= cfg.max:
            self.held = None
        elif size >= cap:
            self.held = f"{reason}, but the queues' {limit} leaves no work for more processes"
        elif now - self._last_up >= SCALE_UP_SETTLE:
            self.held = None
            if self.per_process:
                needed = math.ceil(backlog.queued / (self.per_process * cfg.target_latency))
            else:
                needed = 2 * size
            capacity_text = (
                f", capacity {self.per_process:.1f}/s per process" if self.per_process else ""
            )
            reason += (
                f"; {backlog.queued} queued, {backlog.active} active,"
                f" throughput {self.throughput:.1f}/s{capacity_text}"
            )
            self._last_up = now
            self._calm_since = None
            return Decision(min(cap, max(size + 1, needed)), reason)

        # Down: only after a calm cooldown (no ready job waits long, none would).
        half = cfg.target_latency / 2
        calm = oldest <= half and (backlog.queued == 0 or (drain is not None and drain <= half))
        if not calm:
            self._calm_since = None
            return None
        if self._calm_since is None:
            self._calm_since = now
        calm_for = now - self._calm_since
        if size <= cfg.min or calm_for < cfg.cooldown:
            return None
        idle_for = now - self._last_busy
        if idle_for >= cfg.cooldown:
            decision = Decision(
                cfg.min, f"idle for {idle_for:.1f} s >= cooldown {cfg.cooldown:g} s"
            )
        elif (backlog.active > 0 or ended > 0) and (
            peak := max(active for _, active in self._active)
        ) <= (size - 1) * cfg.concurrency:
            # Still working, lightly: one process less. (A group that has just stopped working
            # waits until it has been idle for a cooldown, then goes back to min at once.)
            decision = Decision(
                size - 1,
                f"no backlog for {calm_for:.1f} s >= cooldown {cfg.cooldown:g} s, at most"
                f" {peak} of {size * cfg.concurrency} job slots busy;"
                f" throughput {self.throughput:.1f}/s",
            )
        else:
            return None
        self._calm_since = None  # the next step down needs another calm cooldown
        return decision

    def _useful_size(self, backlog: Backlog) -> tuple[int, str]:
        """How many processes can get work under the queues' limits; and the binding limit."""
        cfg = self.config
        cap, limit = cfg.max, f"max {cfg.max}"
        if backlog.slot_limit is not None:
            slots = max(1, math.ceil(backlog.slot_limit / cfg.concurrency))
            if slots < cap:
                cap, limit = slots, f"concurrency limit ({backlog.slot_limit} active jobs)"
        if backlog.rate_limit is not None and self.per_process:
            rated = max(1, math.ceil(backlog.rate_limit / self.per_process))
            if rated < cap:
                cap, limit = rated, f"rate limit ({backlog.rate_limit:g} jobs/s)"
        return cap, limit

    def _measure(self, backlog: Backlog, processes: int, now: float) -> int:
        """Update throughput and capacity; the number of runs ended since the last look."""
        previous, dt = self._previous, now - self._previous_at
        ended = 0
        if previous is not None and dt > 0:
            ended = max(0, backlog.runs_ended - previous.runs_ended)  # counters can be reset
            weight = 1 - math.exp(-dt / RATE_WINDOW)
            rate = ended / dt
            self.throughput += weight * (rate - self.throughput)
            # Under a backlog the processes were busy all along: their rate is the capacity.
            if previous.queued > 0 and backlog.queued > 0 and self._previous_processes > 0:
                per_process = rate / self._previous_processes
                if self.per_process is None:
                    self.per_process = per_process
                else:
                    self.per_process += weight * (per_process - self.per_process)
        self._previous, self._previous_at, self._previous_processes = backlog, now, processes
        return ended
