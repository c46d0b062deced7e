"""The commands that watch: `stats` of queues, live `workers`, tailed `events`, and the
servers `metrics` (Prometheus) and `dashboard` (web)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import click
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ...client.queue import Queue, QueueStats
from ...runtime.live_workers import LiveWorker, list_workers
from ...store.connection import Client
from ..dashboard.security import TOKEN_ENV as DASHBOARD_TOKEN_ENV
from ..dashboard.security import is_loopback
from .connections import admin_connection, connect, queue_of, server_ms
from .errors import EXIT_USAGE, URL_META, epilog, fail
from .options import Seconds, json_option, url_option
from .output import age, echo_json, limits_text, stdout_console


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


@click.command(epilog=epilog())
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


@click.command("workers", epilog=epilog())
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


@click.command(epilog=epilog("the port could not be bound"))
@click.option("--port", type=click.IntRange(0, 65535), default=9711, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@url_option
def metrics(port: int, host: str, url: str | None) -> None:
    """Serve Prometheus metrics of every known queue at http://HOST:PORT/metrics.

    Each scrape reads the queues' counters, histograms and sizes in two round trips. Needs
    the `metrics` extra (pip install 'pyscheduler-redis[metrics]').
    """
    try:
        from ..metrics import serve
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


@click.command(epilog=epilog())
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
        from ..dashboard.app import serve
    except ImportError as exc:
        fail(f"the dashboard needs its extra: pip install 'pyscheduler-redis[dashboard]' ({exc})")
    click.get_current_context().meta[URL_META] = url
    serve(url, host, port, token or None, read_only)


@click.command(epilog=epilog())
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
    from ...client.events import tail

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
