"""The library check of `store/library.py`, for a redis.asyncio client.

The same rule and words: once per client, the deployed version must be this code's (on a
Redis Cluster, on every primary), else LibraryError naming the deployment step, unless
auto-loading was opted in (then it is loaded on every server that differs). Concurrent first
calls on one client share one check.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import redis
from redis.asyncio.cluster import RedisCluster

from ..store.library import auto_load_requested, code_version, library_code, mismatch_error
from ..store.protocol import FUNCTION_PREFIX
from .connection import AsyncClient

_verified: weakref.WeakKeyDictionary[AsyncClient, str] = weakref.WeakKeyDictionary()
_checks: weakref.WeakKeyDictionary[AsyncClient, asyncio.Task[None]] = weakref.WeakKeyDictionary()

# One server's call, or one primary's ("" names the one server).
Call = Callable[..., Awaitable[Any]]


async def _servers(client: AsyncClient) -> dict[str, Call]:
    """How to send a command to each server that keeps functions, by node name."""
    if not isinstance(client, RedisCluster):
        return {"": client.execute_command}
    await client.initialize()  # the map of slots, read once
    primaries = sorted(client.get_primaries(), key=lambda node: str(node.name))

    def on(node: Any) -> Call:
        return lambda *args: client.execute_command(*args, target_nodes=node)

    return {str(node.name): on(node) for node in primaries}


async def _version(call: Call) -> str | None:
    try:
        value = await call("FCALL_RO", f"{FUNCTION_PREFIX}version", 0)
    except redis.ResponseError as exc:
        if "function not found" in str(exc).lower():
            return None
        raise
    return value.decode() if isinstance(value, bytes) else str(value)


async def deployed_versions(client: AsyncClient) -> dict[str, str | None]:
    """The version loaded on each server, by node name ("" for one server)."""
    servers = await _servers(client)
    found = await asyncio.gather(*(_version(call) for call in servers.values()))
    return dict(zip(servers, found, strict=True))


async def deployed_version(client: AsyncClient) -> str | None:
    """The version of the library loaded in this Redis, or None when there is none (on a
    cluster: when some primary has none or another version)."""
    found = set((await deployed_versions(client)).values())
    return found.pop() if len(found) == 1 else None


async def ensure_loaded(client: AsyncClient, auto_load: bool | None = None) -> None:
    """`store.library.ensure_loaded` for `client`."""
    if _verified.get(client) == code_version():
        return
    check = _checks.get(client)
    if check is None or check.done() or check.get_loop() is not asyncio.get_running_loop():
        check = _checks[client] = asyncio.ensure_future(_check(client, auto_load))
    # Shielded: a caller cancelled while it waits must not cancel the others' check.
    await asyncio.shield(check)


async def _check(client: AsyncClient, auto_load: bool | None) -> None:
    expected = code_version()
    servers = await _servers(client)
    found = await asyncio.gather(*(_version(call) for call in servers.values()))
    differ = {
        node: version for node, version in zip(servers, found, strict=True) if version != expected
    }
    if differ:
        if not auto_load_requested(auto_load):
            raise mismatch_error(differ, expected)
        code = library_code()[1]
        await asyncio.gather(*(servers[node]("FUNCTION LOAD", "REPLACE", code) for node in differ))
    _verified[client] = expected
