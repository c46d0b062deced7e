"""Keeping leases: renewals every third of a lease, and what a child may start meanwhile.

A child starts a job only while the worker knows its lease is held with `LEASE_SPARE` of the
lease to spare: a lease is counted as held until (time the pop or renewal was sent + lease *
(1 - LEASE_SPARE)), and renewals come every third of a lease, so a loop that is on time never
stops a start, and one paused past that point (SIGSTOP, swapping, a lost connection) never
lets its children start a job that another worker may have reclaimed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

from ..client.queue import Queue
from ..store import calls
from ..store.connection import Client
from .child_process import ChildProcess
from .runs import Run

LEASE_SPARE = 1 / 3


def vouch(executor: ChildProcess, runs: Iterable[Run]) -> None:
    """Tell a child until when it may start the jobs sent to it: while every lease it was sent
    is known held (a lost one is being taken back and stops nothing else)."""
    held = [run.held_until for run in runs if not run.lost]
    if held:
        executor.hold_until(min(held))


class Leases:
    """The renewal timer and the lease length of a worker."""

    def __init__(self, connection: Client, lease_ms: int) -> None:
        self.connection = connection
        self.lease_ms = lease_ms
        self.trust = lease_ms / 1000 * (1 - LEASE_SPARE)  # how long a fresh lease counts as held
        self.next_renewal = 0.0

    def renew_soon(self) -> None:
        """New leases came in: renew a third of a lease from now at the latest."""
        self.next_renewal = min(self.next_renewal, time.monotonic() + self.lease_ms / 3000)

    def renew(
        self,
        queues: Sequence[Queue],
        held_runs: list[Run],
        lost: Callable[[Run], None],
    ) -> bool:
        """Renew the leases of `held_runs`; `lost` is told of each one that is gone. True when
        any was renewed (then the children are to be vouched for again)."""
        self.next_renewal = time.monotonic() + self.lease_ms / 3000
        renewed = False
        for queue in queues:
            runs = [run for run in held_runs if run.queue is queue]
            if not runs:
                continue
            held = [(r.lease.id, r.lease.token) for r in runs]
            held_until = time.monotonic() + self.trust
            deadlines = calls.renew(self.connection, queue.keys, self.lease_ms, held)
            renewed = True
            gone: list[Run] = []
            for run, deadline in zip(runs, deadlines, strict=True):
                if deadline == 0:
                    gone.append(run)
                else:
                    run.held_until = held_until
            for run in gone:
                lost(run)
        return renewed
