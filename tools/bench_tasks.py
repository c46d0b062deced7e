"""pyscheduler's benchmark handlers: `pyscheduler worker --import bench_tasks` runs them.

Each one is registered with `@task` and calls a body of `bench_handlers.py`, which every
system of `tools/bench.py` shares.
"""

from __future__ import annotations

import bench_handlers

from pyscheduler import task


@task
def noop() -> None:
    bench_handlers.noop_body()


@task
def timed(enqueued: float) -> None:
    bench_handlers.timed_body(enqueued)


@task
def sleeper(kind: str, enqueued: float, seconds: float) -> None:
    bench_handlers.sleeper_body(kind, enqueued, seconds)
