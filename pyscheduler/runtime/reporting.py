"""Reporting what became of runs: results, failures, hand-backs, and the outbox.

Results of plain jobs wait in `completions` and go in one round trip with the next pop (or
before the worker waits). Every other report is sent at once or, when Redis is out of reach,
kept in the outbox and sent in order once it is back: reports are idempotent (the fencing
token refuses a repeat), so a report sent twice does no harm.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import redis

from ..client import dependencies, splitting
from ..client.queue import Queue
from ..client.tasks import retried
from ..exceptions import LeaseLost, LibraryError, PySchedulerError
from ..store import calls
from ..store.connection import Client, pipeline
from ..store.keys import QueueKeys
from ..store.protocol import COMPLETE_BATCH_MAX, RELEASE_BATCH_MAX, FailKind, Status
from .child_protocol import Outcome, OutcomeKind
from .logs import duration
from .outages import OUTAGE_ERRORS
from .runs import Run

log = logging.getLogger("pyscheduler.worker")

# A lost connection or cluster outage, or the library gone: the worker's loop handles them.
OUTAGES_OR_NO_LIBRARY: tuple[type[Exception], ...] = (*OUTAGE_ERRORS, LibraryError)

_FAILED_HOW = {
    FailKind.ERROR: "failed",
    FailKind.TIMEOUT: "timed out",
    FailKind.LOST: "lost its lease",
    FailKind.REFUSED: "was refused",
}


def _func_of(run: Run) -> str:
    """' (module:function)' of a run's handler, for log lines; '' when the record has none."""
    return f" ({run.func})" if run.func else ""


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


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    return (items[i : i + size] for i in range(0, len(items), size))


class Reporter:
    """Sends a worker's reports (see the module docstring) and counts what it finished."""

    def __init__(self, connection: Client, name: str, lease_ms: int, log_jobs: bool) -> None:
        self.connection = connection
        self.name = name
        self.lease_ms = lease_ms
        self.log_jobs = log_jobs  # a log line per finished job, with its run time
        self.processed = 0
        self.failed = 0  # of the processed jobs, runs that failed (retried or for good)
        self.handed_back = 0  # leased jobs given back unstarted
        self._outbox: list[Callable[[], None]] = []  # reports to retry after a lost connection
        self.completions: list[tuple[Run, bytes]] = []  # sent with the next pop

    # -- outcomes ---------------------------------------------------------------------------

    def finish(self, run: Run, outcome: Outcome) -> None:
        """Report the outcome of a run its child started."""
        lease = run.lease
        if outcome.kind in (OutcomeKind.SUSPENDED, OutcomeKind.LOST):
            what = "paused or split" if outcome.kind is OutcomeKind.SUSPENDED else "lost its lease"
            log.info("job %s %s", lease.id, what)
            return
        if not outcome.ok:
            retry = outcome.kind is not OutcomeKind.FINAL
            self.fail(run, outcome.kind.fail_kind, outcome.error, outcome.seconds, retry)
            return
        self.processed += 1
        if self.log_jobs:
            log.info("job %s%s finished in %s", lease.id, _func_of(run), duration(outcome.seconds))
        if not isinstance(run.record.get("parent"), dict):
            self.completions.append((run, outcome.result))
            return
        result = outcome.result.decode()  # a subtask: its parent is told right after

        def send_result() -> None:
            done = calls.complete(self.connection, run.queue.keys, lease.id, lease.token, result)
            if isinstance(done, calls.Completed):
                self._tell_dependents(run, done.dependents, True, Status.COMPLETE)
            self._tell_parent(run, True, result)

        self._report(send_result, run, "result")

    def fail(
        self,
        run: Run,
        kind: FailKind,
        error: str,
        seconds: float | None = None,
        retry: bool = True,
    ) -> None:
        """Report a failed run; `retry=False`: its error is not one the job's retry_on lists
        (a timeout counts as a TimeoutError), so it fails for good now."""
        lease = run.lease
        jitter = random.random()
        self.processed += 1
        self.failed += 1
        if kind is FailKind.TIMEOUT and not retried(TimeoutError, run.record.get("retry_on")):
            retry = False

        def send_failure() -> None:
            failed = calls.fail_run(
                self.connection, run.queue.keys, lease.id, lease.token, kind, error, jitter, retry
            )
            _log_failure(run, kind, error, seconds, failed.status, failed.delay_ms)
            if failed.status == Status.FAILED:
                if failed.dependents:
                    self._tell_dependents(run, failed.dependents, False, Status.FAILED)
                self._tell_parent(run, False, error)

        self._report(send_failure, run, "failure")

    def _tell_dependents(
        self, run: Run, dependents: Sequence[tuple[str, str]], ok: bool, status: str
    ) -> None:
        """A job others depend on ended: record it in their queues (see dependencies.py), then
        forget its notice unless its parent is told next (that forgets it)."""
        keys = run.queue.keys
        dependencies.tell_dependents(self.connection, keys, run.lease.id, dependents, ok, status)
        if not isinstance(run.record.get("parent"), dict):
            dependencies.forget(self.connection, keys, run.lease.id)

    def _tell_parent(self, run: Run, ok: bool, value: str) -> None:
        """A subtask ended for good: record it in its parent's queue (see splitting.py)."""
        parent = run.record.get("parent")
        if isinstance(parent, dict):
            splitting.deliver_notice(
                self.connection, run.queue.keys, run.lease.id, calls.ParentRef(**parent), ok, value
            )

    def redrive_notices(self, queues: Iterable[Queue]) -> None:
        """Deliver subtask outcomes a crashed worker left undelivered (bounded per call)."""
        for queue in queues:
            try:
                splitting.redrive_notices(self.connection, queue.keys)
            except OUTAGES_OR_NO_LIBRARY:
                raise
            except Exception as exc:  # a notice naming a forged parent, say
                log.error("could not deliver subtask outcomes of %s: %r", queue.name, exc)

    # -- handing back -----------------------------------------------------------------------

    def hand_back(self, runs: Sequence[Run]) -> None:
        """Give leased jobs that never started back to their queues, in their places."""
        by_queue: dict[str, list[Run]] = {}
        for run in runs:
            by_queue.setdefault(run.queue.name, []).append(run)
        for group in by_queue.values():
            keys = group[0].queue.keys
            for chunk in _chunks([(r.lease.id, r.lease.token) for r in group], RELEASE_BATCH_MAX):

                def release(keys: QueueKeys = keys, held: Any = chunk) -> None:
                    self.handed_back += calls.release(self.connection, keys, held)

                self._send_or_keep(release)

    def not_started(self, runs: list[Run]) -> None:
        """A child refused to start these runs: their leases were not known held (this
        worker was paused or cut off past them). Hand back those still held; the others are
        another worker's by now, or will be reclaimed."""
        one = len(runs) == 1
        log.warning(
            "%d leased %s not started: %s not renewed in time (the worker was paused or cut off"
            " from Redis); handing %s back",
            len(runs),
            "job" if one else "jobs",
            "its lease was" if one else "their leases were",
            "it" if one else "them",
        )
        self.hand_back(runs)

    # -- sending ----------------------------------------------------------------------------

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
        """Send a report now, or keep it for when Redis is back. Never raises on a lost
        connection, so bookkeeping that follows a report is never cut short; the main loop's
        next call notices."""
        if self._outbox:  # keep the order: earlier reports go first
            self._outbox.append(attempt)
            return
        try:
            attempt()
        except OUTAGE_ERRORS:
            self._outbox.append(attempt)

    def flush_outbox(self) -> None:
        while self._outbox:
            self._outbox[0]()
            self._outbox.pop(0)

    def send_completions(
        self, pop_from: Queue | None = None, want: int = 0, extra: int = 0
    ) -> calls.PopResult:
        """Report finished runs' results in one round trip, with the next pop when asked."""
        done, self.completions = self.completions, []
        batches: dict[str, list[tuple[Run, bytes]]] = {}
        for run, result in done:
            batches.setdefault(run.queue.name, []).append((run, result))
        chunks = [chunk for b in batches.values() for chunk in _chunks(b, COMPLETE_BATCH_MAX)]
        pipe = pipeline(self.connection)
        for chunk in chunks:
            items: Any = [(run.lease.id, run.lease.token, result) for run, result in chunk]
            numkeys, call = calls.complete_many_args(chunk[0][0].queue.keys, items)
            pipe.fcall("psq_complete_many", numkeys, *call)
        if pop_from is not None:
            call = calls.pop_args(pop_from.keys, want, self.lease_ms, self.name, extra)
            pipe.fcall("psq_pop", calls.POP_NUMKEYS, *call)
        try:
            replies = pipe.execute(raise_on_error=False)
        except OUTAGE_ERRORS:
            self.completions = done + self.completions  # sent again once Redis is back
            raise
        # On a cluster one shard may be down (CLUSTERDOWN) while the others took their
        # results: only that shard's results are sent again.
        outages = [
            (c, r) for c, r in zip(chunks, replies, strict=False) if isinstance(r, OUTAGE_ERRORS)
        ]
        for chunk, reply in zip(chunks, replies, strict=False):
            if not isinstance(reply, OUTAGE_ERRORS):
                self._check_completions(chunk, reply)
        if outages:
            self.completions = [item for chunk, _ in outages for item in chunk] + self.completions
            if pop_from is None:
                raise outages[0][1]  # the worker backs off; jobs a pop leased are run first
        if pop_from is None:
            return calls.PopResult([], -1)
        popped = replies[-1]
        if isinstance(popped, redis.ResponseError):
            calls.raise_mapped(popped)
        return calls.parse_pop_reply(pop_from.keys, popped)

    def _report_dependents(self, run: Run, dependents: list[tuple[str, str]]) -> None:
        def send() -> None:
            self._tell_dependents(run, dependents, True, Status.COMPLETE)

        self._report(send, run, "end (to its dependents)")

    def _check_completions(self, chunk: Sequence[tuple[Run, bytes]], reply: Any) -> None:
        """Log the results the library did not store (their lease was lost, say); tell the
        dependents of the jobs others depend on."""
        try:
            if isinstance(reply, redis.ResponseError):
                calls.raise_mapped(reply)
            outcomes = calls.parse_complete_many_reply(reply)
        except (PySchedulerError, redis.ResponseError) as exc:
            log.error("results of %d jobs not stored: %s", len(chunk), exc)
            return
        for (run, _), outcome in zip(chunk, outcomes, strict=False):
            if isinstance(outcome, calls.Completed):
                self._report_dependents(run, outcome.dependents)
            if isinstance(outcome, LeaseLost):
                log.warning("late result of job %s refused: %s", run.lease.id, outcome)
            elif isinstance(outcome, PySchedulerError):
                log.error("result of job %s not stored: %s", run.lease.id, outcome)
