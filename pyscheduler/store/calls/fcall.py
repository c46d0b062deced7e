"""Calling the library: FCALL, and its error replies mapped to `pyscheduler.exceptions`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn

import redis

from ...exceptions import LibraryError, error_from_reply
from ..connection import Client
from ..library import DEPLOY_HINT

# redis-py prefixes the error of a pipelined command with "Command # N (...) of pipeline
# caused error: "; the library's reply follows it.
_PIPELINE_ERROR_MARK = " of pipeline caused error: "


def raise_mapped(exc: redis.ResponseError) -> NoReturn:
    message = str(exc).split(_PIPELINE_ERROR_MARK, 1)[-1]
    mapped = error_from_reply(message)
    if mapped is not None:
        raise mapped from None
    if "function not found" in message.lower():
        raise LibraryError(f"the pyscheduler Lua library is not loaded: {DEPLOY_HINT}") from None
    raise exc


def fcall(conn: Client, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
    try:
        return conn.fcall(name, len(keys), *keys, *args)
    except redis.ResponseError as exc:
        raise_mapped(exc)


def fcall_ro(conn: Client, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
    try:
        return conn.fcall_ro(name, len(keys), *keys, *args)
    except redis.ResponseError as exc:
        raise_mapped(exc)


def text_of(value: bytes | str) -> str:
    # Another writer may have stored bytes that are not UTF-8: an inspection call shows them
    # replaced (U+FFFD) rather than failing. Leases keep the raw bytes (`Lease`).
    return value.decode(errors="replace") if isinstance(value, bytes) else value
