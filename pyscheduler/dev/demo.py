"""`pyscheduler demo`: the fast-food line. Drinks must not wait behind a 100-burger order.

Three rounds, two worker processes each time:
  1. one shared queue: both workers take drinks and burger orders first come, first served;
  2. a `fast` and a `slow` queue with a dedicated worker each;
  3. long jobs made small: a 100-burger order split into 100 subtasks on the slow queue, and
     an end-of-day stock count that runs in 0.3 s time slices, pausing at its checkpoints so
     the burgers keep flowing on the one slow worker; drinks and fries stay on the fast queue.
It prints how long the drinks waited (from enqueue to start, on the Redis clock) in each round.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import click

from ..client.queue import Queue
from ..client.splitting import Subtask
from ..client.tasks import task
from ..exceptions import PySchedulerError
from ..runtime.context import current_job
from ..store import library
from ..store.connection import Client, connect, redacted
from .engine import EngineNotFound, engine_or_url

SLOW_ORDERS = 4
SLOW_SECONDS = 1.5


class DemoError(PySchedulerError):
    """The demo could not run; the message says why and how to fix it."""


@contextmanager
def demo_redis(url: str | None) -> Iterator[str]:
    """`url`, else $REDIS_URL, else a private engine's URL for the `with` block.

    An engine that cannot be found or started is a DemoError carrying the engine's own
    message (what was searched, how to install one), not a traceback.
    """
    with ExitStack() as stack:
        try:
            engine_url = stack.enter_context(engine_or_url(url))
        except EngineNotFound as exc:
            raise DemoError(f"the demo needs a Redis server: {exc}") from None
        except (RuntimeError, OSError) as exc:  # found, but it did not start
            raise DemoError(f"the demo could not start its private Redis server: {exc}") from None
        yield engine_url


@task(name="demo:pour_drink")
def pour_drink(number: int) -> str:
    time.sleep(0.005)
    return f"drink {number}"


@task(name="demo:cook_burgers")
def cook_burgers(count: int) -> str:
    time.sleep(SLOW_SECONDS)
    return f"{count} burgers"


@task(name="demo:fry")
def fry(number: int) -> str:
    time.sleep(0.005)
    return f"fries {number}"


@task(name="demo:cook_one_burger")
def cook_one_burger(number: int) -> int:
    time.sleep(0.02)
    return 1


@task(name="demo:take_order")
def take_order(burgers: int) -> str:
    """A big order splits itself into one subtask per burger, then packs them."""
    job = current_job()
    if job.checkpoint is None:
        job.split(
            (Subtask(cook_one_burger, n, queue="demo-slow") for n in range(burgers)),
            checkpoint={"stage": "cooking"},
        )
    cooked = sum(job.iter_subtask_results())
    return f"order of {cooked} burgers packed"


@task(name="demo:count_stock", time_slice=0.3)
def count_stock(shelves: int) -> dict[str, int]:
    """A long job that saves a checkpoint per shelf; its time slice makes it pause and resume."""
    job = current_job()
    state = job.checkpoint or {"shelf": 0, "items": 0}
    while state["shelf"] < shelves:
        time.sleep(0.05)  # count one shelf
        state = {"shelf": state["shelf"] + 1, "items": state["items"] + 12}
        job.save_checkpoint(state, last=state["shelf"] == shelves)
    return state


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


def run_round(conn: Client, fast: Queue, slow: Queue, fast_jobs: int) -> dict[str, float]:
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
    with demo_redis(url) as engine_url:
        conn = connect(engine_url)
        library.load(conn)
        where = "a private engine" if engine_url != (url or os.environ.get("REDIS_URL")) else "it"
        click.echo(
            f"Redis at {redacted(engine_url)} ({where}); library {library.code_version()} loaded"
        )
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

        click.echo("Round 3: a 100-burger order split into subtasks, a long job in time slices ...")
        with worker_processes(engine_url, ["demo-fast"], ["demo-slow"]):
            long_jobs = run_long_jobs_round(fast, slow, fast_jobs)

        click.echo("\nHow long the drinks waited (enqueue to start, ms):")
        click.echo(f"  {'':<22}{'p50':>8}{'p99':>8}{'max':>8}")
        rounds = (
            ("one shared queue", one_queue),
            ("fast + slow queues", split),
            ("split + time slices", long_jobs["waits"]),
        )
        for label, waits in rounds:
            click.echo(
                f"  {label:<22}" + "".join(f"{waits[k]:>8.1f}" for k in ("p50", "p99", "max"))
            )
        click.echo(
            f"\nRound 3: {long_jobs['order']} in {long_jobs['order_s']:.1f} s"
            f" (100 subtasks on the slow queue); the stock count ({long_jobs['stock']}) paused"
            f" {long_jobs['pauses']} times and resumed from its checkpoint each time."
        )
        click.echo(
            "With dedicated queues the drinks never wait behind the burgers, while the burger"
            " orders still run; split and sliced, a long job shares its worker too."
        )
        return 0


def run_long_jobs_round(fast: Queue, slow: Queue, fast_jobs: int) -> dict[str, Any]:
    for queue in (fast, slow):  # the workers are up once these run
        queue.enqueue(pour_drink, -1).wait(timeout=30)
    stock = slow.enqueue(count_stock, 30, timeout=30)
    order = slow.enqueue(take_order, 100, timeout=30)
    quick = []
    for number in range(fast_jobs):
        handler = pour_drink if number % 2 else fry
        quick.append(fast.enqueue(handler, number, timeout=5))
        time.sleep(0.05)
    packed = order.wait(timeout=60)
    order_record = order.info().record
    order_s = (float(order_record["ended"]) - float(order_record["created"])) / 1000
    counted = stock.wait(timeout=60)
    for job in quick:
        job.wait(timeout=60)
    waits = []
    for job in quick:
        record = job.info().record
        waits.append(float(record["started"]) - float(record["created"]))
    return {
        "order": packed,
        "order_s": order_s,
        "stock": f"{counted['items']} items on {counted['shelf']} shelves",
        "pauses": int(stock.info().record.get("pauses") or 0),
        "waits": {
            "p50": statistics.median(waits),
            "p99": _percentile(waits, 0.99),
            "max": max(waits),
        },
    }
