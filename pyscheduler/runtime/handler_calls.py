"""Inside a worker's child: a request made into a handler call, and the call into an outcome.

Shared by the sync children (executor.py) and the event-loop process (async_executor.py).
Everything before the handler runs happens in `prepare_call`, and whatever is wrong with a
request (a forged record, a payload that is not UTF-8 JSON or nested too deep, a corrupt
checkpoint, a handler that may not run or cannot be imported) becomes an outcome: a request
can fail its job, never the process that runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..client.tasks import retried, task_options
from ..exceptions import HandlerRefused, HandlerUnavailable, LeaseLost, PayloadNotJSON
from ..store.connection import Client
from ..store.serialization import decode_payload, encode_result
from . import context as job_context
from .allowlist import HandlerPolicy
from .child_protocol import Outcome, OutcomeKind, RunRequest, encode_outcome
from .parent_death import signal_on_parent_death


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL this child when the worker dies, so no run outlives its lease."""
    signal_on_parent_death(signal.SIGKILL)
    if os.getppid() != parent_pid:  # the worker died before the request took effect
        os._exit(1)


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


def prepare_call(policy: HandlerPolicy, connection: Client, request: RunRequest) -> Call | Outcome:
    """The call a request asks for, or the outcome refusing it (see the module docstring)."""
    seq = request.seq
    try:
        record = job_context.check_record(request.record)
        try:
            args, kwargs = decode_payload(request.payload)
        except ValueError as exc:
            raise HandlerRefused(f"job payload is malformed: {exc}") from None
        context = job_context.JobContext(
            connection,
            request.queue,
            request.job_id,
            request.token,
            record,
            request.checkpoint,
            int(request.lease_ms),
        )
        handler = policy.resolve(record["func"])
        context.preemptible = task_options(handler).get("preemptible") is not False
    except (HandlerRefused, job_context.BadRecord) as exc:
        return Outcome(seq, OutcomeKind.REFUSED, error=str(exc))
    except HandlerUnavailable as exc:  # this worker's set-up, not the job: retries apply
        return Outcome(seq, OutcomeKind.ERROR, error=str(exc))
    except Exception:
        error = "the job could not be prepared to run:\n" + traceback.format_exc()
        return Outcome(seq, OutcomeKind.ERROR, error=error)
    return Call(context, handler, list(args), dict(kwargs))


def outcome_of(seq: int, error: BaseException, retry_on: object = None) -> Outcome:
    """The outcome of a handler that raised `error` (call from its except block); `retry_on`:
    the job's list of exceptions retried (its record's), when it has one."""
    if isinstance(error, job_context.JobSuspended):
        return Outcome(seq, OutcomeKind.SUSPENDED)
    if isinstance(error, LeaseLost):
        return Outcome(seq, OutcomeKind.LOST)
    kind = OutcomeKind.ERROR if retried(type(error), retry_on) else OutcomeKind.FINAL
    if isinstance(error, PayloadNotJSON):
        return Outcome(seq, kind, error=str(error))
    return Outcome(seq, kind, error=traceback.format_exc())


def result_outcome(seq: int, value: Any) -> Outcome:
    """The outcome of a handler that returned `value` (PayloadNotJSON when JSON cannot carry
    it: call inside the handler's try block)."""
    return Outcome(seq, OutcomeKind.OK, result=encode_result(value).encode())


def run_call(policy: HandlerPolicy, connection: Client, request: RunRequest) -> Outcome:
    """Run one job in this (sync) process and describe its outcome."""
    call = prepare_call(policy, connection, request)
    if isinstance(call, Outcome):
        return call
    if request.may_defer and inspect.iscoroutinefunction(call.handler):
        return Outcome(request.seq, OutcomeKind.DEFER)
    reset = job_context.set_current(call.context)
    try:
        call.context.wait_for_rate_slot()  # the handler's module is imported: start it now
        value = call.invoke()
        if inspect.iscoroutine(value):  # an `async def` handler, with no event loop free
            value = asyncio.run(value)
        return result_outcome(request.seq, value)
    except BaseException as error:
        return outcome_of(request.seq, error, call.context.record.get("retry_on"))
    finally:
        job_context.reset_current(reset)


def flush_output() -> None:
    """Flush what the handler printed; a closed or broken stdout must not kill this process."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def send_outcome(fd: int, outcome: Outcome) -> None:
    """Write one outcome frame to the worker (blocking): its pieces in one `writev` when the
    pipe takes them, as views, so a big result is not copied again at every partial write."""
    pieces = [memoryview(piece) for piece in encode_outcome(outcome) if len(piece)]
    while pieces:
        sent = os.writev(fd, pieces)
        while sent and pieces:
            if sent >= len(pieces[0]):
                sent -= len(pieces.pop(0))
            else:
                pieces[0] = pieces[0][sent:]
                sent = 0
