"""The job commands: `enqueue` one, list a queue's `jobs`, show one `job`, `cancel` some."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import click
from rich.console import Group
from rich.table import Table
from rich.text import Text

from ...client.job import Job, JobInfo
from ...exceptions import InvalidInput, LibraryError, PySchedulerError
from ...store.protocol import Status
from .connections import BATCH, admin_connection, queue_of, server_ms
from .errors import epilog, fail
from .options import Seconds, check_job_ids, json_args, json_object, json_option, url_option
from .output import (
    age,
    as_json_text,
    echo_json,
    error_summary,
    plural,
    stderr_console,
    stdout_console,
    when,
)

JOBS_LIMIT_MAX = 10_000  # `jobs --limit`: pages of BATCH jobs up to this many
OFFSET_MAX = 2**40  # `jobs --offset`: the library's own bound
PROGRESS_CELL = 40  # `jobs`: characters of a job's progress shown


@click.command(epilog=epilog("--wait: the job failed, was cancelled or is not done in time"))
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


def job_status(info: JobInfo) -> str:
    return f"{info.status} (paused)" if info.paused else info.status


def progress_text(progress: Any) -> Text:
    """A job's progress in one short cell: its JSON, cut to PROGRESS_CELL characters."""
    if progress is None:
        return Text("-")
    text = json.dumps(progress, ensure_ascii=False)
    return Text(text if len(text) <= PROGRESS_CELL else text[: PROGRESS_CELL - 3] + "...")


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
    data["progress"] = info.progress
    data["schedule"] = info.schedule
    data["age_s"] = None if info.created_ms is None else (now_ms - info.created_ms) / 1000
    return data


@click.command(epilog=epilog())
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
    # Only a page where some job reported progress gets the column.
    with_progress = any(info.progress is not None for info in infos)
    if with_progress:
        table.add_column("progress")
    for info in infos:
        created = None if info.created_ms is None else (now - info.created_ms) / 1000
        cells: list[Any] = [
            Text(info.id),
            Text(job_status(info)),
            Text(info.func or "?"),
            str(info.priority),
            f"{info.attempts}/{info.retries + 1}",
            f"{age(created)} ago" if created is not None else "-",
            Text(error_summary(info.error), style="red"),
        ]
        if with_progress:
            cells.append(progress_text(info.progress))
        table.add_row(*cells)
    console.print(table)


@click.command(epilog=epilog("the job does not exist"))
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
    if info.schedule is not None:
        rows.append(("schedule", Text(f"{info.schedule} (tick {info.record.get('tick')})")))
    if info.progress is not None:
        rows.append(("progress", as_json_text(info.progress)))
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


@click.command(epilog=epilog("a job does not exist or has ended already"))
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
