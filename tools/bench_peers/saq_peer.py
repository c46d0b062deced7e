"""SAQ on Redis: `Queue.enqueue`, and the `saq` command with `concurrency=1`. No batch enqueue,
no priorities on Redis (Postgres only), no global concurrency limit, one queue per worker."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import bench_handlers
from saq import Queue

from .base import AsyncSystem, console_script


async def noop(ctx: dict[str, Any]) -> None:
    bench_handlers.noop_body()


async def timed(ctx: dict[str, Any], *, enqueued: float) -> None:
    bench_handlers.timed_body(enqueued)


async def sleeper(ctx: dict[str, Any], *, kind: str, enqueued: float, seconds: float) -> None:
    start = time.time()
    await asyncio.sleep(seconds)
    bench_handlers.record_sleeper(kind, enqueued, start)


def _settings(queue: str) -> dict[str, Any]:
    return {
        "queue": Queue.from_url(os.environ[bench_handlers.URL_ENV], name=queue),
        "functions": [noop, timed, sleeper],
        "concurrency": 1,
    }


bench_settings = _settings("bench")
fast_settings = _settings("fast")
slow_settings = _settings("slow")


class SaqSystem(AsyncSystem):
    name = "saq"
    unsupported: ClassVar[dict[str, str]] = {
        "bulk": "no batch enqueue API",
        "priority": "job priorities only on the Postgres queue",
        "limit": "no global per-queue concurrency limit; a worker takes one queue",
    }

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.queues: dict[str, Any] = {}
        for name in ("bench", "fast", "slow"):
            self.queues[name] = Queue.from_url(url, name=name)
            self.run(self.queues[name].connect())

    def close(self) -> None:
        for queue in self.queues.values():
            self.run(queue.disconnect())
        super().close()

    async def aenqueue(self, func: str, args: Sequence[Any], queue: str, priority: int) -> None:
        q = self.queues[queue]
        if func == "timed":
            await q.enqueue(func, enqueued=args[0])
        elif func == "sleeper":
            await q.enqueue(func, kind=args[0], enqueued=args[1], seconds=args[2])
        else:
            await q.enqueue(func)

    def worker_command(self, queues: Sequence[str], index: int) -> list[str]:
        (queue,) = queues
        return [console_script("saq"), f"bench_peers.saq_peer.{queue}_settings", "--workers", "1"]


SYSTEM = SaqSystem
