"""RQ: `Queue.enqueue`, `Queue.enqueue_many`, and the `rq worker` command (default forking
worker: one work-horse process per job). No job priorities and no global concurrency limit."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import bench_handlers
import redis
import rq

from .base import System, console_script

FUNCS: dict[str, Callable[..., Any]] = {
    "noop": bench_handlers.noop_body,
    "timed": bench_handlers.timed_body,
    "sleeper": bench_handlers.sleeper_body,
}


class RQSystem(System):
    name = "rq"
    unsupported: ClassVar[dict[str, str]] = {
        "priority": "RQ has no job priorities within a queue",
        "limit": "RQ has no global per-queue concurrency limit",
    }

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.conn = redis.Redis.from_url(url)
        self.queues: dict[str, rq.Queue] = {}

    def queue(self, name: str) -> rq.Queue:
        if name not in self.queues:
            self.queues[name] = rq.Queue(name, connection=self.conn)
        return self.queues[name]

    def close(self) -> None:
        self.conn.close()

    def enqueue(self, func: str, args: Sequence[Any], queue: str, priority: int = 0) -> None:
        self.queue(queue).enqueue(FUNCS[func], *args)

    def enqueue_noops_bulk(self, n: int, queue: str) -> float:
        import time

        q = self.queue(queue)
        noop = FUNCS["noop"]
        start = time.perf_counter()
        q.enqueue_many([rq.Queue.prepare_data(noop) for _ in range(n)])
        return time.perf_counter() - start

    def worker_command(self, queues: Sequence[str], index: int) -> list[str]:
        return [console_script("rq"), "worker", *queues, "--url", self.url, "--quiet"]


SYSTEM = RQSystem
