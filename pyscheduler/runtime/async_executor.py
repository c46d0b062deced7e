"""The worker's event-loop process: runs many `async def` handlers at once on one asyncio loop.

It speaks the executors' protocol (child_protocol.py): request frames in, one outcome frame
per request out, but it starts every request as soon as it arrives, as a task on its loop, up
to the worker's `concurrency` at once (the worker never sends more). Each task has its own
`current_job()` (a ContextVar). A job's timeout cancels its task at the deadline, which works
while handlers await; a handler that blocks the loop (sync code inside a coroutine) cannot be
cancelled, so the worker kills this process when a job is well past its deadline: the blocking
job fails with a timeout, the others of this process fail with a reason naming it (their
retries apply).

A plain (not `async def`) handler is never called here: its request is answered SYNC, and the
worker runs it in a sync child (it learns that the handler is sync). Like an executor, this
process starts a request only while the worker vouches for its lease (see executor.py,
lease-safe starts), else answers it UNSTARTED.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import multiprocessing
import os
import socket
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from ..store.connection import Client
from . import context as job_context
from .allowlist import HandlerPolicy
from .child_process import ChildProcess
from .child_protocol import (
    FrameError,
    FrameReader,
    Outcome,
    OutcomeKind,
    RunRequest,
    SocketReads,
    decode_request,
)
from .handler_calls import (
    Call,
    flush_output,
    outcome_of,
    prepare_call,
    result_outcome,
    send_outcome,
    set_up_child,
)

# How long past its deadline a job on the loop may run before the worker kills the process
# (the loop is blocked: the job's cancellation could not take effect).
BLOCKED_LOOP_GRACE_SECONDS = 1.0


async def _run_on_loop(call: Call, request: RunRequest) -> Outcome:
    """Run one prepared job as a task of this loop, under its timeout."""
    reset = job_context.set_current(call.context)
    deadline = asyncio.timeout(request.timeout)
    try:
        async with deadline:
            await call.context.wait_for_rate_slot_async()  # after the handler's import
            value = call.invoke()
            if inspect.isawaitable(value):
                value = await value
        return result_outcome(request.seq, value)
    except TimeoutError as error:
        if not deadline.expired():  # the handler's own TimeoutError
            return outcome_of(request.seq, error, call.context.record.get("retry_on"))
        reason = f"JobTimeout: the run passed its {request.timeout} s timeout (cancelled)"
        return Outcome(request.seq, OutcomeKind.TIMEOUT, error=reason)
    except BaseException as error:
        return outcome_of(request.seq, error, call.context.record.get("retry_on"))
    finally:
        job_context.reset_current(reset)


async def run_call_async(policy: HandlerPolicy, connection: Client, request: RunRequest) -> Outcome:
    """Run one job on this loop, or answer SYNC for a plain handler."""
    call = prepare_call(policy, connection, request)
    if isinstance(call, Outcome):
        return call
    if not inspect.iscoroutinefunction(call.handler):
        return Outcome(request.seq, OutcomeKind.SYNC)
    return await _run_on_loop(call, request)


async def _serve(
    conn: Connection, policy: HandlerPolicy, connection: Client, held_until: Any
) -> None:
    loop = asyncio.get_running_loop()
    closed = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()
    fd = conn.fileno()
    stream = SocketReads(socket.socket(fileno=os.dup(fd)))
    reader = FrameReader()

    def answer(outcome: Outcome) -> None:
        with contextlib.suppress(OSError):  # the worker is gone: PDEATHSIG follows
            send_outcome(fd, outcome)

    async def run(request: RunRequest) -> None:
        began = time.monotonic()
        # Checked when the task first runs, not when it was read: a handler that blocks the
        # loop delays the start of the tasks read with it.
        if began >= held_until[0]:
            answer(Outcome(request.seq, OutcomeKind.UNSTARTED))
            return
        try:
            outcome = await run_call_async(policy, connection, request)
        except Exception as error:  # before the handler (a corrupt checkpoint, say)
            outcome = outcome_of(request.seq, error)
        outcome.seconds = time.monotonic() - began
        flush_output()
        answer(outcome)

    def take_requests() -> None:
        try:
            while True:
                try:
                    chunk = stream.read(flags=socket.MSG_DONTWAIT)
                except BlockingIOError:
                    return
                if not chunk:
                    raise EOFError
                for framed in reader.feed(chunk):
                    try:
                        request = decode_request(*framed)
                    except FrameError as exc:  # framed, but not a request: answer it
                        seq = -1 if exc.seq is None else exc.seq
                        answer(Outcome(seq, OutcomeKind.REFUSED, error=str(exc)))
                        continue
                    task = loop.create_task(run(request))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
        except (EOFError, OSError, FrameError):  # the worker is gone, or sent no frame
            loop.remove_reader(fd)
            closed.set()

    loop.add_reader(fd, take_requests)
    await closed.wait()


def _loop_main(
    conn: Connection,
    parent_pid: int,
    policy: HandlerPolicy,
    connection: Client,
    held_until: Any,
) -> None:
    set_up_child(parent_pid)
    asyncio.run(_serve(conn, policy, connection, held_until))


class AsyncExecutor(ChildProcess):
    """The worker's event-loop process (see the module docstring)."""

    def _child_target(self) -> tuple[Callable[..., None], tuple[Any, ...]]:
        self._held_until: Any = multiprocessing.get_context("fork").RawArray("d", 1)
        self._held_until[0] = math.inf
        return _loop_main, (self._held_until,)

    def hold_until(self, when: float) -> None:
        # One aligned double, written whole; read by the loop after the requests it covers.
        self._held_until[0] = when
