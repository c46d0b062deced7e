"""arq: `ArqRedis.enqueue_job`, and the `arq` command with `max_jobs=1` (one job at a time, as
every system here runs). Its worker polls the queue every `poll_delay` (0.5 s by default, kept)
and starts at most `max_jobs` jobs per poll, so it runs about two short jobs a second. No batch
enqueue, no priorities, no global concurrency limit, one queue per worker."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import bench_handlers
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

from .base import AsyncSystem, console_script

REDIS = RedisSettings.from_dsn(os.environ[bench_handlers.URL_ENV])


async def noop(ctx: dict[str, Any]) -> None:
    bench_handlers.noop_body()


async def timed(ctx: dict[str, Any], enqueued: float) -> None:
    bench_handlers.timed_body(enqueued)


async def sleeper(ctx: dict[str, Any], kind: str, enqueued: float, seconds: float) -> None:
    start = time.time()
    await asyncio.sleep(seconds)
    bench_handlers.record_sleeper(kind, enqueued, start)


def _settings(queue: str) -> dict[str, Any]:
    """Worker settings (arq takes a dict as well as a class)."""
    return {
        "functions": [noop, timed, sleeper],
        "redis_settings": REDIS,
        "max_jobs": 1,
        "queue_name": queue,
    }


bench_settings = _settings("bench")
fast_settings = _settings("fast")
slow_settings = _settings("slow")


class ArqSystem(AsyncSystem):
    name = "arq"
    unsupported: ClassVar[dict[str, str]] = {
        "bulk": "no batch enqueue API",
        "priority": "arq has no job priorities",
        "limit": "no global per-queue concurrency limit; a worker takes one queue",
    }

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.pool: ArqRedis = self.run(create_pool(REDIS))

    def close(self) -> None:
        self.run(self.pool.aclose())
        super().close()

    async def aenqueue(self, func: str, args: Sequence[Any], queue: str, priority: int) -> None:
        await self.pool.enqueue_job(func, *args, _queue_name=queue)

    def worker_command(self, queues: Sequence[str], index: int) -> list[str]:
        (queue,) = queues
        return [console_script("arq"), f"bench_peers.arq_peer.{queue}_settings"]


SYSTEM = ArqSystem
