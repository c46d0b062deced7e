"""Exit codes and error messages: every exception that reaches the command line becomes one
line and one of the exit codes below, here and nowhere else (`CliGroup.invoke`)."""

from __future__ import annotations

from typing import Any, NoReturn

import click
import redis
from redis.exceptions import RedisClusterException

from ...exceptions import InvalidInput, LibraryError, PySchedulerError
from ...store.connection import error_text, redacted, resolve_url

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2
EXIT_REDIS = 3

EXIT_CODES = (
    "Exit codes: 0 done;{problem} 2 bad usage or input; 3 Redis unreachable or the library not"
    " loaded (see `pyscheduler load-scripts`)."
)

# Where a command leaves its --url in `ctx.meta`, for the error messages.
URL_META = "pyscheduler.url"


def epilog(problem: str | None = None) -> str:
    """The exit codes for a command's help; `problem` says when it exits 1."""
    return EXIT_CODES.format(problem=f" 1 {problem};" if problem else "")


class CliError(click.ClickException):
    """An error message for the user; the class says the exit code."""

    exit_code = EXIT_PROBLEM


class BadInput(CliError):
    exit_code = EXIT_USAGE


class RedisUnavailable(CliError):
    exit_code = EXIT_REDIS


def error_for(message: str, exit_code: int) -> CliError:
    cls = {EXIT_USAGE: BadInput, EXIT_REDIS: RedisUnavailable}.get(exit_code, CliError)
    return cls(message)


#: What redis-py raises when a server or a cluster cannot serve a call; a cluster's
#: `RedisClusterException` ("slot not covered", no node reachable) is no `RedisError`.
REDIS_ERRORS = (redis.RedisError, RedisClusterException)


def redis_problem(exc: redis.RedisError | RedisClusterException, url: str | None) -> str:
    where = redacted(resolve_url(url))
    if isinstance(exc, RedisClusterException):
        return f"the Redis Cluster at {where} cannot serve the call: {error_text(exc)}"
    if isinstance(exc, redis.AuthenticationError):
        return f"Redis at {where} refused the login: {exc}"
    if isinstance(exc, redis.TimeoutError):
        return f"Redis at {where} did not answer in time: {exc}"
    if isinstance(exc, redis.ConnectionError):
        return f"cannot reach Redis at {where}: {exc} (set --url or REDIS_URL)"
    text = error_text(exc)
    if text != str(exc):  # a cluster error: say what it is rather than echo its reply
        return f"Redis at {where}: {text}"
    return f"Redis at {where} refused the call: {exc}"


def cli_error(
    exc: PySchedulerError | redis.RedisError | RedisClusterException, url: str | None
) -> CliError:
    """The message and exit code of an exception that reached the command line."""
    if isinstance(exc, redis.ResponseError) and "DB index is out of range" in str(exc):
        # The URL names a database this server does not have: the URL is the mistake.
        return BadInput(
            f"Redis at {redacted(resolve_url(url))} has no such database (its `databases`"
            " setting is lower): use a lower number after the port, e.g. /0"
        )
    if isinstance(exc, REDIS_ERRORS):
        return RedisUnavailable(redis_problem(exc, url))
    if isinstance(exc, LibraryError):
        message = str(exc)
        if "pyscheduler load-scripts" not in message:
            message += " (deploy it with `pyscheduler load-scripts --url REDIS_URL`)"
        return RedisUnavailable(message)
    if isinstance(exc, InvalidInput):
        return BadInput(str(exc))
    return CliError(str(exc))  # JobNotFound, InvalidJobState, JobFailed, ...


class CliGroup(click.Group):
    """Maps pyscheduler's and redis-py's exceptions to a message and an exit code, once for
    every command."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (PySchedulerError, *REDIS_ERRORS) as exc:
            raise cli_error(exc, ctx.meta.get(URL_META)) from exc


def fail(message: str, exit_code: int = EXIT_PROBLEM) -> NoReturn:
    raise error_for(message, exit_code)
