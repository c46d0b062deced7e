"""The worker's event-loop process: runs many `async def` handlers at once on one asyncio loop.

It speaks the executors' protocol (see executor.py): lists of numbered requests in, one
outcome per request out, but it starts every request as soon as it arrives, as a task on its
loop, up to the worker's `concurrency` at once (the worker never sends more). Each task has
its own `current_job()` (a ContextVar). A job's timeout cancels its task at the deadline,
which works while handlers await; a handler that blocks the loop (sync code inside a
coroutine) cannot be cancelled, so the worker kills this process when a job is well past its
deadline: the blocking job fails with a timeout, the others of this process fail with a
reason naming it (their retries apply).

Like an executor, it starts a request only while the worker vouches for its lease (see
executor.py, lease-safe starts), else reports it "unstarted".
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import multiprocessing
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import orjson
import redis

from ..store.protocol import FailKind
from ..store.serialization import encode_result
from . import context as job_context
from .allowlist import HandlerPolicy
from .executor import (
    ChildProcess,
    flush_output,
    outcome_of,
    prepare_call,
    send_outcome,
    set_up_child,
    unstarted_outcome,
)

# How long past its deadline a job on the loop may run before the worker kills the process
# (the loop is blocked: the job's cancellation could not take effect).
BLOCKED_LOOP_GRACE_SECONDS = 1.0


async def run_call_async(
    policy: HandlerPolicy, connection: redis.Redis, request: dict[str, Any]
) -> dict[str, Any]:
    """Run one job as a task of this loop; its outcome as the message the worker expects."""
    call = prepare_call(policy, connection, request)
    if isinstance(call, dict):
        return call
    reset = job_context.set_current(call.context)
    timeout_s = float(request["timeout"])
    deadline = asyncio.timeout(timeout_s)
    try:
        async with deadline:
            await call.context.wait_for_rate_slot_async()  # after the handler's import
            value = call.invoke()
            if inspect.isawaitable(value):
                value = await value
        return {"ok": True, "result": encode_result(value)}
    except TimeoutError as error:
        if not deadline.expired():
            return outcome_of(error)  # the handler's own TimeoutError
        return {
            "ok": False,
            "kind": FailKind.TIMEOUT.value,
            "error": f"JobTimeout: the run passed its {timeout_s} s timeout (cancelled)",
        }
    except BaseException as error:
        return outcome_of(error)
    finally:
        job_context.reset_current(reset)


async def _serve(
    conn: Connection, policy: HandlerPolicy, connection: redis.Redis, held_until: Any
) -> None:
    loop = asyncio.get_running_loop()
    closed = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()

    async def run(request: dict[str, Any]) -> None:
        began = time.monotonic()
        # Checked when the task first runs, not when it was read: a handler that blocks the
        # loop delays the start of the tasks read with it.
        if began >= held_until[0]:
            with contextlib.suppress(OSError):
                send_outcome(conn.fileno(), unstarted_outcome(int(request["seq"])))
            return
        try:
            outcome = await run_call_async(policy, connection, request)
        except Exception as error:  # before the handler (a corrupt checkpoint, say)
            outcome = outcome_of(error)
        outcome["seq"] = request["seq"]
        outcome["seconds"] = time.monotonic() - began
        flush_output()
        with contextlib.suppress(OSError):  # the worker is gone: PDEATHSIG follows
            send_outcome(conn.fileno(), outcome)

    def take_requests() -> None:
        try:
            while conn.poll(0):
                for request in orjson.loads(conn.recv_bytes()):
                    task = loop.create_task(run(request))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
        except (EOFError, OSError):
            loop.remove_reader(conn.fileno())
            closed.set()

    loop.add_reader(conn.fileno(), take_requests)
    await closed.wait()


def _loop_main(
    conn: Connection,
    parent_pid: int,
    policy: HandlerPolicy,
    connection: redis.Redis,
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
