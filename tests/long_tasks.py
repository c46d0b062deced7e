"""Handlers of the long-job tests; workers import them as module `long_tasks` (cwd: tests/).

Handlers that report to the test take the Redis URL and a key prefix, and write what they did
under that prefix (lists and counters), so the test can tell which steps ran, in which process
and how often.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from tasks import client, server_time_us

from pyscheduler import Subtask, SubtaskFailed, current_job, task

# A worker started with PSQ_TEST_IMPORT_DELAY imports this module slowly (each executor does,
# at its first job from here): the run is under way before the handler is.
time.sleep(float(os.environ.get("PSQ_TEST_IMPORT_DELAY") or 0))

# The checkpoint a parent saves with its split: its next run gathers the subtasks' results.
GATHER = {"phase": "gather"}


def stepper(url: str, key: str, steps: int, step_s: float) -> int:
    """Sum 0..steps-1, one number every `step_s`, saving a checkpoint after each step.

    Appends to `{key}:runs` one entry per run ({pid, from: the first step of the run}) and to
    `{key}:steps` each step it executed, so the test sees whether a step was ever redone.
    """
    job = current_job()
    state = job.checkpoint or {"step": 0, "acc": 0}
    conn = client(url)
    conn.rpush(f"{key}:runs", json.dumps({"pid": os.getpid(), "from": state["step"]}))
    acc = int(state["acc"])
    for i in range(int(state["step"]), steps):
        time.sleep(step_s)
        acc += i
        conn.rpush(f"{key}:steps", i)
        job.save_checkpoint({"step": i + 1, "acc": acc})  # the next step, the sum so far
    return acc


@task(time_slice=0.2)
def sliced_stepper(url: str, key: str, steps: int, step_s: float) -> int:
    """`stepper`, registered with a default time slice of 0.2 s."""
    return stepper(url, key, steps, step_s)


@task(preemptible=False)
def unpreemptible_stepper(url: str, key: str, steps: int, step_s: float) -> int:
    """`stepper`, registered as never paused for a job of higher priority."""
    return stepper(url, key, steps, step_s)


def short(i: int) -> int:
    """A short job: nothing to do (its wait is read from its record)."""
    return i


def sleep_without_checkpoints(url: str, key: str, seconds: float, pieces: int) -> str:
    """A long job that never saves a checkpoint: sleeps in `pieces`, back in Python between."""
    conn = client(url)
    conn.rpush(f"{key}:runs", server_time_us(conn))
    for _ in range(pieces):
        time.sleep(seconds / pieces)
    conn.rpush(f"{key}:ends", server_time_us(conn))
    return "finished"


def square_later(url: str, key: str, i: int, delay: float) -> int:
    """Sleep `delay`, note `i` in `{key}:finished` (completion order), return i*i."""
    time.sleep(delay)
    client(url).rpush(f"{key}:finished", i)
    return i * i


def counted_square(url: str, key: str, i: int, seconds: float) -> int:
    """INCR `{key}:runs:{i}` at start, sleep `seconds`, return i*i."""
    client(url).incr(f"{key}:runs:{i}")
    time.sleep(seconds)
    return i * i


def square_slow_on_first_run(url: str, key: str, i: int, seconds: float) -> int:
    """INCR `{key}:runs:{i}`; only the first run sleeps `seconds` (so a test can kill it
    before it ends however slow the machine); return i*i."""
    if int(client(url).incr(f"{key}:runs:{i}")) == 1:
        time.sleep(seconds)
    return i * i


def refuse(message: str) -> None:
    """A subtask that always fails."""
    raise ValueError(message)


def ident(i: int) -> int:
    return i


def _describe(outcome: Any) -> Any:
    if isinstance(outcome, SubtaskFailed):
        return {"failed": outcome.index, "error": str(outcome)}
    return outcome


def split_and_gather(url: str, key: str, specs: list[Any], collect: bool = False) -> Any:
    """Split into subtasks, one per [func, args, queue, options] of `specs`; then gather.

    The resumed run returns {"results": the outcomes in subtask order (a failure as
    {"failed": index, "error": text}), "sum": the sum of the numeric ones}. Each run appends
    its phase to `{key}:parent`.
    """
    job = current_job()
    conn = client(url)
    if job.checkpoint == GATHER:
        conn.rpush(f"{key}:parent", "gather")
        results = [_describe(r) for r in job.subtask_results()]
        return {"results": results, "sum": sum(r for r in results if isinstance(r, int))}
    conn.rpush(f"{key}:parent", "split")
    job.split(
        (
            Subtask(func, *args, queue=queue, options=options)
            for func, args, queue, options in specs
        ),
        collect=collect,
        checkpoint=GATHER,
    )


def combine(results: list[Any], url: str, key: str, extra: str) -> dict[str, Any]:
    """A group's continuation: gets the subtasks' results first, then its own arguments."""
    client(url).incr(f"{key}:combined")
    return {"results": results, "extra": extra}


def tree(url: str, key: str, value: int, queues: list[str]) -> int:
    """Split in two (value*2, value*2+1) on queues[0], recursively; a leaf returns its value.

    A node with no queues left is a leaf and appends its value to `{key}:leaves`.
    """
    job = current_job()
    if job.checkpoint == GATHER:
        return sum(job.subtask_results())
    if not queues:
        client(url).rpush(f"{key}:leaves", value)
        return value
    job.split(
        [
            Subtask("long_tasks:tree", url, key, value * 2 + b, queues[1:], queue=queues[0])
            for b in (0, 1)
        ],
        checkpoint=GATHER,
    )


def fan_out(n: int, queue: str) -> dict[str, int]:
    """Split into `n` subtasks ident(i) on `queue` (from a generator); then sum their results."""
    job = current_job()
    if job.checkpoint == GATHER:
        results = job.subtask_results()
        return {"count": len(results), "sum": sum(results)}
    job.split((Subtask("long_tasks:ident", i, queue=queue) for i in range(n)), checkpoint=GATHER)
