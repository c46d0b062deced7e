"""Render the Lua templates into one Redis Functions library, load it, and check its version.

The library text is rendered from `lua/library.lua.j2` with the constants of
`pyscheduler.protocol`; its version is a digest of the rendered text, so any change to a
Lua file or a shared constant yields a new version.

Redis keeps functions per server: on a Redis Cluster the library is loaded on, and checked
against, every primary (a replica gets it from its primary).
"""

from __future__ import annotations

import functools
import hashlib
import os
import weakref
from collections.abc import Callable
from functools import cache
from pathlib import Path

import jinja2
import redis
from redis.cluster import ClusterNode, RedisCluster

from ..exceptions import LibraryError
from .connection import Client
from .operations import OPERATIONS
from .operations import template_context as operations_context
from .protocol import FUNCTION_PREFIX, LIBRARY_NAME, template_context

# The operations, in the order they are rendered into the library (one file each).
OPERATION_FILES = tuple(op.file for op in OPERATIONS)

DEPLOY_HINT = (
    "deploy it with `python tools/load_scripts.py REDIS_URL` or `pyscheduler load-scripts --url"
    " REDIS_URL`, or opt in to loading it automatically (auto_load=True or PYSCHEDULER_AUTO_LOAD=1)"
)


def lua_dir() -> Path:
    """Where the Lua sources are: inside the installed package, else the source checkout."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "lua", package.parent / "lua"):
        if (candidate / "library.lua.j2").is_file():
            return candidate
    raise LibraryError(f"Lua sources not found next to {package}")


def _render(version: str) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(lua_dir()),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    template = env.get_template("library.lua.j2")
    return template.render(
        LIBRARY_NAME=LIBRARY_NAME,
        OPERATIONS=OPERATION_FILES,
        VERSION=version,
        **template_context(),
        **operations_context(),
    )


@cache
def library_code() -> tuple[str, str]:
    """The rendered library and its version: (version, code)."""
    digest = hashlib.sha256(_render("").encode()).hexdigest()[:16]
    return digest, _render(digest)


def code_version() -> str:
    return library_code()[0]


# redis-py's cluster client is untyped: its calls are wrapped here, once.
def _primaries(conn: RedisCluster) -> list[ClusterNode]:
    nodes: list[ClusterNode] = conn.get_primaries()  # type: ignore[no-untyped-call]
    return sorted(nodes, key=lambda node: str(node.name))


def _on_node(conn: RedisCluster, node: ClusterNode, *args: object) -> object:
    return conn.execute_command(*args, target_nodes=node)  # type: ignore[no-untyped-call]


def primary_count(conn: Client) -> int:
    """How many primaries hold the library: 1 for one server."""
    return len(_primaries(conn)) if isinstance(conn, RedisCluster) else 1


def _version_reply(call: Callable[[], object]) -> str | None:
    try:
        value = call()
    except redis.ResponseError as exc:
        if "function not found" in str(exc).lower():
            return None
        raise
    return value.decode() if isinstance(value, bytes) else str(value)


def deployed_versions(conn: Client) -> dict[str, str | None]:
    """The version loaded on each server, by node name ("host:port"; "" for one server)."""
    name = f"{FUNCTION_PREFIX}version"
    if not isinstance(conn, RedisCluster):
        return {"": _version_reply(lambda: conn.fcall_ro(name, 0))}
    versions: dict[str, str | None] = {}
    for node in _primaries(conn):
        ask = functools.partial(_on_node, conn, node, "FCALL_RO", name, 0)
        versions[str(node.name)] = _version_reply(ask)
    return versions


def deployed_version(conn: Client) -> str | None:
    """The version of the library loaded in this Redis, or None when there is none (on a
    cluster: when some primary has none or another version)."""
    found = set(deployed_versions(conn).values())
    return found.pop() if len(found) == 1 else None


def load(conn: Client) -> str:
    """Load (or replace) the library in this Redis, on every primary of a cluster; returns the
    version loaded."""
    version, code = library_code()
    if isinstance(conn, RedisCluster):
        for node in _primaries(conn):
            _on_node(conn, node, "FUNCTION LOAD", "REPLACE", code)
    else:
        conn.function_load(code, replace=True)
    return version


_verified: weakref.WeakKeyDictionary[Client, str] = weakref.WeakKeyDictionary()


def auto_load_requested(auto_load: bool | None) -> bool:
    if auto_load is not None:
        return auto_load
    return os.environ.get("PYSCHEDULER_AUTO_LOAD", "").lower() in ("1", "true", "yes")


def ensure_loaded(conn: Client, auto_load: bool | None = None) -> None:
    """Check once per client that the deployed library matches this code (on a cluster, on
    every primary).

    Raises LibraryError naming the deployment step, unless auto-loading was opted in.
    """
    expected = code_version()
    if _verified.get(conn) == expected:
        return
    found = deployed_versions(conn)
    differ = {node: version for node, version in found.items() if version != expected}
    if differ:
        if not auto_load_requested(auto_load):
            raise mismatch_error(differ, expected)
        load(conn)
    _verified[conn] = expected


def mismatch_error(differ: dict[str, str | None], expected: str) -> LibraryError:
    """The error of a client that finds a library other than this code's (`differ`: what each
    server that differs has, as `deployed_versions` tells) and may not load it."""
    return LibraryError(
        f"the pyscheduler Lua library is {describe_versions(differ)}; this code needs"
        f" version {expected}: {DEPLOY_HINT}"
    )


def describe_versions(versions: dict[str, str | None]) -> str:
    """What was found, for messages: "not loaded in this Redis", or for a cluster grouped by
    version: "not loaded on 127.0.0.1:7001, 127.0.0.1:7002; version 1a2b3c on 127.0.0.1:7003"."""
    nodes: dict[str | None, list[str]] = {}
    for node, version in versions.items():
        nodes.setdefault(version, []).append(node)
    parts = []
    for version, names in nodes.items():
        what = "not loaded" if version is None else f"version {version}"
        where = "in this Redis" if names == [""] else "on " + ", ".join(names)
        parts.append(f"{what} {where}")
    return "; ".join(parts)
