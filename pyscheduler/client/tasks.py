"""Naming handler functions in job records: the `@task` registry and the references jobs carry.

A job names its handler as "module:qualname" (or by the name it was registered under). Which of
those a worker may run is decided in `pyscheduler.runtime.allowlist`; the rules here are the ones
that hold everywhere: functions of `__main__`, of pyscheduler itself and of the standard library
are never handlers, so an enqueue of one is refused at once.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, overload

from ..exceptions import HandlerRefused

P = ParamSpec("P")
R = TypeVar("R")

_registry: dict[str, Callable[..., Any]] = {}

# The package itself: its functions are never handlers, whether it is installed or not.
OWN_PACKAGE = __name__.partition(".")[0]
MAIN_MODULE = "__main__"


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
    preemptible: bool | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def task(
    func: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    timeout: float | None = None,
    retries: int | None = None,
    time_slice: float | None = None,
    preemptible: bool | None = None,
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Register a handler, so that workers run it even in strict mode.

    `timeout`, `retries` and `time_slice` become the defaults of jobs enqueued with it.
    `preemptible=False`: its runs never pause for a job of higher priority (the worker reads
    it when it runs the handler).
    """
    options = {
        key: value
        for key, value in (
            ("timeout", timeout),
            ("retries", retries),
            ("time_slice", time_slice),
            ("preemptible", preemptible),
        )
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


def registered_task(name: str) -> Callable[..., Any] | None:
    return _registry.get(name)


def top_package(module: str) -> str:
    return module.partition(".")[0]


def stdlib_refusal(module: str) -> str | None:
    """Why a module's functions are never handlers by default: it is the standard library."""
    top = top_package(module)
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return "it belongs to the standard library"
    return None


def never_a_handler(module: str) -> str | None:
    """Why no function of `module` may ever be named by a job, allowed or not; else None."""
    if module == MAIN_MODULE:
        return (
            "functions of __main__ (the script that was run) cannot be named by a job: move"
            " the function into a module of your application"
        )
    if top_package(module) == OWN_PACKAGE:
        return "it belongs to pyscheduler itself"
    return stdlib_refusal(module)
