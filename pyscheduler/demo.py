"""`pyscheduler demo`: the fast-food line. Drinks must not wait behind a 100-burger order.

Two rounds on the same workload, two worker processes each time:
  1. one shared queue: both workers take drinks and burger orders first come, first served;
  2. a `fast` and a `slow` queue with a dedicated worker each.
It prints how long the drinks waited (from enqueue to start, on the Redis clock) in each round.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import click
import redis

from . import library
from .engine import engine_or_url
from .handlers import task
from .queue import Queue

SLOW_ORDERS = 4
SLOW_SECONDS = 1.5


@task(name="demo:pour_drink")
def pour_drink(number: int) -> str:
    time.sleep(0.005)
    return f"drink {number}"


@task(name="demo:cook_burgers")
def cook_burgers(count: int) -> str:
    time.sleep(SLOW_SECONDS)
    return f"{count} burgers"


@contextmanager
def worker_processes(url: str, *queue_groups: list[str]) -> Iterator[None]:
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pyscheduler",
                "worker",
                *queues,
                "--url",
                url,
                "--import",
                __name__,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for queues in queue_groups
    ]
    try:
        yield
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run_round(conn: redis.Redis, fast: Queue, slow: Queue, fast_jobs: int) -> dict[str, float]:
    """Enqueue burger orders and a steady stream of drinks; wait; return drink waits (ms)."""
    for queue in {fast.name: fast, slow.name: slow}.values():  # the workers are up once these run
        queue.enqueue(pour_drink, -1).wait(timeout=30)
    orders = [slow.enqueue(cook_burgers, 100, timeout=30) for _ in range(SLOW_ORDERS)]
    drinks = []
    for number in range(fast_jobs):
        drinks.append(fast.enqueue(pour_drink, number, timeout=5))
        time.sleep(0.05)
    for job in [*orders, *drinks]:
        job.wait(timeout=60)
    waits = []
    for job in drinks:
        record = job.info().record
        waits.append(float(record["started"]) - float(record["created"]))
    return {
        "p50": statistics.median(waits),
        "p99": _percentile(waits, 0.99),
        "max": max(waits),
    }


def run_demo(url: str | None, fast_jobs: int) -> int:
    with engine_or_url(url) as engine_url:
        conn = redis.Redis.from_url(engine_url)
        library.load(conn)
        where = "a private engine" if engine_url != (url or os.environ.get("REDIS_URL")) else "it"
        click.echo(f"Redis at {engine_url} ({where}); library {library.code_version()} loaded")
        click.echo(
            f"Workload: {SLOW_ORDERS} orders of 100 burgers ({SLOW_SECONDS} s each) and "
            f"{fast_jobs} drinks (5 ms each, one every 50 ms).\n"
        )

        shared = Queue("demo-shared", connection=conn)
        click.echo("Round 1: one shared queue, two workers on it ...")
        with worker_processes(engine_url, ["demo-shared"], ["demo-shared"]):
            one_queue = run_round(conn, shared, shared, fast_jobs)

        fast = Queue("demo-fast", connection=conn)
        slow = Queue("demo-slow", connection=conn)
        click.echo("Round 2: a fast and a slow queue, one dedicated worker each ...")
        with worker_processes(engine_url, ["demo-fast"], ["demo-slow"]):
            split = run_round(conn, fast, slow, fast_jobs)

        click.echo("\nHow long the drinks waited (enqueue to start, ms):")
        click.echo(f"  {'':<22}{'p50':>8}{'p99':>8}{'max':>8}")
        for label, waits in (("one shared queue", one_queue), ("fast + slow queues", split)):
            click.echo(
                f"  {label:<22}" + "".join(f"{waits[k]:>8.1f}" for k in ("p50", "p99", "max"))
            )
        click.echo(
            "\nWith dedicated queues the drinks never wait behind the burgers,"
            " while the burger orders still run."
        )
        return 0
