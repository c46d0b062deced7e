"""pyscheduler's benchmark handlers: `pyscheduler worker --import bench_tasks` runs them.

Each one is registered with `@task` and calls a body of `bench_handlers.py`, which every
system of `tools/bench.py` shares.
"""

from __future__ import annotations

import time

import bench_handlers

from pyscheduler import current_job, task


@task
def noop() -> None:
    bench_handlers.noop_body()


@task
def tick() -> None:
    """A schedule's run (BENCH_SCHEDULE_EVERY): does nothing, records nothing."""


@task
def timed(enqueued: float) -> None:
    bench_handlers.timed_body(enqueued)


@task
def sleeper(kind: str, enqueued: float, seconds: float) -> None:
    bench_handlers.sleeper_body(kind, enqueued, seconds)


@task(time_slice=0.05)
def sliced_sleeper(kind: str, enqueued: float, seconds: float) -> None:
    """W4 (E): sleeps in 10 ms steps with a checkpoint after each; the 50 ms time slice pauses
    it (back to its queue) so jobs queued behind it run in between."""
    job = current_job()
    state = job.checkpoint or {"start": time.time(), "slept": 0.0}
    while state["slept"] < seconds - 1e-9:
        time.sleep(0.01)
        state["slept"] += 0.01
        job.save_checkpoint(state, last=state["slept"] >= seconds - 1e-9)
    bench_handlers.record_sleeper(kind, enqueued, state["start"])


@task
def checkpointing_sleeper(kind: str, enqueued: float, seconds: float) -> None:
    """W4 (F): sleeps in 10 ms steps with a checkpoint after each and no time slice; a fast
    job of higher priority that waits for a busy worker preempts it at its next checkpoint.

    Its work is the time it actually slept (a sleep on a busy machine overshoots, and 100 of
    them would add up to more than the one sleep of (A)'s jobs); the checkpoints' own time is
    on top, as it would be for a job that computes."""
    job = current_job()
    state = job.checkpoint or {"start": time.time(), "slept": 0.0}
    while state["slept"] < seconds - 1e-9:
        began = time.monotonic()
        time.sleep(min(0.01, seconds - state["slept"]))
        state["slept"] += time.monotonic() - began
        job.save_checkpoint(state, last=state["slept"] >= seconds - 1e-9)
    bench_handlers.record_sleeper(kind, enqueued, state["start"])
