"""The commands that run jobs: `worker` (one process) and `pool` (groups of worker processes,
scaled by backlog; it lives in ops/pool/)."""

from __future__ import annotations

import sys

import click

from ...exceptions import PySchedulerError
from ..pool import pool_command
from .connections import worker_connection
from .errors import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, URL_META, epilog, fail
from .options import Seconds, url_option

CONCURRENCY_MAX = 10_000  # `worker --concurrency`


@click.command(epilog=epilog("the worker was aborted (a second signal)"))
@click.argument("queues", nargs=-1, required=True, metavar="QUEUE[:WEIGHT]...")
@url_option
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1, max=CONCURRENCY_MAX),
    default=1,
    show_default=True,
    help="Jobs run at once.",
)
@click.option("--burst", is_flag=True, help="Exit when no job is ready.")
@click.option(
    "--lease",
    "lease_seconds",
    type=Seconds(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Lease length in seconds; renewed while a job runs.",
)
@click.option("--strict", is_flag=True, help="Run registered tasks (@task) only.")
@click.option(
    "-i",
    "--import",
    "imports",
    multiple=True,
    help="Module to import and allow handlers from (repeatable).",
)
@click.option("--auto-load", is_flag=True, help="Load the Lua library if missing (development).")
@click.option(
    "--prefetch/--no-prefetch",
    default=True,
    show_default=True,
    help="Lease several short jobs at once while the queue is deep.",
)
@click.option("--log-jobs", is_flag=True, help="Log a line per finished job, with its run time.")
@click.option(
    "--idle-child-seconds",
    type=Seconds(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Stop a sync child process idle this long (it starts again when a job needs it).",
)
def worker(
    queues: tuple[str, ...],
    url: str | None,
    concurrency: int,
    burst: bool,
    lease_seconds: float,
    strict: bool,
    imports: tuple[str, ...],
    auto_load: bool,
    prefetch: bool,
    log_jobs: bool,
    idle_child_seconds: float,
) -> None:
    """Run a worker on QUEUES, taken in the order given, or by weight (`fast:3 slow:1`).

    SIGTERM or Ctrl-C: stop taking jobs, finish the running ones, exit 0; a second signal
    stops at once (exit 1) and the leases bring the jobs back.
    """
    from ...runtime.worker import Worker

    sys.path.insert(0, "")  # handlers of the current directory's application
    click.get_current_context().meta[URL_META] = url
    conn = worker_connection(url)
    names: list[str] = []
    weights: dict[str, int] = {}
    for spec in queues:
        name, _, weight = spec.partition(":")
        names.append(name)
        if weight:
            if not weight.isdigit() or int(weight) < 1:
                fail(f"bad weight in {spec!r}: use QUEUE:N with N a positive integer", EXIT_USAGE)
            weights[name] = int(weight)
    try:
        w = Worker(
            names,
            weights=weights or None,
            connection=conn,
            concurrency=concurrency,
            lease_seconds=lease_seconds,
            strict=strict,
            allowed_modules=imports,
            auto_load=auto_load or None,
            prefetch=prefetch,
            log_jobs=log_jobs,
            idle_child_seconds=idle_child_seconds,
        )
        w.work(burst=burst)
    except (ValueError, ImportError) as exc:
        if isinstance(exc, PySchedulerError):
            raise  # mapped by CliGroup
        fail(str(exc), EXIT_USAGE)
    sys.exit(EXIT_PROBLEM if w._aborting else EXIT_OK)


__all__ = ["pool_command", "worker"]
