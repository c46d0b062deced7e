"""The library check of `store/library.py`, for a redis.asyncio client.

The same rule and words: once per client, the deployed version must be this code's, else
LibraryError naming the deployment step, unless auto-loading was opted in. Concurrent first
calls on one client share one check.
"""

from __future__ import annotations

import asyncio
import weakref

import redis

from ..store.library import auto_load_requested, code_version, library_code, mismatch_error
from ..store.protocol import FUNCTION_PREFIX
from .connection import AsyncClient

_verified: weakref.WeakKeyDictionary[AsyncClient, str] = weakref.WeakKeyDictionary()
_checks: weakref.WeakKeyDictionary[AsyncClient, asyncio.Task[None]] = weakref.WeakKeyDictionary()


async def deployed_version(client: AsyncClient) -> str | None:
    """The version of the library loaded in this Redis, or None when there is none."""
    try:
        value = await client.fcall_ro(f"{FUNCTION_PREFIX}version", 0)
    except redis.ResponseError as exc:
        if "function not found" in str(exc).lower():
            return None
        raise
    return value.decode() if isinstance(value, bytes) else str(value)


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
    found = await deployed_version(client)
    if found != expected:
        if not auto_load_requested(auto_load):
            raise mismatch_error({"": found}, expected)
        await client.function_load(library_code()[1], replace=True)
    _verified[client] = expected
