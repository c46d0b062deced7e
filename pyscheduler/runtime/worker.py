"""`Worker`: takes jobs from queues and runs them in supervised child processes.

The main process never runs handler code. It leases jobs (`psq_pop`), hands each to a child,
renews the leases while the children work, stops a child that passes its job's hard timeout,
and reports outcomes. When it has room for work and nothing is ready, it blocks inside Redis
(a BLPOP per queue on its wake list, see waiting.py) and, for the next delayed job or lease
deadline, on its own precise timer: no polling loop.

This module is the loop that ties the parts together:

    dispatch.py       which child runs a leased job (handler_kinds.py: `async def` or not)
    slots.py          the sync slots: prefetch, take-back, timeouts (children.py: on demand)
    event_loop.py     the event-loop process's jobs
    runs.py           a leased job as the worker follows it, and its request to a child
    leases.py         renewals, and until when a child may start a job
    reporting.py      results, failures, hand-backs and the outbox
    queue_order.py    weighted queue order;  waiting.py: blocking waits for work
    signals.py        signal handlers, the self-pipe, back-off;  outages.py: Redis gone
    child_protocol.py the frames and records worker and children exchange; child_process.py,
                      executor.py, async_executor.py, handler_calls.py: the children
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from multiprocessing.connection import wait as wait_for_ready
from typing import Any

from ..client import schedules
from ..client.queue import Queue
from ..exceptions import LibraryError
from ..store import calls
from ..store.connection import Client
from .allowlist import HandlerPolicy
from .children import DEFAULT_IDLE_CHILD_SECONDS, Children
from .dispatch import Dispatch
from .event_loop import EventLoop
from .leases import Leases
from .live_workers import DEFAULT_HEARTBEAT_SECONDS, Heartbeat
from .logs import plural, set_up_logging
from .outages import OUTAGE_ERRORS, Outages
from .queue_order import QueueOrder
from .reporting import Reporter
from .runs import Run
from .signals import WakePipe, install_signal_handlers
from .slots import PREFETCH_MAX, Slot
from .waiting import WorkWaiting

__all__ = ["PREFETCH_MAX", "Worker"]

log = logging.getLogger("pyscheduler.worker")

# How often a worker looks for job ends no worker delivered: a crashed worker's (overdue
# after NOTICE_REDRIVE_MS), and those the library ended itself (due at once), so a
# dependent of an expired job waits this long at most.
REDRIVE_SECONDS = 2.0


class Worker:
    """Runs jobs from `queues`, `concurrency` at a time.

    `async def` handlers run on one event-loop process, up to `concurrency` of them at once,
    beside the sync ones (each sync run has a process of its own). When the loop is full, an
    async job runs in a free process with an event loop of its own. Processes start when work
    needs them: the event-loop process at the first `async def` job, a sync child when a sync
    job needs a slot; a sync child idle for `idle_child_seconds` is stopped. So with `async
    def` handlers only, a worker runs in two processes whatever its concurrency.

    Queues are taken in the order given: a queue is asked only when the ones before it had
    nothing ready. With `weights` ({queue name: weight}), the order changes each turn by smooth
    weighted round-robin, so a backed-up queue of weight 3 gets about three turns at the front
    for every one of a queue of weight 1, and no queue is starved.
    """

    def __init__(
        self,
        queues: Sequence[Queue | str],
        *,
        concurrency: int = 1,
        connection: Client | None = None,
        name: str | None = None,
        lease_seconds: float = 10.0,
        strict: bool = False,
        allowed_modules: Sequence[str] = (),
        auto_load: bool | None = None,
        weights: Mapping[str, int] | None = None,
        prefetch: bool = True,
        heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS,
        log_jobs: bool = False,
        idle_child_seconds: float = DEFAULT_IDLE_CHILD_SECONDS,
    ) -> None:
        if not queues:
            raise ValueError("a worker needs at least one queue")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if not idle_child_seconds > 0:
            raise ValueError("idle_child_seconds must be positive")
        first = queues[0]
        if connection is None:
            connection = first.connection if isinstance(first, Queue) else None
        self.queues = [
            q if isinstance(q, Queue) else Queue(q, connection=connection) for q in queues
        ]
        self.connection = connection if connection is not None else self.queues[0].connection
        self.concurrency = concurrency
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease_ms = int(lease_seconds * 1000)
        self.policy = HandlerPolicy(strict=strict, allowed_modules=allowed_modules)
        self.auto_load = auto_load if auto_load is not None else self.queues[0].auto_load
        self.prefetch = prefetch
        self._order = QueueOrder(self.queues, weights)
        self._leases = Leases(self.connection, self.lease_ms)
        self._reports = Reporter(self.connection, self.name, self.lease_ms, log_jobs)
        self._children = Children(
            self.policy, self.connection, idle_child_seconds, before_fork=self._before_fork
        )
        self._stopping = False
        self._dispatch = Dispatch(
            self.policy,
            self.connection,
            concurrency,
            self.lease_ms,
            self._reports,
            self._children,
            lambda: self._stopping,
        )
        self._sync, self._loop = self._dispatch.sync, self._dispatch.loop
        self._aborting = False
        self._pause_requested = False
        self._next_redrive = 0.0
        # Cron schedules whose list of ticks ran low while no worker ran get more at start.
        self._schedules_refilled = False
        self._waiting: WorkWaiting | None = None  # the blocking waits, while `work` runs
        self._pipe: WakePipe | None = None  # the self-pipe, while `work` runs
        self._outages = Outages(
            self.connection, self.auto_load, self._sleep, lambda: self._aborting
        )
        # Lists this worker in each of its queues (`pyscheduler workers`) while it runs.
        self._heartbeat = Heartbeat(
            self.connection,
            [q.keys for q in self.queues],
            self.name,
            concurrency,
            heartbeat_seconds,
        )

    @property
    def processed(self) -> int:
        """Jobs this worker finished (completed or failed)."""
        return self._reports.processed

    @property
    def failed(self) -> int:
        return self._reports.failed

    @property
    def handed_back(self) -> int:
        """Leased jobs given back unstarted (behind a slow job, at a stop, not started)."""
        return self._reports.handed_back

    # -- life cycle ---------------------------------------------------------------------------

    def work(self, burst: bool = False) -> int:
        """Run until stopped (SIGTERM/SIGINT), or with `burst` until nothing is ready.

        Returns the number of jobs this worker finished (completed or failed). Logs to
        stderr when the application has not configured logging (see `logs.set_up_logging`).
        """
        restore_logging = set_up_logging()
        # Signals first: a worker waiting for Redis to come up stops on SIGTERM too.
        restore = install_signal_handlers(self._on_signal)
        pipe = self._pipe = WakePipe()
        self._waiting = WorkWaiting(
            self.connection, [q.keys.wake for q in self.queues], pipe.write_fd
        )
        froze = False
        try:
            if not self._outages.wait_for_redis(lambda: self._stopping):
                return self.processed
            # What start-up made (modules, clients) lives as long as the worker: frozen out of
            # the collector's reach, no full collection walks it, which stalled job starts by
            # 20-40 ms in a new worker's first seconds (W3). An application's freeze stays.
            if gc.get_freeze_count() == 0:
                gc.freeze()
                froze = True
            log.info(
                "worker %s started on %s (concurrency %d)",
                self.name,
                ", ".join(q.name for q in self.queues),
                self.concurrency,
            )
            while True:
                try:
                    if not self._step(burst):
                        break
                    self._outages.turn_went_well()
                except OUTAGE_ERRORS as exc:  # on a cluster: failovers, slots moving too
                    self._outages.connection_lost(exc)
                except LibraryError as exc:  # e.g. Redis restarted empty
                    self._outages.library_missing(exc)
                except Exception as exc:  # no job may stop the worker
                    self._outages.unexpected(exc)
        finally:
            self._children.kill_all(self._sync.slots)
            self._loop.kill()
            self._waiting.close()  # before the pipe closes: its threads write to it
            self._waiting = None
            self._pipe = None
            pipe.close()
            restore()
            self._heartbeat.leave()
            log.info("worker %s stopped after %s", self.name, plural(self.processed, "job"))
            restore_logging()
            if froze:
                gc.unfreeze()
        return self.processed

    def stop(self) -> None:
        """Stop taking jobs; running ones finish (the first SIGTERM does this)."""
        self._stopping = True

    def _on_signal(self, signum: int) -> None:
        if self._stopping:
            self._aborting = True
            return
        name = signal.Signals(signum).name
        log.info("got %s: finishing running jobs, then exiting (again to stop now)", name)
        self._stopping = True

    def _sleep(self, seconds: float) -> None:
        """Sleep, but wake up at a signal (its handler writes to the wake-up pipe)."""
        if self._pipe is None:
            time.sleep(seconds)
        else:
            self._pipe.sleep(seconds)

    def _step(self, burst: bool) -> bool:
        """One turn of the main loop; False when the worker should exit."""
        if self._aborting:  # before the outbox: Redis may be gone, and it would raise again
            held = len(self._sync.runs()) + len(self._loop.runs)
            log.warning("stopping now: %d held jobs return via their leases", held)
            return False
        self._reports.flush_outbox()
        if self._stopping and not self._pause_requested:
            self._pause_requested = True  # checkpointing jobs pause so the worker exits soon
            self._sync.request_pause()
            self._loop.request_pause()
            self._sync.hand_back_unstarted()
        if self._stopping and not self._dispatch.holds_runs():
            self._reports.send_completions()
            return False
        now = time.monotonic()
        if now >= self._next_redrive:
            self._next_redrive = now + REDRIVE_SECONDS
            self._reports.redrive_notices(self.queues)
        if not self._schedules_refilled:
            for queue in self.queues:
                schedules.refill_queue(self.connection, queue.keys)
            self._schedules_refilled = True
        self._sync.flush_and_collect()
        self._loop.flush_and_collect()
        now = time.monotonic()
        if self._heartbeat.due_in(now) == 0:  # the list of runs is built only when sent
            running = [(r.lease.id, r.queue.name, r.started) for r in self._dispatch.runs()]
            self._heartbeat.beat(now, running, self.processed, self.failed)
        self._sync.enforce_timeouts(now)
        self._loop.enforce_timeouts(now)
        self._sync.hand_back_behind_slow_jobs(now)
        self._children.reap(self._sync.slots, now)
        if now >= self._leases.next_renewal:
            self._renew_leases()
        wait_ms = -1
        if not self._stopping:
            took, wait_ms = self._take_jobs()
            if burst and not took and not self._dispatch.holds_runs() and wait_ms != 0:
                return False
        for slot in self._sync.slots:
            slot.reported = False
        if self._reports.completions:
            self._reports.send_completions()
        self._wait_for_news(wait_ms)
        return True

    def _renew_leases(self) -> None:
        if self._leases.renew(self.queues, self._dispatch.runs(), self._lease_lost):
            self._sync.vouch()
            self._loop.vouch()

    def _lease_lost(self, run: Run) -> None:
        if not self._loop.lease_lost(run):
            self._sync.lease_lost(run)

    # -- taking jobs and sending them to children ---------------------------------------------

    def _take_jobs(self) -> tuple[list[calls.Lease], int]:
        """Lease jobs for idle slots (and prefetch), queues in order; leases and wait hint."""
        idle, extra = self._sync.wants(self.prefetch)
        took: list[calls.Lease] = []
        soonest = -1
        if not idle and not extra:
            return took, soonest
        wanted = sum(extra.values())
        for queue in self._order.next_turn():
            starts = len(idle)
            more = min(sum(extra.values()), self._order.share(queue, wanted))
            if starts + more <= 0:
                continue
            asked = time.monotonic()  # the leases run from (at the earliest) now
            if self._reports.completions:  # report results and take the next jobs at once
                result = self._reports.send_completions(queue, starts, more)
            else:
                result = calls.pop(
                    self.connection, queue.keys, starts, self.lease_ms, self.name, more
                )
            self._dispatch.hand_out(queue, result.leases, idle, extra, asked + self._leases.trust)
            took += result.leases
            if any(schedules.wants_refill(lease.record) for lease in result.leases):
                schedules.refill_queue(self.connection, queue.keys)  # a cron run asked for it
            if result.wait_ms >= 0 and (soonest < 0 or result.wait_ms < soonest):
                soonest = result.wait_ms
        if took:
            self._leases.renew_soon()
        return took, soonest

    # -- waiting --------------------------------------------------------------------------------

    def _before_fork(self) -> None:
        """End the waiting threads before a child is forked (see waiting.py); the next wait
        for work starts new ones."""
        if self._waiting is not None:
            self._waiting.stop_threads()

    def _wait_for_news(self, wait_ms: int) -> None:
        """Sleep until a child reports, a job may be ready, or something falls due."""
        now = time.monotonic()
        timeout = min(self._leases.next_renewal, now + self._heartbeat.due_in(now)) - now
        timeout = min(timeout, self._children.next_reap(self._sync.slots) - now)
        sync_watched, timeout = self._sync.watch(now, timeout)
        loop_watched, timeout = self._loop.watch(now, timeout)
        watched: dict[object, Slot | EventLoop] = {**sync_watched, **loop_watched}
        listen_for_jobs = not self._stopping and bool(self._sync.idle())
        if listen_for_jobs:
            if wait_ms == 0:
                return
            if wait_ms > 0:
                timeout = min(timeout, wait_ms / 1000)
            assert self._waiting is not None  # set while `work` runs
            self._waiting.arm()  # a blocking wait per queue, each waking us through the pipe
        self._wait(max(0.0, timeout), listen_for_jobs, watched)

    def _wait(
        self, timeout: float, listen_for_jobs: bool, watched: dict[object, Slot | EventLoop]
    ) -> None:
        assert self._pipe is not None  # set while `work` runs
        sources: list[Any] = [*watched, self._pipe.read_fd]
        for ready in wait_for_ready(sources, timeout):
            if ready == self._pipe.read_fd:
                self._pipe.drain()
                continue
            source = watched[ready]
            if isinstance(source, EventLoop):
                source.collect()
            else:
                self._sync.collect(source)
        if self._waiting is not None:
            for key, token in self._waiting.take():
                if not listen_for_jobs:
                    # Pass the wake-up on to another worker: this one has no room now.
                    self.connection.lpush(key, token)
