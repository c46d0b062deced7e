"""An application module that imports dangerous things, for the handler allowlist tests.

Everything here is reachable by attribute from this module, so a worker that followed
attributes could be made to run it: `allowlist_app:os.popen`, `allowlist_app:popen_alias`, ...
Only `greet` and `Greeter.hello`, which this module defines, and the registered tasks may run.
"""

from __future__ import annotations

import functools
import importlib  # noqa: F401  (reachable as allowlist_app:importlib.import_module)
import os
import shutil  # noqa: F401
import subprocess  # noqa: F401
from typing import Any

import redis  # noqa: F401
from tasks import add as imported_add  # noqa: F401  (defined in tasks, not here)

from pyscheduler import task

# Names the tests look for in the lists below when an attribute walk ran code it should not.
TOUCHED: list[str] = []

popen_alias = os.popen
partial_popen = functools.partial(os.popen)
builtin_eval = eval


def greet(name: str) -> str:
    return f"hello {name}"


@task
def registered_greet(name: str) -> str:
    return f"hi {name}"


def make_inner() -> Any:
    def inner() -> str:
        return "inner"

    return inner


nested_inner = make_inner()


class Greeter:
    def hello(self: Any = None) -> str:
        return "hello"

    static_popen = staticmethod(os.popen)

    @property
    def touching(self) -> Any:
        TOUCHED.append("property")
        return os.popen


class Touchy:
    """Reading any attribute of this class's instances records it."""

    def __getattr__(self, name: str) -> Any:
        TOUCHED.append(f"instance:{name}")
        return os.popen


touchy = Touchy()


class CallableThing:
    def __call__(self, command: str) -> Any:
        return os.popen(command)


callable_thing = CallableThing()


def __getattr__(name: str) -> Any:  # a module __getattr__ must never run during a lookup
    TOUCHED.append(f"module:{name}")
    return os.popen


def own_helper(text: str) -> str:
    return text.upper()


# One of our functions under a second name: its own __qualname__ says `own_helper`.
renamed = own_helper
