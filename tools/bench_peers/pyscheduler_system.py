"""pyscheduler, through its public API (`Queue.enqueue`, `enqueue_many`, `pyscheduler worker`)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import bench_tasks
import redis

from pyscheduler import Queue
from pyscheduler.store import library

from .base import System

FUNCS: dict[str, Callable[..., Any]] = {
    "noop": bench_tasks.noop,
    "timed": bench_tasks.timed,
    "sleeper": bench_tasks.sleeper,
    "sliced_sleeper": bench_tasks.sliced_sleeper,
    "checkpointing_sleeper": bench_tasks.checkpointing_sleeper,
}


class PySchedulerSystem(System):
    name = "pyscheduler"
    unsupported: ClassVar[dict[str, str]] = {}
    features: ClassVar[frozenset[str]] = frozenset({"time_slice", "preemption"})

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.conn = redis.Redis.from_url(url)
        library.load(self.conn)  # the deployment step (FLUSHALL keeps functions)
        self.queues: dict[str, Queue] = {}

    def queue(self, name: str) -> Queue:
        if name not in self.queues:
            self.queues[name] = Queue(name, connection=self.conn)
        return self.queues[name]

    def prepare_run(self) -> None:
        self.queues = {}
        # BENCH_SCHEDULE_EVERY=S: a schedule firing every S seconds on the "bench" queue,
        # defined before each run, to measure what a defined schedule costs a drain.
        every = float(os.environ.get("BENCH_SCHEDULE_EVERY") or 0)
        if every > 0:
            self.queue("bench").schedule("bench-tick", bench_tasks.tick, every=every)

    def close(self) -> None:
        self.conn.close()

    def enqueue(self, func: str, args: Sequence[Any], queue: str, priority: int = 0) -> None:
        self.queue(queue).enqueue(FUNCS[func], *args, priority=priority)

    def enqueue_noops(self, n: int, queue: str) -> float:
        q = self.queue(queue)
        noop = bench_tasks.noop
        start = time.perf_counter()
        for _ in range(n):
            q.enqueue(noop)
        return time.perf_counter() - start

    def enqueue_noops_bulk(self, n: int, queue: str) -> float:
        q = self.queue(queue)
        noop = bench_tasks.noop
        start = time.perf_counter()
        q.enqueue_many([q.prepare(noop) for _ in range(n)])
        return time.perf_counter() - start

    def worker_command(self, queues: Sequence[str], index: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "pyscheduler",
            "worker",
            *queues,
            "--url",
            self.url,
            "--concurrency",
            "1",
            "--import",
            "bench_tasks",
        ]

    def set_concurrency_limit(self, queue: str, limit: int) -> None:
        self.queue(queue).set_limits(concurrency=limit)


SYSTEM = PySchedulerSystem
