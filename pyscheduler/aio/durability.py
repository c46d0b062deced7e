"""Durable enqueues for the asyncio client: `store/durability.py`'s round trip, awaited.

The commands and then the WAIT (or WAITAOF) of a `Durability` go out on one connection taken
from the pool, in one packet, and every reply is read before the connection goes back, for
the reason that module gives (WAIT counts what its own connection wrote). One server only,
as everywhere in `pyscheduler.aio`; what a reply lacks is worded by `Durability.shortfall`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis

from ..store.durability import Durability
from .connection import AsyncClient

Command = Sequence[Any]


async def send_durably(
    client: AsyncClient, commands: Sequence[Command], wanted: Durability
) -> tuple[list[Any], str | None]:
    """Send `commands` then `wanted`'s WAIT on one connection, in one round trip: their
    replies (an error reply as its `redis.ResponseError`) and what the acknowledgement lacks
    (None: durable). A connection lost after the send raises, and nothing is sent again."""
    sent = [*commands, wanted.command()]
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
        # Replies may be left unread on it: the next user must not get them.
        await connection.disconnect()
        raise
    finally:
        await pool.release(connection)
    return replies[:-1], wanted.shortfall(replies[-1])
