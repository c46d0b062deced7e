"""Redis URLs: the one place that turns a URL (or $REDIS_URL, or the local default) into a client.

redis-py's own parser accepts many mistakes silently (`redis://host:6379/abc` is db 0, a
scheme-less `localhost:6379` or a bad port raise a bare ValueError deep inside the client), so
every URL goes through `validate_url` first, which raises `InvalidURL` naming what is wrong.

Accepted forms::

    redis://[[USER]:PASSWORD@]HOST[:PORT][/DB][?OPTION=VALUE&...]
    rediss://...                  the same over TLS (ssl_ca_certs=, ssl_certfile=, ...)
    unix://[[USER]:PASSWORD@]/PATH/TO/SOCKET[?db=DB&...]
    redis+cluster://[[USER]:PASSWORD@]HOST[:PORT][?OPTION=VALUE&...]
    rediss+cluster://...          a Redis Cluster, through any one of its nodes (the client
                                  finds the others); database 0 only, as in every cluster
    redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/SERVICE[/DB][?OPTION=VALUE&...]
    rediss+sentinel://...         the primary that Sentinels (port 26379 by default) name for
                                  SERVICE, found again after a failover; the user and password
                                  are the primary's (sentinel_username=, sentinel_password=:
                                  the sentinels' own); with rediss, TLS to both
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.client import Pipeline
from redis.cluster import RedisCluster
from redis.connection import parse_url
from redis.exceptions import (
    AskError,
    ClusterCrossSlotError,
    ClusterDownError,
    ClusterError,
    MovedError,
    ReadOnlyError,
    RedisClusterException,
    TryAgainError,
)
from redis.sentinel import Sentinel

from ..exceptions import InvalidURL

__all__ = [
    "DEFAULT_URL",
    "URL_ENV",
    "Client",
    "client_from_url",
    "cluster_node_url",
    "cluster_redirection",
    "connect",
    "error_text",
    "is_cluster_client",
    "is_cluster_url",
    "is_sentinel_url",
    "local_fcall_keys",
    "option_error",
    "pipeline",
    "redacted",
    "resolve_url",
    "validate_url",
]

#: The Redis used when neither a URL nor $REDIS_URL is given.
DEFAULT_URL = "redis://127.0.0.1:6379/0"
#: The environment variable naming the Redis URL.
URL_ENV = "REDIS_URL"

#: A connection to one server or to a Redis Cluster.
Client = redis.Redis | RedisCluster

SCHEMES = (
    "redis",
    "rediss",
    "unix",
    "redis+cluster",
    "rediss+cluster",
    "redis+sentinel",
    "rediss+sentinel",
)
_CLUSTER_SUFFIX = "+cluster"
_SENTINEL_SUFFIX = "+sentinel"
#: The port of a sentinel named without one.
SENTINEL_DEFAULT_PORT = 26379
# Options of a sentinel URL for the sentinels themselves (the others are the primary's).
_SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")
_SERVICE_RE = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
# Redis's `databases` setting is a C int; what a given server has is checked when it answers.
MAX_DB = 2**31 - 1
# Query options that name files: a missing one would only show up as a TLS error at connect.
_FILE_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_ca_path")
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_DB_RE = re.compile(r"^[+-]?\d+$")
_FORM = (
    "redis://HOST:PORT/DB (or rediss://, unix:///path/to/socket, redis+cluster://HOST:PORT,"
    " redis+sentinel://HOST:PORT/SERVICE)"
)


def redacted(url: str) -> str:
    """The URL without its password (userinfo or `password=` option), for messages and logs."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    # The last '@' ends the userinfo whatever a password contains; hiding too much is harmless.
    at = rest.rfind("@")
    if at >= 0:
        userinfo, hostpart = rest[:at], rest[at + 1 :]
        user, colon, _ = userinfo.partition(":")
        hidden = f"{user}:***" if colon and "/" not in user else "***"
        rest = f"{hidden}@{hostpart}"
    rest = re.sub(r"([?&]password=)[^&#]*", r"\1***", rest, flags=re.IGNORECASE)
    return f"{scheme}{sep}{rest}"


def _bad(url: str, problem: str) -> InvalidURL:
    return InvalidURL(f"bad Redis URL {redacted(url)!r}: {problem}")


def _db_number(url: str, text: str, where: str) -> int:
    if not _DB_RE.match(text):
        raise _bad(url, f"the database {where} {text!r} is not an integer (e.g. /0)")
    db = int(text)
    if not 0 <= db <= MAX_DB:
        raise _bad(url, f"the database {where} {db} is out of range (0..{MAX_DB})")
    return db


def validate_url(url: object) -> str:
    """The URL, checked: a known scheme, a host (or socket path), a port in 1..65535, an
    integer database, options redis-py knows with values it can parse. Raises `InvalidURL`
    naming the problem; the message never shows the password."""
    if not isinstance(url, str):
        raise InvalidURL(f"a Redis URL must be a string, not {type(url).__name__}")
    text = url.strip()
    if not text:
        raise InvalidURL(f"empty Redis URL: give {_FORM}")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise _bad(text, "it contains whitespace or control characters")
    match = _SCHEME_RE.match(text)
    if match is None:
        raise _bad(text, f"no scheme: write it as {_FORM}")
    scheme = match.group(1).lower()
    if scheme not in SCHEMES:
        raise _bad(
            text,
            f"unknown scheme {scheme + '://'!r}: use redis://, rediss://, unix://,"
            " redis+cluster:// or redis+sentinel://",
        )
    text = scheme + text[len(match.group(1)) :]  # redis-py wants the scheme in lower case
    if scheme.endswith(_SENTINEL_SUFFIX):
        _sentinel_parts(text)
        return text
    try:
        parts = urlsplit(text)
    except ValueError as exc:  # e.g. an unclosed '[' of an IPv6 address
        raise _bad(text, str(exc)) from None
    option_names = [pair.partition("=")[0] for pair in parts.query.split("&")]
    if "@" in parts.path + parts.fragment + "".join(option_names):
        # A '/', '?' or '#' in the password ended the userinfo early, so the rest of the
        # password looks like a path, options or a port: say so, and echo none of it.
        raise _bad(
            text,
            "a '/', '?' or '#' before the '@' must be written %2F, %3F or %23"
            " (percent-encode the password)",
        )
    try:
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise _bad(text, "the options after '?' are not NAME=VALUE&NAME=VALUE...") from None
    for name, values in query.items():
        if len(values) > 1:
            raise _bad(text, f"option {name!r} is given {len(values)} times")
        if values[0] == "":
            raise _bad(text, f"option {name!r} has no value")
    query_db = _db_number(text, query["db"][0], "option db=") if "db" in query else None

    if scheme == "unix":
        if not parts.path or parts.path == "/":
            raise _bad(text, "no socket path: write unix:///path/to/redis.sock")
    else:
        hostport = parts.netloc.rpartition("@")[2]
        if not parts.hostname:
            raise _bad(text, f"no host: write it as {_FORM}")
        if hostport.endswith(":"):
            raise _bad(text, "an empty port after ':'")
        try:
            port = parts.port
        except ValueError:
            port_text = hostport.rpartition("]")[2].partition(":")[2]
            raise _bad(text, f"the port {port_text!r} is not a number in 1..65535") from None
        if port is not None and not 1 <= port <= 65535:
            raise _bad(text, f"the port {port} is not in 1..65535")
        path = parts.path
        if path not in ("", "/"):
            if path.count("/") > 1:
                raise _bad(text, f"the path {path!r} is not /DB (a database number)")
            path_db = _db_number(text, path[1:], "number")
            if query_db is not None and query_db != path_db:
                raise _bad(text, f"two databases: /{path_db} and db={query_db}")
            query_db = path_db
        if scheme.endswith(_CLUSTER_SUFFIX) and query_db not in (None, 0):
            raise _bad(text, f"a Redis Cluster has database 0 only, not {query_db}")

    for name in _FILE_OPTIONS:
        if name in query and not os.path.exists(query[name][0]):
            raise _bad(text, f"the file of option {name}= does not exist: {query[name][0]!r}")
    try:
        parse_url(_node_url(text))  # type: ignore[no-untyped-call]  # redis-py checks the options
    except ValueError as exc:
        raise _bad(text, str(exc)) from None
    return text


def is_cluster_url(url: str) -> bool:
    return url.partition("://")[0].lower().endswith(_CLUSTER_SUFFIX)


def _node_url(url: str) -> str:
    """A cluster URL as redis-py spells a node's URL (redis+cluster:// -> redis://)."""
    scheme, sep, rest = url.partition("://")
    return scheme.removesuffix(_CLUSTER_SUFFIX) + sep + rest


def is_sentinel_url(url: str) -> bool:
    return url.partition("://")[0].lower().endswith(_SENTINEL_SUFFIX)


@dataclass(frozen=True)
class SentinelURL:
    """A `redis+sentinel://` URL taken apart."""

    sentinels: list[tuple[str, int]]
    service: str
    # The primary's side as a one-server URL (the first sentinel's address stands in for the
    # primary's, which the sentinels tell): its credentials, database and options.
    primary_url: str
    sentinel_options: dict[str, str]
    tls: bool


def _sentinel_parts(url: str) -> SentinelURL:
    """Check a sentinel URL (see the module docstring) and take it apart; InvalidURL names
    what is wrong."""
    scheme, _, rest = url.partition("://")
    if "#" in rest:
        raise _bad(url, "a '#' must be written %23")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    if "@" in path + query.partition("=")[0]:
        raise _bad(url, "a '/', '?' or '#' before the '@' must be written %2F, %3F or %23")
    sentinels: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        if not item:
            raise _bad(url, "no sentinel address (or an empty one between commas): write HOST:PORT")
        try:
            address = urlsplit("//" + item)
            host, port = address.hostname, address.port
        except ValueError:
            raise _bad(url, f"the sentinel address {item!r} has no port in 1..65535") from None
        if not host:
            raise _bad(url, f"the sentinel address {item!r} has no host")
        if item.endswith(":"):
            raise _bad(url, f"an empty port after ':' in {item!r}")
        if port is not None and not 1 <= port <= 65535:
            raise _bad(url, f"the port {port} is not in 1..65535")
        sentinels.append((host, SENTINEL_DEFAULT_PORT if port is None else port))
    segments = path.split("/") if path else []
    if segments[-1:] == [""]:
        segments.pop()  # a trailing '/'
    if not segments or not segments[0]:
        raise _bad(url, "no service name: write .../SERVICE[/DB] (the name the sentinels monitor)")
    service = unquote(segments[0])
    if not _SERVICE_RE.match(service):
        raise _bad(
            url, f"the service name {service!r} is not 1..200 letters, digits, '.', '_', '-'"
        )
    if len(segments) > 2:
        raise _bad(url, f"the path {'/' + path!r} is not /SERVICE[/DB]")
    db = "/" + segments[1] if len(segments) == 2 else ""
    try:
        query_pairs = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise _bad(url, "the options after '?' are not NAME=VALUE&NAME=VALUE...") from None
    sentinel_options = {n: v[-1] for n, v in query_pairs.items() if n in _SENTINEL_OPTIONS}
    primary_query = "&".join(
        pair
        for pair in query.split("&")
        if pair and pair.partition("=")[0] not in _SENTINEL_OPTIONS
    )
    tls = scheme.startswith("rediss")
    primary_url = f"{'rediss' if tls else 'redis'}://{userinfo}{at}{hostlist.split(',')[0]}{db}" + (
        f"?{primary_query}" if primary_query else ""
    )
    try:
        validate_url(primary_url)
    except InvalidURL as exc:  # the same words, about the URL as written
        raise _bad(url, str(exc).partition("': ")[2] or str(exc)) from None
    return SentinelURL(sentinels, service, primary_url, sentinel_options, tls)


def _sentinel_client(url: str, **options: Any) -> redis.Redis:
    """The client of the primary the sentinels name (`Sentinel(...).master_for(...)`): each
    new connection asks the sentinels where the primary is, so after a failover the client
    reconnects to the promoted replica (and a demoted primary's READONLY reply closes the
    connection, redis-py raising ConnectionError)."""
    parts = _sentinel_parts(url)
    kwargs: dict[str, Any] = parse_url(parts.primary_url)  # type: ignore[no-untyped-call]
    kwargs.pop("host", None)
    kwargs.pop("port", None)
    if kwargs.pop("connection_class", None) is not None and parts.tls:
        kwargs["ssl"] = True  # SentinelConnectionPool picks its TLS connection class itself
    kwargs.update(options)
    # The sentinels get the socket (and TLS) settings, and credentials of their own if given.
    sentinel_kwargs = {
        k: v
        for k, v in kwargs.items()
        if k.startswith("socket_") or (parts.tls and k.startswith("ssl"))
    }
    for option in _SENTINEL_OPTIONS:  # (parse_qs decoded them)
        if option in parts.sentinel_options:
            sentinel_kwargs[option.removeprefix("sentinel_")] = parts.sentinel_options[option]
    try:
        # Any: redis-py types Sentinel from 8.2 on, not before (an ignore would be unused there).
        sentinel_class: Any = Sentinel
        sentinel = sentinel_class(parts.sentinels, sentinel_kwargs=sentinel_kwargs)
        client: redis.Redis = sentinel.master_for(parts.service, **kwargs)
        pool = client.connection_pool
        pool.connection_class(**pool.connection_kwargs)  # unknown options fail here, unconnected
    except TypeError as exc:
        unknown = re.search(r"keyword argument '([^']+)'", str(exc))
        raise _bad(url, f"unknown option {unknown.group(1)!r}" if unknown else str(exc)) from None
    return client


def resolve_url(url: str | None = None) -> str:
    """The URL a client would use: `url` if given, else $REDIS_URL if set and not blank, else
    `DEFAULT_URL`. Not validated."""
    if url is not None:
        return url
    return os.environ.get(URL_ENV, "").strip() or DEFAULT_URL


def client_from_url(url: str | None = None, **options: Any) -> redis.Redis:
    """A `redis.Redis` for `url` (None: $REDIS_URL, else `DEFAULT_URL`), after `validate_url`:
    for what needs one server; everything else takes either kind through `connect`. For a
    sentinel URL, the client of the primary the sentinels name.

    `options` are passed to the client (e.g. `socket_connect_timeout=10`). No connection is
    made yet. Raises `InvalidURL` for a bad URL or an option redis-py does not know.
    """
    text = validate_url(resolve_url(url))
    if is_sentinel_url(text):
        return _sentinel_client(text, **options)
    if is_cluster_url(text):
        raise _bad(
            text,
            "client_from_url makes a client of one server; connect() takes a cluster URL",
        )
    try:
        client = redis.Redis.from_url(text, **options)
        pool = client.connection_pool
        # Unknown options only fail when the first connection is made: make one, unconnected.
        pool.connection_class(**pool.connection_kwargs)
    except TypeError as exc:
        unknown = re.search(r"keyword argument '([^']+)'", str(exc))
        raise _bad(text, f"unknown option {unknown.group(1)!r}" if unknown else str(exc)) from None
    except (ValueError, redis.RedisError) as exc:
        raise _bad(text, str(exc)) from None
    return client


def cluster_node_url(url: str) -> str:
    """For a cluster URL (checked by `validate_url`): the URL redis-py's cluster clients, sync
    and asyncio, take (`RedisCluster.from_url`), which names the node to ask for the others."""
    text = validate_url(url)
    if not is_cluster_url(text):
        raise _bad(text, "it names one server, not a cluster (redis+cluster://HOST:PORT)")
    return _node_url(text)


def option_error(url: str, exc: TypeError) -> InvalidURL:
    """The InvalidURL of a client that refused the options of `url` (a TypeError)."""
    unknown = re.search(r"keyword argument '([^']+)'", str(exc))
    return _bad(url, f"unknown option {unknown.group(1)!r}" if unknown else str(exc))


def connect(url: str | None = None, **options: Any) -> Client:
    """A client for `url`, which may name a Redis Cluster (`redis+cluster://HOST:PORT`): then a
    `RedisCluster`, which asks that node for the others at once (so a cluster that cannot be
    reached raises `redis.exceptions.RedisClusterException` here)."""
    text = validate_url(resolve_url(url))
    if not is_cluster_url(text):
        return client_from_url(text, **options)
    try:
        return local_fcall_keys(RedisCluster.from_url(cluster_node_url(text), **options))
    except TypeError as exc:
        raise option_error(text, exc) from None


def pipeline(conn: Client) -> Pipeline:
    """A pipeline without MULTI/EXEC for either client kind.

    On a cluster it is redis-py's `ClusterPipeline`, which sends each command to the node that
    owns its key's slot and follows MOVED/ASK replies itself, so a pipeline may mix queues (and
    shards); a MULTI/EXEC one could not. It is untyped, and has the command methods and
    `execute(raise_on_error=...)` of `Pipeline`, which is what it is typed as here.
    """
    if isinstance(conn, RedisCluster):
        cluster_pipe: Pipeline = conn.pipeline(transaction=False)  # type: ignore[no-untyped-call]
        return cluster_pipe
    return conn.pipeline(transaction=False)


def is_cluster_client(conn: Client) -> bool:
    return isinstance(conn, RedisCluster)


def cluster_redirection(exc: BaseException) -> str | None:
    """For a MOVED or ASK reply (which a one-server client does not follow): what it means and
    what to do, else None."""
    if not isinstance(exc, AskError):
        return None
    kind = "MOVED" if isinstance(exc, MovedError) else "ASK"
    return (
        f"it is a node of a Redis Cluster (it answered {kind}: slot {exc.slot_id} is served by"
        f" {exc.host}:{exc.port}); name the cluster with redis+cluster://HOST:PORT"
    )


def error_text(exc: BaseException) -> str:
    """A redis-py error in words. Its cluster errors carry the server's reply without the
    first word (a MOVED error reads "9053 127.0.0.1:7102"), which says nothing by itself."""
    redirection = cluster_redirection(exc)
    if redirection is not None:
        return redirection
    if isinstance(exc, ClusterDownError):
        return f"the cluster is down (CLUSTERDOWN {exc}); a failover may be under way"
    if isinstance(exc, TryAgainError):
        return f"the cluster is moving a slot (TRYAGAIN {exc})"
    if isinstance(exc, ReadOnlyError):
        return f"a write reached a replica (READONLY {exc}); a failover may be under way"
    if isinstance(exc, ClusterCrossSlotError):
        return f"the keys of one call are on different shards (CROSSSLOT {exc})"
    if isinstance(exc, ClusterError):
        return f"the cluster kept redirecting the call ({exc})"
    if isinstance(exc, RedisClusterException):
        return f"the cluster cannot serve the call ({exc})"
    return str(exc)


def _word(value: Any) -> str:
    return (value.decode(errors="replace") if isinstance(value, bytes) else str(value)).upper()


class FcallKeys:
    """redis-py's cluster client finds the keys of a command to route it by its slot; for a
    command whose keys move (FCALL, FCALL_RO, XREAD) it asks a node (COMMAND GETKEYS, with
    every argument: the whole payload), one more round trip before each library call, in
    pipelines too. Their keys are plain to read (FCALL: the `numkeys` arguments after
    `numkeys`; XREAD: the first half of what follows STREAMS): read them here, and leave every
    other command to redis-py's parser."""

    def __init__(self, parser: Any) -> None:
        self._parser = parser

    def get_keys(self, redis_conn: Any, *args: Any) -> Any:
        name = _word(args[0]) if args else ""
        if name in ("FCALL", "FCALL_RO") and len(args) >= 3:
            count = int(args[2])
            return list(args[3 : 3 + count]) or None
        if name == "XREAD":
            words = [_word(a) for a in args]
            if "STREAMS" in words:
                rest = args[words.index("STREAMS") + 1 :]
                return list(rest[: len(rest) // 2]) or None
        return self._parser.get_keys(redis_conn, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)


def local_fcall_keys(conn: Client) -> Client:
    """`conn`, routing library calls without asking a node for their keys first (see
    `FcallKeys`); its pipelines share its parser. Done by `connect` and `Queue`; harmless twice."""
    if isinstance(conn, RedisCluster) and not isinstance(conn.commands_parser, FcallKeys):
        conn.commands_parser = FcallKeys(conn.commands_parser)  # type: ignore[assignment]
    return conn
