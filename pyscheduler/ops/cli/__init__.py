"""The `pyscheduler` command line.

A new command: write it as a plain `@click.command` in the module of its group, or in a new
module named for the group (e.g. schedule_commands.py), using `epilog()`, `url_option` and
`admin_connection()` like its neighbours; then import it here and add it to `COMMANDS`.

Every command takes `--url` (default: $REDIS_URL) and `--help`. Exit codes are the same for all
of them (each command's help says what 1 means for it):

    0  done
    1  the operation found a problem: a job that does not exist or is in the wrong state, a
       failed or timed-out `enqueue --wait`, a declined confirmation
    2  bad usage or bad input (click's usage errors, a bad Redis URL, a non-JSON argument, an
       invalid queue name, job id or option)
    3  Redis cannot be reached or refused the call, or the Lua library is not loaded there
       (`pyscheduler load-scripts` deploys it)

The mapping from exceptions to these codes lives in one place, `CliGroup.invoke` (errors.py).

Where things are: `main` (this module) assembles the commands; job_commands.py `enqueue`,
`jobs`, `job`, `cancel`; queue_commands.py `retry`, `purge`, `pause`, `resume`, `limit`;
worker_commands.py `worker` and `pool` (which lives in ops/pool/); monitoring_commands.py
`stats`, `workers`, `events`, `metrics`, `dashboard`; deploy_command.py `load-scripts`;
demo_command.py `demo`; schedule_commands.py `schedules` (list, add, remove, pause,
resume). Shared by them: errors.py (exit codes, error messages, `CliGroup`),
options.py (--url, --json, checks of arguments), connections.py (clients for commands),
output.py (consoles, JSON, durations, progress bars).
"""

from __future__ import annotations

import logging

import click

from .connections import server_ms
from .demo_command import demo
from .deploy_command import load_scripts, load_scripts_command
from .errors import (
    EXIT_CODES,
    EXIT_OK,
    EXIT_PROBLEM,
    EXIT_REDIS,
    EXIT_USAGE,
    REDIS_ERRORS,
    BadInput,
    CliError,
    CliGroup,
    RedisUnavailable,
    cli_error,
    epilog,
    fail,
    redis_problem,
)
from .job_commands import cancel, enqueue, job, job_status, jobs
from .monitoring_commands import dashboard, events, metrics, stats, workers_command
from .output import age, error_summary, limits_text
from .queue_commands import limit, pause, purge, resume, retry
from .schedule_commands import schedules
from .worker_commands import pool_command, worker


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


# Every command of `pyscheduler`; each is registered under its own name (`help` lists them
# sorted).
COMMANDS: tuple[click.Command, ...] = (
    load_scripts,
    worker,
    pool_command,
    enqueue,
    stats,
    jobs,
    job,
    workers_command,
    retry,
    cancel,
    purge,
    pause,
    resume,
    limit,
    metrics,
    dashboard,
    events,
    schedules,
    demo,
)
for _command in COMMANDS:
    main.add_command(_command)

__all__ = [
    "COMMANDS",
    "EXIT_CODES",
    "EXIT_OK",
    "EXIT_PROBLEM",
    "EXIT_REDIS",
    "EXIT_USAGE",
    "REDIS_ERRORS",
    "BadInput",
    "CliError",
    "CliGroup",
    "RedisUnavailable",
    "age",
    "cli_error",
    "epilog",
    "error_summary",
    "fail",
    "job_status",
    "limits_text",
    "load_scripts_command",
    "main",
    "redis_problem",
    "server_ms",
]
