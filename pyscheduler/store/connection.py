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
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import redis
from redis.cluster import RedisCluster
from redis.connection import parse_url

from ..exceptions import InvalidURL

__all__ = [
    "DEFAULT_URL",
    "URL_ENV",
    "Client",
    "client_from_url",
    "connect",
    "is_cluster_url",
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

SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
_CLUSTER_SUFFIX = "+cluster"
# Redis's `databases` setting is a C int; what a given server has is checked when it answers.
MAX_DB = 2**31 - 1
# Query options that name files: a missing one would only show up as a TLS error at connect.
_FILE_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_ca_path")
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_DB_RE = re.compile(r"^[+-]?\d+$")
_FORM = "redis://HOST:PORT/DB (or rediss://, unix:///path/to/socket, redis+cluster://HOST:PORT)"


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
            f"unknown scheme {scheme + '://'!r}: use redis://, rediss://, unix:// or"
            " redis+cluster://",
        )
    text = scheme + text[len(match.group(1)) :]  # redis-py wants the scheme in lower case
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


def resolve_url(url: str | None = None) -> str:
    """The URL a client would use: `url` if given, else $REDIS_URL if set and not blank, else
    `DEFAULT_URL`. Not validated."""
    if url is not None:
        return url
    return os.environ.get(URL_ENV, "").strip() or DEFAULT_URL


def client_from_url(url: str | None = None, **options: Any) -> redis.Redis:
    """A `redis.Redis` for `url` (None: $REDIS_URL, else `DEFAULT_URL`), after `validate_url`.

    `options` are passed to the client (e.g. `socket_connect_timeout=10`). No connection is
    made yet. Raises `InvalidURL` for a bad URL or an option redis-py does not know.
    """
    text = validate_url(resolve_url(url))
    if is_cluster_url(text):
        raise _bad(
            text,
            "this part of pyscheduler takes one server's URL; a cluster URL works with"
            " `pyscheduler load-scripts` and `connect()` so far",
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


def connect(url: str | None = None, **options: Any) -> Client:
    """A client for `url`, which may name a Redis Cluster (`redis+cluster://HOST:PORT`): then a
    `RedisCluster`, which asks that node for the others at once (so a cluster that cannot be
    reached raises `redis.exceptions.RedisClusterException` here)."""
    text = validate_url(resolve_url(url))
    if not is_cluster_url(text):
        return client_from_url(text, **options)
    try:
        return RedisCluster.from_url(_node_url(text), **options)
    except TypeError as exc:
        unknown = re.search(r"keyword argument '([^']+)'", str(exc))
        raise _bad(text, f"unknown option {unknown.group(1)!r}" if unknown else str(exc)) from None
