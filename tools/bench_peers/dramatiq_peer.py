"""Dramatiq with its RedisBroker: `actor.send`, and the `dramatiq` command with one process of
one thread. No batch enqueue, no priorities across a queue's messages (an actor's priority only
orders the messages one worker has prefetched), no global concurrency limit."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, ClassVar

import bench_handlers
import dramatiq
from dramatiq.brokers.redis import RedisBroker

from .base import System, console_script

broker = RedisBroker(url=os.environ[bench_handlers.URL_ENV])
dramatiq.set_broker(broker)

QUEUES = ("bench", "fast", "slow")
BODIES = {
    "noop": bench_handlers.noop_body,
    "timed": bench_handlers.timed_body,
    "sleeper": bench_handlers.sleeper_body,
}
# One actor per (handler, queue): a dramatiq actor belongs to one queue.
ACTORS: dict[tuple[str, str], Any] = {
    (func, queue): dramatiq.actor(
        body, actor_name=f"{func}_{queue}", queue_name=queue, max_retries=0
    )
    for func, body in BODIES.items()
    for queue in QUEUES
}


class DramatiqSystem(System):
    name = "dramatiq"
    unsupported: ClassVar[dict[str, str]] = {
        "bulk": "no batch enqueue API (group() sends one message at a time)",
        "priority": "actor priority orders only the messages one worker prefetched",
        "limit": "no global per-queue concurrency limit in the core API",
    }

    def enqueue(self, func: str, args: Sequence[Any], queue: str, priority: int = 0) -> None:
        ACTORS[(func, queue)].send(*args)

    def worker_command(self, queues: Sequence[str], index: int) -> list[str]:
        return [
            console_script("dramatiq"),
            "bench_peers.dramatiq_peer",
            "--processes",
            "1",
            "--threads",
            "1",
            "--queues",
            *queues,
        ]


SYSTEM = DramatiqSystem
