"""The commands that change a queue: `retry` and `purge` its failed or ended jobs, `pause`
and `resume` it, show or set its `limit`s."""

from __future__ import annotations

import dataclasses

import click

from ...store.protocol import ENDED_STATES, Status
from .connections import BATCH, admin_connection, queue_of
from .errors import epilog, fail
from .options import Seconds, check_job_ids, json_option, url_option
from .output import echo_json, limits_text, plural, progress_bar

FINAL_STATES = tuple(state.value for state in ENDED_STATES)


@click.command(epilog=epilog("some of the JOB_IDs were not failed jobs of QUEUE"))
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


@click.command(epilog=epilog("some JOB_IDs were not purged, or the confirmation was declined"))
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


@click.command(epilog=epilog())
@click.argument("queue")
@url_option
def pause(queue: str, url: str | None) -> None:
    """Stop handing out jobs of QUEUE; running jobs go on, enqueueing still works."""
    queue_of(admin_connection(url), queue).pause()
    click.echo(f"queue {queue} is paused; `pyscheduler resume {queue}` resumes it")


@click.command(epilog=epilog())
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


@click.command(epilog=epilog())
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
