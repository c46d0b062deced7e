"""`pyscheduler load-scripts`: deploying the Lua library (also run by `tools/load_scripts.py`)."""

from __future__ import annotations

import sys

import click
import redis

from ...exceptions import PySchedulerError
from ...store import library
from ...store.connection import connect as connect_any
from .connections import CONNECT_TIMEOUT_S
from .errors import EXIT_OK, EXIT_PROBLEM, REDIS_ERRORS, cli_error, epilog
from .options import url_option


def load_scripts_command(url: str | None, check: bool, print_code: bool) -> int:
    """Shared by `pyscheduler load-scripts` and `tools/load_scripts.py`; returns an exit code."""
    version, code = library.library_code()
    if print_code:
        sys.stdout.write(code)
        return EXIT_OK
    try:
        conn = connect_any(url, socket_connect_timeout=CONNECT_TIMEOUT_S)
        primaries = library.primary_count(conn)
        where = "" if isinstance(conn, redis.Redis) else f" on {primaries} primaries"
        if check:
            found = library.deployed_versions(conn)
            differ = {node: v for node, v in found.items() if v != version}
            if not differ:
                click.echo(f"pyscheduler library {version} is deployed{where}")
                return EXIT_OK
            click.echo(
                f"pyscheduler library mismatch: this code is version {version}; the library is"
                f" {library.describe_versions(differ)}",
                err=True,
            )
            return EXIT_PROBLEM
        library.load(conn)
    except (PySchedulerError, *REDIS_ERRORS) as exc:  # not under CliGroup from tools/
        error = cli_error(exc, url)
        click.echo(f"Error: {error.message}", err=True)
        return error.exit_code
    click.echo(f"loaded pyscheduler library {version}{where}")
    return EXIT_OK


@click.command("load-scripts", epilog=epilog("--check found another version deployed"))
@url_option
@click.option("--check", is_flag=True, help="Exit 1 when the deployed version differs.")
@click.option("--print", "print_code", is_flag=True, help="Write the rendered library to stdout.")
def load_scripts(url: str | None, check: bool, print_code: bool) -> None:
    """Deploy the Lua library into Redis (FUNCTION LOAD REPLACE) and print its version."""
    sys.exit(load_scripts_command(url, check, print_code))
