"""The library calls the asyncio client makes, awaited: the keys from `store/operations.py`,
the error replies mapped and the replies parsed by `store/calls`, as in the sync client."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis

from ..store import calls
from ..store.keys import QUEUES_KEY, QueueKeys
from ..store.operations import keys_for
from .connection import AsyncClient


async def fcall(client: AsyncClient, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
    try:
        return await client.fcall(name, len(keys), *keys, *args)
    except redis.ResponseError as exc:
        calls.raise_mapped(exc)


async def fcall_ro(client: AsyncClient, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
    try:
        return await client.fcall_ro(name, len(keys), *keys, *args)
    except redis.ResponseError as exc:
        calls.raise_mapped(exc)


async def counts(client: AsyncClient, keys: QueueKeys) -> calls.Counts:
    return calls.parse_counts(
        await fcall_ro(client, "psq_counts", keys_for("psq_counts", keys), [])
    )


async def fetch(client: AsyncClient, keys: QueueKeys, job_id: str) -> calls.FetchedJob:
    """Read one job in full (`calls.fetch`). Raises JobNotFound."""
    reply = await fcall_ro(client, "psq_fetch", keys_for("psq_fetch", keys, [job_id]), [job_id])
    return calls.parse_fetch_reply(reply)


async def size_limits(client: AsyncClient, keys: QueueKeys) -> dict[str, int]:
    """The size limits the library enforces on this queue (`calls.size_limits`)."""
    return calls.parse_size_limits(await client.hmget(keys.config, calls.SIZE_LIMIT_FIELDS))


async def known_queues(client: AsyncClient) -> list[str]:
    """The names in the registry of known queues, sorted (`registry.known_queues`)."""
    members = await client.smembers(QUEUES_KEY)
    return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)
