"""Shared round trips for coroutines: what `store/pipelining.py` does for threads.

Calls made on one client while a round trip is in flight wait in line; when its replies are
back the whole line goes out as one pipeline, and so on. The first call goes out at the next
turn of the event loop, with whatever the other coroutines added meanwhile. Calls that each
send one command of a kind that merges (a `pipelining.Merge`: the `psq_enqueue` calls of one
queue) go out as one command; should that be refused, its parts are sent again one by one, so
each caller still gets its own outcome. Every call gets its own replies, an error reply as
its `redis.ResponseError` (returned, not raised); a broken connection raises in every call of
that round trip.

On a Redis Cluster a line is one queue's (every key of a queue is in its slot), so each round
trip goes to one node, a redis.asyncio `ClusterPipeline` of one group: it routes by the
commands' keys and follows MOVED and ASK itself. A slow or unreachable shard then delays and
fails only the calls of its queues, not those of queues on other shards that were sent along.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence
from typing import Any

import redis

from ..store.pipelining import Merge, plan, share_replies
from .connection import AsyncClient, is_cluster

__all__ = ["Batcher", "for_client"]

Command = Sequence[Any]


class _Call:
    __slots__ = ("commands", "future", "merge")

    def __init__(
        self, commands: Sequence[Command], merge: Merge | None, future: asyncio.Future[list[Any]]
    ) -> None:
        self.commands = commands
        self.merge = merge
        self.future = future

    def answer(self, replies: list[Any]) -> None:
        if not self.future.done():  # its caller may have been cancelled
            self.future.set_result(replies)

    def fail(self, error: BaseException) -> None:
        if self.future.done():
            return
        if isinstance(error, asyncio.CancelledError):
            self.future.cancel()
        else:
            self.future.set_exception(error)


class Batcher:
    """The line of calls waiting for one client's next round trip, in one event loop."""

    def __init__(self, client: AsyncClient, loop: asyncio.AbstractEventLoop) -> None:
        # Weak: the registry maps clients to their batcher, which must not keep them alive.
        self._client = weakref.ref(client)
        self.loop = loop
        self._line: list[_Call] = []
        self._sender: asyncio.Task[None] | None = None
        # Queue names whose registry write (SADD) is in flight: one caller sends it.
        self.registering: set[str] = set()
        self.round_trips = 0

    def waiting(self) -> int:
        """How many calls wait for the next round trip."""
        return len(self._line)

    async def execute(self, commands: Sequence[Command], merge: Merge | None = None) -> list[Any]:
        """Send `commands` in one round trip, shared with the other calls waiting; their
        replies in order. With `merge` (one command only), it may go merged with other calls'
        commands of its key."""
        call = _Call(commands, merge if len(commands) == 1 else None, self.loop.create_future())
        self._line.append(call)
        if self._sender is None:
            self._sender = self.loop.create_task(self._send_line())
        return await call.future

    async def _send_line(self) -> None:
        try:
            while self._line:
                batch, self._line = self._line, []
                try:
                    await self._round_trip(batch)
                except BaseException as exc:
                    for call in batch:
                        call.fail(exc)
                    if not isinstance(exc, Exception):
                        raise
        finally:
            self._sender = None
            line, self._line = self._line, []
            for call in line:  # only when the sender itself was cancelled (loop shutdown)
                call.fail(redis.ConnectionError("the round trip was interrupted"))

    async def _round_trip(self, batch: list[_Call]) -> None:
        commands, sent = plan(batch)
        replies = await self._send(commands)
        answers: dict[int, list[Any]] = {id(call): [] for call in batch}
        given, refused = share_replies(sent, replies)
        for call, reply in given:
            answers[id(call)].append(reply)
        if refused:  # nothing of the merged command was written: each part on its own
            again = await self._send([c.commands[0] for c in refused])
            for call, reply in zip(refused, again, strict=True):
                answers[id(call)] = [reply]
        for call in batch:
            call.answer(answers[id(call)])

    async def _send(self, commands: list[Command]) -> list[Any]:
        client = self._client()
        if client is None:  # only a caller holding the client gets here
            raise redis.ConnectionError("the client was closed")
        self.round_trips += 1
        if len(commands) == 1:
            try:
                return [await client.execute_command(*commands[0])]
            except redis.ResponseError as exc:
                return [exc]
        pipe = client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies


# client -> queue name (None: every queue of one server) -> its batcher
_batchers: weakref.WeakKeyDictionary[AsyncClient, dict[str | None, Batcher]] = (
    weakref.WeakKeyDictionary()
)


def for_client(client: AsyncClient, queue: str) -> Batcher:
    """The batcher of `client` in the running event loop for the calls of `queue` (made on
    first use): on one server, one for every queue; on a cluster, one per queue."""
    loop = asyncio.get_running_loop()
    line: str | None = queue if is_cluster(client) else None
    batchers = _batchers.setdefault(client, {})
    found = batchers.get(line)
    if found is None or found.loop is not loop:
        found = batchers[line] = Batcher(client, loop)
    return found
