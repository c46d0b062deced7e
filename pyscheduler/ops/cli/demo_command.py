"""`pyscheduler demo`: long jobs and short ones sharing workers, on a private engine."""

from __future__ import annotations

import sys

import click

from ...store.connection import URL_ENV
from .errors import URL_META, epilog
from .options import check_url


@click.command(epilog=epilog("the demo could not run"))
@click.option(
    "--url",
    envvar=URL_ENV,
    metavar="URL",
    callback=check_url,
    help=f"Use this Redis instead of a private engine (default: ${URL_ENV}).",
)
@click.option(
    "--jobs",
    "fast_jobs",
    type=click.IntRange(min=1, max=10_000),
    default=60,
    show_default=True,
    help="Fast jobs to enqueue.",
)
def demo(url: str | None, fast_jobs: int) -> None:
    """Show how long jobs and short ones share workers: separate queues, splits, time slices."""
    from ...dev.demo import run_demo

    click.get_current_context().meta[URL_META] = url
    sys.exit(run_demo(url, fast_jobs))
