"""Child processes that run handlers, so a stuck handler can be stopped by killing its process.

The worker's main process talks to each child over a pipe, with JSON messages (no pickle):
  to the child:   {"id", "func", "payload"}            run this call
  from the child: {"ok": true, "result": "<json>"}     or
                  {"ok": false, "kind": "error" | "refused", "error": "<text with traceback>"}
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

from .exceptions import HandlerRefused, PayloadNotJSON
from .handlers import HandlerPolicy
from .protocol import FailKind
from .serialization import decode_payload, encode_result

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this child when the worker dies, so no run outlives its lease."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(1)


def run_call(policy: HandlerPolicy, func: str, payload: str) -> dict[str, Any]:
    """Run one call and describe its outcome as the message the worker expects."""
    try:
        handler = policy.resolve(func)
        try:
            args, kwargs = decode_payload(payload)
        except ValueError as exc:
            raise HandlerRefused(f"job payload is malformed: {exc}") from None
    except HandlerRefused as exc:
        return {"ok": False, "kind": FailKind.REFUSED.value, "error": str(exc)}
    try:
        value = handler(*args, **kwargs)
        if inspect.iscoroutine(value):  # an `async def` handler
            value = asyncio.run(value)
        return {"ok": True, "result": encode_result(value)}
    except PayloadNotJSON as exc:
        return {"ok": False, "kind": FailKind.ERROR.value, "error": str(exc)}
    except BaseException:
        return {"ok": False, "kind": FailKind.ERROR.value, "error": traceback.format_exc()}


def _child_main(conn: Connection, parent_pid: int, policy: HandlerPolicy) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when runs stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)
    _die_with_parent(parent_pid)
    while True:
        try:
            request = json.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        outcome = run_call(policy, request["func"], request["payload"])
        sys.stdout.flush()
        sys.stderr.flush()
        conn.send_bytes(json.dumps(outcome).encode())


@dataclass
class Executor:
    """One child process and the pipe to it."""

    policy: HandlerPolicy
    process: multiprocessing.process.BaseProcess = field(init=False)
    conn: Connection = field(init=False)

    def __post_init__(self) -> None:
        self.start()

    def start(self) -> None:
        context = multiprocessing.get_context("fork")
        parent_end, child_end = context.Pipe(duplex=True)
        self.process = context.Process(
            target=_child_main, args=(child_end, os.getpid(), self.policy), daemon=True
        )
        self.process.start()
        child_end.close()
        self.conn = parent_end

    def submit(self, func: str, payload: str) -> None:
        self.conn.send_bytes(json.dumps({"func": func, "payload": payload}).encode())

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
