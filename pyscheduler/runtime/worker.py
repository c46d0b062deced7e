"""`Worker`: takes jobs from queues and runs them in supervised child processes.

The main process never runs handler code. It leases jobs (`psq_pop`), hands each to an idle
child, renews the leases while the children work, stops a child that passes its job's hard
timeout, and reports outcomes (`psq_complete` / `psq_fail`). When it has room for work and
nothing is ready, it blocks inside Redis (a BLPOP per queue on its wake list, see waiting.py)
and, for the next delayed job or lease deadline, on its own precise timer: no polling loop.

While jobs are short and the queue deep, a child gets several at once (prefetch, leased like
any other): the worker then looks at it once a tick, reports the results in one round trip
with the next pop, and gives back (`psq_release`) the jobs queued behind one that turns out
slow, so prefetch never makes a short job wait behind a long one for more than a tick or two.

What it leases is untrusted (anyone who can write the queue's keys can write a job): a record,
payload or checkpoint that is not UTF-8, or a record with a forged field, is refused here with
the reason, before any child sees it; the children turn anything else wrong with a job into its
outcome. A worker started while Redis is down waits for it, as a running one rides out an
outage.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import wait as wait_for_ready
from types import FrameType
from typing import Any

import redis

from ..client import splitting
from ..client.queue import Queue
from ..exceptions import LeaseLost, LibraryError, PySchedulerError
from ..store import calls
from ..store.keys import QueueKeys
from ..store.library import auto_load_requested, ensure_loaded, load
from ..store.protocol import COMPLETE_BATCH_MAX, FailKind, Status
from .allowlist import HandlerPolicy
from .async_executor import BLOCKED_LOOP_GRACE_SECONDS, AsyncExecutor
from .context import BadRecord, check_record
from .executor import DEFER, LOST, SUSPENDED, UNSTARTED, ChildProcess, Executor, Progress
from .live_workers import DEFAULT_HEARTBEAT_SECONDS, Heartbeat
from .logs import duration, plural, set_up_logging
from .waiting import WorkWaiting

log = logging.getLogger("pyscheduler.worker")


def _func_of(run: Run) -> str:
    """' (module:function)' of a run's handler, for log lines; '' when the record has none."""
    func = run.record.get("func")
    return f" ({func})" if isinstance(func, str) else ""


_FAILED_HOW = {
    FailKind.ERROR: "failed",
    FailKind.TIMEOUT: "timed out",
    FailKind.LOST: "lost its lease",
    FailKind.REFUSED: "was refused",
}


def _log_failure(
    run: Run, kind: FailKind, error: str, seconds: float | None, status: str, delay_ms: int
) -> None:
    """One line per failed run that says what happens next: a retry (when, which attempt of
    how many) or the end (for good)."""
    last_line = (error.strip().splitlines() or ["(no error text)"])[-1]
    how = _FAILED_HOW[kind]
    if seconds is not None:
        how += f" after {duration(seconds)}"
    attempt, retries = run.record.get("attempts"), run.record.get("retries", 0)
    of = ""  # the record is checked (context.check_record): both are counts when present
    if isinstance(attempt, int | float) and isinstance(retries, int | float):
        of = f" (attempt {int(attempt)} of {int(retries) + 1})"
    who = f"job {run.lease.id}{_func_of(run)}"
    if status == Status.FAILED:
        if kind == FailKind.REFUSED:
            of = " (never retried)"
        log.warning("%s %s for good%s: %s", who, how, of, last_line)
    else:
        when = "now" if delay_ms <= 0 else f"in {delay_ms / 1000:.1f} s"
        log.info("%s %s, retrying %s%s: %s", who, how, when, of, last_line)


def _text(data: bytes, what: str) -> str:
    """Bytes read from Redis as text; BadRecord when they are not UTF-8."""
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise BadRecord(
            f"the {what} is not valid UTF-8 (byte {data[exc.start]:#04x} at offset {exc.start})"
        ) from None


RECONNECT_BACKOFF_MAX = 5.0
# A worker waiting for Redis at start says so again this often.
WAITING_REMINDER_SECONDS = 60.0
# How often a worker looks for subtask outcomes that a crashed worker left undelivered.
REDRIVE_SECONDS = 5.0
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
# A child starts a job only while the worker knows its lease is held with this share of the
# lease to spare: a lease is counted as held until (time the pop or renewal was sent + lease
# * (1 - LEASE_SPARE)), and renewals come every third of a lease, so a loop that is on time
# never stops a start, and one paused past that point (SIGSTOP, swapping, a lost connection)
# never lets its children start a job that another worker may have reclaimed.
LEASE_SPARE = 1 / 3


@dataclass(eq=False)
class Run:
    """A job leased to this worker and sent to an executor, which may not have started it."""

    lease: calls.Lease
    queue: Queue
    timeout_s: float
    record: dict[str, Any]  # checked (see `context.check_record`); empty when refused
    refusal: str | None = None  # why the job cannot run: it is refused, never sent to a child
    # The payload and checkpoint as text, decoded (and so checked) once, until it is sent.
    texts: tuple[str, str | None] | None = None
    seq: int = -1
    started: float | None = None  # monotonic, once the child started it
    lost: bool = False  # its lease was lost while it ran on the event loop
    held_until: float = 0.0  # monotonic: its lease is known held, with room to spare, till then

    @property
    def timeout_at(self) -> float:
        return (self.started or time.monotonic()) + self.timeout_s


@dataclass(eq=False)
class Slot:
    """An executor and the runs sent to it, in the order it takes them."""

    executor: Executor
    runs: deque[Run] = field(default_factory=deque)
    pace: float | None = None  # running average of this child's job durations (s)
    reported: bool = False  # outcomes came in during this turn of the loop

    def target(self) -> int:
        """How many jobs to keep queued at this child: one, unless jobs are short."""
        if self.pace is None:
            return 1
        return max(1, min(PREFETCH_MAX, int(PREFETCH_SECONDS / max(self.pace, 1e-6))))

    def running(self) -> Run | None:
        run = self.runs[0] if self.runs else None
        return run if run is not None and run.started is not None else None


@dataclass(eq=False)
class LoopSlot:
    """The event-loop process and the `async def` jobs running on it (by seq)."""

    executor: AsyncExecutor
    capacity: int
    runs: dict[int, Run] = field(default_factory=dict)

    def room(self) -> int:
        return self.capacity - len(self.runs)


class Worker:
    """Runs jobs from `queues`, `concurrency` at a time.

    `async def` handlers run on one event-loop process, up to `concurrency` of them at once,
    beside the sync ones (each sync run has a process of its own). When the loop is full, an
    async job runs in a free process with an event loop of its own.

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
        connection: redis.Redis | None = None,
        name: str | None = None,
        lease_seconds: float = 10.0,
        strict: bool = False,
        allowed_modules: Sequence[str] = (),
        auto_load: bool | None = None,
        weights: Mapping[str, int] | None = None,
        prefetch: bool = True,
        heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS,
        log_jobs: bool = False,
    ) -> None:
        if not queues:
            raise ValueError("a worker needs at least one queue")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
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
        self._lease_trust = self.lease_ms / 1000 * (1 - LEASE_SPARE)
        self.policy = HandlerPolicy(strict=strict, allowed_modules=allowed_modules)
        self.auto_load = auto_load if auto_load is not None else self.queues[0].auto_load
        self.prefetch = prefetch
        self.log_jobs = log_jobs  # a log line per finished job, with its run time
        self.processed = 0
        self.failed = 0  # of the processed jobs, runs that failed (retried or for good)
        self.handed_back = 0  # prefetched jobs given back unstarted (see `_hand_back`)
        self._slots: list[Slot] = []
        self._loop: LoopSlot | None = None  # started for the first `async def` job
        self._async_funcs: set[str] = set()  # handlers known to be `async def`
        self._outbox: list[Callable[[], None]] = []  # reports to retry after a lost connection
        # Results not yet reported: sent with the next pop, or before the worker waits.
        self._completions: list[tuple[Run, str]] = []
        self._stopping = False
        self._aborting = False
        self._waiting: WorkWaiting | None = None  # the blocking waits, while `work` runs
        self._weights = self._check_weights(weights)
        self._turns = dict.fromkeys(self._weights, 0)
        self._next_renewal = 0.0
        self._disconnected_since: float | None = None
        self._library_missing_since: float | None = None
        self._reconnect_attempts = 0
        self._pause_requested = False
        self._next_redrive = 0.0
        self._errors_in_a_row = 0
        self._wake_fd = -1  # the wake-up pipe's read end while `work` runs
        # Lists this worker in each of its queues (`pyscheduler workers`) while it runs.
        self._heartbeat = Heartbeat(
            self.connection,
            [q.keys for q in self.queues],
            self.name,
            concurrency,
            heartbeat_seconds,
        )

    # -- life cycle ---------------------------------------------------------------------------

    def work(self, burst: bool = False) -> int:
        """Run until stopped (SIGTERM/SIGINT), or with `burst` until nothing is ready.

        Returns the number of jobs this worker finished (completed or failed). Logs to
        stderr when the application has not configured logging (see `logs.set_up_logging`).
        """
        restore_logging = set_up_logging()
        # Signals first: a worker waiting for Redis to come up stops on SIGTERM too.
        restore = self._install_signal_handlers()
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        previous_wakeup = self._set_wakeup_fd(wake_write)
        self._wake_fd = wake_read
        self._waiting = WorkWaiting(self.connection, [q.keys.wake for q in self.queues], wake_write)
        try:
            if not self._wait_for_redis():
                return self.processed
            self._slots = [
                Slot(Executor(self.policy, self.connection)) for _ in range(self.concurrency)
            ]
            log.info(
                "worker %s started on %s (concurrency %d)",
                self.name,
                ", ".join(q.name for q in self.queues),
                self.concurrency,
            )
            while True:
                try:
                    if not self._step(burst, wake_read):
                        break
                    self._reconnected()
                    self._errors_in_a_row = 0
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    self._connection_lost(exc)
                except LibraryError as exc:  # e.g. Redis restarted empty
                    self._library_missing(exc)
                except Exception as exc:  # no job may stop the worker
                    self._unexpected(exc)
        finally:
            self._wake_fd = -1
            for slot in self._slots:
                slot.executor.kill()
            if self._loop is not None:
                self._loop.executor.kill()
            self._waiting.close()  # before the pipe closes: its threads write to it
            self._waiting = None
            self._set_wakeup_fd(previous_wakeup)
            os.close(wake_read)
            os.close(wake_write)
            restore()
            self._heartbeat.leave()
            log.info("worker %s stopped after %s", self.name, plural(self.processed, "job"))
            restore_logging()
        return self.processed

    def _wait_for_redis(self) -> bool:
        """Wait, with backoff, until Redis answers and has the library; False when the worker
        was stopped meanwhile. A library that is missing or outdated (and not auto-loaded)
        raises LibraryError: that is a deployment to do, not an outage to ride out."""
        since = time.monotonic()
        next_reminder = 0.0
        while True:
            try:
                ensure_loaded(self.connection, self.auto_load)
            except redis.AuthenticationError:
                raise  # waiting would not help
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if self._disconnected_since is None:
                    self._disconnected_since = since
                now = time.monotonic()
                if now >= next_reminder:  # once, then now and then (a TLS set-up never heals)
                    next_reminder = now + WAITING_REMINDER_SECONDS
                    log.warning(
                        "cannot reach Redis (%s): waiting for it (%.0f s so far), with backoff",
                        exc,
                        now - since,
                    )
                if self._stopping:
                    log.info("stopped while waiting for Redis")
                    return False
                self._back_off()
                if self._stopping:
                    log.info("stopped while waiting for Redis")
                    return False
                continue
            self._connection_back()
            return True

    def _unexpected(self, exc: Exception) -> None:
        """Something no job should be able to cause went wrong: log it, pause, go on (jobs held
        now come back through their leases if their bookkeeping was cut short)."""
        self._errors_in_a_row += 1
        log.error("unexpected error in the worker loop (going on): %r", exc, exc_info=exc)
        if self._aborting:
            return
        delay = min(RECONNECT_BACKOFF_MAX, 0.05 * 2 ** min(self._errors_in_a_row, 10))
        self._sleep(delay)

    def stop(self) -> None:
        """Stop taking jobs; running ones finish (the first SIGTERM does this)."""
        self._stopping = True

    def _running_jobs(self) -> list[tuple[str, str, float | None]]:
        """(id, queue, monotonic start or None when not started) of every run held."""
        runs = [run for slot in self._slots for run in slot.runs]
        if self._loop is not None:
            runs += self._loop.runs.values()
        return [(run.lease.id, run.queue.name, run.started) for run in runs]

    def _holds_runs(self) -> bool:
        return any(slot.runs for slot in self._slots) or bool(self._loop and self._loop.runs)

    def _step(self, burst: bool, wake_fd: int) -> bool:
        """One turn of the main loop; False when the worker should exit."""
        if self._aborting:  # before the outbox: Redis may be gone, and it would raise again
            held = sum(len(slot.runs) for slot in self._slots)
            held += len(self._loop.runs) if self._loop else 0
            log.warning("stopping now: %d held jobs return via their leases", held)
            return False
        self._flush_outbox()
        if self._stopping and not self._pause_requested:
            self._pause_requested = True  # checkpointing jobs pause so the worker exits soon
            for slot in self._slots:
                if slot.runs:
                    slot.executor.request_pause()
            if self._loop is not None and self._loop.runs:
                self._loop.executor.request_pause()
            self._hand_back_unstarted()
        if self._stopping and not self._holds_runs():
            self._send_completions()
            return False
        now = time.monotonic()
        if now >= self._next_redrive:
            self._redrive_notices()
        for slot in self._slots:
            if slot.runs:
                self._flush_requests(slot)
                self._collect(slot)
        if self._loop is not None and self._loop.runs:
            self._flush_requests(self._loop)
            self._collect_loop(self._loop)
        now = time.monotonic()
        if self._heartbeat.due_in(now) == 0:  # the list of runs is built only when sent
            self._heartbeat.beat(now, self._running_jobs(), self.processed, self.failed)
        self._enforce_timeouts(now)
        self._enforce_loop_timeouts(now)
        self._hand_back_behind_slow_jobs(now)
        if now >= self._next_renewal:
            self._renew_leases()
        wait_ms = -1
        if not self._stopping:
            took, wait_ms = self._take_jobs()
            if burst and not took and not self._holds_runs() and wait_ms != 0:
                return False
        for slot in self._slots:
            slot.reported = False
        if self._completions:
            self._send_completions()
        self._wait_for_news(wait_ms, wake_fd)
        return True

    # -- taking and running jobs --------------------------------------------------------------

    def _wants(self) -> tuple[list[Slot], dict[int, int]]:
        """Slots with nothing to do, and how many more jobs each slot would queue up."""
        idle = [slot for slot in self._slots if not slot.runs]
        extra: dict[int, int] = {}
        if not self.prefetch:
            return idle, extra
        now = time.monotonic()
        for slot in self._slots:
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

    def _take_jobs(self) -> tuple[list[calls.Lease], int]:
        """Lease jobs for idle slots (and prefetch), queues in order; leases and wait hint."""
        idle, extra = self._wants()
        took: list[calls.Lease] = []
        soonest = -1
        if not idle and not extra:
            return took, soonest
        wanted = sum(extra.values())
        total_weight = sum(self._weights.values())
        for queue in self._queue_order():
            starts = len(idle)
            more = sum(extra.values())
            if self._weights:  # prefetch too is shared by weight
                more = min(more, -(-wanted * self._weights[queue.name] // total_weight))
            if starts + more <= 0:
                continue
            asked = time.monotonic()  # the leases run from (at the earliest) now
            if self._completions:  # report results and take the next jobs in one round trip
                result = self._send_completions(queue, starts, more)
            else:
                result = calls.pop(
                    self.connection, queue.keys, starts, self.lease_ms, self.name, more
                )
            self._hand_out(queue, result.leases, idle, extra, asked + self._lease_trust)
            took += result.leases
            if result.wait_ms >= 0 and (soonest < 0 or result.wait_ms < soonest):
                soonest = result.wait_ms
        if took:
            self._next_renewal = min(self._next_renewal, time.monotonic() + self.lease_ms / 3000)
        return took, soonest

    def _hand_out(
        self,
        queue: Queue,
        leases: list[calls.Lease],
        idle: list[Slot],
        extra: dict[int, int],
        held_until: float,
    ) -> None:
        """Send leased jobs to slots: one to each idle slot first, then prefetch."""
        batches: dict[int, list[Run]] = {}
        by_id = {id(slot): slot for slot in self._slots}
        runs = [self._make_run(queue, lease) for lease in leases]
        for run in runs:
            run.held_until = held_until
            if run.refusal is not None:
                self.processed += 1
                self._report_failure(run, FailKind.REFUSED, run.refusal)
        pending = self._send_to_loop([run for run in runs if run.refusal is None])
        while pending and idle:
            batches.setdefault(id(idle.pop(0)), []).append(pending.pop(0))
        for slot_id, count in list(extra.items()):
            take = min(count, len(pending))
            if take:
                batches.setdefault(slot_id, []).extend(pending[:take])
                del pending[:take]
            if count - take > 0:
                extra[slot_id] = count - take
            else:
                del extra[slot_id]
        for slot_id, runs in batches.items():
            slot = by_id[slot_id]
            requests = [self._request(queue, run) for run in runs]
            for run, seq in zip(runs, slot.executor.number(requests), strict=True):
                run.seq = seq
            slot.runs.extend(runs)
            self._vouch(slot.executor, slot.runs)
            try:
                slot.executor.submit(requests)
            except OSError:  # the child died since it last reported
                self._child_died(slot)
                continue
            if self._stopping:
                slot.executor.request_pause()
        assert not pending, "the library leased more jobs than asked for"

    def _make_run(self, queue: Queue, lease: calls.Lease) -> Run:
        """The run of a leased job, or, when its stored bytes cannot be trusted (see
        `context.check_record`), its refusal with the reason."""
        try:
            record = check_record(lease.record)
            texts = (
                _text(lease.payload, "job payload"),
                None if lease.checkpoint is None else _text(lease.checkpoint, "job checkpoint"),
            )
        except BadRecord as exc:
            return Run(lease, queue, queue.default_timeout, {}, refusal=str(exc))
        timeout = float(record.get("timeout") or queue.default_timeout)
        return Run(lease, queue, timeout, record, texts=texts)

    def _request(self, queue: Queue, run: Run) -> dict[str, Any]:
        lease = run.lease
        payload, checkpoint = run.texts or (
            lease.payload.decode(),  # checked by `_make_run`: a run sent again (deferred)
            None if lease.checkpoint is None else lease.checkpoint.decode(),
        )
        run.texts = None  # a big payload is not kept in memory while the job runs
        return {
            "queue": queue.name,
            "id": lease.id,
            "token": lease.token,
            "record": lease.record.decode(),
            "payload": payload,
            "checkpoint": checkpoint,
            "lease_ms": self.lease_ms,
            "timeout": run.timeout_s,
            # A sync process hands an `async def` job back when the event loop has room.
            "may_defer": self._loop_room() > 0,
        }

    # -- the event loop for `async def` handlers ----------------------------------------------

    def _loop_room(self) -> int:
        return self.concurrency if self._loop is None else self._loop.room()

    def _event_loop(self) -> LoopSlot:
        if self._loop is None:
            self._before_fork()
            executor = AsyncExecutor(self.policy, self.connection)
            self._loop = LoopSlot(executor, self.concurrency)
        return self._loop

    def _send_to_loop(self, runs: list[Run]) -> list[Run]:
        """Start the jobs of known `async def` handlers on the loop, while it has room;
        returns the other runs."""
        if not self._async_funcs:
            return runs
        rest: list[Run] = []
        on_loop: list[Run] = []
        room = self._loop_room()
        for run in runs:
            if len(on_loop) < room and run.record.get("func") in self._async_funcs:
                on_loop.append(run)
            else:
                rest.append(run)
        if on_loop:
            self._start_on_loop(on_loop)
        return rest

    def _start_on_loop(self, runs: list[Run]) -> None:
        loop = self._event_loop()
        requests = [self._request(run.queue, run) for run in runs]
        now = time.monotonic()
        for run, seq in zip(runs, loop.executor.number(requests), strict=True):
            run.seq, run.started = seq, now
            loop.runs[seq] = run
        self._vouch(loop.executor, loop.runs.values())
        try:
            loop.executor.submit(requests)
        except OSError:  # it died since it last reported
            self._loop_died(loop)
            return
        if self._stopping:
            loop.executor.request_pause()

    def _deferred(self, run: Run) -> None:
        """A sync process found an `async def` handler: run it on the loop, or, if the loop
        filled up meanwhile, give it back to its queue (it never ran; the next pop takes it)."""
        self._async_funcs.add(str(run.record.get("func")))
        if self._loop_room() > 0:
            self._start_on_loop([run])
        else:
            self._hand_back([run])

    def _collect_loop(self, loop: LoopSlot) -> None:
        outcomes = loop.executor.outcomes()
        if outcomes is None:
            self._loop_died(loop)
            return
        unstarted: list[Run] = []
        for outcome in outcomes:
            run = loop.runs.pop(int(outcome["seq"]), None)
            if run is None or run.lost:
                continue
            if outcome.get("kind") == UNSTARTED:
                unstarted.append(run)
            else:
                self._finish(run, outcome)
        if unstarted:
            self._not_started(unstarted)

    def _loop_died(self, loop: LoopSlot, blocker: Run | None = None) -> None:
        """The loop process died or was killed (`blocker` blocked it): fail its runs."""
        code = loop.executor.exit_code() if blocker is None else None
        runs = list(loop.runs.values())
        loop.runs.clear()
        self._before_fork()
        loop.executor.restart()
        for run in runs:
            if run.lost:
                continue
            self.processed += 1
            if run is blocker:
                self._report_failure(
                    run,
                    FailKind.TIMEOUT,
                    f"JobTimeout: the run passed its {run.timeout_s} s timeout and blocked"
                    " its event loop",
                )
            elif blocker is not None:
                self._report_failure(
                    run,
                    FailKind.ERROR,
                    f"stopped with the event loop process, which job {blocker.lease.id}"
                    " blocked past its timeout",
                )
            else:
                self._report_failure(
                    run, FailKind.ERROR, f"the event loop process died (exit code {code})"
                )

    def _check_weights(self, weights: Mapping[str, int] | None) -> dict[str, int]:
        if not weights:
            return {}
        names = {q.name for q in self.queues}
        for name, weight in weights.items():
            if name not in names:
                raise ValueError(f"weight given for {name!r}, which this worker does not take")
            if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
                raise ValueError(f"the weight of {name!r} must be a positive integer")
        return {q.name: weights.get(q.name, 1) for q in self.queues}

    def _queue_order(self) -> list[Queue]:
        """The queues in the order to ask them this turn (see the class docstring)."""
        if not self._weights:
            return self.queues
        total = sum(self._weights.values())
        for name, weight in self._weights.items():
            self._turns[name] += weight
        first = max(self.queues, key=lambda q: self._turns[q.name])
        self._turns[first.name] -= total
        rest = sorted(
            (q for q in self.queues if q is not first),
            key=lambda q: self._turns[q.name],
            reverse=True,
        )
        return [first, *rest]

    # -- following the children ---------------------------------------------------------------

    def _collect(self, slot: Slot) -> None:
        """Take in a child's outcomes and note which job it runs now."""
        progress = slot.executor.progress()  # before the outcomes: see `_note_start`
        outcomes = slot.executor.outcomes()
        if outcomes is None:
            self._child_died(slot)
            return
        unstarted = [run for outcome in outcomes if (run := self._take_outcome(slot, outcome))]
        if unstarted:
            self._not_started(unstarted)
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

    def _take_outcome(self, slot: Slot, outcome: dict[str, Any]) -> Run | None:
        """Take in one outcome; returns the run when the child did not start it (to hand
        back, see `_not_started`)."""
        seq = int(outcome["seq"])
        if not slot.runs or slot.runs[0].seq != seq:
            return None  # its lease was lost meanwhile
        run = slot.runs.popleft()
        kind = outcome.get("kind")
        if kind == UNSTARTED:
            return run
        if kind == DEFER:
            self._deferred(run)
            return None
        seconds = float(outcome.get("seconds", 0.0))
        slot.pace = (
            seconds if slot.pace is None else slot.pace + PACE_SMOOTHING * (seconds - slot.pace)
        )
        slot.reported = True
        self._finish(run, outcome)
        return None

    @staticmethod
    def _flush_requests(slot: Slot | LoopSlot) -> None:
        with contextlib.suppress(OSError):  # the child is gone: collecting finds out
            slot.executor.flush()

    def _child_died(self, slot: Slot) -> None:
        code = slot.executor.exit_code()
        running = self._stop_child(slot)
        if running is not None:
            self.processed += 1
            self._report_failure(
                running, FailKind.ERROR, f"the process running the job died (exit code {code})"
            )

    def _child_stuck(self, slot: Slot) -> None:
        log.warning("an executor process stopped answering: restarting it")
        running = self._stop_child(slot)
        if running is not None:
            self.processed += 1
            self._report_failure(
                running, FailKind.ERROR, "the process running the job stopped answering"
            )

    def _stop_child(self, slot: Slot) -> Run | None:
        """Kill a slot's child; take in the outcomes it sent before; hand back the runs it had
        not started; return the one it was running, if any (not reported yet)."""
        slot.executor.kill(keep_outcomes=True)
        unstarted: list[Run] = []
        for outcome in slot.executor.outcomes() or []:
            if (run := self._take_outcome(slot, outcome)) is not None:
                unstarted.append(run)
        started = slot.executor.started_seq_after_exit()
        running = next((run for run in slot.runs if run.seq == started), None)
        unstarted += [run for run in slot.runs if run.seq > started]
        slot.runs.clear()
        self._before_fork()
        slot.executor.start()
        self._hand_back(unstarted)
        return running

    def _take_back(self, slot: Slot, keep_first: bool = False) -> list[Run]:
        """Runs of a slot that its child will now never start (they are no longer held).

        With `keep_first`, the first run stays, started or not (a stopping worker lets the
        job its child is taking up run, and pause at its first checkpoint).
        """
        first = slot.runs[0] if slot.runs else None
        if first is None or (len(slot.runs) == 1 and (keep_first or first.started is not None)):
            return []
        kept = slot.executor.take_back(first.seq if keep_first else -1)
        if kept is None:
            self._child_stuck(slot)
            return []
        taken = [run for run in slot.runs if run.seq > kept]
        for _ in taken:
            slot.runs.pop()
        return taken

    def _hand_back(self, runs: Sequence[Run]) -> None:
        """Give leased jobs that never started back to their queues, in their places."""
        by_queue: dict[str, list[Run]] = {}
        for run in runs:
            by_queue.setdefault(run.queue.name, []).append(run)
        for group in by_queue.values():
            held = [(run.lease.id, run.lease.token) for run in group]
            keys = group[0].queue.keys

            def release(keys: QueueKeys = keys, held: list[tuple[str, str]] = held) -> None:
                self.handed_back += calls.release(self.connection, keys, held)

            self._send_or_keep(release)

    def _not_started(self, runs: list[Run]) -> None:
        """A child refused to start these runs: their leases were not known held (this
        worker was paused or cut off past them). Hand back those still held; the others are
        another worker's by now, or will be reclaimed."""
        log.warning(
            "%d leased %s not started: %s not renewed in time (the worker was paused or cut off"
            " from Redis); handing %s back",
            len(runs),
            "job" if len(runs) == 1 else "jobs",
            "its lease was" if len(runs) == 1 else "their leases were",
            "it" if len(runs) == 1 else "them",
        )
        self._hand_back(runs)

    def _hand_back_unstarted(self) -> None:
        for slot in self._slots:
            if slot.runs:
                self._collect(slot)
                self._hand_back(self._take_back(slot, keep_first=True))

    def _hand_back_behind_slow_jobs(self, now: float) -> None:
        for slot in self._slots:
            running = slot.running()
            if (
                running is not None
                and len(slot.runs) > 1
                and now - (running.started or now) >= SLOW_SECONDS
            ):
                self._hand_back(self._take_back(slot))

    def _finish(self, run: Run, outcome: dict[str, Any]) -> None:
        lease = run.lease
        if outcome.get("kind") in (SUSPENDED, LOST):
            what = "paused or split" if outcome["kind"] == SUSPENDED else "lost its lease"
            log.info("job %s %s", lease.id, what)
            return
        self.processed += 1
        seconds = float(outcome.get("seconds", 0.0))
        if outcome.get("ok") and self.log_jobs:
            log.info("job %s%s finished in %s", lease.id, _func_of(run), duration(seconds))
        if outcome.get("ok") and not isinstance(run.record.get("parent"), dict):
            self._completions.append((run, str(outcome["result"])))
        elif outcome.get("ok"):  # a subtask: its parent is told right after
            result = str(outcome["result"])

            def send_result() -> None:
                calls.complete(self.connection, run.queue.keys, lease.id, lease.token, result)
                self._tell_parent(run, True, result)

            self._report(send_result, run, "result")
        else:
            self._report_failure(
                run, FailKind(outcome["kind"]), str(outcome["error"]), seconds=seconds
            )

    def _send_completions(
        self, pop_from: Queue | None = None, want: int = 0, extra: int = 0
    ) -> calls.PopResult:
        """Report finished runs' results in one round trip, with the next pop when asked."""
        done, self._completions = self._completions, []
        batches: dict[str, list[tuple[Run, str]]] = {}
        for run, result in done:
            batches.setdefault(run.queue.name, []).append((run, result))
        chunks = [
            batch[i : i + COMPLETE_BATCH_MAX]
            for batch in batches.values()
            for i in range(0, len(batch), COMPLETE_BATCH_MAX)
        ]
        pipe = self.connection.pipeline(transaction=False)
        for chunk in chunks:
            items = [(run.lease.id, run.lease.token, result) for run, result in chunk]
            numkeys, call = calls.complete_many_args(chunk[0][0].queue.keys, items)
            pipe.fcall("psq_complete_many", numkeys, *call)
        if pop_from is not None:
            call = calls.pop_args(pop_from.keys, want, self.lease_ms, self.name, extra)
            pipe.fcall("psq_pop", calls.POP_NUMKEYS, *call)
        try:
            replies = pipe.execute(raise_on_error=False)
        except (redis.ConnectionError, redis.TimeoutError):
            self._completions = done + self._completions  # sent again once Redis is back
            raise
        for chunk, reply in zip(chunks, replies, strict=False):
            self._check_completions(chunk, reply)
        if pop_from is None:
            return calls.PopResult([], -1)
        popped = replies[-1]
        if isinstance(popped, redis.ResponseError):
            calls.raise_mapped(popped)
        return calls.parse_pop_reply(pop_from.keys, popped)

    @staticmethod
    def _check_completions(chunk: list[tuple[Run, str]], reply: Any) -> None:
        """Log the results the library did not store (their lease was lost, say)."""
        try:
            if isinstance(reply, redis.ResponseError):
                calls.raise_mapped(reply)
            outcomes = calls.parse_complete_many_reply(reply)
        except (PySchedulerError, redis.ResponseError) as exc:
            log.error("results of %d jobs not stored: %s", len(chunk), exc)
            return
        for (run, _), outcome in zip(chunk, outcomes, strict=False):
            if isinstance(outcome, LeaseLost):
                log.warning("late result of job %s refused: %s", run.lease.id, outcome)
            elif isinstance(outcome, PySchedulerError):
                log.error("result of job %s not stored: %s", run.lease.id, outcome)

    def _report_failure(
        self, run: Run, kind: FailKind, error: str, seconds: float | None = None
    ) -> None:
        lease = run.lease
        jitter = random.random()
        self.failed += 1

        def send_failure() -> None:
            status, delay_ms = calls.fail(
                self.connection, run.queue.keys, lease.id, lease.token, kind, error, jitter
            )
            _log_failure(run, kind, error, seconds, status, delay_ms)
            if status == Status.FAILED:
                self._tell_parent(run, False, error)

        self._report(send_failure, run, "failure")

    def _tell_parent(self, run: Run, ok: bool, value: str) -> None:
        """A subtask ended for good: record it in its parent's queue (see splitting.py)."""
        parent = run.record.get("parent")
        if isinstance(parent, dict):
            splitting.deliver_notice(
                self.connection, run.queue.keys, run.lease.id, calls.ParentRef(**parent), ok, value
            )

    def _redrive_notices(self) -> None:
        """Deliver subtask outcomes a crashed worker left undelivered (bounded per call)."""
        self._next_redrive = time.monotonic() + REDRIVE_SECONDS
        for queue in self.queues:
            try:
                splitting.redrive_notices(self.connection, queue.keys)
            except (redis.ConnectionError, redis.TimeoutError, LibraryError):
                raise
            except Exception as exc:  # a notice naming a forged parent, say
                log.error("could not deliver subtask outcomes of %s: %r", queue.name, exc)

    def _report(self, send: Callable[[], object], run: Run, what: str) -> None:
        def attempt() -> None:
            try:
                send()
            except LeaseLost as exc:
                log.warning("late %s of job %s refused: %s", what, run.lease.id, exc)
            except LibraryError:
                raise  # the library is gone: the main loop waits for it
            except (PySchedulerError, redis.ResponseError) as exc:
                # Refused by the library (a record it cannot use, say): the job's lease
                # brings it back or fails it; this worker goes on with the others.
                log.error("%s of job %s not recorded: %s", what, run.lease.id, exc)

        self._send_or_keep(attempt)

    def _send_or_keep(self, attempt: Callable[[], None]) -> None:
        """Send a report now, or keep it for when Redis is back (reports are idempotent: the
        fencing token refuses a repeat). Never raises on a lost connection, so bookkeeping
        that follows a report is never cut short; the main loop's next call notices."""
        if self._outbox:  # keep the order: earlier reports go first
            self._outbox.append(attempt)
            return
        try:
            attempt()
        except (redis.ConnectionError, redis.TimeoutError):
            self._outbox.append(attempt)

    def _flush_outbox(self) -> None:
        while self._outbox:
            self._outbox[0]()
            self._outbox.pop(0)

    def _enforce_timeouts(self, now: float) -> None:
        for slot in self._slots:
            running = slot.running()
            if running is None or now < running.timeout_at:
                continue
            # Make sure the child starts nothing else, then see whether the job just ended.
            self._hand_back(self._take_back(slot))
            self._collect(slot)
            if slot.running() is not running:
                continue
            log.warning(
                "job %s passed its %s s timeout: stopping it", running.lease.id, running.timeout_s
            )
            self._stop_child(slot)
            self.processed += 1
            self._report_failure(
                running,
                FailKind.TIMEOUT,
                f"JobTimeout: the run passed its {running.timeout_s} s timeout",
            )

    def _enforce_loop_timeouts(self, now: float) -> None:
        loop = self._loop
        if loop is None:
            return
        for run in loop.runs.values():
            if now >= run.timeout_at + BLOCKED_LOOP_GRACE_SECONDS:
                self._collect_loop(loop)  # its cancellation may have just come in
                if run in loop.runs.values():
                    log.warning(
                        "job %s blocks the event loop past its %s s timeout: stopping the loop",
                        run.lease.id,
                        run.timeout_s,
                    )
                    self._loop_died(loop, blocker=run)
                return

    def _renew_leases(self) -> None:
        self._next_renewal = time.monotonic() + self.lease_ms / 3000
        renewed = False
        for queue in self.queues:
            runs = [run for slot in self._slots for run in slot.runs if run.queue is queue]
            if self._loop is not None:
                runs += [r for r in self._loop.runs.values() if r.queue is queue and not r.lost]
            if not runs:
                continue
            held = [(r.lease.id, r.lease.token) for r in runs]
            held_until = time.monotonic() + self._lease_trust
            deadlines = calls.renew(self.connection, queue.keys, self.lease_ms, held)
            renewed = True
            lost: list[Run] = []
            for run, deadline in zip(runs, deadlines, strict=True):
                if deadline == 0:
                    lost.append(run)
                else:
                    run.held_until = held_until
            for run in lost:
                self._lease_lost(run)
        if renewed:
            for slot in self._slots:
                if slot.runs:
                    self._vouch(slot.executor, slot.runs)
            if self._loop is not None and self._loop.runs:
                self._vouch(self._loop.executor, self._loop.runs.values())

    @staticmethod
    def _vouch(executor: ChildProcess, runs: Iterable[Run]) -> None:
        """Tell a child until when it may start the jobs sent to it: while every lease it was
        sent is known held (a lost one is being taken back and stops nothing else)."""
        held = [run.held_until for run in runs if not run.lost]
        if held:
            executor.hold_until(min(held))

    def _lease_lost(self, run: Run) -> None:
        if self._loop is not None and self._loop.runs.get(run.seq) is run:
            # A task cannot be stopped from here: it keeps its place on the loop (and its
            # timeout) until it ends, and its outcome is ignored (its results and checkpoints
            # are refused anyway: the token no longer holds).
            log.warning("job %s lost its lease (cancelled or reclaimed)", run.lease.id)
            run.lost = True
            return
        slot = next((s for s in self._slots if run in s.runs), None)
        if slot is None:
            return
        log.warning("job %s lost its lease (cancelled or reclaimed): stopping it", run.lease.id)
        # Take back everything the child has not started (the lost one is refused by the
        # library, the others go back to their places); if it runs the lost one, kill it.
        self._hand_back(self._take_back(slot))
        self._collect(slot)
        if run in slot.runs:
            self._stop_child(slot)

    # -- waiting --------------------------------------------------------------------------------

    def _before_fork(self) -> None:
        """End the waiting threads before a child is forked (see waiting.py); the next wait
        for work starts new ones."""
        if self._waiting is not None:
            self._waiting.stop_threads()

    def _wait_for_news(self, wait_ms: int, wake_fd: int) -> None:
        """Sleep until a child reports, a job may be ready, or something falls due."""
        now = time.monotonic()
        timeout = min(self._next_renewal, now + self._heartbeat.due_in(now)) - now
        watched: dict[object, Slot | LoopSlot] = {}
        for slot in self._slots:
            if not slot.runs:
                continue
            if len(slot.runs) > 1 or slot.executor.unsent:
                # A child working through queued jobs reports many times a tick: look at it
                # once a tick instead of waking up for each job (and send it what is left).
                timeout = min(timeout, TICK_SECONDS)
            else:
                watched[slot.executor.conn] = slot
            timeout = min(timeout, slot.runs[0].timeout_at - now)
        if self._loop is not None and self._loop.runs:
            watched[self._loop.executor.conn] = self._loop
            soonest = min(run.timeout_at for run in self._loop.runs.values())
            timeout = min(timeout, soonest + BLOCKED_LOOP_GRACE_SECONDS - now)
            if self._loop.executor.unsent:
                timeout = min(timeout, TICK_SECONDS)
        listen_for_jobs = not self._stopping and any(not slot.runs for slot in self._slots)
        if listen_for_jobs:
            if wait_ms == 0:
                return
            if wait_ms > 0:
                timeout = min(timeout, wait_ms / 1000)
            assert self._waiting is not None  # set while `work` runs
            self._waiting.arm()  # a blocking wait per queue, each waking us through the pipe
        self._wait(max(0.0, timeout), listen_for_jobs, wake_fd, watched)

    def _wait(
        self,
        timeout: float,
        listen_for_jobs: bool,
        wake_fd: int,
        watched: dict[object, Slot | LoopSlot],
    ) -> None:
        sources: list[Any] = [*watched, wake_fd]
        for ready in wait_for_ready(sources, timeout):
            if ready is wake_fd:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_fd, 512)
            else:
                source = watched[ready]
                if isinstance(source, LoopSlot):
                    self._collect_loop(source)
                else:
                    self._collect(source)
        if self._waiting is not None:
            for key, token in self._waiting.take():
                if not listen_for_jobs:
                    # Pass the wake-up on to another worker: this one has no room now.
                    self.connection.lpush(key, token)

    # -- signals and connection loss ------------------------------------------------------------

    def _install_signal_handlers(self) -> Callable[[], None]:
        def on_signal(signum: int, frame: FrameType | None) -> None:
            if self._stopping:
                self._aborting = True
            else:
                log.info(
                    "got %s: finishing running jobs, then exiting (again to stop now)",
                    signal.Signals(signum).name,
                )
                self._stopping = True

        try:
            previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        except ValueError:  # not the main thread: the caller stops us with stop()
            return lambda: None

        def restore() -> None:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

        return restore

    @staticmethod
    def _set_wakeup_fd(fd: int) -> int:
        try:
            return signal.set_wakeup_fd(fd)
        except ValueError:
            return -1

    def _connection_lost(self, exc: Exception) -> None:
        now = time.monotonic()
        if self._disconnected_since is None:
            self._disconnected_since = now
            log.warning("lost the connection to Redis (%s): retrying with backoff", exc)
        self._back_off()

    def _library_missing(self, exc: LibraryError) -> None:
        """The library vanished from Redis: load it when allowed, else wait for a deployment."""
        self._connection_back()  # Redis answered
        if auto_load_requested(self.auto_load):
            log.warning(
                "the pyscheduler Lua library is not loaded in Redis: loading it (auto-load)"
            )
            try:
                load(self.connection)
            except redis.RedisError as failed:
                log.warning("could not load the library (%s): retrying with backoff", failed)
                self._back_off()
            return
        if self._library_missing_since is None:
            self._library_missing_since = time.monotonic()
            log.warning("%s; retrying with backoff", exc)
        self._back_off()

    def _back_off(self) -> None:
        if self._aborting:
            return
        self._reconnect_attempts += 1
        self._sleep(min(RECONNECT_BACKOFF_MAX, 0.05 * 2 ** min(self._reconnect_attempts, 10)))

    def _sleep(self, seconds: float) -> None:
        """Sleep, but wake up at a signal (its handler writes to the wake-up pipe)."""
        if self._wake_fd < 0:
            time.sleep(seconds)
            return
        for _ in wait_for_ready([self._wake_fd], seconds):
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_fd, 512)

    def _reconnected(self) -> None:
        self._connection_back()
        if self._library_missing_since is not None:
            log.warning(
                "the pyscheduler library is back after %.1f s",
                time.monotonic() - self._library_missing_since,
            )
            self._library_missing_since = None
            self._reconnect_attempts = 0

    def _connection_back(self) -> None:
        if self._disconnected_since is not None:
            log.warning(
                "connection to Redis is back after %.1f s",
                time.monotonic() - self._disconnected_since,
            )
            self._disconnected_since = None
            self._reconnect_attempts = 0
