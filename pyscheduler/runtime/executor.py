"""Sync child processes that run handlers, so a stuck handler can be stopped by killing it.

The worker sends a child `RunRequest` frames and the child answers each with an `Outcome`
frame, in order (child_protocol.py; the worker's side of the pipe is child_process.py). A
request the worker took back (`Executor.take_back`) is skipped without an answer.

Lease-safe starts: the worker keeps, in memory it shares with the child, the time
(`time.monotonic()`, system-wide) until which it knows the leases of the jobs it sent are held
with room to spare, and moves it on after each pop and renewal. The child starts a request
only before that time, else answers it UNSTARTED (the worker hands it back): a worker paused
past its leases (SIGSTOP, a long GC pause, a lost connection) cannot start, when it resumes,
a job another worker has reclaimed meanwhile.

A child runs the handler with the job's context at hand (`pyscheduler.current_job()`); it uses
the worker's Redis client (redis-py opens fresh connections after the fork) for checkpoints
and splits. SIGUSR1 asks the running job to pause at its next checkpoint (worker shutdown).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Lock
from typing import Any

from ..store.connection import Client
from .allowlist import HandlerPolicy
from .child_process import ChildProcess
from .child_protocol import (
    FrameError,
    FrameStream,
    Outcome,
    OutcomeKind,
    SocketReads,
    decode_request,
)
from .handler_calls import flush_output, outcome_of, run_call, send_outcome, set_up_child

# The slots of an executor's shared progress record (doubles; a seq fits exactly).
_STARTED, _STARTED_AT, _SKIP_FROM, _SKIP_TO, _HELD_UNTIL = range(5)
# How long the worker waits for the progress lock before it calls the child stuck (a child
# killed while it held the lock never gives it back).
_LOCK_TIMEOUT = 1.0


def _child_main(
    conn: Connection,
    parent_pid: int,
    policy: HandlerPolicy,
    connection: Client,
    lock: Lock,
    progress: Any,
) -> None:
    set_up_child(parent_pid)
    fd = conn.fileno()
    frames = FrameStream(SocketReads(socket.socket(fileno=os.dup(fd))).read)
    # The worker never blocks sending requests (see child_process.py), so this process's
    # blocking outcome writes cannot deadlock.
    while True:
        try:
            framed = frames.next()
        except (FrameError, OSError):  # no frame boundary to read on from: the worker restarts us
            return
        if framed is None:
            return
        try:
            request = decode_request(*framed)
        except FrameError as exc:  # framed, but not a request: answer it, live on
            send_outcome(
                fd, Outcome(-1 if exc.seq is None else exc.seq, OutcomeKind.REFUSED, error=str(exc))
            )
            continue
        seq = request.seq
        with lock:
            taken_back = progress[_SKIP_FROM] <= seq < progress[_SKIP_TO]
            now = time.monotonic()
            held = now < progress[_HELD_UNTIL]
            if held and not taken_back:
                progress[_STARTED_AT] = now
                progress[_STARTED] = seq
        if taken_back:
            continue
        if not held:
            send_outcome(fd, Outcome(seq, OutcomeKind.UNSTARTED))
            continue
        began = time.monotonic()
        try:
            outcome = run_call(policy, connection, request)
        except Exception as error:  # not the handler's: run_call catches those
            outcome = outcome_of(seq, error)
        outcome.seconds = time.monotonic() - began
        flush_output()
        send_outcome(fd, outcome)


@dataclass(frozen=True, slots=True)
class Progress:
    """Which request the child started last, and when (time.monotonic(), system-wide)."""

    started_seq: int
    started_at: float


class Executor(ChildProcess):
    """A child process that runs the requests sent to it in order, one at a time.

    Requests are numbered (`seq`, increasing) as they are sent, so the worker can send several
    at once (prefetched jobs) and the child works through them. A shared progress record says
    which one the child started last and when; under its lock the worker can take back the
    ones not started yet (`take_back`), so a job never starts after the worker has handed it
    back to its queue.
    """

    def _child_target(self) -> tuple[Callable[..., None], tuple[Any, ...]]:
        context = multiprocessing.get_context("fork")
        self._lock = context.Lock()
        self._progress: Any = context.RawArray("d", 5)
        self._progress[_STARTED] = -1.0
        self._progress[_HELD_UNTIL] = math.inf
        return _child_main, (self._lock, self._progress)

    def hold_until(self, when: float) -> None:
        # Without the lock: one aligned double is written whole, and the child reads it after
        # the request it sent (a pipe read orders the two). No lock per job on this path.
        self._progress[_HELD_UNTIL] = when

    def progress(self) -> Progress | None:
        """What the child started last; None when its lock stays taken (the child is stuck)."""
        if not self._lock.acquire(timeout=_LOCK_TIMEOUT):
            return None
        try:
            return Progress(int(self._progress[_STARTED]), float(self._progress[_STARTED_AT]))
        finally:
            self._lock.release()

    def take_back(self, keep_through: int = -1) -> int | None:
        """Stop the child from starting any request sent so far that it has not started,
        except those numbered up to `keep_through`.

        Returns the seq after which every request is taken back (the one the child started
        last, or `keep_through` if later), or None when the lock stays taken (the child is
        stuck: kill it).
        """
        if not self._lock.acquire(timeout=_LOCK_TIMEOUT):
            return None
        try:
            kept = max(int(self._progress[_STARTED]), keep_through)
            if self._progress[_SKIP_TO] <= kept + 1:  # no earlier take-back still ahead
                self._progress[_SKIP_FROM] = kept + 1
            else:  # one still ahead: extend it (down to kept + 1, which may be lower now)
                self._progress[_SKIP_FROM] = min(self._progress[_SKIP_FROM], kept + 1)
            self._progress[_SKIP_TO] = self.next_seq
            return kept
        finally:
            self._lock.release()

    def started_seq_after_exit(self) -> int:
        """The seq the child started last, read once it is dead (its lock may be lost)."""
        return int(self._progress[_STARTED])
