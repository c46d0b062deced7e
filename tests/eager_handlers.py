"""Handlers for tests/test_eager.py: jobs of eager queues, run inline at enqueue."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from pyscheduler import Queue, current_job, task

# Runs so far per key: a handler's state between attempts of one job (each test its own key).
runs: Counter[str] = Counter()
# What callbacks were called with, per job id.
outcomes: dict[str, list[Any]] = {}


def add(a: int, b: int) -> int:
    return a + b


def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"args": args, "kwargs": kwargs}


def returns_a_set() -> set[int]:
    return {1, 2}


def fails_then_succeeds(key: str, failures: int) -> str:
    runs[key] += 1
    if runs[key] <= failures:
        raise ConnectionError(f"run {runs[key]} of {key} failed")
    return f"done after {runs[key]} runs"


def raises(key: str, kind: str) -> None:
    runs[key] += 1
    raise {"value": ValueError, "key": KeyError}[kind](key)


async def add_later(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


async def sleeps(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "woke"


def sleeps_sync(seconds: float) -> str:
    time.sleep(seconds)
    return "woke"


@task
def double(x: int) -> int:
    return 2 * x


def attempts_seen() -> int:
    return current_job().attempts


def counts_with_checkpoints(total: int) -> dict[str, Any]:
    """Counts to `total`, one checkpoint per step; each run after a pause resumes from it."""
    job = current_job()
    done = job.checkpoint or 0
    runs[job.id] += 1
    while done < total:
        time.sleep(0.02)
        done += 1
        job.save_checkpoint(done, last=done == total)
    return {"done": done, "runs": runs[job.id]}


def splits() -> None:
    current_job().split([])


def remember(job_id: str, value: Any) -> None:
    outcomes.setdefault(job_id, []).append(value)


def enqueues_another(queue_name: str) -> str:
    """Enqueues a follow-up on an eager queue from inside a handler: it runs inline too."""
    follow_up = Queue(queue_name, eager=True).enqueue(add, 1, 2)
    return f"{follow_up.status}:{follow_up.result}"
