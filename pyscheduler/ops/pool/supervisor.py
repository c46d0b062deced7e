"""`Pool`: the supervisor. Every `check_interval` it restarts dead worker processes (with
backoff), asks each group's `Scaler` for a size and starts or drains processes to match;
it turns SIGTERM/SIGINT into a graceful drain, and a second signal into SIGKILL."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import select
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from types import FrameType

import redis

from ...exceptions import PySchedulerError
from ...store.connection import connect
from .config import DEFAULT_CHECK_INTERVAL, GroupConfig, PoolConfig
from .config_parsing import parse_group_spec
from .processes import Group, WorkerProcess, child_setup

log = logging.getLogger("pyscheduler.pool")

# A worker that dies sooner than this after its start counts as a quick death.
CRASH_WINDOW = 10.0
# The restart delay after the n-th quick death in a row: 0, then BASE * 2**(n-2), up to MAX.
RESTART_BACKOFF_BASE = 0.5
RESTART_BACKOFF_MAX = 30.0
STATS_TIMEOUT = 5.0  # socket timeout of the pool's own Redis connection


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
        self._child_setup = child_setup()
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
