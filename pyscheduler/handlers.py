"""Naming handler functions in job records, and deciding which ones a worker may run.

A job names its handler as "module:qualname". A worker runs:
- functions registered with `@task` (always), and functions of modules it was told to allow;
- unless strict, any function of the user's own application modules: modules that are
  neither in the standard library nor installed in site-packages.
Anything else (``os.system``, ``subprocess.run``, a third-party function) is refused.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import site
import sys
import sysconfig
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, overload

from .exceptions import HandlerRefused

P = ParamSpec("P")
R = TypeVar("R")

_registry: dict[str, Callable[..., Any]] = {}


def reference_of(func: Callable[..., Any]) -> str:
    """The "module:qualname" that names `func` in a job record."""
    registered = getattr(func, "__pyscheduler_name__", None)
    if isinstance(registered, str):
        return registered
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    # A bound method's reference names the plain function: the worker would call it without
    # its object.
    if not module or not qualname or "<" in qualname or inspect.ismethod(func):
        raise HandlerRefused(
            f"{func!r} cannot be named by a job: use a module-level function (not a lambda,"
            " a nested function or a bound method)"
        )
    return f"{module}:{qualname}"


@overload
def task(func: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def task(
    *,
    name: str | None = None,
    timeout: float | None = None,
    retries: int | None = None,
    time_slice: float | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def task(
    func: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    timeout: float | None = None,
    retries: int | None = None,
    time_slice: float | None = None,
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Register a handler, so that workers run it even in strict mode.

    `timeout`, `retries` and `time_slice` become the defaults of jobs enqueued with it.
    """
    options = {
        key: value
        for key, value in (("timeout", timeout), ("retries", retries), ("time_slice", time_slice))
        if value is not None
    }

    def register(f: Callable[P, R]) -> Callable[P, R]:
        ref = name or reference_of(f)
        _registry[ref] = f
        f.__pyscheduler_name__ = ref  # type: ignore[attr-defined]
        f.__pyscheduler_options__ = options  # type: ignore[attr-defined]
        return f

    return register(func) if func is not None else register


def task_options(func: object) -> dict[str, Any]:
    """The enqueue defaults a handler was registered with (see `task`)."""
    if isinstance(func, str):
        func = _registry.get(func)
    options = getattr(func, "__pyscheduler_options__", None)
    return dict(options) if isinstance(options, dict) else {}


def registered_tasks() -> dict[str, Callable[..., Any]]:
    return dict(_registry)


@cache
def _installed_roots() -> tuple[Path, ...]:
    roots = {Path(p) for p in site.getsitepackages()}
    roots.add(Path(site.getusersitepackages()))
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            roots.add(Path(path))
    return tuple(r.resolve() for r in roots if r.exists())


def stdlib_refusal(module: str) -> str | None:
    """Why a module's functions are never handlers by default: it is the standard library."""
    top = module.split(".")[0]
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return "it belongs to the standard library"
    return None


def _refusal(module: str) -> str | None:
    """Why a module is not the user's own application code, or None when it is."""
    top = module.split(".")[0]
    if module == "__main__":
        return None
    why = stdlib_refusal(module)
    if why:
        return why
    spec = importlib.util.find_spec(top)
    if spec is None:
        return "no such module"
    origin = spec.origin or next(iter(spec.submodule_search_locations or []), None)
    if origin is None or origin in ("built-in", "frozen"):
        return "it is not application code"
    path = Path(origin).resolve()
    if any(path.is_relative_to(root) for root in _installed_roots()):
        return "it is an installed third-party package"
    return None


class HandlerPolicy:
    """Which handlers a worker may run; see the module docstring."""

    def __init__(self, *, strict: bool = False, allowed_modules: Iterable[str] = ()) -> None:
        self.strict = strict
        self.allowed_modules = tuple(allowed_modules)
        self._resolved: dict[str, Callable[..., Any]] = {}  # checked once per reference
        for module in self.allowed_modules:
            importlib.import_module(module)

    def _allowed_module(self, module: str) -> bool:
        return any(module == m or module.startswith(m + ".") for m in self.allowed_modules)

    def check_reference(self, ref: str) -> tuple[str, str]:
        """(module, qualname) of an acceptable reference, else HandlerRefused."""
        module, sep, qualname = ref.partition(":")
        if not sep or not module or not qualname:
            raise HandlerRefused(f"handler reference {ref!r} is not of the form module:function")
        if ref in _registry or self._allowed_module(module):
            return module, qualname
        if self.strict:
            raise HandlerRefused(f"handler {ref!r} is not a registered task (strict mode)")
        why = _refusal(module)
        if why:
            raise HandlerRefused(f"handler {ref!r} is refused: {why}; register it with @task")
        return module, qualname

    def resolve(self, ref: str) -> Callable[..., Any]:
        """The function a job names, or HandlerRefused saying why it may not run."""
        found = _registry.get(ref) or self._resolved.get(ref)
        if found is not None:
            return found
        module_name, qualname = self.check_reference(ref)
        try:
            target: Any = importlib.import_module(module_name)
            for part in qualname.split("."):
                target = getattr(target, part)
        except (ImportError, AttributeError) as exc:
            raise HandlerRefused(f"handler {ref!r} not found: {exc}") from None
        registered = _registry.get(ref)
        if registered is not None:  # importing the module registered it
            return registered
        if not inspect.isfunction(target):
            raise HandlerRefused(f"handler {ref!r} is not a plain function")
        self._resolved[ref] = target
        return target
