"""Deciding which handlers a worker may run: the line of defence between a record and code.

Anyone who can write to a queue's keys can write a job record. A worker runs:

- a function registered with `@task`, looked up by its registered name; or
- unless strict, a plain Python function *defined* in an application module: `module` is the
  user's own code (not the standard library, not an installed distribution, editable or not,
  not pyscheduler itself, not `__main__`) or a module the worker was told to allow
  (`allowed_modules`, `--import`), and the object found by walking `qualname` through that
  module's own namespace and the classes defined there is a function whose own `__module__`
  and `__qualname__` are exactly `module` and `qualname`. So nothing reached through another
  module's attribute (`tasks:os.popen`), no builtins, no classes, no instances
  (`functools.partial`, callable objects), no properties or `__getattr__` run on the way.

Strict mode runs registered tasks only; with `allowed_modules` it runs only the tasks defined in
those modules (and their submodules), which it imports at start so that they register.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import site
import sysconfig
import traceback
import types
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import Any

from ..client.tasks import (
    OWN_PACKAGE,
    Task,
    never_a_handler,
    registered_task,
    top_package,
)
from ..exceptions import HandlerRefused, HandlerUnavailable

# -- where a module comes from -------------------------------------------------------------------


@cache
def _installed_roots() -> tuple[Path, ...]:
    roots = {Path(p) for p in site.getsitepackages()}
    roots.add(Path(site.getusersitepackages()))
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            roots.add(Path(path))
    return tuple(r.resolve() for r in roots if r.exists())


@cache
def _distributed_packages() -> frozenset[str]:
    """Top-level import names that belong to an installed distribution, editable ones too
    (an editable install's code lives outside site-packages)."""
    return frozenset(importlib.metadata.packages_distributions())


def _not_application_code(module: str) -> str | None:
    """Why `module` is not the user's own application code, or None when it is.

    Looks only at where the top-level package would be found: nothing is imported.
    """
    top = top_package(module)
    installed = f"it is an installed third-party package (allow it with --import {top})"
    if top in _distributed_packages():
        return installed
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):  # a module in sys.modules without a spec
        return "it is not application code"
    if spec is None:
        return None  # not importable here: resolve() reports that as HandlerUnavailable
    origin = spec.origin or next(iter(spec.submodule_search_locations or []), None)
    if origin is None or origin in ("built-in", "frozen"):
        return "it is not application code"
    path = Path(origin).resolve()
    if any(path.is_relative_to(root) for root in _installed_roots()):
        return installed
    return None


def _dotted_names(text: str) -> list[str] | None:
    parts = text.split(".")
    return parts if all(part.isidentifier() for part in parts) else None


def _defined_function(module: types.ModuleType, qualname: str) -> types.FunctionType | None:
    """The plain function defined in `module` under `qualname`, or None.

    Walks the module's and its classes' own namespaces (`vars`, never `getattr`, so no
    property, descriptor or module `__getattr__` runs); every step must be a class defined in
    that module under that path, and the end a function defined there under `qualname`.
    """
    parts = qualname.split(".")
    namespace: object = module
    for depth, part in enumerate(parts):
        try:
            found = vars(namespace).get(part)
        except TypeError:
            return None
        path = ".".join(parts[: depth + 1])
        if depth < len(parts) - 1:
            if not isinstance(found, type):
                return None
            if found.__module__ != module.__name__ or found.__qualname__ != path:
                return None
            namespace = found
            continue
        if type(found) is Task:  # `@task` keeps the plain function, which is what runs
            found = found.__wrapped__
        if type(found) is not types.FunctionType:
            return None
        if found.__module__ != module.__name__ or found.__qualname__ != qualname:
            return None
        return found
    return None


def _import_problem(module: str, exc: BaseException) -> HandlerUnavailable:
    where = os.getcwd()
    if (
        isinstance(exc, ModuleNotFoundError)
        and exc.name is not None
        and top_package(module).startswith(top_package(exc.name))
    ):
        what = f"there is no module {module!r} on this worker's path"
    else:
        last = traceback.format_exception_only(exc)[-1].strip()
        what = f"importing {module!r} failed: {last}"
    return HandlerUnavailable(
        f"this worker could not import the handler's module: {what} (working directory {where});"
        " run the worker in your application's directory, or name the module with --import"
    )


class HandlerPolicy:
    """Which handlers a worker may run; see the module docstring."""

    def __init__(self, *, strict: bool = False, allowed_modules: Iterable[str] = ()) -> None:
        self.strict = strict
        self.allowed_modules = tuple(allowed_modules)
        self._resolved: dict[str, Callable[..., Any]] = {}  # checked once per reference
        for module in self.allowed_modules:
            if _dotted_names(module) is None:
                raise ValueError(f"--import {module!r}: not a module name")
            # pyscheduler's own modules may be imported for the tasks they register (the demo's);
            # their other functions stay refused (see check_reference).
            why = None if top_package(module) == OWN_PACKAGE else never_a_handler(module)
            if why:
                raise ValueError(f"--import {module!r} cannot be allowed: {why}")
            importlib.import_module(module)

    def _allowed_module(self, module: str) -> bool:
        return any(module == m or module.startswith(m + ".") for m in self.allowed_modules)

    def _registered(self, ref: str) -> Callable[..., Any] | None:
        found = registered_task(ref)
        if found is None or not (self.strict and self.allowed_modules):
            return found
        # strict with --import M: only the tasks M defines.
        return found if self._allowed_module(str(getattr(found, "__module__", ""))) else None

    def check_reference(self, ref: str) -> tuple[str, str]:
        """(module, qualname) of a reference this worker may import and look into, else
        HandlerRefused. Imports nothing."""
        if self.strict:
            only = f": only the tasks of {', '.join(self.allowed_modules)}"
            raise HandlerRefused(
                f"handler {ref!r} is not a registered task (strict mode"
                f"{only if self.allowed_modules else ''})"
            )
        module, sep, qualname = ref.partition(":")
        if not sep or _dotted_names(module) is None or _dotted_names(qualname) is None:
            raise HandlerRefused(f"handler reference {ref!r} is not of the form module:function")
        why = never_a_handler(module)
        if why is None and not self._allowed_module(module):
            why = _not_application_code(module)
        if why:
            raise HandlerRefused(f"handler {ref!r} is refused: {why}")
        return module, qualname

    def resolve(self, ref: str) -> Callable[..., Any]:
        """The function a job names. Raises HandlerRefused when it may not run (never
        retried) and HandlerUnavailable when its module cannot be imported here (retried)."""
        found = self._registered(ref) or self._resolved.get(ref)
        if found is not None:
            return found
        module_name, qualname = self.check_reference(ref)
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # the module is missing here, or raised while importing
            raise _import_problem(module_name, exc) from None
        registered = self._registered(ref)  # importing the module may have registered it
        if registered is not None:
            return registered
        function = _defined_function(module, qualname)
        if function is None:
            raise HandlerRefused(
                f"handler {ref!r} is refused: {module_name!r} defines no function {qualname!r}"
                " (only plain functions defined in the module itself can be named; not"
                " classes, instances, builtins or names imported from elsewhere)"
            )
        self._resolved[ref] = function
        return function
