"""Naming handler functions in job records: the `@task` registry and the references jobs carry.

A job names its handler as "module:qualname" (or by the name it was registered under). Which of
those a worker may run is decided in `pyscheduler.runtime.allowlist`; the rules here are the ones
that hold everywhere: functions of `__main__`, of pyscheduler itself and of the standard library
are never handlers, so an enqueue of one is refused at once.
"""

from __future__ import annotations

import functools
import inspect
import re
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from ..exceptions import HandlerRefused, InvalidOption
from ..store.protocol import EXCEPTION_NAME_MAX_BYTES, RETRY_ON_MAX

if TYPE_CHECKING:  # queue.py imports this module
    from ..store.durability import Durability
    from .job import Job
    from .queue import Queue

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


class TaskCall(Generic[P]):
    """A task with enqueue options chosen (`Task.options`): `enqueue` takes the task's own
    arguments, checked against its signature by the type checker."""

    def __init__(
        self, func: Callable[P, Any], queue: Queue | None, options: dict[str, Any]
    ) -> None:
        self._func = func
        self._queue = queue
        self._options = options

    def options(
        self,
        *,
        queue: Queue | None = None,
        priority: int | None = None,
        delay: float | timedelta | None = None,
        at: datetime | float | None = None,
        timeout: float | timedelta | None = None,
        retries: int | None = None,
        backoff: float | timedelta | None = None,
        job_id: str | None = None,
        result_ttl: float | timedelta | None = None,
        time_slice: float | timedelta | None = None,
        unique_for: float | timedelta | None = None,
        unique_key: str | None = None,
        expires: float | timedelta | datetime | None = None,
        retry_on: Sequence[type[BaseException] | str] | None = None,
        durable: bool | Durability | None = None,
    ) -> TaskCall[P]:
        """These options on top of the ones chosen so far (see `Queue.enqueue`); None: unset."""
        chosen = {
            key: value
            for key, value in (
                ("priority", priority),
                ("delay", delay),
                ("at", at),
                ("timeout", timeout),
                ("retries", retries),
                ("backoff", backoff),
                ("job_id", job_id),
                ("result_ttl", result_ttl),
                ("time_slice", time_slice),
                ("unique_for", unique_for),
                ("unique_key", unique_key),
                ("expires", expires),
                ("retry_on", retry_on),
                ("durable", durable),
            )
            if value is not None
        }
        # `is None`, not `or`: an empty Queue is falsy (it has a length).
        chosen_queue = self._queue if queue is None else queue
        return TaskCall(self._func, chosen_queue, {**self._options, **chosen})

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """Enqueue a job calling the task with these arguments (an argument named like an
        option is the task's own, never an option)."""
        if self._queue is None:
            raise InvalidOption(
                f"task {reference_of(self._func)!r} has no queue to enqueue into: give one"
                " with @task(queue=...) or .options(queue=...), or use Queue.enqueue"
            )
        return self._queue.enqueue_call(self._func, args, kwargs, **self._options)


class Task(Generic[P, R]):
    """A function registered with `@task`: called, it is the function; `enqueue` and
    `options(...).enqueue` make jobs of it, with arguments typed by its signature.

    Workers run the plain function (the registry and the allowlist hold it, `__wrapped__`).
    """

    __wrapped__: Callable[P, R]
    __name__: str
    __qualname__: str

    def __init__(self, func: Callable[P, R], queue: Queue | None) -> None:
        functools.update_wrapper(self, func)
        self._default_queue = queue

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.__wrapped__(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<task {reference_of(self)!r}>"

    @property
    def default_queue(self) -> Queue | None:
        """The queue `enqueue` uses when `options` names none (`@task(queue=...)`)."""
        return self._default_queue

    def options(
        self,
        *,
        queue: Queue | None = None,
        priority: int | None = None,
        delay: float | timedelta | None = None,
        at: datetime | float | None = None,
        timeout: float | timedelta | None = None,
        retries: int | None = None,
        backoff: float | timedelta | None = None,
        job_id: str | None = None,
        result_ttl: float | timedelta | None = None,
        time_slice: float | timedelta | None = None,
        unique_for: float | timedelta | None = None,
        unique_key: str | None = None,
        expires: float | timedelta | datetime | None = None,
        retry_on: Sequence[type[BaseException] | str] | None = None,
        durable: bool | Durability | None = None,
    ) -> TaskCall[P]:
        """The task with these enqueue options (see `Queue.enqueue`; None: the default)."""
        return TaskCall(self, self._default_queue, {}).options(
            queue=queue,
            priority=priority,
            delay=delay,
            at=at,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            job_id=job_id,
            result_ttl=result_ttl,
            time_slice=time_slice,
            unique_for=unique_for,
            unique_key=unique_key,
            expires=expires,
            retry_on=retry_on,
            durable=durable,
        )

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """Enqueue a job calling the task with these arguments into its default queue."""
        return TaskCall(self, self._default_queue, {}).enqueue(*args, **kwargs)


@overload
def task(func: Callable[P, R], /) -> Task[P, R]: ...
@overload
def task(
    *,
    name: str | None = None,
    queue: Queue | None = None,
    timeout: float | None = None,
    retries: int | None = None,
    time_slice: float | None = None,
    preemptible: bool | None = None,
    retry_on: Sequence[type[BaseException] | str] | None = None,
) -> Callable[[Callable[P, R]], Task[P, R]]: ...
def task(
    func: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    queue: Queue | None = None,
    timeout: float | None = None,
    retries: int | None = None,
    time_slice: float | None = None,
    preemptible: bool | None = None,
    retry_on: Sequence[type[BaseException] | str] | None = None,
) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
    """Register a handler, so that workers run it even in strict mode.

    `timeout`, `retries`, `time_slice` and `retry_on` (the exceptions retried, with their
    subclasses; any other fails the job at once) become the defaults of jobs enqueued with it.
    `preemptible=False`: its runs never pause for a job of higher priority (the worker reads
    it when it runs the handler). `queue`: the queue `.enqueue(...)` uses (see `Task`).
    """
    options = {
        key: value
        for key, value in (
            ("timeout", timeout),
            ("retries", retries),
            ("time_slice", time_slice),
            ("preemptible", preemptible),
            ("retry_on", None if retry_on is None else exception_names(retry_on)),
        )
        if value is not None
    }

    def register(f: Callable[P, R]) -> Task[P, R]:
        ref = name or reference_of(f)
        # The registry keeps the plain function: what workers resolve, and what
        # `inspect.iscoroutinefunction` tells an `async def` handler by.
        _registry[ref] = f
        f.__pyscheduler_name__ = ref  # type: ignore[attr-defined]
        f.__pyscheduler_options__ = options  # type: ignore[attr-defined]
        return Task(f, queue)  # update_wrapper copies both attributes onto the Task

    return register(func) if func is not None else register


_EXCEPTION_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.]*\Z")


def exception_name(cls: type[BaseException]) -> str:
    """How a retry_on list names an exception class: "module.QualName"."""
    return f"{cls.__module__}.{cls.__qualname__}"


def exception_names(retry_on: Sequence[type[BaseException] | str]) -> list[str]:
    """A retry_on list as stored: "module.QualName" names (builtins: "builtins.OSError"),
    checked; a class or a name is accepted (the name as it is)."""
    if isinstance(retry_on, str | type):
        retry_on = [retry_on]
    names: list[str] = []
    for item in retry_on:
        if isinstance(item, type) and issubclass(item, BaseException):
            name = exception_name(item)
        elif isinstance(item, str):
            name = item
        else:
            raise InvalidOption(f"retry_on takes exception classes or their names, not {item!r}")
        if not _EXCEPTION_NAME.match(name) or len(name.encode()) > EXCEPTION_NAME_MAX_BYTES:
            raise InvalidOption(f"retry_on: {name!r} is not a name like 'module.QualName'")
        if name not in names:
            names.append(name)
    if not 1 <= len(names) <= RETRY_ON_MAX:
        raise InvalidOption(f"retry_on takes 1..{RETRY_ON_MAX} exceptions, not {len(names)}")
    return names


def retried(error: type[BaseException], retry_on: object) -> bool:
    """Whether a run that raised `error` may be retried under a job's retry_on list: it or one
    of its bases is listed. A job without a list (not a list of names) retries any error."""
    if not isinstance(retry_on, list) or not all(isinstance(n, str) for n in retry_on):
        return True
    return any(exception_name(cls) in retry_on for cls in error.__mro__)


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
