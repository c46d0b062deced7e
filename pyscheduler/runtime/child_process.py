"""The worker's side of a child process: forking it, and the pipe's frames both ways.

A child (a sync executor, executor.py, or the event-loop process, async_executor.py) gets
`RunRequest` frames and answers each with an `Outcome` frame (child_protocol.py). The worker
never blocks on the pipe: what it does not take now waits for `flush`, and outcomes are read
without waiting, many per system call, so the main loop keeps renewing leases and enforcing
timeouts whatever a child does.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import signal
import socket
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for_ready
from typing import Any

from ..store.connection import Client
from .allowlist import HandlerPolicy
from .child_protocol import (
    FrameReader,
    Outcome,
    RunRequest,
    SocketReads,
    decode_outcome,
    encode_request,
)

# How much of the child's outcomes one system call reads.
# Pieces per sendmsg: within IOV_MAX (1024 on Linux).
_SEND_PIECES_MAX = 512


class ChildProcess:
    """A forked child process of the worker and the pipe to it (see the module docstring)."""

    def __init__(self, policy: HandlerPolicy, connection: Client) -> None:
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
        # A duplicate socket object, read and written with MSG_DONTWAIT, so the pipe's own
        # blocking mode stays as it is.
        self._socket = socket.socket(fileno=os.dup(parent_end.fileno()))
        self._reads = SocketReads(self._socket)
        self._reader = FrameReader()
        self._outcomes: deque[Outcome] = deque()  # read, not taken yet
        self._unsent: deque[memoryview] = deque()
        self._child_gone = False

    @property
    def pid(self) -> int:
        return self.process.pid or 0

    def number(self, requests: list[RunRequest]) -> list[int]:
        """Give each request its seq (the order the child takes them in); returns them."""
        seqs = list(range(self.next_seq, self.next_seq + len(requests)))
        for request, seq in zip(requests, seqs, strict=True):
            request.seq = seq
        self.next_seq += len(requests)
        return seqs

    def submit(self, requests: list[RunRequest]) -> None:
        """Send numbered requests (OSError when the child is gone); never blocks (see the
        module docstring)."""
        for request in requests:
            self._unsent += (memoryview(piece) for piece in encode_request(request))
        self.flush()

    @property
    def unsent(self) -> bool:
        return bool(self._unsent)

    def flush(self) -> bool:
        """Send what the pipe takes now of the requests not sent yet; True when all are.

        The pieces go out in one `sendmsg` per turn (scatter-gather): a frame's header and
        parts, and the frames of a batch, cost one system call, and no part is copied."""
        unsent = self._unsent
        while unsent:
            while unsent and not unsent[0]:
                unsent.popleft()
            if not unsent:
                break
            try:
                sent = self._socket.sendmsg(
                    list(itertools.islice(unsent, _SEND_PIECES_MAX)), (), socket.MSG_DONTWAIT
                )
            except BlockingIOError:
                return False
            while sent and unsent:
                view = unsent[0]
                if sent >= len(view):
                    sent -= len(view)
                    unsent.popleft()
                else:
                    unsent[0] = view[sent:]
                    sent = 0
        return True

    def request_pause(self) -> None:
        """Ask the running jobs to pause at their next checkpoint."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGUSR1)

    def _read_available(self, block: bool) -> None:
        """Read what the child has sent (with `block`, wait for at least one piece)."""
        flags = 0 if block else socket.MSG_DONTWAIT
        while not self._child_gone:
            try:
                chunk = self._reads.read(flags=flags)
            except BlockingIOError:
                return
            except OSError:
                chunk = memoryview(b"")
            if not chunk:
                self._child_gone = True
                return
            # A child's frames are its own: one that does not decode means the child is
            # broken, and it is treated as dead (killed and restarted by the caller).
            try:
                frames = self._reader.feed(chunk)
                self._outcomes.extend(decode_outcome(kind, parts) for kind, parts in frames)
            except ValueError:
                self._child_gone = True
                return
            flags = socket.MSG_DONTWAIT

    def outcomes(self) -> list[Outcome] | None:
        """The outcomes the child has sent so far (without waiting); None when it died."""
        self._read_available(block=False)
        if not self._outcomes and self._child_gone:
            return None
        taken, self._outcomes = list(self._outcomes), deque()
        return taken

    def receive(self) -> Outcome | None:
        """Wait for the next outcome; None when the child died."""
        while not self._outcomes and not self._child_gone:
            wait_for_ready([self.conn])
            self._read_available(block=True)
        return self._outcomes.popleft() if self._outcomes else None

    def kill(self, keep_outcomes: bool = False) -> None:
        """SIGKILL the child. With `keep_outcomes`, what it sent can still be read (the pipe
        closes at the next `start`)."""
        if self.process.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
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
