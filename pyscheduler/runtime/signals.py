"""Signals and sleeping: SIGTERM/SIGINT handlers, the self-pipe they wake the loop through,
and back-off sleeps that a signal cuts short.

The first SIGTERM or SIGINT asks the worker to stop (finish running jobs, take no more); a
second one aborts (held jobs come back through their leases). The handlers are installed
first thing in `Worker.work`, so a signal at any moment of the start-up is handled.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from multiprocessing.connection import wait as wait_for_ready
from types import FrameType

log = logging.getLogger("pyscheduler.worker")

RECONNECT_BACKOFF_MAX = 5.0


def install_signal_handlers(on_signal: Callable[[int], None]) -> Callable[[], None]:
    """Call `on_signal(signum)` at SIGTERM and SIGINT; returns what puts the previous handlers
    back. Outside the main thread it does nothing (the caller stops the worker with stop())."""

    def handler(signum: int, frame: FrameType | None) -> None:
        on_signal(signum)

    try:
        previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    except ValueError:
        return lambda: None

    def restore() -> None:
        for signum, old in previous.items():
            signal.signal(signum, old)

    return restore


class WakePipe:
    """The self-pipe: signals (`signal.set_wakeup_fd`) and the waiting threads write to it,
    the loop's one wait watches its read end."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)
        self._previous = self._set_wakeup_fd(self.write_fd)

    @staticmethod
    def _set_wakeup_fd(fd: int) -> int:
        try:
            return signal.set_wakeup_fd(fd)
        except ValueError:  # not the main thread
            return -1

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.read_fd, 512)

    def sleep(self, seconds: float) -> None:
        """Sleep, but wake up at a signal (its handler writes to the pipe)."""
        for _ in wait_for_ready([self.read_fd], seconds):
            self.drain()

    def close(self) -> None:
        self._set_wakeup_fd(self._previous)
        os.close(self.read_fd)
        os.close(self.write_fd)


class Backoff:
    """Exponential back-off up to RECONNECT_BACKOFF_MAX, in sleeps a signal cuts short."""

    def __init__(self, sleep: Callable[[float], None] = time.sleep) -> None:
        self.attempts = 0
        self.sleep_for = sleep

    def sleep(self) -> None:
        self.attempts += 1
        self.sleep_for(min(RECONNECT_BACKOFF_MAX, 0.05 * 2 ** min(self.attempts, 10)))

    def reset(self) -> None:
        self.attempts = 0
