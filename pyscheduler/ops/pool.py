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
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import math
import os
import random
import re
import select
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from types import FrameType
from typing import Any

import click
import redis

from ..client.queue import Queue
from ..exceptions import InvalidURL, PySchedulerError
from ..runtime import parent_death
from ..store.connection import (
    DEFAULT_URL,
    URL_ENV,
    Client,
    connect,
    redacted,
    resolve_url,
    validate_url,
)
from ..store.keys import validate_queue_name

log = logging.getLogger("pyscheduler.pool")

DEFAULT_CHECK_INTERVAL = 0.5
DEFAULT_TARGET_LATENCY = 1.0
DEFAULT_COOLDOWN = 30.0
# A worker that dies sooner than this after its start counts as a quick death.
CRASH_WINDOW = 10.0
# The restart delay after the n-th quick death in a row: 0, then BASE * 2**(n-2), up to MAX.
RESTART_BACKOFF_BASE = 0.5
RESTART_BACKOFF_MAX = 30.0
# The least time between two steps up of one group: new processes need a moment to start.
SCALE_UP_SETTLE = 1.0
# The time constant (seconds) of the moving averages of throughput and capacity.
RATE_WINDOW = 5.0
# Counters of the queues' stats that mark the end of a run (the group's throughput).
RUN_END_COUNTERS = ("completed", "failed", "paused")
STATS_TIMEOUT = 5.0  # socket timeout of the pool's own Redis connection

GROUP_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}$")

SPEC_SYNTAX = """\
[NAME=]QUEUE[,QUEUE...][:MIN-MAX|:N][:OPTION=VALUE[,OPTION=VALUE...]]

  NAME      the group's name (default: its queues joined by '+')
  QUEUE     the queues its workers take jobs from, in this order
  MIN-MAX   how many worker processes (default 1-1); N alone means exactly N
  OPTION    concurrency (or c), target (or target_latency, seconds), cooldown (seconds),
            lease (seconds)

  fast=fast,fast2:1-8            group "fast" on queues fast and fast2, 1 to 8 processes
  slow:1-2:concurrency=4,cooldown=60
  reports:2"""

CONFIG_EXAMPLE = """\
url = "redis://127.0.0.1:6379/0"   # optional; --url wins, then this, then $REDIS_URL
check_interval = 0.5               # optional, seconds

[defaults]                         # optional: for every group that does not set its own
cooldown = 30.0
target_latency = 1.0

[groups.fast]
queues = ["fast", "fast2"]         # taken in this order
min = 1
max = 8
concurrency = 4                    # jobs at once per process
target_latency = 0.5               # seconds a ready job should wait at most

[groups.slow]
queues = ["slow"]
min = 1
max = 2
lease = 30.0                       # worker options: lease, strict, import, auto_load
import = ["myapp.reports"]"""


# -- configuration ------------------------------------------------------------------------------


@dataclass
class GroupConfig:
    """A group of worker processes dedicated to `queues` (taken in that order)."""

    name: str
    queues: list[str]
    min: int = 1
    max: int = 1
    concurrency: int = 1  # jobs each process runs at once (`worker --concurrency`)
    target_latency: float = DEFAULT_TARGET_LATENCY  # seconds a ready job should wait at most
    cooldown: float = DEFAULT_COOLDOWN  # seconds without backlog before scaling down
    lease: float | None = None  # `worker --lease`
    strict: bool = False  # `worker --strict`
    imports: list[str] = field(default_factory=list)  # `worker --import`
    auto_load: bool = False  # `worker --auto-load`

    def __post_init__(self) -> None:
        if isinstance(self.queues, str):
            self.queues = [self.queues]
        self.queues = list(self.queues)
        if not self.queues:
            raise ValueError(f"group {self.name}: needs at least one queue")
        for queue in self.queues:
            validate_queue_name(queue)
        if not isinstance(self.name, str) or not GROUP_NAME_RE.match(self.name):
            raise ValueError(
                f"invalid group name {self.name!r}: use letters, digits, '_', '.', '+', '-'"
            )
        for what in ("min", "max", "concurrency"):
            value = getattr(self, what)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"group {self.name}: {what} must be an integer, not {value!r}")
        if self.min < 0 or self.max < 1 or self.min > self.max:
            raise ValueError(
                f"group {self.name}: needs 0 <= min <= max and max >= 1"
                f" (got min {self.min}, max {self.max})"
            )
        if self.concurrency < 1:
            raise ValueError(f"group {self.name}: concurrency must be at least 1")
        for what in ("target_latency", "cooldown", "lease"):
            value = getattr(self, what)
            if value is None and what == "lease":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"group {self.name}: {what} must be seconds, not {value!r}")
            if not math.isfinite(value) or value < 0 or (value == 0 and what != "cooldown"):
                raise ValueError(f"group {self.name}: {what} out of range: {value!r}")
            setattr(self, what, float(value))
        if isinstance(self.imports, str):
            self.imports = [self.imports]
        self.imports = list(self.imports)
        if not all(isinstance(m, str) and m for m in self.imports):
            raise ValueError(f"group {self.name}: import takes module names: {self.imports!r}")
        for what in ("strict", "auto_load"):
            if not isinstance(getattr(self, what), bool):
                raise ValueError(f"group {self.name}: {what} must be true or false")

    def worker_command(self) -> list[str]:
        """The command line of one of this group's worker processes (the URL goes by env)."""
        args = [sys.executable, "-m", "pyscheduler", "worker", *self.queues]
        args += ["--concurrency", str(self.concurrency)]
        if self.lease is not None:
            args += ["--lease", str(self.lease)]
        if self.strict:
            args.append("--strict")
        for module in self.imports:
            args += ["--import", module]
        if self.auto_load:
            args.append("--auto-load")
        return args

    def describe(self) -> str:
        return (
            f"group {self.name} on {', '.join(self.queues)}: {self.min}-{self.max} processes,"
            f" concurrency {self.concurrency}, target latency {self.target_latency:g} s,"
            f" cooldown {self.cooldown:g} s"
        )


@dataclass
class PoolConfig:
    groups: list[GroupConfig]
    url: str | None = None  # None: $REDIS_URL, else the local default
    check_interval: float = DEFAULT_CHECK_INTERVAL

    def __post_init__(self) -> None:
        self.groups = list(self.groups)
        if not self.groups:
            raise ValueError("a pool needs at least one group")
        names = [g.name for g in self.groups]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"group names must be unique: {', '.join(duplicates)}")
        if not (
            isinstance(self.check_interval, int | float)
            and math.isfinite(self.check_interval)
            and self.check_interval > 0
        ):
            raise ValueError(f"check_interval must be positive seconds: {self.check_interval!r}")

    @property
    def resolved_url(self) -> str:
        return resolve_url(self.url)


_GROUP_KEYS = {f.name for f in fields(GroupConfig)} - {"name", "imports"}
_SPEC_OPTIONS = {
    "c": "concurrency",
    "concurrency": "concurrency",
    "target": "target_latency",
    "target_latency": "target_latency",
    "cooldown": "cooldown",
    "lease": "lease",
}


def _number(value: str, what: str, spec: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"group spec {spec!r}: {what} must be a number, not {value!r}") from None
    return number


def _integer(value: str, what: str, spec: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"group spec {spec!r}: {what} must be an integer, not {value!r}") from None


def parse_group_spec(spec: str, defaults: Mapping[str, Any] | None = None) -> GroupConfig:
    """A `GroupConfig` from a command-line spec (see `SPEC_SYNTAX`), e.g. "fast=fast,fast2:1-8".

    `defaults` fills in what the spec leaves out (e.g. {"cooldown": 60}).
    """
    text = spec.strip()
    name: str | None = None
    head, *parts = text.split(":")
    if "=" in head:
        name, _, head = head.partition("=")
        name = name.strip()
    queues = [q.strip() for q in head.split(",") if q.strip()]
    if not queues:
        raise ValueError(
            f"group spec {spec!r}: no queue given (syntax: {SPEC_SYNTAX.splitlines()[0]})"
        )
    values: dict[str, Any] = dict(defaults or {})
    if parts and "=" not in parts[0]:
        size = parts.pop(0).strip()
        low, dash, high = size.partition("-")
        values["min"] = _integer(low, "min", spec)
        values["max"] = _integer(high, "max", spec) if dash else values["min"]
    if len(parts) > 1:
        raise ValueError(f"group spec {spec!r}: too many ':' parts")
    for option in parts[0].split(",") if parts else []:
        key, eq, value = option.partition("=")
        key = key.strip().lower()
        if not eq or key not in _SPEC_OPTIONS:
            raise ValueError(
                f"group spec {spec!r}: unknown option {option!r}"
                f" (one of {', '.join(sorted(_SPEC_OPTIONS))})"
            )
        target = _SPEC_OPTIONS[key]
        values[target] = (
            _integer(value, target, spec)
            if target == "concurrency"
            else _number(value, target, spec)
        )
    values.setdefault("max", max(1, int(values.get("min", 1))))
    return GroupConfig(name=name or "+".join(queues), queues=queues, **values)


def _group_from_table(
    name: str, table: Mapping[str, Any], defaults: Mapping[str, Any]
) -> GroupConfig:
    values = {**defaults, **table}
    if "import" in values:
        values["imports"] = values.pop("import")
    unknown = sorted(set(values) - _GROUP_KEYS - {"imports"})
    if unknown:
        raise ValueError(
            f"group {name}: unknown setting {', '.join(unknown)}"
            f" (known: {', '.join(sorted(_GROUP_KEYS | {'import'}))})"
        )
    if "queues" not in values:
        values["queues"] = [name]
    if "max" not in values:
        low = values.get("min", 1)
        # A bad min is GroupConfig's to report, with its name.
        values["max"] = max(1, low) if isinstance(low, int) and not isinstance(low, bool) else 1
    return GroupConfig(name=name, **values)


def load_config(
    path: str | os.PathLike[str], defaults: Mapping[str, Any] | None = None
) -> PoolConfig:
    """A `PoolConfig` from a TOML file (see `CONFIG_EXAMPLE`).

    `defaults` are group settings under the file's own `[defaults]` (e.g. from the command
    line). A group without `queues` takes the queue named like the group.
    """
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: not UTF-8 text ({exc.reason})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"url", "check_interval", "defaults", "groups"})
    if unknown:
        raise ValueError(
            f"{path}: unknown top-level setting {', '.join(unknown)}"
            " (known: url, check_interval, [defaults], [groups.NAME])"
        )
    url = data.get("url")
    if url is not None and not isinstance(url, str):  # checked as a URL by the pool
        raise ValueError(f"{path}: url must be a string, not {url!r}")
    file_defaults = data.get("defaults", {})
    groups_table = data.get("groups", {})
    if not isinstance(file_defaults, dict) or not isinstance(groups_table, dict):
        raise ValueError(f"{path}: [defaults] and [groups.NAME] must be tables")
    merged = {**(defaults or {}), **file_defaults}
    groups = []
    for name, table in groups_table.items():
        if not isinstance(table, dict):
            raise ValueError(f"{path}: groups.{name} must be a table")
        try:
            groups.append(_group_from_table(name, table, merged))
        except (TypeError, ValueError, PySchedulerError) as exc:
            raise ValueError(f"{path}: {exc}") from None
    try:
        return PoolConfig(
            groups=groups,
            url=data.get("url"),
            check_interval=data.get("check_interval", DEFAULT_CHECK_INTERVAL),
        )
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


# -- scaling decisions --------------------------------------------------------------------------


@dataclass(frozen=True)
class Backlog:
    """One look at a group's queues (paused queues count as having no ready jobs)."""

    queued: int
    active: int
    oldest_ready_age: float | None  # seconds
    runs_ended: int  # a monotonic counter: completed + failed + paused runs
    slot_limit: int | None = None  # the queues' concurrency limits (when all have one)
    rate_limit: float | None = None  # the queues' rate limits in jobs/s (when all have one)


@dataclass(frozen=True)
class Decision:
    size: int
    reason: str


class Scaler:
    """The scaling policy of one group: pure bookkeeping, with the time passed in."""

    def __init__(self, config: GroupConfig, now: float) -> None:
        self.config = config
        self.throughput = 0.0  # runs ended per second, moving average (for the log)
        self.per_process: float | None = None  # capacity: jobs/s per process under backlog
        self._previous: Backlog | None = None
        self._previous_at = now
        self._previous_processes = 0
        self._last_up = -math.inf
        self.held: str | None = None  # why a backlog does not make the group grow
        self._calm_since: float | None = None
        self._last_busy = now
        self._active: collections.deque[tuple[float, int]] = collections.deque()

    def observe(self, backlog: Backlog, size: int, processes: int, now: float) -> Decision | None:
        """Take a look at the group's queues; a new size when the group should change.

        `size` is the group's current size, `processes` how many of its processes are running.
        """
        cfg = self.config
        ended = self._measure(backlog, processes, now)
        oldest = backlog.oldest_ready_age or 0.0
        capacity = (self.per_process or 0.0) * size
        drain = backlog.queued / capacity if capacity > 0 else None
        if backlog.active > 0 or backlog.queued > 0 or ended > 0:
            self._last_busy = now
        self._active.append((now, backlog.active))  # the last cooldown's samples
        while self._active[0][0] < now - cfg.cooldown:
            self._active.popleft()

        # Up: quickly, as far as the queues' limits leave work for more processes.
        reason = None
        if size == 0 and backlog.queued > 0:
            reason = f"{backlog.queued} queued and no process"
        elif oldest > cfg.target_latency:
            reason = f"oldest ready job {oldest:.1f} s > target {cfg.target_latency:g} s"
        elif drain is not None and drain > cfg.target_latency:
            reason = (
                f"{backlog.queued} queued would take {drain:.1f} s to drain"
                f" > target {cfg.target_latency:g} s"
            )
        cap, limit = self._useful_size(backlog)
        if reason is None or size >= cfg.max:
            self.held = None
        elif size >= cap:
            self.held = f"{reason}, but the queues' {limit} leaves no work for more processes"
        elif now - self._last_up >= SCALE_UP_SETTLE:
            self.held = None
            if self.per_process:
                needed = math.ceil(backlog.queued / (self.per_process * cfg.target_latency))
            else:
                needed = 2 * size
            capacity_text = (
                f", capacity {self.per_process:.1f}/s per process" if self.per_process else ""
            )
            reason += (
                f"; {backlog.queued} queued, {backlog.active} active,"
                f" throughput {self.throughput:.1f}/s{capacity_text}"
            )
            self._last_up = now
            self._calm_since = None
            return Decision(min(cap, max(size + 1, needed)), reason)

        # Down: only after a calm cooldown (no ready job waits long, none would).
        half = cfg.target_latency / 2
        calm = oldest <= half and (backlog.queued == 0 or (drain is not None and drain <= half))
        if not calm:
            self._calm_since = None
            return None
        if self._calm_since is None:
            self._calm_since = now
        calm_for = now - self._calm_since
        if size <= cfg.min or calm_for < cfg.cooldown:
            return None
        idle_for = now - self._last_busy
        if idle_for >= cfg.cooldown:
            decision = Decision(
                cfg.min, f"idle for {idle_for:.1f} s >= cooldown {cfg.cooldown:g} s"
            )
        elif (backlog.active > 0 or ended > 0) and (
            peak := max(active for _, active in self._active)
        ) <= (size - 1) * cfg.concurrency:
            # Still working, lightly: one process less. (A group that has just stopped working
            # waits until it has been idle for a cooldown, then goes back to min at once.)
            decision = Decision(
                size - 1,
                f"no backlog for {calm_for:.1f} s >= cooldown {cfg.cooldown:g} s, at most"
                f" {peak} of {size * cfg.concurrency} job slots busy;"
                f" throughput {self.throughput:.1f}/s",
            )
        else:
            return None
        self._calm_since = None  # the next step down needs another calm cooldown
        return decision

    def _useful_size(self, backlog: Backlog) -> tuple[int, str]:
        """How many processes can get work under the queues' limits; and the binding limit."""
        cfg = self.config
        cap, limit = cfg.max, f"max {cfg.max}"
        if backlog.slot_limit is not None:
            slots = max(1, math.ceil(backlog.slot_limit / cfg.concurrency))
            if slots < cap:
                cap, limit = slots, f"concurrency limit ({backlog.slot_limit} active jobs)"
        if backlog.rate_limit is not None and self.per_process:
            rated = max(1, math.ceil(backlog.rate_limit / self.per_process))
            if rated < cap:
                cap, limit = rated, f"rate limit ({backlog.rate_limit:g} jobs/s)"
        return cap, limit

    def _measure(self, backlog: Backlog, processes: int, now: float) -> int:
        """Update throughput and capacity; the number of runs ended since the last look."""
        previous, dt = self._previous, now - self._previous_at
        ended = 0
        if previous is not None and dt > 0:
            ended = max(0, backlog.runs_ended - previous.runs_ended)  # counters can be reset
            weight = 1 - math.exp(-dt / RATE_WINDOW)
            rate = ended / dt
            self.throughput += weight * (rate - self.throughput)
            # Under a backlog the processes were busy all along: their rate is the capacity.
            if previous.queued > 0 and backlog.queued > 0 and self._previous_processes > 0:
                per_process = rate / self._previous_processes
                if self.per_process is None:
                    self.per_process = per_process
                else:
                    self.per_process += weight * (per_process - self.per_process)
        self._previous, self._previous_at, self._previous_processes = backlog, now, processes
        return ended


# -- processes ----------------------------------------------------------------------------------


def _child_setup() -> Callable[[], None]:
    """A function run in each worker before exec, so that it gets SIGTERM when the pool dies."""
    parent_death.prepare()
    return functools.partial(parent_death.signal_on_parent_death, signal.SIGTERM)


@dataclass
class WorkerProcess:
    popen: subprocess.Popen[bytes]
    started: float  # monotonic
    draining: bool = False  # sent SIGTERM: its exit is expected

    @property
    def pid(self) -> int:
        return self.popen.pid


class Group:
    """A group's processes, size and restart backoff."""

    def __init__(self, config: GroupConfig, connection: Client, now: float) -> None:
        self.config = config
        self.size = config.min
        self.processes: list[WorkerProcess] = []
        self.scaler = Scaler(config, now)
        self.queues = [Queue(name, connection=connection) for name in config.queues]
        self.quick_deaths = 0
        self.last_death = -math.inf
        self.restart_at = -math.inf
        self.held_logged = False

    @property
    def running(self) -> list[WorkerProcess]:
        """Processes that are not draining."""
        return [p for p in self.processes if not p.draining]

    def backlog(self) -> Backlog:
        queued = active = ended = 0
        oldest: float | None = None
        slots: list[int | None] = []
        rates: list[float | None] = []
        for queue in self.queues:
            stats = queue.stats()
            active += stats.active
            ended += sum(stats.counters.get(name, 0) for name in RUN_END_COUNTERS)
            limits = stats.limits
            slots.append(limits.concurrency)
            rates.append(limits.rate / limits.period if limits.rate and limits.period else None)
            if stats.paused:
                continue
            queued += stats.queued
            if stats.oldest_ready_age is not None:
                oldest = max(oldest or 0.0, stats.oldest_ready_age)
        return Backlog(
            queued,
            active,
            oldest,
            ended,
            slot_limit=None if None in slots else sum(s for s in slots if s is not None),
            rate_limit=None if None in rates else sum(r for r in rates if r is not None),
        )


class Pool:
    """Runs and scales the groups of `config` until SIGTERM/SIGINT (or `stop()`)."""

    def __init__(self, config: PoolConfig) -> None:
        self.config = config
        self.url = config.resolved_url
        self.connection = connect(
            self.url, socket_timeout=STATS_TIMEOUT, socket_connect_timeout=STATS_TIMEOUT
        )
        now = time.monotonic()
        self.groups = [Group(g, self.connection, now) for g in config.groups]
        self._signals: list[int] = []
        self._stopping = False
        self._aborting = False
        self._stats_failing = False
        self._child_setup = _child_setup()
        self._wake_read, self._wake_write = os.pipe()
        for fd in (self._wake_read, self._wake_write):
            os.set_blocking(fd, False)

    # -- life cycle -----------------------------------------------------------------------------

    def run(self) -> int:
        """Supervise until stopped; 0 after a graceful drain, 1 after an abort."""
        restore = self._install_signal_handlers()
        for group in self.groups:
            log.info("pool: %s", group.config.describe())
        try:
            while True:
                now = time.monotonic()
                self._handle_signals()
                self._reap(now)
                if self._aborting:
                    self._kill_all()
                    break
                if self._stopping:
                    if not any(g.processes for g in self.groups):
                        break
                else:
                    self._scale(now)
                    self._fill(now)
                # Jittered, so that the looks at the queues do not lock onto a periodic load.
                self._sleep(self.config.check_interval * random.uniform(0.8, 1.2))
        finally:
            if any(g.processes for g in self.groups):  # an error in the pool itself
                for process in [p for g in self.groups for p in g.processes]:
                    with contextlib.suppress(OSError):
                        process.popen.terminate()
            restore()
            os.close(self._wake_read)
            os.close(self._wake_write)
            self.connection.close()
        log.info("pool stopped%s", " (aborted)" if self._aborting else "")
        return 1 if self._aborting else 0

    def stop(self) -> None:
        """Drain and stop, as the first SIGTERM does (safe from another thread)."""
        self._signals.append(signal.SIGTERM)
        self._wakeup()

    def abort(self) -> None:
        """SIGKILL the workers and stop, as a second signal does."""
        self._signals += [signal.SIGTERM, signal.SIGTERM]  # the second one aborts
        self._wakeup()

    def pids(self, group: str | None = None) -> list[int]:
        """The pids of the (non-draining) worker processes, of one group or all."""
        return [p.pid for g in self.groups if group in (None, g.config.name) for p in g.running]

    # -- supervision ----------------------------------------------------------------------------

    def _spawn(self, group: Group, now: float) -> None:
        env = dict(os.environ, REDIS_URL=self.url, PYSCHEDULER_POOL_GROUP=group.config.name)
        popen = subprocess.Popen(
            group.config.worker_command(),
            env=env,
            process_group=0,  # a terminal's Ctrl-C reaches the pool only, which passes it on
            preexec_fn=self._child_setup,
        )
        group.processes.append(WorkerProcess(popen, now))
        log.debug("group %s: started worker process %d", group.config.name, popen.pid)

    def _reap(self, now: float) -> None:
        for group in self.groups:
            for process in list(group.processes):
                code = process.popen.poll()
                if code is None:
                    continue
                group.processes.remove(process)
                lived = now - process.started
                if process.draining or self._stopping:
                    log.info(
                        "group %s: worker process %d exited (code %d) after draining",
                        group.config.name,
                        process.pid,
                        code,
                    )
                    continue
                self._died(group, process, code, lived, now)
            if group.quick_deaths and any(
                p.started > group.last_death and now - p.started >= CRASH_WINDOW
                for p in group.running
            ):
                group.quick_deaths = 0  # a replacement has lived long enough

    def _died(
        self, group: Group, process: WorkerProcess, code: int, lived: float, now: float
    ) -> None:
        group.quick_deaths = group.quick_deaths + 1 if lived < CRASH_WINDOW else 1
        group.last_death = now
        delay = 0.0
        if group.quick_deaths > 1:
            delay = min(RESTART_BACKOFF_MAX, RESTART_BACKOFF_BASE * 2 ** (group.quick_deaths - 2))
        group.restart_at = max(group.restart_at, now + delay)
        how = f"killed by {_signal_name(-code)}" if code < 0 else f"exit code {code}"
        when = (
            "at once"
            if delay == 0
            else f"in {delay:g} s ({group.quick_deaths} quick deaths in a row)"
        )
        log.warning(
            "group %s: worker process %d died (%s) after %.1f s; restarting %s",
            group.config.name,
            process.pid,
            how,
            lived,
            when,
        )

    def _fill(self, now: float) -> None:
        """Start processes up to each group's size; drain any beyond it."""
        for group in self.groups:
            running = group.running
            for process in sorted(running, key=lambda p: p.started)[group.size :][::-1]:
                process.draining = True
                with contextlib.suppress(OSError):
                    process.popen.send_signal(signal.SIGTERM)
                log.debug("group %s: draining worker process %d", group.config.name, process.pid)
            missing = group.size - len(running)
            if missing > 0 and now >= group.restart_at:
                for _ in range(missing):
                    self._spawn(group, now)

    def _scale(self, now: float) -> None:
        for group in self.groups:
            try:
                backlog = group.backlog()
            except (redis.RedisError, PySchedulerError, OSError) as exc:
                if not self._stats_failing:
                    log.warning(
                        "cannot read the queues' stats (%s): not scaling until Redis answers", exc
                    )
                self._stats_failing = True
                return
            decision = group.scaler.observe(backlog, group.size, len(group.running), now)
            held = group.scaler.held
            if held is not None and not group.held_logged:
                log.info(
                    "group %s: staying at %d processes (%s)", group.config.name, group.size, held
                )
            group.held_logged = held is not None
            if decision is None or decision.size == group.size:
                continue
            log.info(
                "group %s: %d -> %d processes (%s)",
                group.config.name,
                group.size,
                decision.size,
                decision.reason,
            )
            group.size = decision.size
        if self._stats_failing:
            log.warning("reading the queues' stats again: scaling resumes")
            self._stats_failing = False

    def _kill_all(self) -> None:
        processes = [p for g in self.groups for p in g.processes]
        for process in processes:
            with contextlib.suppress(OSError):
                process.popen.kill()
        for process in processes:
            process.popen.wait()
        for group in self.groups:
            group.processes.clear()

    # -- signals --------------------------------------------------------------------------------

    def _handle_signals(self) -> None:
        while self._signals:
            signum = self._signals.pop(0)
            if not self._stopping:
                self._stopping = True
                running = [p for g in self.groups for p in g.processes]
                log.info(
                    "got %s: draining %d worker processes (again to stop them now)",
                    _signal_name(signum),
                    len(running),
                )
                for process in running:
                    if not process.draining:
                        process.draining = True
                        with contextlib.suppress(OSError):
                            process.popen.send_signal(signal.SIGTERM)
            else:
                self._aborting = True
                log.warning(
                    "got %s again: killing the worker processes; leases bring their jobs back",
                    _signal_name(signum),
                )

    def _install_signal_handlers(self) -> Callable[[], None]:
        def on_signal(signum: int, frame: FrameType | None) -> None:
            self._signals.append(signum)

        try:
            previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
            previous_fd = signal.set_wakeup_fd(self._wake_write)
        except ValueError:  # not the main thread: the caller stops us with stop()
            return lambda: None

        def restore() -> None:
            signal.set_wakeup_fd(previous_fd)
            for signum, handler in previous.items():
                signal.signal(signum, handler)

        return restore

    def _wakeup(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_write, b"\0")

    def _sleep(self, seconds: float) -> None:
        if self._signals:
            return
        ready, _, _ = select.select([self._wake_read], [], [], seconds)
        if ready:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_read, 512)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def run_pool(
    groups: Iterable[GroupConfig | str],
    url: str | None = None,
    *,
    check_interval: float = DEFAULT_CHECK_INTERVAL,
) -> int:
    """Run a pool of `groups` (GroupConfig or command-line specs) until SIGTERM; an exit code.

    >>> run_pool(["fast:1-8:concurrency=4", "slow:1-2"], url="redis://localhost:6379/0")
    """
    configs = [parse_group_spec(g) if isinstance(g, str) else g for g in groups]
    return Pool(PoolConfig(configs, url=url, check_interval=check_interval)).run()


# -- command line -------------------------------------------------------------------------------


def _verbatim(text: str) -> str:
    """Help text that click prints as written (each paragraph marked with \\b)."""
    return "\n\n".join(f"\b\n{paragraph}" for paragraph in text.split("\n\n"))


@click.command(
    "pool",
    epilog=_verbatim(
        f"Group spec (--group):\n{SPEC_SYNTAX}\n\nConfig file (--config):\n{CONFIG_EXAMPLE}"
    ),
)
@click.option(
    "--url",
    envvar=URL_ENV,
    metavar="URL",
    help=f"Redis URL (default: the config file's url, else ${URL_ENV}, else {DEFAULT_URL})",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    help="A TOML file with the groups (see below).",
)
@click.option(
    "-g",
    "--group",
    "group_specs",
    multiple=True,
    metavar="SPEC",
    help="A group, e.g. fast=fast,fast2:1-8 (repeatable; replaces a file's group of that name).",
)
@click.option(
    "--check-interval",
    type=float,
    default=None,
    help=f"Seconds between looks at the queues (default {DEFAULT_CHECK_INTERVAL}).",
)
@click.option(
    "--cooldown",
    type=float,
    default=None,
    help=f"Seconds without backlog before a group shrinks (default {DEFAULT_COOLDOWN:g}).",
)
@click.option(
    "--target-latency",
    type=float,
    default=None,
    help=f"Seconds a ready job should wait at most (default {DEFAULT_TARGET_LATENCY:g}).",
)
@click.option("--strict", is_flag=True, help="Workers run registered tasks (@task) only.")
@click.option(
    "-i", "--import", "imports", multiple=True, help="Module the workers import (repeatable)."
)
@click.option("--auto-load", is_flag=True, help="Workers load the Lua library if missing.")
@click.pass_context
def pool_command(
    ctx: click.Context,
    url: str | None,
    config_path: str | None,
    group_specs: tuple[str, ...],
    check_interval: float | None,
    cooldown: float | None,
    target_latency: float | None,
    strict: bool,
    imports: tuple[str, ...],
    auto_load: bool,
) -> None:
    """Run groups of worker processes, each on its queues, scaled by backlog.

    Each group runs between its min and max processes: more when the oldest ready job waits
    longer than the group's target latency (or the backlog would take longer to drain), fewer
    after a cooldown without backlog. SIGTERM drains every worker, then exits; a second signal
    stops them at once.
    """
    logging.basicConfig(  # a no-op under `pyscheduler`, which configures logging itself
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    defaults: dict[str, Any] = {}
    if cooldown is not None:
        defaults["cooldown"] = cooldown
    if target_latency is not None:
        defaults["target_latency"] = target_latency
    if strict:
        defaults["strict"] = True
    if imports:
        defaults["imports"] = list(imports)
    if auto_load:
        defaults["auto_load"] = True
    try:
        if config_path:
            config = load_config(config_path, defaults)
            groups = {g.name: g for g in config.groups}
        else:
            config = None
            groups = {}
        for spec in group_specs:
            group = parse_group_spec(spec, defaults)
            groups[group.name] = group
        if not groups:
            raise click.UsageError("give at least one --group SPEC or a --config file")
        from_cli = ctx.get_parameter_source("url") == click.core.ParameterSource.COMMANDLINE
        pool_config = PoolConfig(
            list(groups.values()),
            url=url if from_cli or config is None or config.url is None else config.url,
            check_interval=check_interval
            if check_interval is not None
            else (config.check_interval if config else DEFAULT_CHECK_INTERVAL),
        )
    except (ValueError, PySchedulerError) as exc:
        raise click.UsageError(str(exc)) from None
    try:
        validate_url(pool_config.resolved_url)
    except InvalidURL as exc:
        if from_cli:
            where = "--url"
        elif config is not None and config.url is not None:
            where = f"{config_path}: url"
        else:
            where = f"${URL_ENV}"
        raise InvalidURL(f"{where}: {exc}") from None  # exit 2 in one line (CliGroup)
    log.info("pool: Redis at %s", redacted(pool_config.resolved_url))
    sys.exit(Pool(pool_config).run())


__all__ = [
    "CONFIG_EXAMPLE",
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
