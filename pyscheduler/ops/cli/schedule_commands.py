"""The periodic-job commands: `pyscheduler schedules list|add|remove|pause|resume`."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from ...client.schedules import Schedule
from ...exceptions import ScheduleNotFound
from .connections import admin_connection, queue_of, server_ms
from .errors import epilog, fail
from .options import Seconds, json_args, json_object, json_option, url_option
from .output import age, as_json_text, echo_json, stdout_console


def _ms(moment: datetime | None) -> int | None:
    return None if moment is None else round(moment.timestamp() * 1000)


def schedule_dict(schedule: Schedule) -> dict[str, Any]:
    data = dataclasses.asdict(schedule)
    data["every"] = None if schedule.every is None else schedule.every.total_seconds()
    data["next_run"] = None if schedule.next_run is None else schedule.next_run.isoformat()
    data["last_run"] = None if schedule.last_run is None else schedule.last_run.isoformat()
    return data


def timing(schedule: Schedule) -> str:
    if schedule.every is not None:
        return f"every {schedule.every.total_seconds():g}s"
    if schedule.cron is None:
        return "?"
    return f"cron {schedule.cron} ({schedule.tz})"


def _in(ms: int | None, now_ms: int) -> str:
    if ms is None:
        return "-"
    delta = (ms - now_ms) / 1000
    return f"in {age(delta)}" if delta >= 0 else f"{age(-delta)} ago"


@click.group()
def schedules() -> None:
    """Periodic jobs of a queue: list, add (or replace), remove, pause and resume them.

    Each tick of a schedule runs once as an ordinary job of its queue, made by the first
    worker's pop after it; no scheduler process runs.
    """


@schedules.command("list", epilog=epilog())
@click.argument("queue")
@json_option
@url_option
def list_command(queue: str, as_json: bool, url: str | None) -> None:
    """List the schedules of QUEUE with their timing and next run."""
    conn = admin_connection(url)
    found = queue_of(conn, queue).schedules()
    if as_json:
        echo_json([schedule_dict(s) for s in found])
        return
    console = stdout_console()
    if not found:
        console.print(Text(f"no schedules in queue {queue}"))
        return
    now = server_ms(conn)
    table = Table(title=f"schedules of queue {queue}", title_justify="left")
    for column in ("name", "timing", "func", "args", "next run", "last run", "state"):
        table.add_column(column, no_wrap=column in ("name", "next run", "last run"))
    for s in found:
        state = "corrupt: " + s.error if s.error else ("paused" if s.paused else "active")
        if s.catch_up and not s.error:
            state += ", catch-up"
        table.add_row(
            Text(s.name),
            Text(timing(s)),
            Text(s.func or "?"),
            as_json_text(s.args),
            _in(_ms(s.next_run), now),
            _in(_ms(s.last_run), now),
            Text(state, style="red" if s.error else ""),
        )
    console.print(table)


@schedules.command("add", epilog=epilog())
@click.argument("queue")
@click.argument("name")
@click.argument("func")
@click.argument("args", nargs=-1, callback=json_args)
@click.option("--cron", metavar="EXPR", help="Cron expression: '*/5 * * * *' (5 or 6 fields).")
@click.option("--tz", metavar="ZONE", help="The cron expression's time zone (default UTC).")
@click.option("--every", type=Seconds(min=0), metavar="SECONDS", help="Run every SECONDS.")
@click.option("--catch-up", is_flag=True, help="After an outage, run every missed tick.")
@click.option(
    "--kwargs",
    "kwargs_json",
    callback=json_object,
    metavar="JSON",
    help="Keyword arguments as a JSON object: '{\"a\": 1}'.",
)
@click.option("--priority", type=int, default=0, help="Priority of each run (-1000..1000).")
@click.option("--timeout", type=float, metavar="SECONDS", help="Hard limit of one run.")
@click.option("--retries", type=int, help="Runs after the first when one fails.")
@url_option
def add(
    queue: str,
    name: str,
    func: str,
    args: list[Any],
    cron: str | None,
    tz: str | None,
    every: float | None,
    catch_up: bool,
    kwargs_json: dict[str, Any] | None,
    priority: int,
    timeout: float | None,
    retries: int | None,
    url: str | None,
) -> None:
    """Run FUNC(*ARGS) on QUEUE at every tick of --cron or --every, as schedule NAME (which
    this replaces if it exists). ARGS are JSON values: 3, "text" (with its quotes), [1, 2]."""
    conn = admin_connection(url)
    created = queue_of(conn, queue).schedule(
        name,
        func,
        *args,
        cron=cron,
        tz=tz,
        every=every,
        catch_up=catch_up,
        priority=priority,
        timeout=timeout,
        retries=retries,
        **(kwargs_json or {}),
    )
    when = "-" if created.next_run is None else created.next_run.isoformat()
    click.echo(f"schedule {name} of queue {queue}: {timing(created)}, next run {when}")


@schedules.command("remove", epilog=epilog("there is no such schedule"))
@click.argument("queue")
@click.argument("name")
@url_option
def remove(queue: str, name: str, url: str | None) -> None:
    """Remove schedule NAME of QUEUE; the runs it made stay."""
    if not queue_of(admin_connection(url), queue).unschedule(name):
        fail(f"queue {queue} has no schedule {name!r}")
    click.echo(f"removed schedule {name} of queue {queue}")


def _set_paused(queue: str, name: str, paused: bool, url: str | None) -> Schedule:
    q = queue_of(admin_connection(url), queue)
    try:
        return q.pause_schedule(name) if paused else q.resume_schedule(name)
    except ScheduleNotFound as exc:
        fail(str(exc))


@schedules.command("pause", epilog=epilog("there is no such schedule"))
@click.argument("queue")
@click.argument("name")
@url_option
def pause(queue: str, name: str, url: str | None) -> None:
    """Make no runs of schedule NAME of QUEUE until it is resumed."""
    _set_paused(queue, name, True, url)
    click.echo(f"schedule {name} of queue {queue} is paused")


@schedules.command("resume", epilog=epilog("there is no such schedule"))
@click.argument("queue")
@click.argument("name")
@url_option
def resume(queue: str, name: str, url: str | None) -> None:
    """Resume schedule NAME of QUEUE from its next tick (ticks passed meanwhile are skipped)."""
    resumed = _set_paused(queue, name, False, url)
    when = "-" if resumed.next_run is None else resumed.next_run.isoformat()
    click.echo(f"schedule {name} of queue {queue} is resumed, next run {when}")
