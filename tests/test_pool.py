"""Worker pools: groups of worker processes, supervised and scaled by backlog.

The process tests start a real pool (`python -m pyscheduler pool`) in a subprocess, with cwd
tests/ so the workers import `tasks`, and count its worker processes with psutil.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis
from helpers import WorkerLog, as_int, blocked_clients, cli_process, is_gone, wait_until

from pyscheduler import Queue, Status
from pyscheduler.ops.pool import (
    Backlog,
    GroupConfig,
    Pool,
    PoolConfig,
    Scaler,
    load_config,
    parse_group_spec,
)

# -- configuration --------------------------------------------------------------------------------


def test_group_spec_syntax() -> None:
    fast = parse_group_spec("fast=fast,fast2:1-8")
    assert (fast.name, fast.queues, fast.min, fast.max) == ("fast", ["fast", "fast2"], 1, 8)
    assert (fast.concurrency, fast.target_latency, fast.cooldown) == (1, 1.0, 30.0)

    slow = parse_group_spec("slow:2:concurrency=4,target=0.5,cooldown=60,lease=5")
    assert (slow.name, slow.queues, slow.min, slow.max) == ("slow", ["slow"], 2, 2)
    assert (slow.concurrency, slow.target_latency, slow.cooldown, slow.lease) == (4, 0.5, 60, 5)

    plain = parse_group_spec("a,b", defaults={"cooldown": 5.0})
    assert (plain.name, plain.min, plain.max, plain.cooldown) == ("a+b", 1, 1, 5.0)
    assert parse_group_spec("x:c=3").concurrency == 3
    assert parse_group_spec("x:0-3").min == 0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "no queue"),
        ("fast=:1-2", "no queue"),
        ("fast:3-1", "min <= max"),
        ("fast:a-b", "min must be an integer"),
        ("fast:1-2:speed=3", "unknown option"),
        ("fast:1-2:c=two", "concurrency must be an integer"),
        ("fast:1-2:target=0", "target_latency out of range"),
        ("fast:1-2:c=1:x", "too many"),
        ("bad queue!:1-2", "invalid queue name"),
        ("b@d=fast", "invalid group name"),
    ],
)
def test_bad_group_spec_is_refused(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_group_spec(spec)


def test_toml_config(tmp_path: Path) -> None:
    path = tmp_path / "pool.toml"
    path.write_text(
        """
url = "redis://example:6379/1"
check_interval = 0.25

[defaults]
cooldown = 10

[groups.fast]
queues = ["fast", "fast2"]
min = 1
max = 8
concurrency = 4
target_latency = 0.5

[groups.slow]
max = 2
lease = 30
import = ["myapp.reports"]
strict = true
"""
    )
    config = load_config(path, defaults={"cooldown": 99, "target_latency": 2.0})
    assert config.url == "redis://example:6379/1"
    assert config.check_interval == 0.25
    fast, slow = config.groups
    assert (fast.name, fast.queues, fast.min, fast.max, fast.concurrency) == (
        "fast",
        ["fast", "fast2"],
        1,
        8,
        4,
    )
    assert (fast.target_latency, fast.cooldown) == (0.5, 10.0)  # the file's defaults win
    assert (slow.queues, slow.min, slow.max, slow.target_latency) == (["slow"], 1, 2, 2.0)
    command = slow.worker_command()
    assert command[1:] == [
        "-m",
        "pyscheduler",
        "worker",
        "slow",
        "--concurrency",
        "1",
        "--lease",
        "30.0",
        "--strict",
        "--import",
        "myapp.reports",
    ]

    path.write_text("[groups.fast]\nqueues = ['fast']\nmax_procs = 3\n")
    with pytest.raises(ValueError, match="unknown setting max_procs"):
        load_config(path)
    path.write_text("[groups]\n")
    with pytest.raises(ValueError, match="at least one group"):
        load_config(path)
    path.write_text("groups = [")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_config(path)


# -- the scaling policy, with synthetic looks at the queues ---------------------------------------


def test_scaler_scales_up_quickly_and_down_after_cooldown() -> None:
    config = GroupConfig("fast", ["fast"], min=1, max=8, target_latency=1.0, cooldown=5.0)
    scaler = Scaler(config, now=0.0)
    assert scaler.observe(Backlog(0, 0, None, 0), 1, 1, 0.5) is None

    # A burst: the oldest job passes the target; no capacity measured yet: double.
    up = scaler.observe(Backlog(490, 1, 1.4, 10), 1, 1, 1.0)
    assert up is not None
    assert up.size == 2
    assert up.reason.startswith("oldest ready job 1.4 s > target 1 s; 490 queued, 1 active")
    # Not again before the new process had time to start ...
    assert scaler.observe(Backlog(480, 2, 1.9, 20), 2, 2, 1.5) is None
    # ... then sized from the capacity measured under backlog (20 jobs/s per process).
    up = scaler.observe(Backlog(460, 2, 2.4, 40), 2, 2, 2.0)
    assert up is not None
    assert up.size == 8  # 460 jobs within 1 s need 23 processes: capped at max
    assert "capacity 20.0/s per process" in up.reason

    # The backlog is gone but the group still works: nothing changes before the cooldown ...
    looks = [(3.0 + 0.5 * i, 8 if i == 0 else 2, 500 + 10 * i) for i in range(11)]
    for t, active, ended in looks:
        assert scaler.observe(Backlog(0, active, None, ended), 8, 8, t) is None
    # ... then one process less, once the busiest moment of the last cooldown fits in 7.
    down = scaler.observe(Backlog(0, 2, None, 620), 8, 8, 8.5)
    assert down is not None
    assert down.size == 7
    assert down.reason.startswith("no backlog for 5.5 s >= cooldown 5 s, at most 2 of 8 job")

    # Then no work at all for a cooldown: straight back to min (not before).
    t, decision = 8.5, None
    while decision is None:
        t += 0.5
        decision = scaler.observe(Backlog(0, 0, None, 620), 7, 7, t)
    assert (t, decision.size) == (14.0, 1)
    assert decision.reason == "idle for 5.5 s >= cooldown 5 s"


def test_scaler_scales_on_depth_before_jobs_get_old() -> None:
    config = GroupConfig("fast", ["fast"], min=1, max=10, target_latency=2.0, cooldown=5.0)
    scaler = Scaler(config, now=0.0)
    scaler.observe(Backlog(100, 1, 0.1, 0), 1, 1, 0.5)
    # 10 jobs/s with one process, 1000 queued: 100 s to drain, though no job is old yet.
    decision = scaler.observe(Backlog(1000, 1, 0.2, 5), 1, 1, 1.0)
    assert decision is not None
    assert decision.size == 10
    assert "1000 queued would take 100.0 s to drain > target 2 s" in decision.reason
    # A queue that keeps up (a few jobs, drained well within the target) does not scale.
    scaler = Scaler(config, now=0.0)
    scaler.observe(Backlog(3, 1, 0.05, 0), 1, 1, 0.5)
    assert scaler.observe(Backlog(2, 1, 0.05, 50), 1, 1, 1.0) is None


def test_scaler_from_zero_processes() -> None:
    config = GroupConfig("batch", ["batch"], min=0, max=3, cooldown=1.0)
    scaler = Scaler(config, now=0.0)
    decision = scaler.observe(Backlog(1, 0, 0.0, 0), 0, 0, 0.5)
    assert decision is not None
    assert decision.size == 1
    assert decision.reason.startswith("1 queued and no process")


def test_scaler_does_not_grow_past_what_the_queues_limits_can_use() -> None:
    config = GroupConfig("api", ["api"], min=1, max=8, concurrency=2, target_latency=1.0)
    scaler = Scaler(config, now=0.0)
    # The queue lets 6 jobs run at once: 3 processes of 2 slots use all of it.
    decision = scaler.observe(Backlog(100, 2, 5.0, 0, slot_limit=6), 1, 1, 0.5)
    assert decision is not None
    assert decision.size == 2
    decision = scaler.observe(Backlog(100, 4, 6.0, 0, slot_limit=6), 2, 2, 2.0)
    assert decision is not None
    assert decision.size == 3
    assert scaler.observe(Backlog(100, 6, 7.0, 0, slot_limit=6), 3, 3, 4.0) is None
    assert scaler.held is not None
    assert "concurrency limit (6 active jobs) leaves no work for more processes" in scaler.held
    # The backlog is gone: not held any more.
    assert scaler.observe(Backlog(0, 6, None, 100, slot_limit=6), 3, 3, 5.0) is None
    assert scaler.held is None


# -- real pools -----------------------------------------------------------------------------------


class PoolProcess:
    """A pool started through its command in a subprocess, with its output collected."""

    def __init__(self, redis_url: str, *args: str) -> None:
        self.proc = cli_process("pool", "--url", redis_url, *args)
        self.log = WorkerLog(self.proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def workers(self, *queues: str) -> list[int]:
        """Pids of the pool's live worker processes on exactly `queues` (any if none given)."""
        found = []
        try:
            children = psutil.Process(self.pid).children()
        except psutil.NoSuchProcess:
            return []
        for child in children:
            try:
                if child.status() == psutil.STATUS_ZOMBIE:
                    continue
                cmd = child.cmdline()
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            if cmd[1:4] != ["-m", "pyscheduler", "worker"]:
                continue  # forked, not yet exec'ed
            on = cmd[4 : cmd.index("--concurrency")] if "--concurrency" in cmd else cmd[4:]
            if not queues or on == list(queues):
                found.append(child.pid)
        return sorted(found)

    def wait_workers(self, *queues: str, count: int, timeout: float = 10.0) -> list[int]:
        def ready() -> list[int]:
            pids = self.workers(*queues)
            return pids if len(pids) == count else []

        try:
            return wait_until(ready, timeout, interval=0.05, what=f"{count} workers on {queues}")
        except AssertionError:
            raise AssertionError(
                f"pool has {self.workers(*queues)} on {queues}, not {count}; its log:\n"
                + self.log.text
            ) from None

    def pool_lines(self) -> list[str]:
        return [line for line in self.log.text.splitlines() if "pyscheduler.pool" in line]

    def stop(self) -> None:
        """Kill the pool and every process it started (end of test)."""
        try:
            family = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            family = []
        for process in [*family, psutil.Process(self.pid) if self.proc.poll() is None else None]:
            if process is not None:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()
        self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def pools(conn: redis.Redis, redis_url: str) -> Iterator[list[PoolProcess]]:
    started: list[PoolProcess] = []
    yield started
    for pool in started:
        pool.stop()


def start_pool(pools: list[PoolProcess], redis_url: str, *args: str) -> PoolProcess:
    pool = PoolProcess(redis_url, *args)
    pools.append(pool)
    return pool


def test_backlog_grows_a_group_to_max_and_idle_shrinks_it_to_min(
    conn: redis.Redis, redis_url: str, pools: list[PoolProcess]
) -> None:
    fast_q, slow_q = f"pool-fast-{uuid.uuid4().hex[:6]}", f"pool-slow-{uuid.uuid4().hex[:6]}"
    pool = start_pool(
        pools,
        redis_url,
        "--group",
        f"fast={fast_q}:1-4:target=0.5,cooldown=1.5",
        "--group",
        f"slow={slow_q}:1-2:target=0.5",
        "--check-interval",
        "0.25",
    )
    [fast_first] = pool.wait_workers(fast_q, count=1)
    slow = pool.wait_workers(slow_q, count=1)
    wait_until(lambda: blocked_clients(conn) >= 2, what="both workers to be idle")

    queue = Queue(fast_q, connection=conn)
    jobs = queue.enqueue_many(
        [queue.prepare("tasks:sleep_in_c", [0.25], timeout=30) for _ in range(40)]
    )
    started = time.monotonic()
    pool.wait_workers(fast_q, count=4, timeout=6)
    grew_in = time.monotonic() - started
    assert grew_in < 5, grew_in
    assert pool.workers(slow_q) == slow, "the slow group was disturbed"
    up = [line for line in pool.pool_lines() if "group fast: 1 -> " in line]
    assert up, pool.log.text
    # The reason: jobs waiting too long, or too many for the capacity measured so far.
    assert "(oldest ready job" in up[0] or "s to drain" in up[0], up
    assert "> target 0.5 s" in up[0], up

    # The backlog drains, the group idles for its cooldown and goes back to one process.
    wait_until(
        lambda: all(j.info().status == Status.COMPLETE for j in jobs),
        timeout=10,
        interval=0.1,
        what="the backlog to drain",
    )
    drained = time.monotonic()
    [remaining] = pool.wait_workers(fast_q, count=1, timeout=8)
    shrank_after = time.monotonic() - drained
    assert shrank_after >= 1.0, shrank_after  # not before the cooldown
    assert remaining == fast_first  # the newest processes were the ones drained
    assert pool.workers(slow_q) == slow, "the slow group was disturbed"
    down = [line for line in pool.pool_lines() if "group fast: 4 -> 1 processes" in line]
    assert down and "(idle for" in down[0], pool.log.text
    assert not any("group slow:" in line and "->" in line for line in pool.pool_lines())
    assert "died" not in pool.log.text  # drained processes are not crashes

    print(
        f"\npool log (grew to 4 in {grew_in:.1f} s; shrank {shrank_after:.1f} s after the drain):"
    )
    print("\n".join(pool.pool_lines()))


def test_killed_worker_is_replaced_with_backoff_and_other_group_undisturbed(
    conn: redis.Redis, redis_url: str, pools: list[PoolProcess], tmp_path: Path
) -> None:
    config = tmp_path / "pool.toml"
    config.write_text(
        """
check_interval = 0.2

[groups.fast]
queues = ["pool-fast"]
min = 2
max = 2

[groups.slow]
queues = ["pool-slow"]
"""
    )
    pool = start_pool(pools, redis_url, "--config", str(config))
    fast = pool.wait_workers("pool-fast", count=2)
    slow = pool.wait_workers("pool-slow", count=1)

    victim = fast[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: victim not in pool.workers("pool-fast"), timeout=5)
    replaced = pool.wait_workers("pool-fast", count=2, timeout=5)
    assert fast[1] in replaced and victim not in replaced
    pool.log.wait_for(f"worker process {victim} died (killed by SIGKILL)", timeout=5)
    assert "restarting at once" in pool.log.text

    # Dying again soon after its start: the restart waits (exponential backoff).
    [new] = [pid for pid in replaced if pid != fast[1]]
    os.kill(new, signal.SIGKILL)
    killed = time.monotonic()
    pool.log.wait_for(f"worker process {new} died", timeout=5)
    assert "restarting in 0.5 s (2 quick deaths in a row)" in pool.log.text
    again = pool.wait_workers("pool-fast", count=2, timeout=5)
    assert time.monotonic() - killed >= 0.4
    assert new not in again and fast[1] in again
    assert pool.workers("pool-slow") == slow, "the slow group was disturbed"


def test_sigterm_drains_running_jobs_then_exits(
    conn: redis.Redis, redis_url: str, pools: list[PoolProcess]
) -> None:
    pool = start_pool(
        pools, redis_url, "--group", "fast=pool-fast:1", "--group", "slow=pool-slow:1"
    )
    workers = [*pool.wait_workers("pool-fast", count=1), *pool.wait_workers("pool-slow", count=1)]
    runs = f"test:runs:{uuid.uuid4().hex}"
    job = Queue("pool-slow", connection=conn).enqueue(
        "tasks:counted_sleep", redis_url, runs, 1.0, timeout=30
    )
    wait_until(lambda: as_int(conn.get(runs)) == 1, what="the job to start")

    os.kill(pool.pid, signal.SIGTERM)
    assert pool.proc.wait(timeout=10) == 0, pool.log.text
    assert job.info().status == Status.COMPLETE  # the running job finished first
    assert all(is_gone(pid) for pid in workers)
    assert "got SIGTERM: draining 2 worker processes" in pool.log.text
    assert "died" not in pool.log.text


def test_second_signal_kills_workers_and_leases_bring_jobs_back(
    conn: redis.Redis, redis_url: str, pools: list[PoolProcess]
) -> None:
    pool = start_pool(pools, redis_url, "--group", "slow=pool-slow:1")
    [worker] = pool.wait_workers("pool-slow", count=1)
    runs = f"test:runs:{uuid.uuid4().hex}"
    job = Queue("pool-slow", connection=conn).enqueue(
        "tasks:counted_sleep", redis_url, runs, 30.0, timeout=60
    )
    wait_until(lambda: as_int(conn.get(runs)) == 1, what="the job to start")
    executors = [c.pid for c in psutil.Process(worker).children()]

    os.kill(pool.pid, signal.SIGTERM)
    pool.log.wait_for("got SIGTERM")
    aborted = time.monotonic()
    os.kill(pool.pid, signal.SIGINT)
    assert pool.proc.wait(timeout=5) == 1, pool.log.text
    assert time.monotonic() - aborted < 2.0
    assert "got SIGINT again: killing the worker processes" in pool.log.text
    wait_until(lambda: all(is_gone(pid) for pid in [worker, *executors]), timeout=5)
    assert job.info().status == Status.ACTIVE  # nobody reported it: its lease brings it back


def test_pool_from_python(conn: redis.Redis, redis_url: str) -> None:
    pool = Pool(
        PoolConfig([GroupConfig("a", ["pool-a"], min=2, max=3)], url=redis_url, check_interval=0.1)
    )
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(pool.run()))
    thread.start()
    try:
        wait_until(lambda: blocked_clients(conn) >= 2, timeout=10, what="two idle workers")
        pids = pool.pids("a")
        assert len(pids) == 2
    finally:
        pool.stop()
        thread.join(timeout=10)
    assert result == [0]
    assert all(is_gone(pid) for pid in pids)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_workers_drain_when_the_pool_itself_is_killed(
    conn: redis.Redis, redis_url: str, pools: list[PoolProcess]
) -> None:
    pool = start_pool(pools, redis_url, "--group", "fast=pool-fast:2")
    workers = pool.wait_workers("pool-fast", count=2)
    wait_until(lambda: blocked_clients(conn) >= 2, what="both workers to be idle")
    os.kill(pool.pid, signal.SIGKILL)
    pool.proc.wait(timeout=5)
    # No orphans: each worker got SIGTERM from the kernel and drained.
    wait_until(lambda: all(is_gone(pid) for pid in workers), timeout=5, what="workers to exit")
    pool.log.finish(timeout=5)
    assert pool.log.count("got SIGTERM: finishing running jobs") == 2, pool.log.text
