"""Durable enqueues for the asyncio client: `store/durability.py`'s round trip, awaited.

The commands and then the WAIT (or WAITAOF) of a `Durability` go out on one connection, in
one packet, and every reply is read before the connection goes back, for the reason that
module gives (WAIT counts what its own connection wrote). On one server the connection is
taken from the client's pool; on a Redis Cluster from the node that owns the queue's slot
(never a cluster pipeline, which would send the keyless WAIT anywhere), following MOVED and
ASK replies (nothing was written) and a node that could not be reached (nothing was sent) as
the sync module does; a connection lost after the send raises and nothing is sent again.
What a reply lacks is worded by `Durability.shortfall`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import AskError, ClusterError, MovedError

from ..store.durability import REDIRECTIONS_MAX, Durability
from .connection import AsyncClient

Command = Sequence[Any]


async def send_durably(
    client: AsyncClient, key: str, commands: Sequence[Command], wanted: Durability
) -> tuple[list[Any], str | None]:
    """Send `commands` (writes of the queue that owns `key`) then `wanted`'s WAIT on one
    connection, in one round trip: their replies (an error reply as its
    `redis.ResponseError`) and what the acknowledgement lacks (None: durable)."""
    if not isinstance(client, RedisCluster):
        replies = await _on_server(client, [*commands, wanted.command()])
        return replies[:-1], wanted.shortfall(replies[-1])
    asking: tuple[str, int] | None = None
    for _ in range(REDIRECTIONS_MAX + 1):
        node = await _node_for(client, key, asking)
        sent: list[Command] = []
        for command in commands:
            if asking is not None:
                sent.append(("ASKING",))
            sent.append(command)
        sent.append(wanted.command())
        try:
            replies = await _on_node(node, sent)
        except _NotSent:
            # The node is gone (a killed primary the map still names): the cluster client
            # finds the slot's owner again the way it does for any command, or raises.
            asking = None
            await client.exists(key)
            continue
        if asking is not None:
            replies = replies[1::2] + replies[-1:]
        redirected = next((r for r in replies[:-1] if isinstance(r, AskError)), None)
        if redirected is None:
            return replies[:-1], wanted.shortfall(replies[-1])
        if isinstance(redirected, MovedError):
            # The slot has a new owner: a keyed read makes the cluster client learn it.
            asking = None
            await client.exists(key)
        else:
            asking = (redirected.host, int(redirected.port))
    raise ClusterError(f"a durable enqueue was redirected over and over ({key})")


async def _node_for(client: RedisCluster, key: str, asking: tuple[str, int] | None) -> ClusterNode:
    await client.initialize()  # the map of slots, read once
    if asking is None:
        node = client.get_node_from_key(key)
    else:
        node = client.get_node(host=asking[0], port=asking[1])
    if node is None:
        raise ClusterError(f"no node of the cluster client serves {key} (asked: {asking})")
    return node


class _NotSent(Exception):
    """No connection could be made: nothing was sent, so trying elsewhere is safe."""


async def _on_node(node: ClusterNode, sent: Sequence[Command]) -> list[Any]:
    connection = node.acquire_connection()
    try:
        try:
            await connection.connect()  # type: ignore[no-untyped-call]  # or nothing was sent
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            raise _NotSent(str(exc)) from exc
        await connection.send_packed_command(connection.pack_commands(sent))
        replies: list[Any] = []
        for command in sent:
            try:
                replies.append(await node.parse_response(connection, str(command[0])))
            except redis.ResponseError as exc:
                replies.append(exc)
        return replies
    except BaseException:
        # Replies may be left unread on it: the next user must not get them.
        await connection.disconnect()
        raise
    finally:
        node.release(connection)


async def _on_server(client: redis.asyncio.Redis, sent: Sequence[Command]) -> list[Any]:
    pool = client.connection_pool
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        await connection.send_packed_command(connection.pack_commands(sent))
        replies: list[Any] = []
        for command in sent:
            try:
                replies.append(await client.parse_response(connection, str(command[0])))
            except redis.ResponseError as exc:
                replies.append(exc)
    except BaseException:
        await connection.disconnect()
        raise
    finally:
        await pool.release(connection)
    return replies
