"""Which child runs a leased job: the event loop for `async def` handlers, a sync slot else.

A handler's kind is learned from the children (a sync child answers DEFER for an `async def`
handler, the event loop answers SYNC for a plain one) and, for a handler not seen yet,
guessed without importing it (handler_kinds.py), so a job goes straight to the right process
and no process is started for nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from ..client.queue import Queue
from ..store import calls
from ..store.connection import Client
from ..store.protocol import FailKind
from .allowlist import HandlerPolicy
from .children import Children
from .event_loop import EventLoop
from .handler_kinds import guess_async
from .reporting import Reporter
from .runs import Run, make_run
from .slots import Slot, SyncSlots

# Handlers whose kind (`async def` or not) the worker remembers; past this it starts over.
KNOWN_HANDLERS_MAX = 10_000


class Dispatch:
    """The sync slots and the event loop of a worker, and the jobs sent to them."""

    def __init__(
        self,
        policy: HandlerPolicy,
        connection: Client,
        concurrency: int,
        lease_ms: int,
        reporter: Reporter,
        children: Children,
        stopping: Callable[[], bool],
    ) -> None:
        self.policy = policy
        self.lease_ms = lease_ms
        self.reporter = reporter
        self.stopping = stopping
        self.sync = SyncSlots(concurrency, children, reporter, self._deferred)
        self.loop = EventLoop(
            policy, connection, concurrency, reporter, children.before_fork, self._to_sync
        )
        self._is_async: dict[str, bool] = {}  # handler: `async def` or not, as learned

    def runs(self) -> list[Run]:
        """The runs held, but those on the loop whose lease was lost."""
        return self.sync.runs() + [run for run in self.loop.runs.values() if not run.lost]

    def holds_runs(self) -> bool:
        return self.sync.holds_runs() or bool(self.loop.runs)

    def hand_out(
        self,
        queue: Queue,
        leases: list[calls.Lease],
        idle: list[Slot],
        extra: dict[int, int],
        held_until: float,
    ) -> None:
        """Send leased jobs to children: `async def` ones to the event loop while it has room,
        the others one to each idle slot first, then prefetch (`extra`: jobs per slot id)."""
        pending: list[Run] = []
        on_loop: list[Run] = []
        for run in (make_run(queue, lease) for lease in leases):
            run.held_until = held_until
            if run.refusal is not None:
                self.reporter.fail(run, FailKind.REFUSED, run.refusal)
            elif self._async(run) and len(on_loop) < self.loop.room():
                on_loop.append(run)
            else:
                pending.append(run)
        if on_loop:
            self.loop.start(on_loop, self.lease_ms, self.stopping())
        batches: dict[int, list[Run]] = {}
        while pending and idle:
            batches.setdefault(id(idle.pop(0)), []).append(pending.pop(0))
        for slot_id, count in list(extra.items()):
            take = min(count, len(pending))
            if take:
                batches.setdefault(slot_id, []).extend(pending[:take])
                del pending[:take]
            if count - take > 0:
                extra[slot_id] = count - take
            else:
                del extra[slot_id]
        by_id = {id(slot): slot for slot in self.sync.slots}
        for slot_id, batch in batches.items():
            self._send_sync(by_id[slot_id], batch)
        assert not pending, "the library leased more jobs than asked for"

    def _send_sync(self, slot: Slot, runs: list[Run]) -> None:
        # A sync child hands an `async def` job back (DEFER) when the event loop has room.
        self.sync.send(slot, runs, self.lease_ms, may_defer=self.loop.room() > 0)
        if self.stopping() and slot.executor is not None:
            slot.executor.request_pause()

    def _async(self, run: Run) -> bool:
        """Whether a run's handler is (known or guessed to be) `async def`."""
        known = self._is_async.get(run.func)
        if known is None:
            known = bool(guess_async(self.policy, run.func))
            self._learn(run.func, known)
        return known

    def _learn(self, func: str, is_async: bool) -> None:
        if len(self._is_async) >= KNOWN_HANDLERS_MAX:
            self._is_async.clear()
        self._is_async[func] = is_async

    def _deferred(self, run: Run) -> None:
        """A sync child found an `async def` handler: run it on the loop, or, if the loop
        filled up meanwhile, give it back to its queue (it never ran; the next pop takes it)."""
        self._learn(run.func, True)
        if self.loop.room() > 0:
            self.loop.start([run], self.lease_ms, self.stopping())
        else:
            self.reporter.hand_back([run])

    def _to_sync(self, run: Run) -> None:
        """The event loop found a plain handler: run it in an idle sync slot, or give it back
        to its queue when none is idle (it never ran)."""
        self._learn(run.func, False)
        idle = self.sync.idle()
        if idle and not self.stopping():
            self._send_sync(idle[0], [run])
        else:
            self.reporter.hand_back([run])
