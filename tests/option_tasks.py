"""Handlers of the enqueue-option tests (dependencies, dedup, expiry, callbacks, retry_on);
workers import them as module `option_tasks` (cwd: tests/).

Handlers that report take the Redis URL and a key; callbacks, whose arguments are fixed
(job id, result or error), report to the URL in OPTION_TASKS_URL (the test sets it before it
starts its workers, which inherit it) under the key CALLBACKS_KEY.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from tasks import client

from pyscheduler import task

CALLBACKS_KEY = "test:callbacks"
URL_ENV = "OPTION_TASKS_URL"


def step(url: str, key: str, value: str) -> str:
    """RPUSH `value` to the list `key` (the order in which jobs ran); return it."""
    client(url).rpush(key, value)
    return value


def slow_step(url: str, key: str, value: str, seconds: float) -> str:
    time.sleep(seconds)
    client(url).rpush(key, value)
    return value


def fail_step(url: str, key: str, value: str) -> None:
    client(url).rpush(key, value)
    raise ValueError(f"step {value} failed")


def raise_named(url: str, key: str, name: str) -> None:
    """Count a run in `key`, then raise the builtin exception `name`."""
    client(url).incr(key)
    raise _builtin(name)(f"raised {name}")


def _builtin(name: str) -> type[BaseException]:
    import builtins

    found = getattr(builtins, name)
    assert isinstance(found, type) and issubclass(found, BaseException)
    return found


class FlakyError(ConnectionError):
    """A subclass of a listed exception: retried too."""


def raise_flaky(url: str, key: str) -> None:
    client(url).incr(key)
    raise FlakyError("flaky")


def sleep_counted(url: str, key: str, seconds: float) -> None:
    client(url).incr(key)
    time.sleep(seconds)


@task(retries=3, retry_on=(TimeoutError, ConnectionError))
def task_with_retry_on(url: str, key: str, name: str) -> None:
    client(url).incr(key)
    raise _builtin(name)(f"raised {name}")


def on_success(job_id: str, result: Any) -> None:
    client(os.environ[URL_ENV]).rpush(
        CALLBACKS_KEY, json.dumps({"on": "success", "job": job_id, "value": result})
    )


def on_failure(job_id: str, error: str) -> None:
    client(os.environ[URL_ENV]).rpush(
        CALLBACKS_KEY, json.dumps({"on": "failure", "job": job_id, "value": error})
    )


async def async_raise_named(url: str, key: str, name: str) -> None:
    """As `raise_named`, on the worker's event loop."""
    client(url).incr(key)
    raise _builtin(name)(f"raised {name}")
