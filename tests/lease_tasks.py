"""Handlers of the lease-safe start tests (module `lease_tasks`; workers run with cwd tests/).

Each records its start by RPUSHing its label to a list the test names, so the test counts
how many times each job started, wherever it ran.
"""

from __future__ import annotations

import os
import signal

from tasks import client


def stop_worker_then_wait(url: str, starts: str, worker_pid: int, go: str, label: str) -> str:
    """Run by a child of the worker `worker_pid`: SIGSTOP that worker's main process at once
    (before any round trip, so jobs it prefetched are still queued behind this one) and wait
    until the test pushes to `go`. Run elsewhere: just record the start."""
    if os.getppid() == worker_pid:
        os.kill(worker_pid, signal.SIGSTOP)
        client(url).blpop([go], timeout=60)
    client(url).rpush(starts, label)
    return label


async def async_stop_worker_then_block(
    url: str, starts: str, worker_pid: int, go: str, label: str
) -> str:
    """The same as a coroutine that blocks its event loop while it waits (a sync call)."""
    return stop_worker_then_wait(url, starts, worker_pid, go, label)


async def async_append(url: str, starts: str, label: str) -> str:
    client(url).rpush(starts, label)
    return label
