"""A leased job as the worker follows it (`Run`), and the request a child gets for it.

What the worker leases is untrusted (anyone who can write the queue's keys can write a job): a
record, payload or checkpoint that is not UTF-8, or a record with a forged field, is refused
here with the reason, before any child sees it; the children turn anything else wrong with a
job into its outcome.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..client.queue import Queue
from ..store import calls
from .child_protocol import RunRequest
from .context import BadRecord, check_record


@dataclass(eq=False)
class Run:
    """A job leased to this worker and sent to a child, which may not have started it."""

    lease: calls.Lease
    queue: Queue
    timeout_s: float
    record: dict[str, Any]  # checked (see `context.check_record`); empty when refused
    refusal: str | None = None  # why the job cannot run: it is refused, never sent to a child
    seq: int = -1
    started: float | None = None  # monotonic, once the child started it
    lost: bool = False  # its lease was lost while it ran on the event loop
    held_until: float = 0.0  # monotonic: its lease is known held, with room to spare, till then

    @property
    def timeout_at(self) -> float:
        return (self.started or time.monotonic()) + self.timeout_s

    @property
    def func(self) -> str:
        func = self.record.get("func")
        return func if isinstance(func, str) else ""

    def request(self, lease_ms: int, may_defer: bool) -> RunRequest:
        """The request that sends this run to a child: the stored bytes as they are."""
        lease = self.lease
        return RunRequest(
            self.queue.name,
            lease.id,
            lease.token,
            lease.record,
            lease.payload,
            lease.checkpoint,
            lease_ms,
            self.timeout_s,
            may_defer=may_defer,
        )


def _check_text(data: bytes, what: str) -> None:
    """BadRecord when bytes read from Redis are not UTF-8."""
    try:
        data.decode()
    except UnicodeDecodeError as exc:
        raise BadRecord(
            f"the {what} is not valid UTF-8 (byte {data[exc.start]:#04x} at offset {exc.start})"
        ) from None


def make_run(queue: Queue, lease: calls.Lease) -> Run:
    """The run of a leased job, or, when its stored bytes cannot be trusted (see
    `context.check_record`), its refusal with the reason."""
    try:
        record = check_record(lease.record)
        _check_text(lease.payload, "job payload")
        if lease.checkpoint is not None:
            _check_text(lease.checkpoint, "job checkpoint")
    except BadRecord as exc:
        return Run(lease, queue, queue.default_timeout, {}, refusal=str(exc))
    timeout = float(record.get("timeout") or queue.default_timeout)
    return Run(lease, queue, timeout, record)
