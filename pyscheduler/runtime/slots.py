"""Job slots: the sync children's queues of runs, prefetch, and taking runs back.

While jobs are short and the queue deep, a child gets several at once (prefetch, leased like
any other): the worker then looks at it once a tick, reports the results in one round trip
with the next pop, and gives back (`psq_release`) the jobs queued behind one that turns out
slow, so prefetch never makes a short job wait behind a long one for more than a tick or two.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..store.protocol import FailKind
from .child_protocol import Outcome, OutcomeKind
from .children import Children
from .executor import Executor, Progress
from .leases import vouch
from .reporting import Reporter
from .runs import Run

log = logging.getLogger("pyscheduler.worker")

# Prefetch: while jobs are short and the queue deep, a child gets up to PREFETCH_MAX jobs at
# once, about PREFETCH_SECONDS of work at its measured pace. The worker looks at a busy child
# every TICK_SECONDS (not after every job) and hands back the jobs queued behind one that has
# run for SLOW_SECONDS, so a long job holds up no other job for longer than that.
PREFETCH_MAX = 64
PREFETCH_SECONDS = 0.02
TICK_SECONDS = 0.004
SLOW_SECONDS = 0.004
# Weight of the newest job in the running average of job durations.
PACE_SMOOTHING = 0.2


@dataclass(eq=False)
class Slot:
    """A sync child (started on demand, see children.py) and the runs sent to it, in order."""

    executor: Executor | None = None
    runs: deque[Run] = field(default_factory=deque)
    pace: float | None = None  # running average of this child's job durations (s)
    reported: bool = False  # outcomes came in during this turn of the loop
    idle_since: float = field(default_factory=time.monotonic)  # when its last run ended

    def target(self) -> int:
        """How many jobs to keep queued at this child: one, unless jobs are short."""
        if self.pace is None:
            return 1
        return max(1, min(PREFETCH_MAX, int(PREFETCH_SECONDS / max(self.pace, 1e-6))))

    def running(self) -> Run | None:
        run = self.runs[0] if self.runs else None
        return run if run is not None and run.started is not None else None


class SyncSlots:
    """A worker's sync slots. `defer` takes a run whose handler turned out `async def`."""

    def __init__(
        self, count: int, children: Children, reporter: Reporter, defer: Callable[[Run], None]
    ) -> None:
        self.slots = [Slot() for _ in range(count)]
        self.children = children
        self.reporter = reporter
        self.defer = defer

    def runs(self) -> list[Run]:
        return [run for slot in self.slots for run in slot.runs]

    def holds_runs(self) -> bool:
        return any(slot.runs for slot in self.slots)

    def idle(self) -> list[Slot]:
        """Slots with nothing to do, those with a warm child first."""
        return sorted((s for s in self.slots if not s.runs), key=lambda s: s.executor is None)

    def wants(self, prefetch: bool) -> tuple[list[Slot], dict[int, int]]:
        """Idle slots, and how many more jobs each slot would queue up (by id)."""
        idle = self.idle()
        extra: dict[int, int] = {}
        if not prefetch:
            return idle, extra
        now = time.monotonic()
        for slot in self.slots:
            target = slot.target()
            if target <= 1:
                continue
            if not slot.runs:
                extra[id(slot)] = target - 1
                continue
            running = slot.running()
            # Top up a child that is working through short jobs as it reports; never behind a
            # job that may be long (one that has run for a while).
            young = running is None or now - (running.started or now) < SLOW_SECONDS
            if slot.reported and young and len(slot.runs) < target:
                extra[id(slot)] = target - len(slot.runs)
        return idle, extra

    def send(self, slot: Slot, runs: list[Run], lease_ms: int, may_defer: bool) -> None:
        """Send runs to a slot's child (started now if it has none)."""
        executor = self.children.ensure(slot)
        requests = [run.request(lease_ms, may_defer) for run in runs]
        for run, seq in zip(runs, executor.number(requests), strict=True):
            run.seq = seq
        slot.runs.extend(runs)
        vouch(executor, slot.runs)
        try:
            executor.submit(requests)
        except OSError:  # the child died since it last reported
            self._child_died(slot)

    def flush_and_collect(self) -> None:
        for slot in self.slots:
            if slot.runs and slot.executor is not None:
                with contextlib.suppress(OSError):  # the child is gone: collecting finds out
                    slot.executor.flush()
                self.collect(slot)

    def vouch(self) -> None:
        for slot in self.slots:
            if slot.runs and slot.executor is not None:
                vouch(slot.executor, slot.runs)

    def request_pause(self) -> None:
        for slot in self.slots:
            if slot.runs and slot.executor is not None:
                slot.executor.request_pause()

    # -- following the children -------------------------------------------------------------

    def collect(self, slot: Slot) -> None:
        """Take in a child's outcomes and note which job it runs now."""
        if slot.executor is None:
            return
        progress = slot.executor.progress()  # before the outcomes: see `_note_start`
        outcomes = slot.executor.outcomes()
        if outcomes is None:
            self._child_died(slot)
            return
        unstarted = [run for outcome in outcomes if (run := self._take_outcome(slot, outcome))]
        if unstarted:
            self.reporter.not_started(unstarted)
        if progress is None:
            self._child_stuck(slot)
        elif slot.runs:
            self._note_start(slot, progress)

    @staticmethod
    def _note_start(slot: Slot, progress: Progress) -> None:
        # The child sends a job's outcome before it starts the next, so once the outcomes
        # read after `progress` are taken in, the first run is the one started, if any.
        first = slot.runs[0]
        if first.started is None and first.seq == progress.started_seq:
            first.started = progress.started_at

    def _take_outcome(self, slot: Slot, outcome: Outcome) -> Run | None:
        """Take in one outcome; returns the run when the child did not start it."""
        if not slot.runs or slot.runs[0].seq != outcome.seq:
            return None  # its lease was lost meanwhile
        run = slot.runs.popleft()
        if not slot.runs:
            slot.idle_since = time.monotonic()
        if outcome.kind is OutcomeKind.UNSTARTED:
            return run
        if outcome.kind is OutcomeKind.DEFER:
            self.defer(run)
            return None
        seconds = outcome.seconds
        slot.pace = (
            seconds if slot.pace is None else slot.pace + PACE_SMOOTHING * (seconds - slot.pace)
        )
        slot.reported = True
        self.reporter.finish(run, outcome)
        return None

    def _child_died(self, slot: Slot) -> None:
        code = slot.executor.exit_code() if slot.executor is not None else None
        running = self.stop_child(slot)
        if running is not None:
            error = f"the process running the job died (exit code {code})"
            self.reporter.fail(running, FailKind.ERROR, error)

    def _child_stuck(self, slot: Slot) -> None:
        log.warning("an executor process stopped answering: restarting it")
        running = self.stop_child(slot)
        if running is not None:
            self.reporter.fail(
                running, FailKind.ERROR, "the process running the job stopped answering"
            )

    def stop_child(self, slot: Slot) -> Run | None:
        """Kill a slot's child; take in the outcomes it sent before; hand back the runs it had
        not started; return the one it was running, if any (not reported yet). The slot's
        next job starts a new child."""
        executor = slot.executor
        if executor is None:
            return None
        executor.kill(keep_outcomes=True)
        unstarted: list[Run] = []
        for outcome in executor.outcomes() or []:
            if (run := self._take_outcome(slot, outcome)) is not None:
                unstarted.append(run)
        started = executor.started_seq_after_exit()
        running = next((run for run in slot.runs if run.seq == started), None)
        unstarted += [run for run in slot.runs if run.seq > started]
        slot.runs.clear()
        slot.idle_since = time.monotonic()
        executor.kill()  # closes the pipe
        self.children.forget(slot)
        self.reporter.hand_back(unstarted)
        return running

    def take_back(self, slot: Slot, keep_first: bool = False) -> list[Run]:
        """Runs of a slot that its child will now never start (they are no longer held).

        With `keep_first`, the first run stays, started or not (a stopping worker lets the
        job its child is taking up run, and pause at its first checkpoint).
        """
        first = slot.runs[0] if slot.runs else None
        if first is None or slot.executor is None:
            return []
        if len(slot.runs) == 1 and (keep_first or first.started is not None):
            return []
        kept = slot.executor.take_back(first.seq if keep_first else -1)
        if kept is None:
            self._child_stuck(slot)
            return []
        taken = [run for run in slot.runs if run.seq > kept]
        for _ in taken:
            slot.runs.pop()
        if not slot.runs:
            slot.idle_since = time.monotonic()
        return taken

    def lease_lost(self, run: Run) -> bool:
        """Stop a run whose lease was lost; False when no slot holds it."""
        slot = next((s for s in self.slots if run in s.runs), None)
        if slot is None:
            return False
        log.warning("job %s lost its lease (cancelled or reclaimed): stopping it", run.lease.id)
        # Take back everything the child has not started (the lost one is refused by the
        # library, the others go back to their places); if it runs the lost one, kill it.
        self.reporter.hand_back(self.take_back(slot))
        self.collect(slot)
        if run in slot.runs:
            self.stop_child(slot)
        return True

    def enforce_timeouts(self, now: float) -> None:
        for slot in self.slots:
            running = slot.running()
            if running is None or now < running.timeout_at:
                continue
            # Make sure the child starts nothing else, then see whether the job just ended.
            self.reporter.hand_back(self.take_back(slot))
            self.collect(slot)
            if slot.running() is not running:
                continue
            log.warning(
                "job %s passed its %s s timeout: stopping it", running.lease.id, running.timeout_s
            )
            self.stop_child(slot)
            error = f"JobTimeout: the run passed its {running.timeout_s} s timeout"
            self.reporter.fail(running, FailKind.TIMEOUT, error)

    def hand_back_unstarted(self) -> None:
        for slot in self.slots:
            if slot.runs:
                self.collect(slot)
                self.reporter.hand_back(self.take_back(slot, keep_first=True))

    def hand_back_behind_slow_jobs(self, now: float) -> None:
        for slot in self.slots:
            running = slot.running()
            if (
                running is not None
                and len(slot.runs) > 1
                and now - (running.started or now) >= SLOW_SECONDS
            ):
                self.reporter.hand_back(self.take_back(slot))

    def watch(self, now: float, timeout: float) -> tuple[dict[object, Slot], float]:
        """The pipes to wait on (children running one job) and the timeout to wait for: a
        child working through queued jobs is looked at once a tick instead."""
        watched: dict[object, Slot] = {}
        for slot in self.slots:
            if not slot.runs or slot.executor is None:
                continue
            if len(slot.runs) > 1 or slot.executor.unsent:
                timeout = min(timeout, TICK_SECONDS)
            else:
                watched[slot.executor.conn] = slot
            timeout = min(timeout, slot.runs[0].timeout_at - now)
        return watched, timeout
