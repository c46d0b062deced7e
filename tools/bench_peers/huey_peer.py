"""Huey with Redis: calling a task enqueues it; the `huey_consumer` command with one worker
thread. A Huey instance is a queue; `PriorityRedisHuey` (the "prio" queue) gives priorities.
No batch enqueue (`map` enqueues one at a time), no global concurrency limit, one queue per
consumer."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, ClassVar

import bench_handlers
from huey import PriorityRedisHuey, RedisHuey

from .base import System, console_script

_URL = os.environ[bench_handlers.URL_ENV]

huey_bench = RedisHuey("bench", url=_URL)
huey_fast = RedisHuey("fast", url=_URL)
huey_slow = RedisHuey("slow", url=_URL)
huey_prio = PriorityRedisHuey("prio", url=_URL)
HUEYS = {"bench": huey_bench, "fast": huey_fast, "slow": huey_slow, "prio": huey_prio}

BODIES = {
    "noop": bench_handlers.noop_body,
    "timed": bench_handlers.timed_body,
    "sleeper": bench_handlers.sleeper_body,
}
TASKS: dict[tuple[str, str], Any] = {
    (func, queue): huey.task(name=func)(body)
    for queue, huey in HUEYS.items()
    for func, body in BODIES.items()
}


class HueySystem(System):
    name = "huey"
    unsupported: ClassVar[dict[str, str]] = {
        "bulk": "no batch enqueue API (map() enqueues one task at a time)",
        "limit": "no global per-queue concurrency limit; a consumer takes one queue",
    }

    def enqueue(self, func: str, args: Sequence[Any], queue: str, priority: int = 0) -> None:
        if priority:
            TASKS[(func, queue)](*args, priority=priority)
        else:
            TASKS[(func, queue)](*args)

    def worker_command(self, queues: Sequence[str], index: int) -> list[str]:
        (queue,) = queues
        return [console_script("huey_consumer"), f"bench_peers.huey_peer.huey_{queue}", "-w", "1"]


SYSTEM = HueySystem
