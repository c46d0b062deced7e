"""Whether a job's handler is `async def`, known before any child has seen it: a guess.

The worker's main process never imports application code. To send a job straight to the
right process (the event loop, or a sync child it would otherwise have to start), it reads
the handler's module source with `ast` (parsed, never run), finding the module the way an
import would but without importing anything, and only for references the handler policy
would let a child import (`HandlerPolicy.check_reference`). A module the main process has
imported already (`--import`) is asked directly.

It is a guess, not a decision: a decorator may turn one kind into the other. The children
have the last word (a sync child answers DEFER for an `async def` handler, the event loop
answers SYNC for a plain one), and the worker learns from them.
"""

from __future__ import annotations

import ast
import inspect
import os
import sys
from importlib.machinery import PathFinder, SourceFileLoader

from ..exceptions import PySchedulerError
from .allowlist import HandlerPolicy

# A source file larger than this is not read (its handlers are then learned from the children).
SOURCE_BYTES_MAX = 2 * 1024 * 1024
_CACHE_MAX = 256

_parsed: dict[str, tuple[float, dict[str, bool]]] = {}  # path: (mtime, {qualname: is async})


def _source_path(module: str) -> str | None:
    """The source file `module` would be imported from, found without importing anything."""
    path: list[str] | None = None
    spec = None
    name = ""
    for part in module.split("."):
        name = f"{name}.{part}" if name else part
        spec = PathFinder.find_spec(name, path)
        if spec is None:
            return None
        path = list(spec.submodule_search_locations or [])
    if spec is None or not isinstance(spec.loader, SourceFileLoader) or spec.origin is None:
        return None
    return spec.origin


def _functions(tree: ast.Module) -> dict[str, bool]:
    """{qualname: is async} of the functions defined at module level and in classes."""
    found: dict[str, bool] = {}
    todo: list[tuple[str, list[ast.stmt]]] = [("", tree.body)]
    while todo:
        prefix, body = todo.pop()
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                found[prefix + node.name] = isinstance(node, ast.AsyncFunctionDef)
            elif isinstance(node, ast.ClassDef):
                todo.append((f"{prefix}{node.name}.", node.body))
    return found


def _kinds_in(path: str) -> dict[str, bool]:
    mtime = os.stat(path).st_mtime
    cached = _parsed.get(path)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    if os.path.getsize(path) > SOURCE_BYTES_MAX:
        kinds: dict[str, bool] = {}
    else:
        with open(path, "rb") as source:
            kinds = _functions(ast.parse(source.read(), path))
    if len(_parsed) >= _CACHE_MAX:
        _parsed.clear()
    _parsed[path] = (mtime, kinds)
    return kinds


def guess_async(policy: HandlerPolicy, ref: str) -> bool | None:
    """True when `ref` names an `async def` handler, False for a plain one, None when this
    cannot be told without importing (a refused reference, a registered name, no source)."""
    try:
        module, qualname = policy.check_reference(ref)
    except PySchedulerError:
        module, _, qualname = ref.partition(":")
        if module not in sys.modules:  # a registered task of a module not imported here
            return None
    if module in sys.modules:
        try:
            return inspect.iscoroutinefunction(policy.resolve(ref))
        except PySchedulerError:
            return None
    try:
        path = _source_path(module)
        return None if path is None else _kinds_in(path).get(qualname)
    except (OSError, SyntaxError, ValueError, RecursionError, MemoryError, ImportError):
        return None
