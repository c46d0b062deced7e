"""The worker's side of its event-loop process (async_executor.py): `async def` jobs.

The loop process starts at the first job sent to it and runs up to `concurrency` jobs at
once. Jobs of handlers known (or guessed, see handler_kinds.py) to be `async def` go there;
one whose handler turns out plain is answered SYNC and goes to a sync slot instead.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

from ..store.connection import Client
from ..store.protocol import FailKind
from .allowlist import HandlerPolicy
from .async_executor import BLOCKED_LOOP_GRACE_SECONDS, AsyncExecutor
from .child_protocol import OutcomeKind
from .leases import vouch
from .reporting import Reporter
from .runs import Run
from .slots import TICK_SECONDS

log = logging.getLogger("pyscheduler.worker")


class EventLoop:
    """The event-loop process, started on demand, and the runs on it (by seq). `to_sync`
    takes a run whose handler turned out not to be `async def`."""

    def __init__(
        self,
        policy: HandlerPolicy,
        connection: Client,
        capacity: int,
        reporter: Reporter,
        before_fork: Callable[[], None],
        to_sync: Callable[[Run], None],
    ) -> None:
        self.policy = policy
        self.connection = connection
        self.capacity = capacity
        self.reporter = reporter
        self.before_fork = before_fork
        self.to_sync = to_sync
        self.executor: AsyncExecutor | None = None
        self.runs: dict[int, Run] = {}

    def room(self) -> int:
        return self.capacity - len(self.runs)

    def start(self, runs: list[Run], lease_ms: int, stopping: bool) -> None:
        """Start runs on the loop (the caller checked its room)."""
        if self.executor is None:
            self.before_fork()
            self.executor = AsyncExecutor(self.policy, self.connection)
        executor = self.executor
        requests = [run.request(lease_ms, may_defer=False) for run in runs]
        now = time.monotonic()
        for run, seq in zip(runs, executor.number(requests), strict=True):
            run.seq, run.started = seq, now
            self.runs[seq] = run
        vouch(executor, self.runs.values())
        try:
            executor.submit(requests)
        except OSError:  # it died since it last reported
            self.died()
            return
        if stopping:
            executor.request_pause()

    def flush_and_collect(self) -> None:
        if self.runs and self.executor is not None:
            with contextlib.suppress(OSError):  # the process is gone: collecting finds out
                self.executor.flush()
            self.collect()

    def collect(self) -> None:
        if self.executor is None:
            return
        outcomes = self.executor.outcomes()
        if outcomes is None:
            self.died()
            return
        unstarted: list[Run] = []
        for outcome in outcomes:
            run = self.runs.pop(outcome.seq, None)
            if run is None or run.lost:
                continue
            if outcome.kind is OutcomeKind.UNSTARTED:
                unstarted.append(run)
            elif outcome.kind is OutcomeKind.SYNC:
                run.started = None
                self.to_sync(run)
            else:
                self.reporter.finish(run, outcome)
        if unstarted:
            self.reporter.not_started(unstarted)

    def died(self, blocker: Run | None = None) -> None:
        """The loop process died or was killed (`blocker` blocked it): fail its runs. The next
        job sent to the loop starts a new process."""
        if self.executor is None:
            return
        code = self.executor.exit_code() if blocker is None else None
        runs = list(self.runs.values())
        self.runs.clear()
        self.executor.kill()
        self.executor = None
        for run in runs:
            if run.lost:
                continue
            if run is blocker:
                error = (
                    f"JobTimeout: the run passed its {run.timeout_s} s timeout and blocked"
                    " its event loop"
                )
                self.reporter.fail(run, FailKind.TIMEOUT, error)
            elif blocker is not None:
                error = (
                    f"stopped with the event loop process, which job {blocker.lease.id}"
                    " blocked past its timeout"
                )
                self.reporter.fail(run, FailKind.ERROR, error)
            else:
                error = f"the event loop process died (exit code {code})"
                self.reporter.fail(run, FailKind.ERROR, error)

    def enforce_timeouts(self, now: float) -> None:
        for run in self.runs.values():
            if now >= run.timeout_at + BLOCKED_LOOP_GRACE_SECONDS:
                self.collect()  # its cancellation may have just come in
                if run in self.runs.values():
                    log.warning(
                        "job %s blocks the event loop past its %s s timeout: stopping the loop",
                        run.lease.id,
                        run.timeout_s,
                    )
                    self.died(blocker=run)
                return

    def lease_lost(self, run: Run) -> bool:
        """Note that a run on the loop lost its lease; False when it is not on the loop."""
        if self.runs.get(run.seq) is not run:
            return False
        # A task cannot be stopped from here: it keeps its place on the loop (and its
        # timeout) until it ends, and its outcome is ignored (its results and checkpoints
        # are refused anyway: the token no longer holds).
        log.warning("job %s lost its lease (cancelled or reclaimed)", run.lease.id)
        run.lost = True
        return True

    def request_pause(self) -> None:
        if self.runs and self.executor is not None:
            self.executor.request_pause()

    def vouch(self) -> None:
        if self.runs and self.executor is not None:
            vouch(self.executor, self.runs.values())

    def watch(self, now: float, timeout: float) -> tuple[dict[object, EventLoop], float]:
        """The pipe to wait on and the timeout to wait for (a job's deadline, plus grace)."""
        if not self.runs or self.executor is None:
            return {}, timeout
        soonest = min(run.timeout_at for run in self.runs.values())
        timeout = min(timeout, soonest + BLOCKED_LOOP_GRACE_SECONDS - now)
        if self.executor.unsent:
            timeout = min(timeout, TICK_SECONDS)
        return {self.executor.conn: self}, timeout

    def kill(self) -> None:
        if self.executor is not None:
            self.executor.kill()
            self.executor = None
