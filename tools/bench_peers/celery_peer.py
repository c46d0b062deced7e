"""Celery with the Redis broker: `apply_async(queue=, priority=)`, and the `celery worker`
command with one prefork child (default prefetch). On Redis, priority 0 is served first. No
batch enqueue (a group publishes one message per task), no global concurrency limit, and a
worker given several queues takes them round-robin, not in order."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, ClassVar

import bench_handlers
from celery import Celery
from kombu import Exchange
from kombu import Queue as KombuQueue

from .base import System, console_script

app = Celery("bench_peers.celery_peer", broker=os.environ[bench_handlers.URL_ENV])
app.conf.update(worker_hijack_root_logger=False)

TASKS: dict[str, Any] = {
    "noop": app.task(name="noop")(bench_handlers.noop_body),
    "timed": app.task(name="timed")(bench_handlers.timed_body),
    "sleeper": app.task(name="sleeper")(bench_handlers.sleeper_body),
}
QUEUES = ("bench", "fast", "slow", "prio")


class CelerySystem(System):
    name = "celery"
    unsupported: ClassVar[dict[str, str]] = {
        "bulk": "no batch enqueue API (group() publishes one message per task)",
        "limit": "no global per-queue concurrency limit; several queues are read round-robin",
    }

    def prepare_run(self) -> None:
        # After a FLUSHALL the queues' bindings are gone while the client still believes they
        # are declared: declare them again, as a worker does on start.
        with app.connection_for_write() as conn:
            channel = conn.default_channel
            for name in QUEUES:
                KombuQueue(name, Exchange(name, type="direct"), routing_key=name)(channel).declare()

    def close(self) -> None:
        app.close()

    def enqueue(self, func: str, args: Sequence[Any], queue: str, priority: int = 0) -> None:
        if queue == "prio":  # Redis serves priority 0 first (and 0 is the default)
            TASKS[func].apply_async(args, queue=queue, priority=0 if priority > 0 else 9)
        else:
            TASKS[func].apply_async(args, queue=queue)

    def worker_command(self, queues: Sequence[str], index: int) -> list[str]:
        return [
            console_script("celery"),
            "-A",
            "bench_peers.celery_peer",
            "worker",
            "-c",
            "1",
            "-Q",
            ",".join(queues),
            "-n",
            f"bench{index}@%h",
            "--loglevel",
            "WARNING",
        ]


SYSTEM = CelerySystem
