"""The asyncio client's connections: the default one per event loop, and the sync twin.

`pyscheduler.aio` talks to one server (`redis://`, `rediss://`, `unix://`) through
`redis.asyncio.Redis`, or to a Redis Cluster (`redis+cluster://`, `rediss+cluster://`)
through `redis.asyncio.cluster.RedisCluster`, built from the URL as the sync `connect` reads
it. A Sentinel URL is refused with `InvalidURL` naming the sync client; a `redis.asyncio`
client made by the caller (Sentinel-managed, say) is used as given.

The sync twin is a client of the same server (or cluster) and credentials, a `redis.Redis`
or a `redis.cluster.RedisCluster`, for the few steps whose code is the sync client's and that
run in a worker thread (`asyncio.to_thread`), so they are not written twice: registering a
job's dependencies, and cancelling (with its cascade to subtasks, dependents and parents).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from types import SimpleNamespace
from typing import Any

import redis
import redis.asyncio
import redis.cluster
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from ..exceptions import InvalidOption, InvalidURL
from ..store.connection import (
    Client,
    FcallKeys,
    cluster_node_url,
    is_cluster_url,
    is_sentinel_url,
    local_fcall_keys,
    option_error,
    redacted,
    resolve_url,
    validate_url,
)

__all__ = [
    "AsyncClient",
    "async_url",
    "default_connection",
    "is_cluster",
    "local_keys",
    "socket_settings",
    "sync_twin",
]

#: A connection to one server or to a Redis Cluster, of `redis.asyncio`.
AsyncClient = redis.asyncio.Redis | AsyncRedisCluster

# A redis.asyncio client is bound to the event loop it first ran in: one default client per
# loop and URL, gone with its loop.
_defaults: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, AsyncClient]] = (
    weakref.WeakKeyDictionary()
)
_twins: weakref.WeakKeyDictionary[AsyncClient, Client] = weakref.WeakKeyDictionary()
_twins_lock = threading.Lock()  # twins are made in worker threads


def is_cluster(client: AsyncClient) -> bool:
    return isinstance(client, AsyncRedisCluster)


def async_url(url: str | None = None) -> str:
    """`url` (None: $REDIS_URL, else the local default) after `validate_url`, if the asyncio
    client can take it; raises InvalidURL."""
    text = validate_url(resolve_url(url))
    if is_sentinel_url(text):
        raise InvalidURL(
            f"Redis URL {redacted(text)!r}: pyscheduler.aio connects to one server or a Redis"
            " Cluster (redis://, rediss://, unix://, redis+cluster://); for Sentinel use the"
            " sync client (pyscheduler.Queue), or pass a redis.asyncio client of your own as"
            " connection="
        )
    return text


def default_connection(url: str) -> AsyncClient:
    """The client for `url` (checked by `async_url`) of the running event loop."""
    loop = asyncio.get_running_loop()
    clients = _defaults.setdefault(loop, {})
    client = clients.get(url)
    if client is None:
        client = clients[url] = _client_for(url)
    return client


def _client_for(url: str) -> AsyncClient:
    try:
        if is_cluster_url(url):
            # Not connected yet: the cluster client reads the map of slots at its first call.
            return local_keys(AsyncRedisCluster.from_url(cluster_node_url(url)))
        return redis.asyncio.Redis.from_url(url)
    except TypeError as exc:
        raise option_error(url, exc) from None
    except ValueError as exc:
        raise InvalidURL(f"bad Redis URL {redacted(url)!r}: {exc}") from None


class _AskTheServer:
    """The parser `FcallKeys` falls back on for the commands it does not read: a marker
    telling `_AsyncFcallKeys` to ask redis-py's own (asynchronous) parser."""

    def get_keys(self, redis_conn: object, *args: object) -> object:
        return _AskTheServer


_known_keys = FcallKeys(_AskTheServer())


class _AsyncFcallKeys:
    """`store.connection.FcallKeys` for redis.asyncio's cluster client, whose parser has the
    same flaw (FCALL, FCALL_RO and XREAD have movable keys, so it sends COMMAND GETKEYS with
    the whole payload before each one, in pipelines too): their keys are read here, by the
    sync client's reader, and every other command goes to redis-py's parser."""

    def __init__(self, parser: Any) -> None:
        self._parser = parser

    async def get_keys(self, *args: Any) -> Any:
        keys = _known_keys.get_keys(None, *args)
        if keys is _AskTheServer:
            return await self._parser.get_keys(*args)
        return keys

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)


def local_keys(client: AsyncClient) -> AsyncClient:
    """`client`, routing library calls and XREAD on a cluster without asking a node for their
    keys first; harmless twice and for one server."""
    if isinstance(client, AsyncRedisCluster) and not isinstance(
        client.commands_parser, _AsyncFcallKeys
    ):
        client.commands_parser = _AsyncFcallKeys(client.commands_parser)  # type: ignore[assignment]
    return client


def socket_settings(client: AsyncClient) -> object:
    """What `client/events.block_ms` reads the socket timeout from, for either kind: a
    cluster client keeps its connections' settings itself, not in a pool."""
    if isinstance(client, AsyncRedisCluster):
        pool = SimpleNamespace(connection_kwargs=client.connection_kwargs)
        return SimpleNamespace(connection_pool=pool)
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
# A cluster client names its nodes itself.
_NODE_SETTINGS = frozenset({"host", "port", "db", "path"})
_SYNC_CLASS: dict[type[Any], type[Any]] = {
    redis.asyncio.Connection: redis.Connection,
    redis.asyncio.SSLConnection: redis.SSLConnection,
    redis.asyncio.UnixDomainSocketConnection: redis.UnixDomainSocketConnection,
}


def _not_portable(connection_class: type[Any]) -> InvalidOption:
    return InvalidOption(
        f"pyscheduler.aio runs this step with the sync client, which cannot copy a"
        f" {connection_class.__name__} connection: use the sync pyscheduler.Queue"
    )


def sync_twin(client: AsyncClient) -> Client:
    """A sync client of the server (or cluster) and credentials of `client`, made once per
    client. A cluster twin connects to read the map of slots: call this in a worker thread."""
    with _twins_lock:
        twin = _twins.get(client)
        if twin is None:
            twin = _twins[client] = _make_twin(client)
    return twin


def _make_twin(client: AsyncClient) -> Client:
    if isinstance(client, AsyncRedisCluster):
        settings = client.connection_kwargs
        connection_class = settings.get("connection_class", redis.asyncio.Connection)
        if connection_class not in (redis.asyncio.Connection, redis.asyncio.SSLConnection):
            raise _not_portable(connection_class)
        kwargs = {k: v for k, v in settings.items() if k in _PORTABLE - _NODE_SETTINGS}
        # The nodes it was told of, which include the ones it found once it asked.
        nodes = [
            redis.cluster.ClusterNode(node.host, node.port)  # type: ignore[no-untyped-call]
            for node in list(client.nodes_manager.startup_nodes.values())
        ]
        return local_fcall_keys(
            redis.cluster.RedisCluster(
                startup_nodes=nodes,
                ssl=connection_class is redis.asyncio.SSLConnection,
                **kwargs,
            )
        )
    pool = client.connection_pool
    sync_class = _SYNC_CLASS.get(pool.connection_class)
    if sync_class is None:
        raise _not_portable(pool.connection_class)
    kwargs = {k: v for k, v in pool.connection_kwargs.items() if k in _PORTABLE}
    return redis.Redis(connection_pool=redis.ConnectionPool(connection_class=sync_class, **kwargs))
