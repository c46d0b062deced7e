"""`Pool`: groups of supervised worker processes, each group scaled by its queues' backlog.

A pool runs, for every group, between `min` and `max` worker processes
(`python -m pyscheduler worker QUEUES...`, children of the pool) on the group's queues. Every
`check_interval` it

1. reaps processes that exited: one that was not asked to stop is restarted, at once the first
   time, with exponential backoff while they keep dying soon after their start;
2. reads each group's queues (`Queue.stats()`: ready jobs, the age of the oldest one, active
   jobs, counters) and decides a size for the group:

   * **up**, quickly, when the oldest ready job has waited longer than the group's
     `target_latency`, or when the ready jobs would take longer than that to drain at the
     group's measured capacity (jobs per second per process, measured while the group had a
     backlog). The new size covers the backlog within the target (at least one more process;
     doubling when no capacity has been measured yet), capped at `max`; at most one step up
     per `SCALE_UP_SETTLE` seconds, so the new processes get to start before the next look.
   * **down**, slowly: only after the group has had no backlog for `cooldown` seconds (and at
     least `cooldown` since its last change). A group with no work at all in that time goes
     back to `min`; a group that was working goes down by one process when the busiest moment
     of the window would have fitted in one process less.

   Every decision is logged on the `pyscheduler.pool` logger with its reason. Scaling down
   sends SIGTERM to the newest process: it finishes its running jobs and exits (not a crash).

SIGTERM or SIGINT to the pool: every worker gets SIGTERM (graceful drain) and the pool exits 0
once they are gone. A second signal SIGKILLs them (their leases bring the jobs back) and the
pool exits 1. Workers run in their own process group, so a Ctrl-C in a terminal reaches only
the pool (which passes it on once), and on Linux they get SIGTERM if the pool itself dies.

Configuration: `GroupConfig` / `PoolConfig` in Python, a TOML file (`load_config`) or group
specs on the command line (`parse_group_spec`); see `SPEC_SYNTAX` and `CONFIG_EXAMPLE`.

The parts: config.py (`GroupConfig`, `PoolConfig`), config_parsing.py (group specs, TOML
files), scaling.py (`Backlog`, `Decision`, `Scaler`: the policy, with no processes in it),
processes.py (a group's worker processes), supervisor.py (`Pool`, `run_pool`: the loop and
its signals), command.py (`pyscheduler pool`).
"""

from __future__ import annotations

from .command import pool_command
from .config import (
    DEFAULT_CHECK_INTERVAL,
    DEFAULT_COOLDOWN,
    DEFAULT_TARGET_LATENCY,
    GroupConfig,
    PoolConfig,
)
from .config_parsing import CONFIG_EXAMPLE, SPEC_SYNTAX, load_config, parse_group_spec
from .scaling import Backlog, Decision, Scaler
from .supervisor import Pool, run_pool

__all__ = [
    "CONFIG_EXAMPLE",
    "DEFAULT_CHECK_INTERVAL",
    "DEFAULT_COOLDOWN",
    "DEFAULT_TARGET_LATENCY",
    "SPEC_SYNTAX",
    "Backlog",
    "Decision",
    "GroupConfig",
    "Pool",
    "PoolConfig",
    "Scaler",
    "load_config",
    "parse_group_spec",
    "pool_command",
    "run_pool",
]
