"""Automatic pipelining: calls that threads make at the same time on one client share round trips.

While one round trip is in flight, the calls other threads make wait in line; when its replies
are back, the first of them sends the whole line as one pipeline, and so on. Every call returns
once its own replies arrived, with its own error replies; a call alone (one thread) is sent at
once, as a plain command, so it costs what it did without this. The commands of one call go out
together, in order, in one round trip; commands of several calls are not a transaction.

Calls that each send one command of a kind that can be merged (a `Merge`: psq_enqueue calls of
one queue, whose jobs go in one call as well as in many) go out merged into one command, which
costs the server far less than as many calls; should the merged command be refused, its parts
are sent again one by one, so each caller still gets its own outcome.

A child process forked while a round trip was in flight starts with an empty line (the parent's
threads are not in the child).
"""

from __future__ import annotations

import _thread
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import redis

__all__ = ["AutoPipeline", "Merge", "Pending", "for_client", "issue", "plan", "share_replies"]

Command = Sequence[Any]


class Merge:
    """How single-command calls of one `key` become one command: `join` makes it from their
    commands, `split` cuts its reply into theirs; a merged command holds at most `limit` units
    (`size` of a command: how many it holds)."""

    __slots__ = ("join", "key", "limit", "size", "split")

    def __init__(
        self,
        key: object,
        size: Callable[[Command], int],
        limit: int,
        join: Callable[[list[Command]], Command],
        split: Callable[[Any, list[Command]], list[Any]],
    ) -> None:
        self.key, self.size, self.limit, self.join, self.split = key, size, limit, join, split


class _Call:
    """One caller's commands, its replies, and the lock it sleeps on while in line."""

    __slots__ = ("batch", "commands", "error", "merge", "replies", "wake")

    def __init__(self, commands: Sequence[Command], merge: Merge | None) -> None:
        self.commands = commands
        self.merge = merge
        self.replies: list[Any] | None = None
        self.error: BaseException | None = None
        self.wake: Any = None  # a locked _thread lock while in line
        self.batch: list[_Call] | None = None  # set when it is to lead the next round trip

    def outcome(self) -> list[Any]:
        if self.error is not None:
            raise self.error
        assert self.replies is not None
        return self.replies


class AutoPipeline:
    """Shares round trips between the threads that call `execute` on one client."""

    def __init__(self, client: redis.Redis) -> None:
        # Weak: the registry maps clients to their pipeliner, which must not keep them alive.
        self._client = weakref.ref(client)
        self._reset()
        _instances.add(self)

    def _reset(self) -> None:
        self._mutex = _thread.allocate_lock()
        self._line: list[_Call] = []
        self._busy = False

    def busy(self) -> bool:
        """Whether a round trip is in flight."""
        return self._busy

    def waiting(self) -> int:
        """How many calls wait for the next round trip."""
        return len(self._line)

    def execute(self, commands: Sequence[Command], merge: Merge | None = None) -> list[Any]:
        """Send `commands` (each the arguments of one command) in one round trip; their replies
        in order, an error reply as its `redis.ResponseError` (returned, not raised). A broken
        connection raises what redis-py raises, in every call of that round trip. With `merge`
        (one command only), it may go merged with other calls' commands of its key."""
        call = _Call(commands, merge if len(commands) == 1 else None)
        with self._mutex:
            if self._busy:
                call.wake = _thread.allocate_lock()
                call.wake.acquire()
                self._line.append(call)
            else:
                self._busy = True
        if call.wake is None:
            self._lead([call])
            return call.outcome()
        try:
            call.wake.acquire()  # released with its replies, or to lead the next round trip
        except BaseException:
            with self._mutex:
                if call in self._line:
                    self._line.remove(call)
                    raise
                must_lead = call.batch is not None
            if must_lead:  # the others in line depend on this thread now
                self._lead(call.batch or [call])
            raise
        if call.batch is not None:
            self._lead(call.batch)
        return call.outcome()

    def _lead(self, batch: list[_Call]) -> None:
        """Send the batch's commands, hand the line to its first caller, wake the batch."""
        try:
            self._round_trip(batch)
        except BaseException as exc:
            for call in batch:
                call.error = exc
            raise
        finally:
            for call in batch:
                if call.replies is None and call.error is None:
                    call.error = redis.ConnectionError("the round trip was interrupted")
            with self._mutex:
                line, self._line = self._line, []
                if line:
                    line[0].batch = line
                else:
                    self._busy = False
            if line:
                line[0].wake.release()
            for call in batch[1:]:
                call.wake.release()

    def _round_trip(self, batch: list[_Call]) -> None:
        """Fill in each call's replies: one round trip, and one more for merged commands that
        were refused."""
        commands, sent = plan(batch)
        replies = self._send(commands)
        for call in batch:
            call.replies = []
        given, refused = share_replies(sent, replies)
        for call, reply in given:
            call.replies.append(reply)  # type: ignore[union-attr]
        if refused:  # all or nothing: nothing of it was written; each caller's own answer
            for call, reply in zip(
                refused, self._send([c.commands[0] for c in refused]), strict=True
            ):
                call.replies = [reply]

    def _send(self, commands: list[Command]) -> list[Any]:
        client = self._client()
        if client is None:  # only a caller holding the client gets here
            raise redis.ConnectionError("the client was closed")
        if len(commands) == 1:
            try:
                return [issue(client, commands[0])]
            except redis.ResponseError as exc:
                return [exc]
        pipe = client.pipeline(transaction=False)
        for command in commands:
            issue(pipe, command)
        replies: list[Any] = pipe.execute(raise_on_error=False)
        return replies


class Pending(Protocol):
    """What the round trip's planning reads of a call in line (either client's)."""

    @property
    def commands(self) -> Sequence[Command]: ...

    @property
    def merge(self) -> Merge | None: ...


PendingCall = TypeVar("PendingCall", bound=Pending)


def plan(batch: Sequence[PendingCall]) -> tuple[list[Command], list[list[PendingCall]]]:
    """The commands of one round trip, and for each the calls whose commands it holds: a
    call's own commands as they are, in order; the single commands of calls with a `Merge`
    joined by its key, as many as its limit lets one command hold (one alone goes unjoined)."""
    commands: list[Command] = []
    sent: list[list[PendingCall]] = []
    groups: dict[object, list[tuple[list[PendingCall], int]]] = {}
    for call in batch:
        merge = call.merge
        if merge is None:
            for command in call.commands:
                commands.append(command)
                sent.append([call])
            continue
        size = merge.size(call.commands[0])
        open_groups = groups.setdefault(merge.key, [])
        if open_groups and open_groups[-1][1] + size <= merge.limit:
            members, total = open_groups[-1]
            members.append(call)
            open_groups[-1] = (members, total + size)
        else:
            open_groups.append(([call], size))
    for open_groups in groups.values():
        for members, _ in open_groups:
            first = members[0]
            assert first.merge is not None
            if len(members) == 1:
                commands.append(first.commands[0])
            else:
                commands.append(first.merge.join([c.commands[0] for c in members]))
            sent.append(members)
    return commands, sent


def share_replies(
    sent: list[list[PendingCall]], replies: list[Any]
) -> tuple[list[tuple[PendingCall, Any]], list[PendingCall]]:
    """The replies to `plan`'s commands, as (call, reply) in each call's order, a merged
    command's reply split among its calls; and the calls of merged commands that were refused
    (all or nothing: none of it was written), to be sent again one by one."""
    given: list[tuple[PendingCall, Any]] = []
    refused: list[PendingCall] = []
    for members, reply in zip(sent, replies, strict=True):
        if len(members) == 1:
            given.append((members[0], reply))
        elif isinstance(reply, redis.ResponseError):
            refused += members
        else:
            merge = members[0].merge
            assert merge is not None
            parts = merge.split(reply, [c.commands[0] for c in members])
            given += zip(members, parts, strict=True)
    return given, refused


def issue(client: redis.Redis, command: Command) -> Any:
    """Send one command through a client or a pipeline; a library call through its `fcall`
    (where redis-py and anyone watching calls expect it)."""
    if command[0] == "FCALL":
        return client.fcall(command[1], command[2], *command[3:])
    return client.execute_command(*command)  # type: ignore[no-untyped-call]


_instances: weakref.WeakSet[AutoPipeline] = weakref.WeakSet()
_registry: weakref.WeakKeyDictionary[redis.Redis, AutoPipeline] = weakref.WeakKeyDictionary()
_registry_lock = threading.Lock()


def for_client(client: redis.Redis) -> AutoPipeline:
    """The one pipeliner of `client` (made on first use)."""
    found = _registry.get(client)
    if found is None:
        with _registry_lock:
            found = _registry.get(client)
            if found is None:
                found = _registry[client] = AutoPipeline(client)
    return found


def _after_fork_in_child() -> None:
    for pipeliner in list(_instances):
        pipeliner._reset()


os.register_at_fork(after_in_child=_after_fork_in_child)
