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
                  {"ok": false, "kind": "unstarted"}  not started: its lease was not known held
A request the worker took back (`Executor.take_back`) is skipped without a message.

Lease-safe starts: the worker keeps, in memory it shares with the child, the time
(`time.monotonic()`, system-wide) until which it knows the leases of the jobs it sent are held
with room to spare, and moves it on after each pop and renewal. The child starts a request
only before that time, else reports it "unstarted" (the worker hands it back): a worker
paused past its leases (SIGSTOP, a long GC pause, a lost connection) cannot start, when it
resumes, a job another worker has reclaimed meanwhile.

A child runs the handler with the job's context at hand (`pyscheduler.current_job()`); it uses
the worker's Redis client (redis-py opens fresh connections after the fork) for checkpoints
and splits. SIGUSR1 asks the running job to pause at its next checkpoint (worker shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import multiprocessing
import os
import signal
import socket
import struct
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for_ready
from multiprocessing.synchronize import Lock
from typing import Any

import orjson
import redis

from ..exceptions import HandlerRefused, HandlerUnavailable, LeaseLost, PayloadNotJSON
from ..store.protocol import FailKind
from ..store.serialization import decode_payload, encode_result
from . import context as job_context
from .allowlist import HandlerPolicy
from .parent_death import signal_on_parent_death

SUSPENDED = "suspended"
LOST = "lost"
# The handler is `async def` and the worker's event loop process has room: run it there.
DEFER = "defer"
# The child did not start the job: the worker could no longer vouch for its lease.
UNSTARTED = "unstarted"


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL this child when the worker dies, so no run outlives its lease."""
    signal_on_parent_death(signal.SIGKILL)
    if os.getppid() != parent_pid:  # the worker died before the request took effect
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
    """The call a request asks for, or the outcome refusing it.

    Everything before the handler runs happens here, and whatever is wrong with the request
    (a forged record, a payload that is not UTF-8 JSON or nested too deep, a corrupt
    checkpoint, a handler that may not run or cannot be imported) becomes an outcome: a
    request can fail its job, never the process that runs it.
    """
    try:
        record = job_context.check_record(request.get("record"))
        try:
            args, kwargs = decode_payload(request["payload"])
        except ValueError as exc:
            raise HandlerRefused(f"job payload is malformed: {exc}") from None
        context = job_context.JobContext(
            connection,
            request["queue"],
            request["id"],
            str(request["token"]),
            record,
            request.get("checkpoint"),
            int(request["lease_ms"]),
        )
        handler = policy.resolve(record["func"])
    except (HandlerRefused, job_context.BadRecord) as exc:
        return {"ok": False, "kind": FailKind.REFUSED.value, "error": str(exc)}
    except HandlerUnavailable as exc:  # this worker's set-up, not the job: retries apply
        return {"ok": False, "kind": FailKind.ERROR.value, "error": str(exc)}
    except Exception:
        return {
            "ok": False,
            "kind": FailKind.ERROR.value,
            "error": "the job could not be prepared to run:\n" + traceback.format_exc(),
        }
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
        call.context.wait_for_rate_slot()  # the handler's module is imported: start it now
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
                now = time.monotonic()
                held = now < progress[_HELD_UNTIL]
                if held and not taken_back:
                    progress[_STARTED_AT] = now
                    progress[_STARTED] = seq
            if taken_back:
                continue
            if not held:
                send_outcome(conn.fileno(), unstarted_outcome(seq))
                continue
            began = time.monotonic()
            try:
                outcome = run_call(policy, connection, request)
            except Exception as error:  # not the handler's: run_call catches those
                outcome = outcome_of(error)
            outcome["seq"] = seq
            outcome["seconds"] = time.monotonic() - began
            flush_output()
            send_outcome(conn.fileno(), outcome)


def unstarted_outcome(seq: int) -> dict[str, Any]:
    """The outcome of a request not started because its lease was not known held."""
    return {"ok": False, "kind": UNSTARTED, "seq": seq, "seconds": 0.0}


def flush_output() -> None:
    """Flush what the handler printed; a closed or broken stdout must not kill this process."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def send_outcome(fd: int, outcome: dict[str, Any]) -> None:
    """Write one outcome to the worker as a line of JSON (JSON text has no raw newline)."""
    try:
        data = orjson.dumps(outcome)
    except TypeError:  # a lone surrogate in an error text (results are checked before)
        data = orjson.dumps({key: _carried(value) for key, value in outcome.items()})
    # Views, not slices of the bytes: a big outcome is not copied again at every write.
    for view in (memoryview(data), memoryview(b"\n")):
        while view:
            view = view[os.write(fd, view) :]


def _carried(value: Any) -> Any:
    """`value` with what UTF-8 JSON cannot carry (lone surrogates) written as escapes."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode()
    return value


# The slots of an executor's shared progress record (doubles; a seq fits exactly).
_STARTED, _STARTED_AT, _SKIP_FROM, _SKIP_TO, _HELD_UNTIL = range(5)
# The largest message `multiprocessing` frames with a 4-byte length (larger: -1, 8 bytes).
_SHORT_FRAME_MAX = 0x7FFFFFFF
# How much of the child's outcomes one system call reads.
_RECV_SIZE = 1 << 20
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
        # Both ways, a big message crosses the pipe in many pieces; each piece is copied once
        # (views of what is left to send; received pieces joined once their line is whole),
        # so moving a message costs time in proportion to its size.
        self._partial: list[bytes] = []  # the pieces of an outcome line not yet whole
        self._lines: deque[bytes] = deque()  # whole outcome lines not taken yet
        self._unsent: deque[memoryview] = deque()
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
        timeouts meanwhile. The framing is `multiprocessing`'s (a 4-byte length, or -1 and an
        8-byte length, then the bytes), which the child reads with `Connection.recv_bytes`.
        """
        data = orjson.dumps(requests)
        if len(data) > _SHORT_FRAME_MAX:
            header = struct.pack("!i", -1) + struct.pack("!Q", len(data))
        else:
            header = struct.pack("!i", len(data))
        self._unsent += (memoryview(header), memoryview(data))
        self.flush()

    @property
    def unsent(self) -> bool:
        return bool(self._unsent)

    def flush(self) -> bool:
        """Send what the pipe takes now of the requests not sent yet; True when all are."""
        while self._unsent:
            view = self._unsent[0]
            try:
                sent = self._socket.send(view, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return False
            if sent < len(view):
                self._unsent[0] = view[sent:]
            else:
                self._unsent.popleft()
        return True

    def request_pause(self) -> None:
        """Ask the running jobs to pause at their next checkpoint."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid or 0, signal.SIGUSR1)

    def _take_in(self, chunk: bytes) -> None:
        """Add received bytes; whole lines go to `_lines` (only the new bytes are searched)."""
        if b"\n" not in chunk:
            self._partial.append(chunk)
            return
        *whole, rest = chunk.split(b"\n")
        if self._partial:
            whole[0] = b"".join([*self._partial, whole[0]])
            self._partial.clear()
        self._lines.extend(whole)
        if rest:
            self._partial.append(rest)

    def _read_available(self, block: bool) -> None:
        """Read what the child has sent (with `block`, wait for at least one piece)."""
        flags = 0 if block else socket.MSG_DONTWAIT
        while not self._child_gone:
            try:
                chunk = self._socket.recv(_RECV_SIZE, flags)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                self._child_gone = True
                return
            self._take_in(chunk)
            flags = socket.MSG_DONTWAIT

    def outcomes(self) -> list[dict[str, Any]] | None:
        """The outcomes the child has sent so far (without waiting); None when it died."""
        self._read_available(block=False)
        if not self._lines and self._child_gone:
            return None
        lines, self._lines = self._lines, deque()
        return [orjson.loads(line) for line in lines]

    def receive(self) -> dict[str, Any] | None:
        """Wait for the next outcome; None when the child died."""
        while not self._lines and not self._child_gone:
            wait_for_ready([self.conn])
            self._read_available(block=True)
        if not self._lines:
            return None
        message: dict[str, Any] = orjson.loads(self._lines.popleft())
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

    def hold_until(self, when: float) -> None:
        """Let the child start requests until `when` (time.monotonic()): the time until which
        the leases of the requests sent so far are known held. Until first set (and after a
        restart), the child starts whatever it is sent."""
        raise NotImplementedError

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
