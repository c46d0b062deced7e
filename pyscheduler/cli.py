"""The `pyscheduler` command line."""

from __future__ import annotations

import logging
import sys
from typing import Any

import click
import redis

from . import library
from .exceptions import PySchedulerError

URL_HELP = "Redis URL (default: $REDIS_URL, else redis://127.0.0.1:6379/0)"
DEFAULT_URL = "redis://127.0.0.1:6379/0"


def connect(url: str | None) -> redis.Redis:
    return redis.Redis.from_url(url or DEFAULT_URL)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug details.")
def main(verbose: bool) -> None:
    """pyscheduler: a job scheduler on Redis where long jobs never slow down short ones."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def load_scripts_command(url: str | None, check: bool, print_code: bool) -> int:
    """Shared by `pyscheduler load-scripts` and `tools/load_scripts.py`; returns an exit code."""
    version, code = library.library_code()
    if print_code:
        sys.stdout.write(code)
        return 0
    conn = connect(url)
    try:
        if check:
            deployed = library.deployed_version(conn)
            if deployed == version:
                click.echo(f"pyscheduler library {version} is deployed")
                return 0
            click.echo(
                f"pyscheduler library mismatch: deployed {deployed or 'nothing'}, code {version}",
                err=True,
            )
            return 1
        library.load(conn)
    except redis.RedisError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    click.echo(f"loaded pyscheduler library {version}")
    return 0


@main.command("load-scripts")
@click.option("--url", envvar="REDIS_URL", help=URL_HELP)
@click.option("--check", is_flag=True, help="Exit 1 when the deployed version differs.")
@click.option("--print", "print_code", is_flag=True, help="Write the rendered library to stdout.")
def load_scripts(url: str | None, check: bool, print_code: bool) -> None:
    """Deploy the Lua library into Redis (FUNCTION LOAD REPLACE) and print its version."""
    sys.exit(load_scripts_command(url, check, print_code))


@main.command()
@click.argument("queues", nargs=-1, required=True)
@click.option("--url", envvar="REDIS_URL", help=URL_HELP)
@click.option("-c", "--concurrency", default=1, show_default=True, help="Jobs run at once.")
@click.option("--burst", is_flag=True, help="Exit when no job is ready.")
@click.option(
    "--lease",
    "lease_seconds",
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
def worker(
    queues: tuple[str, ...],
    url: str | None,
    concurrency: int,
    burst: bool,
    lease_seconds: float,
    strict: bool,
    imports: tuple[str, ...],
    auto_load: bool,
) -> None:
    """Run a worker on QUEUES, taken in the order given."""
    from .worker import Worker

    sys.path.insert(0, "")  # handlers of the current directory's application
    conn = connect(url)
    try:
        w = Worker(
            list(queues),
            connection=conn,
            concurrency=concurrency,
            lease_seconds=lease_seconds,
            strict=strict,
            allowed_modules=imports,
            auto_load=auto_load or None,
        )
        w.work(burst=burst)
    except (PySchedulerError, ValueError, ImportError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except redis.ConnectionError as exc:
        click.echo(f"error: cannot reach Redis: {exc}", err=True)
        sys.exit(2)
    sys.exit(1 if w._aborting else 0)


@main.command()
@click.option("--url", envvar="REDIS_URL", help="Use this Redis instead of a private engine.")
@click.option("--jobs", "fast_jobs", default=60, show_default=True, help="Fast jobs to enqueue.")
def demo(url: str | None, fast_jobs: int) -> None:
    """Show a fast and a slow worker: short jobs stay fast while long ones run."""
    from .demo import run_demo

    sys.exit(run_demo(url, fast_jobs))


def run() -> Any:  # pragma: no cover - console entry
    return main()


if __name__ == "__main__":  # pragma: no cover
    main()
