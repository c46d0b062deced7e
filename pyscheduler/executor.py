"""Child processes that run handlers, so a stuck handler can be stopped by killing its process.

The worker's main process talks to each child over a pipe, with JSON messages (no pickle;
orjson, since these envelopes are the library's own data, while users' payloads and results
keep the standard library's exact JSON, see serialization.py):
  to the child:   a list of requests, run in order, each {"seq", "queue", "id", "token",
                  "record", "payload", "checkpoint", "lease_ms", "timeout", "may_defer"}
  from the child, one line of JSON per request run, with its "seq" and "seconds" (run time)
  (lines, so the worker reads the outcomes of many short jobs in one system call):
                  {"ok": true, "result": "<json>"}     or
                  {"ok": false, "kind": "error" | "refused", "error": "<text with traceback>"} or
                  {"ok": false, "kind": "suspended"}  the job paused or split: already recorded
                  {"ok": false, "kind": "lost"}       the lease was lost: nothing to report
                  {"ok": false, "kind": "defer"}      an `async def` handler, for the event loop
A request the worker took back (`Executor.take_back`) is skipped without a message.

A child runs the handler with the job's context at hand (`pyscheduler.current_job()`); it uses
the worker's Redis client (redis-py opens fresh connections after the fork) for checkpoints
and splits. SIGUSR1 asks the running job to pause at its next checkpoint (worker shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import inspect
import multiprocessing
import os
import signal
import socket
import struct
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for_ready
from multiprocessing.synchronize import Lock
from typing import Any

import orjson
import redis

from . import context as job_context
from .exceptions import HandlerRefused, LeaseLost, PayloadNotJSON
from .handlers import HandlerPolicy
from .job import parse_record
from .protocol import FailKind
from .serialization import decode_payload, encode_result

SUSPENDED = "suspended"
LOST = "lost"
# The handler is `async def` and the worker's event loop process has room: run it there.
DEFER = "defer"

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this child when the worker dies, so no run outlives its lease."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(1)


@dataclass
class Call:
    """A job ready to run: its context, its handler and the handler's arguments."""

    context: job_context.JobContext
    handler: Callable[..., Any]
    args: list[Any]
    kwargs: dict[str, Any]

    def invoke(self) -> Any:
        """Call the handler (a group's continuation gets the subtasks' results first)."""
        args = self.args
        if self.context.record.get("results_arg"):
            args = [self.context.subtask_results(), *args]
        return self.handler(*args, **self.kwargs)


def prepare_call(
    policy: HandlerPolicy, connection: redis.Redis, request: dict[str, Any]
) -> Call | dict[str, Any]:
    """The call a request asks for, or the outcome refusing it."""
    record = parse_record(request["record"])
    context = job_context.JobContext(
        connection,
        request["queue"],
        request["id"],
        int(request["token"]),
        record,
        request.get("checkpoint"),
        int(request["lease_ms"]),
    )
    try:
        handler = policy.resolve(str(record.get("func", "")))
        try:
            args, kwargs = decode_payload(request["payload"])
        except ValueError as exc:
            raise HandlerRefused(f"job payload is malformed: {exc}") from None
    except HandlerRefused as exc:
        return {"ok": False, "kind": FailKind.REFUSED.value, "error": str(exc)}
    return Call(context, handler, list(args), dict(kwargs))


def outcome_of(error: BaseException) -> dict[str, Any]:
    """The outcome message for a handler that raised `error` (call from its except block)."""
    if isinstance(error, job_context.JobSuspended):
        return {"ok": False, "kind": SUSPENDED}
    if isinstance(error, LeaseLost):
        return {"ok": False, "kind": LOST}
    if isinstance(error, PayloadNotJSON):
        return {"ok": False, "kind": FailKind.ERROR.value, "error": str(error)}
    return {"ok": False, "kind": FailKind.ERROR.value, "error": traceback.format_exc()}


def run_call(
    policy: HandlerPolicy, connection: redis.Redis, request: dict[str, Any]
) -> dict[str, Any]:
    """Run one job and describe its outcome as the message the worker expects."""
    call = prepare_call(policy, connection, request)
    if isinstance(call, dict):
        return call
    if request.get("may_defer") and inspect.iscoroutinefunction(call.handler):
        return {"ok": False, "kind": DEFER}
    reset = job_context.set_current(call.context)
    try:
        value = call.invoke()
        if inspect.iscoroutine(value):  # an `async def` handler, with no event loop free
            value = asyncio.run(value)
        return {"ok": True, "result": encode_result(value)}
    except BaseException as error:
        return outcome_of(error)
    finally:
        job_context.reset_current(reset)


def set_up_child(parent_pid: int) -> None:
    """Signals of a worker's child: the worker decides when runs stop; SIGUSR1 (the worker
    is shutting down) pauses this process's jobs at their next checkpoint."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, lambda signum, frame: job_context.pause_all())
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})  # blocked by start()
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)
    die_with_parent(parent_pid)


def _child_main(
    conn: Connection,
    parent_pid: int,
    policy: HandlerPolicy,
    connection: redis.Redis,
    lock: Lock,
    progress: Any,
) -> None:
    set_up_child(parent_pid)
    # The worker never blocks sending requests (see `ChildProcess.submit`), so this process
    # reads them only when it has run out, and its blocking outcome writes cannot deadlock.
    while True:
        try:
            batch = orjson.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        for request in batch:
            seq = int(request["seq"])
            with lock:
                taken_back = progress[_SKIP_FROM] <= seq < progress[_SKIP_TO]
                if not taken_back:
                    progress[_STARTED_AT] = time.monotonic()
                    progress[_STARTED] = seq
            if taken_back:
                continue
            began = time.monotonic()
            outcome = run_call(policy, connection, request)
            outcome["seq"] = seq
            outcome["seconds"] = time.monotonic() - began
            sys.stdout.flush()
            sys.stderr.flush()
            send_outcome(conn.fileno(), outcome)


def send_outcome(fd: int, outcome: dict[str, Any]) -> None:
    """Write one outcome to the worker as a line of JSON (JSON text has no raw newline)."""
    data = orjson.dumps(outcome) + b"\n"
    while data:
        data = data[os.write(fd, data) :]


# The slots of an executor's shared progress record (doubles; a seq fits exactly).
_STARTED, _STARTED_AT, _SKIP_FROM, _SKIP_TO = range(4)
# How long the worker waits for the progress lock before it calls the child stuck (a child
# killed while it held the lock never gives it back).
_LOCK_TIMEOUT = 1.0


@dataclass(frozen=True, slots=True)
class Progress:
    """Which request the child started last, and when (time.monotonic(), system-wide)."""

    started_seq: int
    started_at: float


class ChildProcess:
    """A forked child process of the worker and the pipe to it (JSON messages both ways)."""

    def __init__(self, policy: HandlerPolicy, connection: redis.Redis) -> None:
        self.policy = policy
        self.connection = connection
        self.next_seq = 0
        self.start()

    def _child_target(self) -> tuple[Callable[..., None], tuple[Any, ...]]:
        """The child's main function and its arguments after (pipe, parent pid, policy, conn)."""
        raise NotImplementedError

    def start(self) -> None:
        context = multiprocessing.get_context("fork")
        parent_end, child_end = context.Pipe(duplex=True)
        if hasattr(self, "conn"):  # a pipe kept open by kill(keep_outcomes=True)
            self._close_pipe()
        target, extra_args = self._child_target()
        self._unsent = b""
        self.process = context.Process(
            target=target,
            args=(child_end, os.getpid(), self.policy, self.connection, *extra_args),
            daemon=True,
        )
        # Until the child has its SIGUSR1 handler, that signal's default action would kill it
        # (a pause asked for right after the start): the child inherits it blocked.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        try:
            self.process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        child_end.close()
        self.conn: Connection = parent_end
        # Outcomes come as lines of JSON, read many per system call without blocking (a
        # duplicate socket object, so the pipe's own blocking mode stays as it is).
        self._socket = socket.socket(fileno=os.dup(parent_end.fileno()))
        self._outcome_buffer = b""
        self._unsent = b""
        self._child_gone = False

    def number(self, requests: list[dict[str, Any]]) -> list[int]:
        """Give each request its seq (the order the child takes them in); returns them."""
        seqs = list(range(self.next_seq, self.next_seq + len(requests)))
        for request, seq in zip(requests, seqs, strict=True):
            request["seq"] = seq
        self.next_seq += len(requests)
        return seqs

    def submit(self, requests: list[dict[str, Any]]) -> None:
        """Send numbered requests (OSError when the child is gone).

        Never blocks: what the pipe does not take now (a big batch for a child busy with a
        long job) waits here for `flush`, so the worker keeps renewing leases and enforcing
        timeouts meanwhile. The framing is `multiprocessing`'s (a 4-byte length, then the
        bytes), which the child reads with `Connection.recv_bytes`.
        """
        data = orjson.dumps(requests)
        self._unsent += struct.pack("!i", len(data)) + data
        self.flush()

    @property
    def unsent(self) -> bool:
        return bool(self._unsent)

    def flush(self) -> bool:
        """Send what the pipe takes now of the requests not sent yet; True when all are."""
        while self._unsent:
            try:
                sent = self._socket.send(self._unsent, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return False
            self._unsent = self._unsent[sent:]
        return True

    def request_pause(self) -> None:
        """Ask the running jobs to pause at their next checkpoint."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid or 0, signal.SIGUSR1)

    def outcomes(self) -> list[dict[str, Any]] | None:
        """The outcomes the child has sent so far (without waiting); None when it died."""
        while not self._child_gone:
            try:
                chunk = self._socket.recv(1 << 16, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                self._child_gone = True
                break
            self._outcome_buffer += chunk
        *lines, self._outcome_buffer = self._outcome_buffer.split(b"\n")
        if not lines and self._child_gone:
            return None
        return [orjson.loads(line) for line in lines]

    def receive(self) -> dict[str, Any] | None:
        """Wait for the next outcome; None when the child died."""
        while b"\n" not in self._outcome_buffer and not self._child_gone:
            wait_for_ready([self.conn])
            if self._child_gone:
                break
            chunk = self._socket.recv(1 << 16)
            if not chunk:
                self._child_gone = True
            self._outcome_buffer += chunk
        line, newline, self._outcome_buffer = self._outcome_buffer.partition(b"\n")
        if not newline:
            return None
        message: dict[str, Any] = orjson.loads(line)
        return message

    def kill(self, keep_outcomes: bool = False) -> None:
        """SIGKILL the child. With `keep_outcomes`, what it sent can still be read (the pipe
        closes at the next `start`)."""
        if self.process.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid or 0, signal.SIGKILL)
        self.process.join(timeout=5)
        if not keep_outcomes:
            self._close_pipe()

    def _close_pipe(self) -> None:
        if not self.conn.closed:
            self.conn.close()
            self._socket.close()

    def restart(self) -> None:
        self.kill()
        self.start()

    def exit_code(self) -> int | None:
        self.process.join(timeout=1)
        return self.process.exitcode


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
        self._progress: Any = context.RawArray("d", 4)
        self._progress[_STARTED] = -1.0
        return _child_main, (self._lock, self._progress)

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
