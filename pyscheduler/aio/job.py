"""`pyscheduler.aio.Job`: a handle on one job, read from Redis when awaited.

What the sync `Job` offers as properties (`status`, `result`, `error`) are coroutine methods
here, since a property cannot await: `await job.status()`. `wait` blocks inside Redis on the
queue's event stream (one XREAD BLOCK per event of the queue, no polling), as the sync
`Job.wait` does, with the stream replies read by `client/events.py`; on a Redis Cluster the
stream is in its queue's slot, so the XREAD goes to that queue's primary.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import redis

from ..client import events
from ..client.job import Job as SyncJob
from ..client.job import JobHandle, JobInfo, wait_left
from ..client.queue import Queue as SyncQueue
from ..exceptions import JobNotFound
from ..store.keys import QueueKeys
from ..store.protocol import EVENTS_READ_MAX, Status
from .connection import AsyncClient, socket_settings, sync_twin

if TYPE_CHECKING:  # named in `Job`'s base, a string ruff does not read as a use
    from .queue import Queue  # noqa: F401


class Job(JobHandle["Queue"]):
    """A handle on a job of an asyncio `Queue`."""

    kind = "aio.Job"

    @classmethod
    async def fetch(
        cls, job_id: str, connection: AsyncClient | None = None, queue: str | None = None
    ) -> Job:
        """The job with this id. Without `queue`, the queues known to this Redis are searched."""
        from .queue import Queue

        if queue is not None:
            q = Queue(queue, connection=connection)
            await q.fetch_info(job_id)  # raises JobNotFound
            return cls(job_id, q)
        client = Queue("default", connection=connection).connection
        names = await Queue.known(client)
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.hexists(QueueKeys(name).jobs, job_id)
        for name, exists in zip(names, await pipe.execute(), strict=True):
            if exists:
                return cls(job_id, Queue(name, connection=client))
        raise JobNotFound(f"job {job_id} does not exist in any known queue")

    async def info(self, *, show_token: bool = False) -> JobInfo:
        """A snapshot of the job; its lease's fencing token only with `show_token`."""
        return await self.queue.fetch_info(self.id, show_token=show_token)

    async def status(self) -> str:
        return (await self.info()).status

    async def result(self) -> Any:
        """The handler's return value once complete, else None."""
        return (await self.info()).result

    async def error(self) -> str | None:
        """The error text (with traceback) of the latest failed run, else None."""
        return (await self.info()).error

    async def cancel(self) -> str:
        """Cancel the job; returns the status it had (the sync `Job.cancel`, which cancels a
        waiting parent's subtasks and tells dependents and parents too). It runs the sync
        client's code in a thread, so its cascade is written once."""
        q, client = self.queue, self.queue.connection

        def cancel() -> str:
            twin = SyncQueue(q.name, connection=sync_twin(client), auto_load=q.auto_load)
            return SyncJob(self.id, twin).cancel()

        return await asyncio.to_thread(cancel)

    async def wait(self, timeout: float | None = None) -> Any:
        """Wait for the job to end: its result, or JobFailed / JobCancelled / JobExpired /
        WaitTimeout after `timeout` seconds (None: no limit), like the sync `Job.wait`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        client, keys = self.queue.connection, self.queue.keys
        # The cursor is read before the job, so an end between the two is still seen.
        after = events.latest_id(await client.xrevrange(keys.events, count=1))
        while True:
            info = await self.info()
            if info.status == Status.COMPLETE:
                return info.result
            left = wait_left(info, deadline, timeout)
            after = await _wait_for_end(client, keys, self.id, after, left)


async def _wait_for_end(
    client: AsyncClient, keys: QueueKeys, job_id: str, after: str, seconds: float
) -> str:
    """`events.wait_for_end`, awaited: block until an event ends `job_id` (or `seconds`
    pass); the stream id read up to."""
    cursors = {keys.queue: after}
    stop = time.monotonic() + seconds
    while True:
        left = stop - time.monotonic()
        if left <= 0:
            return cursors[keys.queue]
        block_ms = events.block_ms(socket_settings(client), min(left, events.BLOCK_SLICE_S))
        try:
            reply = await client.xread(
                {keys.events: cursors[keys.queue]}, count=EVENTS_READ_MAX, block=block_ms
            )
        except redis.TimeoutError:  # answered late (see events.read): just look again
            return cursors[keys.queue]
        read = events.taken(reply, cursors)
        if not read or any(e.job_id == job_id and e.event in events.END_EVENTS for e in read):
            return cursors[keys.queue]
