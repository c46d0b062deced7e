"""The asyncio client's connections: the default one per event loop, and the sync twin.

`pyscheduler.aio` talks to one server (`redis://`, `rediss://`, `unix://`) through
`redis.asyncio`. A Redis Cluster or Sentinel URL is refused with `InvalidURL` naming the sync
client; a `redis.asyncio` client made by the caller (Sentinel-managed, say) is used as given.

The sync twin is a `redis.Redis` of the same server and credentials, for the few steps whose
code is the sync client's and that run in a worker thread (`asyncio.to_thread`), so they are
not written twice: registering a job's dependencies, and cancelling (with its cascade to
subtasks, dependents and parents).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import redis
import redis.asyncio

from ..exceptions import InvalidOption, InvalidURL
from ..store.connection import is_cluster_url, is_sentinel_url, redacted, resolve_url, validate_url

__all__ = ["AsyncClient", "async_url", "default_connection", "sync_twin"]

AsyncClient = redis.asyncio.Redis

# A redis.asyncio client is bound to the event loop it first ran in: one default client per
# loop and URL, gone with its loop.
_defaults: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, AsyncClient]] = (
    weakref.WeakKeyDictionary()
)
_twins: weakref.WeakKeyDictionary[AsyncClient, redis.Redis] = weakref.WeakKeyDictionary()


def async_url(url: str | None = None) -> str:
    """`url` (None: $REDIS_URL, else the local default) after `validate_url`, if the asyncio
    client can take it; raises InvalidURL."""
    text = validate_url(resolve_url(url))
    if is_cluster_url(text) or is_sentinel_url(text):
        raise InvalidURL(
            f"Redis URL {redacted(text)!r}: pyscheduler.aio connects to one server (redis://, rediss://,"
            " unix://); for a Redis Cluster or Sentinel use the sync client (pyscheduler.Queue),"
            " or pass a redis.asyncio client of your own as connection="
        )
    return text


def default_connection(url: str) -> AsyncClient:
    """The client for `url` (checked by `async_url`) of the running event loop."""
    loop = asyncio.get_running_loop()
    clients = _defaults.setdefault(loop, {})
    client = clients.get(url)
    if client is None:
        try:
            client = clients[url] = redis.asyncio.Redis.from_url(url)
        except (TypeError, ValueError) as exc:
            raise InvalidURL(f"bad Redis URL {redacted(url)!r}: {exc}") from None
    return client


# The connection settings that mean the same to a sync connection.
_PORTABLE = frozenset(
    {
        "host",
        "port",
        "db",
        "path",
        "username",
        "password",
        "credential_provider",
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "socket_keepalive_options",
        "client_name",
        "protocol",
        "encoding",
        "encoding_errors",
        "decode_responses",
        "ssl_keyfile",
        "ssl_certfile",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ca_data",
        "ssl_ca_path",
        "ssl_check_hostname",
        "ssl_password",
        "ssl_min_version",
        "ssl_ciphers",
    }
)
_SYNC_CLASS: dict[type[Any], type[Any]] = {
    redis.asyncio.Connection: redis.Connection,
    redis.asyncio.SSLConnection: redis.SSLConnection,
    redis.asyncio.UnixDomainSocketConnection: redis.UnixDomainSocketConnection,
}


def sync_twin(client: AsyncClient) -> redis.Redis:
    """A sync client of the server and credentials of `client` (made once per client)."""
    twin = _twins.get(client)
    if twin is None:
        pool = client.connection_pool
        connection_class = _SYNC_CLASS.get(pool.connection_class)
        if connection_class is None:
            raise InvalidOption(
                f"pyscheduler.aio runs this step with the sync client, which cannot copy a"
                f" {pool.connection_class.__name__} connection: use the sync pyscheduler.Queue"
            )
        kwargs = {k: v for k, v in pool.connection_kwargs.items() if k in _PORTABLE}
        twin = _twins[client] = redis.Redis(
            connection_pool=redis.ConnectionPool(connection_class=connection_class, **kwargs)
        )
    return twin
