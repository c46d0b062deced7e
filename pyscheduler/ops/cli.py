"""The `pyscheduler` command line.

Every command takes `--url` (default: $REDIS_URL) and `--help`. Exit codes are the same for all
of them (each command's help says what 1 means for it):

    0  done
    1  the operation found a problem: a job that does not exist or is in the wrong state, a
       failed or timed-out `enqueue --wait`, a declined confirmation
    2  bad usage or bad input (click's usage errors, a bad Redis URL, a non-JSON argument, an
       invalid queue name, job id or option)
    3  Redis cannot be reached or refused the call, or the Lua library is not loaded there
       (`pyscheduler load-scripts` deploys it)

The mapping from exceptions to these codes lives in one place, `CliGroup.invoke`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, NoReturn

import click
import redis
from redis.exceptions import RedisClusterException
from rich.console import Console, Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from ..client.job import Job, JobInfo
from ..client.queue import Queue, QueueLimits, QueueStats
from ..exceptions import InvalidInput, InvalidURL, LibraryError, PySchedulerError
from ..runtime.live_workers import LiveWorker, list_workers
from ..runtime.outages import WAITING_REMINDER_SECONDS
from ..store import library
from ..store.connection import (
    DEFAULT_URL,
    URL_ENV,
    Client,
    error_text,
    redacted,
    resolve_url,
    validate_url,
)
from ..store.connection import connect as connect_any
from ..store.protocol import JOB_ID_RE, LIST_PAGE_MAX, Status
from .dashboard.security import TOKEN_ENV as DASHBOARD_TOKEN_ENV
from .dashboard.security import is_loopback
from .pool import pool_command

URL_HELP = f"Redis URL (default: ${URL_ENV}, else {DEFAULT_URL})"

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2
EXIT_REDIS = 3

EXIT_CODES = (
    "Exit codes: 0 done;{problem} 2 bad usage or input; 3 Redis unreachable or the library not"
    " loaded (see `pyscheduler load-scripts`)."
)

BATCH = LIST_PAGE_MAX  # jobs per listing call when a command works through many
JOBS_LIMIT_MAX = 10_000  # `jobs --limit`: pages of BATCH jobs up to this many
OFFSET_MAX = 2**40  # `jobs --offset`: the library's own bound
CONCURRENCY_MAX = 10_000  # `worker --concurrency`
PROGRESS_MIN = 1000  # show a progress bar from this many jobs on (on a terminal)
CONNECT_TIMEOUT_S = 10.0

_URL_META = "pyscheduler.url"
FINAL_STATES = (Status.FAILED.value, Status.COMPLETE.value, Status.CANCELLED.value)


def epilog(problem: str | None = None) -> str:
    """The exit codes for a command's help; `problem` says when it exits 1."""
    return EXIT_CODES.format(problem=f" 1 {problem};" if problem else "")


# -- errors and exit codes -------------------------------------------------------------------


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
            raise cli_error(exc, ctx.meta.get(_URL_META)) from exc


def fail(message: str, exit_code: int = EXIT_PROBLEM) -> NoReturn:
    raise error_for(message, exit_code)


# -- shared helpers ---------------------------------------------------------------------------

# How often `worker` tries again to reach a cluster it could not reach at start.
CLUSTER_RETRY_S = 1.0


def connect(url: str | None) -> Client:
    """A client for `url` (None: $REDIS_URL, else the default; a `redis+cluster://` URL gives a
    cluster client); InvalidURL for a bad one."""
    return connect_any(url)


def worker_connection(url: str | None) -> Client:
    """`connect(url)`, waiting for a cluster that cannot be reached yet: a cluster client reads
    the map of slots when it is made, so without this a worker started before its cluster
    would exit where one started before its one server waits (a running worker rides outages
    out itself, see runtime/outages.py)."""
    since = time.monotonic()
    next_line = since
    while True:
        try:
            return connect(url)
        except (RedisClusterException, redis.ConnectionError) as exc:
            now = time.monotonic()
            if now >= next_line:
                next_line = now + WAITING_REMINDER_SECONDS
                logging.getLogger("pyscheduler.worker").warning(
                    "cannot reach the Redis Cluster at %s (%s): waiting for it (%.0f s so far)",
                    redacted(resolve_url(url)),
                    error_text(exc),
                    now - since,
                )
            time.sleep(CLUSTER_RETRY_S)


def admin_connection(url: str | None) -> Client:
    """A client for a command; remembers the URL for error messages."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.meta[_URL_META] = url
    return connect_any(url, socket_connect_timeout=CONNECT_TIMEOUT_S)


def check_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """The --url callback: a bad URL stops the command before anything runs, in one line
    (exit 2) that says whether it came from --url or $REDIS_URL."""
    if value is None:
        return None
    try:
        return validate_url(value)
    except InvalidURL as exc:
        source = ctx.get_parameter_source(param.name or "url")
        where = f"${URL_ENV}" if source == click.core.ParameterSource.ENVIRONMENT else "--url"
        raise BadInput(f"{where}: {exc}") from None


def url_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--url", envvar=URL_ENV, metavar="URL", help=URL_HELP, callback=check_url)(
        func
    )


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(
        func
    )


def stdout_console() -> Console:
    """Rich output on stdout; wide when piped, so ids are never cut."""
    wide = not sys.stdout.isatty() and not os.environ.get("COLUMNS")
    return Console(highlight=False, width=200 if wide else None)


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str, ensure_ascii=False))


def server_ms(conn: Client) -> int:
    reply: Any = conn.time()  # typed as maybe-awaitable by some redis-py versions
    seconds, micros = reply
    return int(seconds) * 1000 + int(micros) // 1000


def age(seconds: float | None) -> str:
    """A short human duration: 0.4s, 12.0s, 3m05s, 2h10m, 4d03h."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, mins = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{mins:02d}m"
    days, hrs = divmod(hours, 24)
    return f"{days}d{hrs:02d}h"


def error_summary(error: str | None) -> str:
    """The line of an error text that says what happened (a traceback's last line)."""
    lines = [line for line in (error or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def limits_text(limits: QueueLimits) -> str:
    parts = []
    if limits.concurrency is not None:
        parts.append(f"concurrency {limits.concurrency}")
    if limits.rate is not None and limits.period is not None:
        parts.append(f"rate {limits.rate}/{limits.period:g}s")
    return ", ".join(parts) or "-"


@contextmanager
def progress_bar(total: int | None, description: str) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr for long work on a terminal; yields `advance(n)`."""
    console = stderr_console()
    show = console.is_terminal and (total is None or total >= PROGRESS_MIN)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not show,
    ) as progress:
        task_id = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task_id, n)


class Seconds(click.FloatRange):
    """A finite number of seconds: click's FloatRange lets nan and inf through."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        return number


def json_value(text: str, param: click.Parameter | None) -> Any:
    """A JSON literal: 3, 2.5, true, null, "text" (with its quotes), [1, 2], {"a": 1}."""
    try:
        value = json.loads(text)
        # A "\ud800" escape parses to a string that cannot be sent as UTF-8.
        json.dumps(value, ensure_ascii=False).encode()
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, UnicodeEncodeError):
            problem = "holds a lone surrogate (\\ud800-\\udfff), which is not text"
        elif isinstance(exc, RecursionError):
            problem = "is nested too deeply"
        else:
            problem = "is not a JSON value (a string needs JSON quotes, e.g. '\"text\"')"
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise click.BadParameter(f"{shown!r} {problem}", param=param) from None
    return value


def check_job_ids(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Job id arguments: malformed ones are bad input (exit 2), not jobs that do not exist."""
    for job_id in (value,) if isinstance(value, str) else value:
        if not JOB_ID_RE.match(job_id):
            raise BadInput(
                f"invalid job id {job_id!r}: use 1-256 characters from letters, digits"
                " and _.:- starting with a letter or digit"
            )
    return value


def json_args(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[Any]:
    return [json_value(text, param) for text in value]


def json_object(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    parsed = json_value(value, param)
    if not isinstance(parsed, dict):
        raise click.BadParameter("must be a JSON object, e.g. '{\"a\": 1}'", param=param)
    return parsed


def queue_of(conn: Client, name: str) -> Queue:
    return Queue(name, connection=conn)


# -- the group --------------------------------------------------------------------------------


@click.group(cls=CliGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug details.")
def main(verbose: bool) -> None:
    """pyscheduler: a job scheduler on Redis where long jobs never slow down short ones.

    Every command takes --url (default: $REDIS_URL). Exit codes: 0 done; 1 the operation
    found a problem (see each command's help); 2 bad usage or input; 3 Redis unreachable or
    the Lua library not loaded (`pyscheduler load-scripts` deploys it).
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


# -- load-scripts -----------------------------------------------------------------------------


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


@main.command("load-scripts", epilog=epilog("--check found another version deployed"))
@url_option
@click.option("--check", is_flag=True, help="Exit 1 when the deployed version differs.")
@click.option("--print", "print_code", is_flag=True, help="Write the rendered library to stdout.")
def load_scripts(url: str | None, check: bool, print_code: bool) -> None:
    """Deploy the Lua library into Redis (FUNCTION LOAD REPLACE) and print its version."""
    sys.exit(load_scripts_command(url, check, print_code))


# -- worker -----------------------------------------------------------------------------------


@main.command(epilog=epilog("the worker was aborted (a second signal)"))
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
    from ..runtime.worker import Worker

    sys.path.insert(0, "")  # handlers of the current directory's application
    click.get_current_context().meta[_URL_META] = url
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


# -- pool -------------------------------------------------------------------------------------

# `pyscheduler pool`: the supervisor of worker processes lives in `pool.py`.
main.add_command(pool_command, name="pool")


# -- enqueue ----------------------------------------------------------------------------------


@main.command(epilog=epilog("--wait: the job failed, was cancelled or is not done in time"))
@click.argument("queue")
@click.argument("func")
@click.argument("args", nargs=-1, callback=json_args)
@click.option(
    "--kwargs",
    "kwargs_json",
    callback=json_object,
    metavar="JSON",
    help="Keyword arguments as a JSON object: '{\"a\": 1}'.",
)
@click.option("--priority", type=int, help="Higher runs first (-1000..1000, default 0).")
@click.option("--delay", type=float, metavar="SECONDS", help="Run no earlier than this from now.")
@click.option("--timeout", type=float, metavar="SECONDS", help="Hard limit of one run.")
@click.option("--retries", type=int, help="Runs after the first when one fails.")
@click.option("--backoff", type=float, metavar="SECONDS", help="First retry delay (doubles).")
@click.option("--result-ttl", type=float, metavar="SECONDS", help="How long to keep the result.")
@click.option("--job-id", help="The job's id (an existing id makes this a no-op).")
@click.option(
    "--time-slice", type=float, metavar="SECONDS", help="Pause at a checkpoint after this long."
)
@click.option(
    "--wait",
    type=Seconds(min=0),
    metavar="SECONDS",
    help="Wait up to SECONDS for the job to end and print its result (JSON).",
)
@url_option
def enqueue(
    queue: str,
    func: str,
    args: list[Any],
    kwargs_json: dict[str, Any] | None,
    priority: int | None,
    delay: float | None,
    timeout: float | None,
    retries: int | None,
    backoff: float | None,
    result_ttl: float | None,
    job_id: str | None,
    time_slice: float | None,
    wait: float | None,
    url: str | None,
) -> None:
    """Enqueue FUNC(*ARGS) on QUEUE and print the job's id.

    FUNC names the handler as "module:function" (or a registered task's name); workers run
    it only when they may (see `pyscheduler worker --help`). Each ARG is a JSON value:

    \b
        pyscheduler enqueue fast tasks:add 1 2
        pyscheduler enqueue fast tasks:greet '"Ada"' --kwargs '{"loud": true}'
        pyscheduler enqueue fast tasks:add -- -1 2      # `--` before negative numbers

    With --wait, the id goes to stderr and the result to stdout as JSON.
    """
    options = {
        "priority": priority,
        "delay": delay,
        "timeout": timeout,
        "retries": retries,
        "backoff": backoff,
        "result_ttl": result_ttl,
        "job_id": job_id,
        "time_slice": time_slice,
    }
    conn = admin_connection(url)
    q = queue_of(conn, queue)
    job = q.enqueue_call(
        func, args, kwargs_json, **{k: v for k, v in options.items() if v is not None}
    )
    if wait is None:
        click.echo(job.id)
        return
    click.echo(f"job {job.id} enqueued on {q.name}; waiting up to {wait:g} s", err=True)
    console = stderr_console()
    with console.status(f"waiting for job {job.id}", spinner="dots"):
        result = job.wait(timeout=wait)
    click.echo(json.dumps(result, ensure_ascii=False))


# -- stats ------------------------------------------------------------------------------------


def stats_table(all_stats: Sequence[QueueStats], caption: str | None = None) -> Table:
    table = Table(title="pyscheduler queues", caption=caption, title_justify="left")
    table.add_column("queue", no_wrap=True)
    for name in ("ready", "delayed", "active", "waiting", "failed", "done"):
        table.add_column(name, justify="right")
    table.add_column("paused")
    table.add_column("oldest ready", justify="right")
    table.add_column("limits")
    for s in all_stats:
        table.add_row(
            Text(s.name),
            str(s.queued),
            str(s.delayed),
            str(s.active),
            str(s.waiting),
            Text(str(s.failed), style="red" if s.failed else ""),
            str(s.finished),
            Text("paused", style="yellow") if s.paused else "-",
            age(s.oldest_ready_age),
            limits_text(s.limits),
        )
    return table


def collect_stats(conn: Client, names: Sequence[str]) -> list[QueueStats]:
    return [queue_of(conn, name).stats() for name in (names or Queue.known(conn))]


@main.command(epilog=epilog())
@click.argument("queues", nargs=-1)
@click.option(
    "--watch",
    type=Seconds(min=0.1),
    is_flag=False,
    flag_value=2.0,
    metavar="[SECONDS]",
    help="Refresh every SECONDS (default 2) until Ctrl-C. Put QUEUES before --watch.",
)
@click.option(
    "--count", type=click.IntRange(min=1), metavar="N", help="With --watch: stop after N refreshes."
)
@json_option
@url_option
def stats(
    queues: tuple[str, ...], watch: float | None, count: int | None, as_json: bool, url: str | None
) -> None:
    """A table of QUEUES (default: every known queue).

    Columns: jobs ready, delayed (due later), active (running), waiting (for subtasks),
    failed, done (complete or cancelled, until their results expire); whether the queue is
    paused; how long the oldest ready job has waited; its limits.
    """
    conn = admin_connection(url)
    for name in queues:
        queue_of(conn, name)  # validates the names before anything is shown

    def as_dicts() -> list[dict[str, Any]]:
        return [dataclasses.asdict(s) for s in collect_stats(conn, queues)]

    def render() -> Table | Text:
        all_stats = collect_stats(conn, queues)
        if not all_stats:
            return Text("no queues yet (a queue is known once a job was enqueued on it)")
        caption = None
        if watch is not None:
            stamp = datetime.now().strftime("%H:%M:%S")
            caption = f"{stamp}, every {watch:g}s; Ctrl-C stops"
        return stats_table(all_stats, caption)

    if watch is None:
        if as_json:
            echo_json(as_dicts())
        else:
            stdout_console().print(render())
        return
    rounds = 0
    try:
        if as_json:  # one JSON document per line, per refresh
            while True:
                click.echo(json.dumps(as_dicts(), default=str))
                rounds += 1
                if count is not None and rounds >= count:
                    return
                time.sleep(watch)
        console = stdout_console()
        with Live(render(), console=console, auto_refresh=False) as live:
            rounds = 1
            while count is None or rounds < count:
                time.sleep(watch)
                live.update(render(), refresh=True)
                rounds += 1
        if not console.is_terminal:
            console.line()  # Live ends a piped output without a newline
    except KeyboardInterrupt:
        pass


# -- jobs and job -----------------------------------------------------------------------------


def job_status(info: JobInfo) -> str:
    return f"{info.status} (paused)" if info.paused else info.status


# Record fields that are a lease's credentials: whoever has the token can complete, fail or
# renew the job in its worker's place, so output shows it only when asked (--show-token).
SECRET_FIELDS = ("token",)


def shown_record(record: dict[str, Any], show_token: bool) -> dict[str, Any]:
    if show_token:
        return dict(record)
    return {k: v for k, v in record.items() if k not in SECRET_FIELDS}


def job_dict(info: JobInfo, now_ms: int, show_token: bool = False) -> dict[str, Any]:
    data = dataclasses.asdict(info)
    data["record"] = shown_record(info.record, show_token)
    data["paused"] = info.paused
    data["subtasks_total"] = info.subtasks_total
    data["age_s"] = None if info.created_ms is None else (now_ms - info.created_ms) / 1000
    return data


@main.command(epilog=epilog())
@click.argument("queue")
@click.option(
    "--status",
    type=click.Choice([s.value for s in Status]),
    default=Status.QUEUED.value,
    show_default=True,
    help="List jobs in this state.",
)
@click.option("--offset", type=click.IntRange(min=0, max=OFFSET_MAX), default=0, show_default=True)
@click.option(
    "--limit",
    type=click.IntRange(min=1, max=JOBS_LIMIT_MAX),
    default=50,
    show_default=True,
    help=f"Jobs per page (at most {JOBS_LIMIT_MAX:,}).",
)
@json_option
@click.option("--show-token", is_flag=True, help="With --json: include the lease tokens.")
@url_option
def jobs(
    queue: str,
    status: str,
    offset: int,
    limit: int,
    as_json: bool,
    show_token: bool,
    url: str | None,
) -> None:
    """List the jobs of QUEUE in one state, a page at a time.

    Queued jobs are listed in the order they will run; failed ones oldest failure first.
    The error column shows the last line of the latest error.
    """
    conn = admin_connection(url)
    q = queue_of(conn, queue)
    listed: list[Job] = []
    while len(listed) < limit:  # the library lists at most BATCH jobs per call
        want = min(BATCH, limit - len(listed))
        page = q.jobs(status, offset=offset + len(listed), limit=want)
        listed += page
        if len(page) < want:
            break
    infos = []
    for job in listed:
        try:
            infos.append(job.info(show_token=show_token))
        except PySchedulerError:  # ended and expired between listing and reading
            continue
    now = server_ms(conn)
    if as_json:
        echo_json([job_dict(info, now, show_token) for info in infos])
        return
    console = stdout_console()
    if not infos:
        console.print(Text(f"no {status} jobs in queue {q.name} from offset {offset}"))
        return
    caption = f"{status} jobs {offset + 1}-{offset + len(infos)}"
    if len(infos) == limit:
        caption += f"; next page: --offset {offset + limit}"
    table = Table(title=f"queue {q.name}", caption=caption, title_justify="left")
    table.add_column("id", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("func")
    table.add_column("prio", justify="right")
    table.add_column("attempts", justify="right")
    table.add_column("created", justify="right")
    table.add_column("error")
    for info in infos:
        created = None if info.created_ms is None else (now - info.created_ms) / 1000
        table.add_row(
            Text(info.id),
            Text(job_status(info)),
            Text(info.func or "?"),
            str(info.priority),
            f"{info.attempts}/{info.retries + 1}",
            f"{age(created)} ago" if created is not None else "-",
            Text(error_summary(info.error), style="red"),
        )
    console.print(table)


def when(ms: int | None, now_ms: int) -> Text:
    if ms is None:
        return Text("-")
    stamp = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
    return Text(f"{stamp} ({age((now_ms - ms) / 1000)} ago)")


def as_json_text(value: Any) -> Text:
    return Text(json.dumps(value, ensure_ascii=False, default=str))


@main.command(epilog=epilog("the job does not exist"))
@click.argument("job_id", callback=check_job_ids)
@click.option("--queue", help="The job's queue (default: search the known queues).")
@json_option
@click.option("--show-token", is_flag=True, help="Include the lease's fencing token.")
@url_option
def job(job_id: str, queue: str | None, as_json: bool, show_token: bool, url: str | None) -> None:
    """Show one job in full: arguments, attempts, times, checkpoint, result, error with its
    traceback. The fencing token of a running job's lease is hidden unless --show-token."""
    conn = admin_connection(url)
    info = Job.fetch(job_id, connection=conn, queue=queue).info(show_token=show_token)
    now = server_ms(conn)
    if as_json:
        echo_json(job_dict(info, now, show_token))
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    rows: list[tuple[str, Text]] = [
        ("id", Text(info.id)),
        ("queue", Text(info.queue)),
        ("status", Text(job_status(info))),
        ("func", Text(info.func or "?")),
        ("args", as_json_text(info.args)),
        ("kwargs", as_json_text(info.kwargs)),
        ("priority", Text(str(info.priority))),
        ("attempts", Text(f"{info.attempts} of {info.retries + 1}")),
        ("timeout", Text("-" if info.timeout is None else f"{info.timeout:g}s")),
        ("created", when(info.created_ms, now)),
        ("started", when(info.started_ms, now)),
        ("ended", when(info.ended_ms, now)),
    ]
    if info.subtasks_total is not None:
        rows.append(("subtasks", Text(f"{info.subtasks_done or 0} of {info.subtasks_total} done")))
    if info.checkpoint is not None:
        rows.append(("checkpoint", as_json_text(info.checkpoint)))
    if info.status == Status.COMPLETE:
        rows.append(("result", as_json_text(info.result)))
    if show_token and info.record.get("token") is not None:
        rows.append(("token", Text(str(info.record["token"]))))
    for key, value in rows:
        grid.add_row(key, value)
    parts: list[Table | Text] = [grid]
    if info.error:
        parts += [Text("\nerror:", style="bold red"), Text(info.error.rstrip())]
    stdout_console().print(Group(*parts))


# -- workers ----------------------------------------------------------------------------------


def worker_dict(worker: LiveWorker, now_ms: int) -> dict[str, Any]:
    data = dataclasses.asdict(worker)
    data["queues"] = list(worker.queues)
    data["jobs"] = [
        {**dataclasses.asdict(job), "running_s": (now_ms - job.started_ms) / 1000}
        for job in worker.jobs
    ]
    data["uptime_s"] = (now_ms - worker.started_ms) / 1000
    data["last_beat_age_s"] = (now_ms - worker.last_beat_ms) / 1000
    return data


def running_text(worker: LiveWorker, now_ms: int) -> Text:
    if not worker.jobs:
        return Text("-")
    return Text(
        "\n".join(f"{job.id} ({age((now_ms - job.started_ms) / 1000)})" for job in worker.jobs)
    )


@main.command("workers", epilog=epilog())
@click.argument("queues", nargs=-1)
@json_option
@url_option
def workers_command(queues: tuple[str, ...], as_json: bool, url: str | None) -> None:
    """The live workers of QUEUES (default: every known queue), from their heartbeats.

    Columns: the worker's name, host and pid; the queues it takes, in its order; its
    concurrency; the jobs it runs now, with how long each has run; the jobs it finished and
    how many failed; how long it has run; the age of its last heartbeat. A worker that stops
    leaves the list at once; one that dies, within two heartbeats.
    """
    conn = admin_connection(url)
    for name in queues:
        queue_of(conn, name)  # validates the names before anything is shown
    found = list_workers(conn, list(queues) if queues else None)
    now = server_ms(conn)
    if as_json:
        echo_json([worker_dict(w, now) for w in found])
        return
    console = stdout_console()
    if not found:
        where = ", ".join(queues) if queues else "any queue"
        console.print(Text(f"no live workers on {where}"))
        return
    table = Table(title="pyscheduler workers", title_justify="left")
    table.add_column("worker", no_wrap=True)
    table.add_column("host", no_wrap=True)
    table.add_column("pid", justify="right")
    table.add_column("queues")
    table.add_column("conc", justify="right")
    table.add_column("running (for)", no_wrap=True)
    table.add_column("done", justify="right")
    table.add_column("failed", justify="right")
    table.add_column("up", justify="right")
    table.add_column("last beat", justify="right")
    for w in found:
        table.add_row(
            Text(w.name),
            Text(w.host),
            str(w.pid),
            Text(", ".join(w.queues)),
            str(w.concurrency),
            running_text(w, now),
            str(w.processed),
            Text(str(w.failed), style="red" if w.failed else ""),
            age((now - w.started_ms) / 1000),
            f"{age((now - w.last_beat_ms) / 1000)} ago",
        )
    console.print(table)


# -- retry, cancel, purge ---------------------------------------------------------------------


@main.command(epilog=epilog("some of the JOB_IDs were not failed jobs of QUEUE"))
@click.argument("queue")
@click.argument("job_ids", nargs=-1, callback=check_job_ids)
@click.option("--all", "retry_all", is_flag=True, help="Retry every failed job of QUEUE.")
@url_option
def retry(queue: str, job_ids: tuple[str, ...], retry_all: bool, url: str | None) -> None:
    """Move failed jobs of QUEUE back to the queue: the JOB_IDs given, or --all.

    A retried job runs again with a fresh set of attempts. No failed jobs with --all is not a
    problem (exit 0).
    """
    if job_ids and retry_all:
        raise click.UsageError("give JOB_IDs or --all, not both")
    if not job_ids and not retry_all:
        raise click.UsageError("give the JOB_IDs to retry, or --all")
    conn = admin_connection(url)
    q = queue_of(conn, queue)
    if job_ids:
        wanted = list(dict.fromkeys(job_ids))
        moved = q.retry(wanted)
        click.echo(f"retried {moved} of {plural(len(wanted), 'job')} of queue {q.name}")
        if moved < len(wanted):
            fail(f"{plural(len(wanted) - moved, 'job')} not retried: not failed in queue {q.name}")
        return
    total = q.stats().failed
    if total == 0:
        click.echo(f"no failed jobs in queue {q.name}")
        return
    moved = 0
    with progress_bar(total, f"retrying failed jobs of {q.name}") as advance:
        while moved < total:  # jobs failing again meanwhile wait for the next run
            page = q.job_ids(Status.FAILED, 0, min(BATCH, total - moved))
            done = q.retry(page) if page else 0
            if done == 0:
                break
            moved += done
            advance(done)
    click.echo(f"retried {plural(moved, 'failed job')} of queue {q.name}")


@main.command(epilog=epilog("a job does not exist or has ended already"))
@click.argument("job_ids", nargs=-1, required=True, callback=check_job_ids)
@click.option("--queue", help="The jobs' queue (default: search the known queues).")
@url_option
def cancel(job_ids: tuple[str, ...], queue: str | None, url: str | None) -> None:
    """Cancel jobs that have not ended. A job waiting for subtasks cancels its pending
    subtasks too; a running job's result will be refused."""
    conn = admin_connection(url)
    problems = 0
    for job_id in dict.fromkeys(job_ids):
        try:
            was = Job.fetch(job_id, connection=conn, queue=queue).cancel()
        except PySchedulerError as exc:
            if isinstance(exc, InvalidInput | LibraryError):
                raise
            click.echo(f"Error: {exc}", err=True)
            problems += 1
            continue
        click.echo(f"cancelled {job_id} (was {was})")
    if problems:
        fail(f"{problems} of {plural(len(set(job_ids)), 'job')} not cancelled")


@main.command(epilog=epilog("some JOB_IDs were not purged, or the confirmation was declined"))
@click.argument("queue")
@click.argument("job_ids", nargs=-1, callback=check_job_ids)
@click.option(
    "--status",
    type=click.Choice(FINAL_STATES),
    required=True,
    help="Delete jobs that ended in this state.",
)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@url_option
def purge(queue: str, job_ids: tuple[str, ...], status: str, yes: bool, url: str | None) -> None:
    """Delete the ended jobs of QUEUE in a state (records, results, errors): the JOB_IDs given,
    else all of them. Asks first unless --yes."""
    conn = admin_connection(url)
    q = queue_of(conn, queue)
    wanted = list(dict.fromkeys(job_ids))
    total: int | None
    if wanted:
        total = len(wanted)
        question = f"Delete {plural(total, status + ' job')} of queue {q.name}?"
    else:
        s = q.stats()
        if status == Status.FAILED:
            total = s.failed
            every = "the" if total == 1 else "all"
            question = f"Delete {every} {plural(total, 'failed job')} of queue {q.name}?"
        else:  # complete and cancelled jobs share one set: its size is an upper bound
            total = None
            question = f"Delete every {status} job of queue {q.name} (of {s.finished} ended)?"
        if (total if total is not None else s.finished) == 0:
            click.echo(f"no {status} jobs in queue {q.name}")
            return
    if not yes:
        click.confirm(question, abort=True, err=True)
    with progress_bar(total, f"deleting {status} jobs of {q.name}") as advance:
        deleted = q.purge(status, wanted or None, progress=advance)
    click.echo(f"deleted {plural(deleted, status + ' job')} of queue {q.name}")
    if wanted and deleted < len(wanted):
        fail(f"{plural(len(wanted) - deleted, 'job')} not deleted: not {status} in queue {q.name}")


# -- pause, resume, limit ---------------------------------------------------------------------


@main.command(epilog=epilog())
@click.argument("queue")
@url_option
def pause(queue: str, url: str | None) -> None:
    """Stop handing out jobs of QUEUE; running jobs go on, enqueueing still works."""
    queue_of(admin_connection(url), queue).pause()
    click.echo(f"queue {queue} is paused; `pyscheduler resume {queue}` resumes it")


@main.command(epilog=epilog())
@click.argument("queue")
@url_option
def resume(queue: str, url: str | None) -> None:
    """Hand out jobs of a paused QUEUE again."""
    queue_of(admin_connection(url), queue).resume()
    click.echo(f"queue {queue} is running")


def parse_concurrency(value: str) -> int | None:
    if value.lower() == "none":
        return None
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise click.BadParameter(
            f"{value!r} is not a positive integer or 'none'", param_hint="'--concurrency'"
        )
    return number


@main.command(epilog=epilog())
@click.argument("queue")
@click.option(
    "--concurrency",
    metavar="N|none",
    help="At most N jobs of QUEUE active at once, across all workers; 'none' clears it.",
)
@click.option(
    "--rate", type=click.IntRange(min=1), metavar="N", help="At most N job starts per --per."
)
@click.option(
    "--per",
    type=Seconds(min=0, min_open=True),
    metavar="SECONDS",
    help="The period of --rate (default 1 with --rate).",
)
@click.option("--no-rate", is_flag=True, help="Clear the rate limit.")
@json_option
@url_option
def limit(
    queue: str,
    concurrency: str | None,
    rate: int | None,
    per: float | None,
    no_rate: bool,
    as_json: bool,
    url: str | None,
) -> None:
    """Show or set the limits of QUEUE, enforced inside Redis for all workers.

    Without options, shows them. Options not given keep their current value:

    \b
        pyscheduler limit images --concurrency 4
        pyscheduler limit mail --rate 100 --per 60
        pyscheduler limit mail --concurrency none --no-rate
    """
    if no_rate and (rate is not None or per is not None):
        raise click.UsageError("--no-rate goes alone, without --rate or --per")
    new_concurrency = None if concurrency is None else parse_concurrency(concurrency)
    q = queue_of(admin_connection(url), queue)
    current = q.stats().limits
    if concurrency is not None or rate is not None or per is not None or no_rate:
        if per is not None and rate is None and current.rate is None:
            raise click.UsageError("--per needs --rate (there is no rate limit to change)")
        new_rate, new_period = current.rate, current.period
        if no_rate:
            new_rate, new_period = None, None
        elif rate is not None or per is not None:
            new_rate = rate if rate is not None else current.rate
            new_period = per if per is not None else (1.0 if rate is not None else current.period)
        current = q.set_limits(
            concurrency=new_concurrency if concurrency is not None else current.concurrency,
            rate=new_rate,
            period=new_period,
        )
    if as_json:
        echo_json(dataclasses.asdict(current))
        return
    shown = limits_text(current)
    click.echo(f"queue {q.name}: {'no limits' if shown == '-' else shown}")


# -- metrics and events -----------------------------------------------------------------------


@main.command(epilog=epilog("the port could not be bound"))
@click.option("--port", type=click.IntRange(0, 65535), default=9711, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@url_option
def metrics(port: int, host: str, url: str | None) -> None:
    """Serve Prometheus metrics of every known queue at http://HOST:PORT/metrics.

    Each scrape reads the queues' counters, histograms and sizes in two round trips. Needs
    the `metrics` extra (pip install 'pyscheduler-redis[metrics]').
    """
    try:
        from .metrics import serve
    except ImportError as exc:  # prometheus_client missing
        fail(f"pyscheduler metrics needs prometheus_client: {exc}")

    def ready(bound: int) -> None:
        click.echo(f"serving metrics at http://{host}:{bound}/metrics", err=True)

    try:
        serve(connect(url), host, port, ready)
    except OSError as exc:
        fail(f"cannot serve on {host}:{port}: {exc}")
    except KeyboardInterrupt:
        pass


# -- dashboard --------------------------------------------------------------------------------


@main.command(epilog=epilog())
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; any but a loopback one needs a token.",
)
@click.option("--port", type=click.IntRange(1, 65535), default=8711, show_default=True)
@click.option(
    "--token",
    envvar=DASHBOARD_TOKEN_ENV,
    help=f"Every request must carry it (default: ${DASHBOARD_TOKEN_ENV}).",
)
@click.option("--read-only", is_flag=True, help="Show everything, allow no action.")
@url_option
def dashboard(host: str, port: int, token: str | None, read_only: bool, url: str | None) -> None:
    """Serve the web dashboard: queues, jobs, workers, failures, limits (the `dashboard` extra).

    Open it once with ?token=TOKEN (or send `Authorization: Bearer TOKEN`) when it has one.
    """
    if not is_loopback(host) and not (token and token.strip()):
        fail(f"listening on {host} needs a token: --token or ${DASHBOARD_TOKEN_ENV}", EXIT_USAGE)
    try:
        from .dashboard.app import serve
    except ImportError as exc:
        fail(f"the dashboard needs its extra: pip install 'pyscheduler-redis[dashboard]' ({exc})")
    click.get_current_context().meta[_URL_META] = url
    serve(url, host, port, token or None, read_only)


@main.command(epilog=epilog())
@click.argument("queues", nargs=-1)
@click.option("--from-start", is_flag=True, help="Show the events still kept first.")
@click.option("--count", type=click.IntRange(min=1), metavar="N", help="Stop after N events.")
@json_option
@url_option
def events(
    queues: tuple[str, ...], from_start: bool, count: int | None, as_json: bool, url: str | None
) -> None:
    """Tail job events of QUEUES (default: every known queue) until Ctrl-C.

    One line per job and event (enqueued, started, completed, failed, retried, paused,
    cancelled): time, queue, event, job id; with --json, one JSON object per line. The
    library keeps about the last 1,000 entries per queue. On a Redis Cluster name one queue.
    """
    from ..client.events import tail

    conn = admin_connection(url)
    for name in queues:
        queue_of(conn, name)  # validates the names before anything is shown
    names = list(queues) or Queue.known(conn)
    if not names:
        fail("no queues yet (a queue is known once a job was enqueued on it)")
    shown = 0
    try:
        for event in tail(conn, names, from_start):
            if as_json:
                click.echo(json.dumps(event.as_dict()))
            else:
                stamp = datetime.fromtimestamp(event.time_ms / 1000, UTC)
                when = stamp.isoformat(timespec="milliseconds")
                click.echo(f"{when}  {event.queue}  {event.event:<9}  {event.job_id}")
            shown += 1
            if count is not None and shown >= count:
                return
    except KeyboardInterrupt:
        pass


# -- demo -------------------------------------------------------------------------------------


@main.command(epilog=epilog("the demo could not run"))
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
    from ..dev.demo import run_demo

    click.get_current_context().meta[_URL_META] = url
    sys.exit(run_demo(url, fast_jobs))


if __name__ == "__main__":  # pragma: no cover
    main()
