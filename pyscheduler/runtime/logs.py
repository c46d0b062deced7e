"""The worker's log lines: readable by default, worded for a person following the jobs.

`Worker.work()` calls `set_up_logging` first: an application that configured logging keeps its
own set-up untouched; one that configured none (a script calling `Worker([q]).work()`) gets
the worker's lines on stderr with time, level, logger name and message, as `pyscheduler
worker` writes them, instead of nothing (Python's last-resort handler shows warnings only).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_PACKAGE_LOGGER = "pyscheduler"


def set_up_logging() -> Callable[[], None]:
    """Log pyscheduler's INFO lines to stderr when nothing would show them; returns a function
    that undoes it (so a later set-up by the application does not print every line twice)."""
    package = logging.getLogger(_PACKAGE_LOGGER)
    if package.hasHandlers():  # a handler on it or on any ancestor (the root): configured
        return lambda: None
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    level = package.level
    package.addHandler(handler)
    if package.getEffectiveLevel() > logging.INFO:
        package.setLevel(logging.INFO)

    def restore() -> None:
        package.removeHandler(handler)
        package.setLevel(level)

    return restore


def plural(count: int, noun: str) -> str:
    """'1 job', '2 jobs' (nouns with a plain -s plural)."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def duration(seconds: float) -> str:
    """A run time a person reads at a glance: '0.4 ms', '12.3 ms', '2.51 s', '95.0 s'."""
    if seconds < 1.0:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 10.0:
        return f"{seconds:.2f} s"
    return f"{seconds:.1f} s"
