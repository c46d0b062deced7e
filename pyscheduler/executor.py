"""Child processes that run handlers, so a stuck handler can be stopped by killing its process.

The worker's main process talks to each child over a pipe, with JSON messages (no pickle):
  to the child:   {"queue", "id", "token", "record", "payload", "checkpoint", "lease_ms"}
  from the child: {"ok": true, "result": "<json>"}     or
                  {"ok": false, "kind": "error" | "refused", "error": "<text with traceback>"} or
                  {"ok": false, "kind": "suspended"}  the job paused or split: already recorded
                  {"ok": false, "kind": "lost"}       the lease was lost: nothing to report

A child runs the handler with the job's context at hand (`pyscheduler.current_job()`); it uses
the worker's Redis client (redis-py opens fresh connections after the fork) for checkpoints
and splits. SIGUSR1 asks the running job to pause at its next checkpoint (worker shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import inspect
import json
import multiprocessing
import os
import signal
import sys
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import redis

from . import context as job_context
from .exceptions import HandlerRefused, LeaseLost, PayloadNotJSON
from .handlers import HandlerPolicy
from .job import parse_record
from .protocol import FailKind
from .serialization import decode_payload, encode_result

SUSPENDED = "suspended"
LOST = "lost"

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this child when the worker dies, so no run outlives its lease."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(1)


def run_call(
    policy: HandlerPolicy, connection: redis.Redis, request: dict[str, Any]
) -> dict[str, Any]:
    """Run one job and describe its outcome as the message the worker expects."""
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
    job_context.set_current(context)
    # A pause asked for before the handler was at hand (while its module was imported, say)
    # holds for this run too; read after set_current, so a signal in between is not lost.
    context.shutdown_requested = context.shutdown_requested or _pause_requested
    try:
        if record.get("results_arg"):  # a group's continuation gets the subtasks' results
            args = [context.subtask_results(), *args]
        value = handler(*args, **kwargs)
        if inspect.iscoroutine(value):  # an `async def` handler
            value = asyncio.run(value)
        return {"ok": True, "result": encode_result(value)}
    except job_context.JobSuspended:
        return {"ok": False, "kind": SUSPENDED}
    except LeaseLost:
        return {"ok": False, "kind": LOST}
    except PayloadNotJSON as exc:
        return {"ok": False, "kind": FailKind.ERROR.value, "error": str(exc)}
    except BaseException:
        return {"ok": False, "kind": FailKind.ERROR.value, "error": traceback.format_exc()}
    finally:
        job_context.set_current(None)


# Set by SIGUSR1: the worker is shutting down, so every run of this process from now on
# pauses at its next checkpoint (the worker takes no new jobs meanwhile).
_pause_requested = False


def _request_pause(signum: int, frame: object) -> None:
    global _pause_requested
    _pause_requested = True
    running = job_context._current
    if running is not None:
        running.shutdown_requested = True


def _child_main(
    conn: Connection, parent_pid: int, policy: HandlerPolicy, connection: redis.Redis
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when runs stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, _request_pause)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})  # blocked by start()
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)
    _die_with_parent(parent_pid)
    while True:
        try:
            request = json.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        outcome = run_call(policy, connection, request)
        sys.stdout.flush()
        sys.stderr.flush()
        conn.send_bytes(json.dumps(outcome).encode())


@dataclass
class Executor:
    """One child process and the pipe to it."""

    policy: HandlerPolicy
    connection: redis.Redis
    process: multiprocessing.process.BaseProcess = field(init=False)
    conn: Connection = field(init=False)

    def __post_init__(self) -> None:
        self.start()

    def start(self) -> None:
        context = multiprocessing.get_context("fork")
        parent_end, child_end = context.Pipe(duplex=True)
        self.process = context.Process(
            target=_child_main,
            args=(child_end, os.getpid(), self.policy, self.connection),
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
        self.conn = parent_end

    def submit(self, request: dict[str, Any]) -> None:
        self.conn.send_bytes(json.dumps(request).encode())

    def request_pause(self) -> None:
        """Ask the running job to pause at its next checkpoint."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid or 0, signal.SIGUSR1)

    def receive(self) -> dict[str, Any] | None:
        """The outcome of the current run, or None when the child died."""
        try:
            message: dict[str, Any] = json.loads(self.conn.recv_bytes())
            return message
        except (EOFError, OSError):
            return None

    def kill(self) -> None:
        if self.process.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid or 0, signal.SIGKILL)
        self.process.join(timeout=5)
        self.conn.close()

    def restart(self) -> None:
        self.kill()
        self.start()

    def exit_code(self) -> int | None:
        self.process.join(timeout=1)
        return self.process.exitcode
