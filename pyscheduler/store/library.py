"""Render the Lua templates into one Redis Functions library, load it, and check its version.

The library text is rendered from `lua/library.lua.j2` with the constants of
`pyscheduler.protocol`; its version is a digest of the rendered text, so any change to a
Lua file or a shared constant yields a new version.
"""

from __future__ import annotations

import hashlib
import os
import weakref
from functools import cache
from pathlib import Path

import jinja2
import redis

from ..exceptions import LibraryError
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


def deployed_version(conn: redis.Redis) -> str | None:
    """The version of the library loaded in this Redis, or None when there is none."""
    try:
        value = conn.fcall_ro(f"{FUNCTION_PREFIX}version", 0)
    except redis.ResponseError as exc:
        if "function not found" in str(exc).lower():
            return None
        raise
    return value.decode() if isinstance(value, bytes) else str(value)


def load(conn: redis.Redis) -> str:
    """Load (or replace) the library in this Redis; returns the version loaded."""
    version, code = library_code()
    conn.function_load(code, replace=True)
    return version


_verified: weakref.WeakKeyDictionary[redis.Redis, str] = weakref.WeakKeyDictionary()


def auto_load_requested(auto_load: bool | None) -> bool:
    if auto_load is not None:
        return auto_load
    return os.environ.get("PYSCHEDULER_AUTO_LOAD", "").lower() in ("1", "true", "yes")


def ensure_loaded(conn: redis.Redis, auto_load: bool | None = None) -> None:
    """Check once per client that the deployed library matches this code.

    Raises LibraryError naming the deployment step, unless auto-loading was opted in.
    """
    expected = code_version()
    if _verified.get(conn) == expected:
        return
    found = deployed_version(conn)
    if found != expected:
        if not auto_load_requested(auto_load):
            what = "is not loaded" if found is None else f"is version {found}"
            raise LibraryError(
                f"the pyscheduler Lua library {what} in this Redis; this code needs version"
                f" {expected}: {DEPLOY_HINT}"
            )
        load(conn)
    _verified[conn] = expected
