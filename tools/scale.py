#!/usr/bin/env python3
"""Scale on a Redis Cluster: one drain on 1, 2 and 3 primaries, and what 1,000,000 jobs/s needs.

    python tools/scale.py                          # 1, 2 and 3 shards, 60,000 jobs, 2 workers
    python tools/scale.py --shards 3 --jobs 20000 --workers 3
    python tools/scale.py --json scale.json        # the figures as JSON too ('-': on stdout)

For each size it starts a local cluster of private servers (`pyscheduler.dev.cluster`: engines in
cluster mode on free ports, the 16,384 slots split evenly, no replicas), deploys the library on
every primary (`pyscheduler load-scripts`, then `--check`) and runs one workload:

  --queues queues (12), named so they hash to distinct slots and spread evenly over the shards
  (it reports how many each shard got), and --jobs no-op jobs (`scale_tasks.noop`) split evenly
  over them, enqueued in bulk (`Queue.enqueue_many`) by this process; then --workers
  `pyscheduler worker --burst` processes (one job at a time, prefetch on: the defaults), each on
  every queue in an order rotated so the workers start on different shards, drain them.

Measured for each size:
  throughput  jobs/s from the queues' `completed` counters (polled every 50 ms) over the steady
              part of the drain: from 5% to 95% of the jobs done (start-up and tail left out);
  Redis CPU   utime+stime of each redis-server (/proc/PID/stat) over that window, per job its
              shard's queues completed in it; the same over the enqueue; cross-checked with
              `INFO commandstats` (microseconds inside commands by the wall clock: it leaves
              out the event loop and the socket reads and writes, which makes it lower, but
              counts the time the server was descheduled in a command, which makes it higher
              on a busy machine), with the commands per job;
  worker CPU  utime+stime of the worker processes and their executor children over the window,
              per job;
  the machine the load average before and after, how busy its CPUs were over the window, and
              the share of that this run's processes took (the rest is other work).

Then a projection of the shards and workers 1,000,000 jobs/s needs, with its assumptions. Exit 0
when every job enqueued was completed, 1 when the counts disagree, 2 when a run failed.
Results and the machine they ran on: docs/benchmarks.md, "Scale".
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

from pyscheduler import Queue
from pyscheduler.dev.cluster import LocalCluster, local_cluster
from pyscheduler.store import library
from pyscheduler.store.connection import connect
from pyscheduler.store.keys import QueueKeys

TOOLS_DIR = Path(__file__).resolve().parent
HOST = "127.0.0.1"
HANDLER = "scale_tasks:noop"
POLL_S = 0.05
WINDOW = (0.05, 0.95)  # the steady part of a drain, as shares of the jobs done
TARGET_RATE = 1_000_000  # jobs/s of the projection
HEADROOM = 0.7  # the busy share a production shard or worker host is planned at
TICK_S = 1 / os.sysconf("SC_CLK_TCK")
START = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - START:6.1f} s] {message}", file=sys.stderr, flush=True)


# -- a local cluster -------------------------------------------------------------------------------


def deploy(url: str) -> None:
    """`pyscheduler load-scripts` on every primary, then `--check` on each."""
    for extra in ([], ["--check"]):
        command = [sys.executable, "-m", "pyscheduler", "load-scripts", "--url", url, *extra]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command[2:])} exited {done.returncode}: {done.stderr}")


# -- the queues and the workers' orders ------------------------------------------------------------


def pick_queues(cluster: LocalCluster, count: int) -> list[str]:
    """`count` queue names with distinct slots, as evenly spread over the shards as `count`
    allows, listed shard 0's, shard 1's, ... in turn (so neighbours are on different shards)."""
    shards = len(cluster.nodes)
    quotas = [count // shards + (1 if i < count % shards else 0) for i in range(shards)]
    chosen: list[list[str]] = [[] for _ in range(shards)]
    slots: set[int] = set()
    for n in itertools.count():
        if all(len(names) == quota for names, quota in zip(chosen, quotas, strict=True)):
            break
        name = f"scale-{n}"
        jobs_key = QueueKeys(name).jobs
        slot, shard = key_slot(jobs_key.encode()), cluster.shard_of(jobs_key)
        if slot not in slots and len(chosen[shard]) < quotas[shard]:
            slots.add(slot)
            chosen[shard].append(name)
    return [name for turn in itertools.zip_longest(*chosen) for name in turn if name is not None]


def worker_order(queues: Sequence[str], shard_of: dict[str, int], worker: int) -> list[str]:
    """Every queue, for worker `worker`: its shard (worker mod shards) first and, within each
    shard, starting at queue (worker // shards), so the workers begin on different shards and
    queues and meet only as the queues empty. (A worker asks its queues in the order given.)"""
    shards = max(shard_of.values()) + 1
    on_shard = {s: [q for q in queues if shard_of[q] == s] for s in range(shards)}
    place = {q: names.index(q) for names in on_shard.values() for q in names}

    def rank(q: str) -> tuple[int, int]:
        s = shard_of[q]
        return ((s - worker) % shards, (place[q] - worker // shards) % len(on_shard[s]))

    return sorted(queues, key=rank)


# -- CPU readings ----------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    # The fields after the command name, which may itself hold spaces and parentheses.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_cpu(pid: int) -> float:
    """CPU seconds (utime + stime) of process `pid` itself."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) * TICK_S


def tree_cpu(pid: int) -> tuple[float, float]:
    """(CPU seconds of `pid` itself, of its descendants: live ones and those it reaped)."""
    fields = _stat_fields(pid)
    own = (int(fields[11]) + int(fields[12])) * TICK_S
    below = (int(fields[13]) + int(fields[14])) * TICK_S  # cutime + cstime: reaped children
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    below += sum(tree_cpu(int(child)))
    return own, below


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) clock ticks of every CPU since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is counted in user already
    return total - idle, total


# -- one run ---------------------------------------------------------------------------------------


@dataclass
class Sample:
    t: float
    done: dict[str, int]  # the `completed` counter of each queue
    redis_cpu: list[float]  # CPU seconds of each shard's server
    redis_usec: list[float]  # INFO commandstats usec of each shard, every command but INFO
    commands: list[dict[str, tuple[int, int]]]  # each shard's {command: (calls, usec)}
    worker_main: float  # CPU seconds of the workers' main processes
    worker_children: float  # ... of their executor children
    busy: int
    total: int
    tool_cpu: float


@dataclass
class Shard:
    queues: int
    jobs: int  # enqueued on its queues
    idle_ms_per_s: float  # its server's CPU while nothing ran (cluster bus, cron)
    enqueue_us: float | None  # its server's CPU per job enqueued, /proc
    enqueue_cmd_us: float | None  # ... INFO commandstats
    drain_jobs: int  # jobs its queues completed in the window
    drain_us: float | None  # its server's CPU per job completed in the window, /proc
    drain_cmd_us: float | None  # ... INFO commandstats
    drain_busy: float  # share of one core its server used in the window
    # {command: [calls per job, usec per call]} in the window, INFO commandstats
    drain_commands: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class Run:
    shards: int
    kind: str
    version: str
    queues: int
    jobs: int
    workers: int
    enqueued: int = 0  # jobs enqueue_many acknowledged
    completed: int = 0  # the sum of the queues' `completed` counters at the end
    counted: dict[str, int] = field(default_factory=dict)  # state sizes at the end (psq_counts)
    enqueue_s: float = 0.0
    enqueue_rate: float = 0.0
    producer_us: float = 0.0  # this process's CPU per job: prepare + enqueue_many
    window: str = ""
    window_s: float = 0.0
    window_jobs: int = 0
    throughput: float = 0.0  # jobs/s over the window
    drain_s: float = 0.0  # workers started to the last job completed
    redis_us: float = 0.0  # every shard's server CPU per job over the window, summed
    redis_enqueue_us: float = 0.0
    cmd_us: float = 0.0  # ... INFO commandstats
    worker_us: float = 0.0  # worker CPU per job over the window (main + executor)
    worker_main_us: float = 0.0
    worker_child_us: float = 0.0
    worker_total_us: float = 0.0  # the workers' whole lives (start-up too) per job, rusage
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    machine_busy: float = 0.0  # share of all CPUs busy over the window
    ours_busy: float = 0.0  # ... of which this run's processes
    per_shard: list[Shard] = field(default_factory=list)


class Drain:
    """The workers, the polling of the counters and the samples of one size."""

    def __init__(self, cluster: LocalCluster, queues: list[str], workers: int, logs: Path) -> None:
        self.cluster, self.queues = cluster, queues
        self.nodes = [redis.Redis(host=HOST, port=e.port) for e in cluster.nodes]
        self.shard_of = {q: cluster.shard_of(q) for q in queues}
        self.on_shard = [
            [q for q in queues if self.shard_of[q] == s] for s in range(len(self.nodes))
        ]
        self.workers = workers
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []
        self.exited: dict[int, float] = {}  # pid -> CPU seconds of its whole tree (wait4)

    def close(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.kill()
                self._reap(proc, block=True)
        for node in self.nodes:
            node.close()

    def completed(self) -> dict[str, int]:
        done: dict[str, int] = {}
        for node, names in zip(self.nodes, self.on_shard, strict=True):
            pipe = node.pipeline(transaction=False)
            for name in names:
                pipe.hget(QueueKeys(name).stats, "completed")
            done.update(zip(names, (int(v or 0) for v in pipe.execute()), strict=True))
        return done

    def sample(self, done: dict[str, int]) -> Sample:
        redis_cpu = [process_cpu(e.pid or 0) for e in self.cluster.nodes]
        usec, commands = [], []
        for node in self.nodes:
            stats = node.info("commandstats")
            by_command = {
                k.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
                for k, v in stats.items()
                if k != "cmdstat_info"  # this tool's own readings
            }
            commands.append(by_command)
            usec.append(float(sum(spent for _, spent in by_command.values())))
        main = children = 0.0
        for proc in self.procs:
            if proc.returncode is None:
                with contextlib.suppress(OSError):
                    own, below = tree_cpu(proc.pid)
                    main, children = main + own, children + below
                    continue
            # Gone: its whole tree's CPU from wait4, counted as the executor's (no split left).
            children += self.exited.get(proc.pid, 0.0)
        busy, total = machine_jiffies()
        return Sample(
            time.monotonic(),
            done,
            redis_cpu,
            usec,
            commands,
            main,
            children,
            busy,
            total,
            time.process_time(),
        )

    def start(self) -> None:
        for n in range(self.workers):
            order = worker_order(self.queues, self.shard_of, n)
            command = [sys.executable, "-m", "pyscheduler", "worker", *order]
            command += ["--url", self.cluster.url, "--burst", "--import", "scale_tasks"]
            with open(self.logs / f"worker-{n}.log", "wb") as out:
                self.procs.append(
                    subprocess.Popen(
                        command, cwd=TOOLS_DIR, stdin=subprocess.DEVNULL, stdout=out, stderr=out
                    )
                )

    def _reap(self, proc: subprocess.Popen[bytes], block: bool) -> None:
        # wait4, not Popen.wait: its rusage has the CPU of the process and of the children it
        # reaped (its executor), which /proc no longer shows once it is gone.
        pid, status, usage = os.wait4(proc.pid, 0 if block else os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            self.exited[pid] = usage.ru_utime + usage.ru_stime

    def reap_exited(self) -> bool:
        """Reap the workers that exited; True when all have."""
        for proc in self.procs:
            if proc.returncode is None:
                self._reap(proc, block=False)
        return all(proc.returncode is not None for proc in self.procs)

    def log_tail(self, lines: int = 15) -> str:
        parts = []
        for path in sorted(self.logs.glob("worker-*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name} ---\n" + "\n".join(tail))
        return "\n".join(parts)


def per_job_us(seconds: float, jobs: int) -> float | None:
    return seconds * 1e6 / jobs if jobs > 0 else None


def enqueue_all(
    conn: Any, queues: list[str], jobs: int
) -> tuple[int, float, float, dict[str, int]]:
    """Enqueue `jobs` no-op jobs split evenly over `queues`, in bulk: (acknowledged, seconds,
    this process's CPU seconds, {queue: jobs})."""
    share = {
        q: jobs // len(queues) + (1 if i < jobs % len(queues) else 0) for i, q in enumerate(queues)
    }
    cpu, began = time.process_time(), time.monotonic()
    acknowledged = 0
    for name, count in share.items():
        q = Queue(name, connection=conn)
        acknowledged += len(q.enqueue_many([q.prepare(HANDLER) for _ in range(count)]))
    return acknowledged, time.monotonic() - began, time.process_time() - cpu, share


def run_size(kind: str | None, shards: int, args: argparse.Namespace, logs: Path) -> Run:
    load_before = os.getloadavg()
    with local_cluster(kind, shards) as cluster:
        engine = cluster.nodes[0]
        run = Run(shards, engine.kind, engine.version, args.queues, args.jobs, args.workers)
        run.load_before = load_before
        deploy(cluster.url)
        queues = pick_queues(cluster, args.queues)
        conn = connect(cluster.url)
        drain = Drain(cluster, queues, args.workers, logs)
        try:
            library.ensure_loaded(conn)
            idle = drain.sample({})
            time.sleep(args.idle)
            before = drain.sample({})
            run.enqueued, run.enqueue_s, producer_cpu, share = enqueue_all(conn, queues, args.jobs)
            enqueued = drain.sample({})
            run.enqueue_rate = run.enqueued / run.enqueue_s
            run.producer_us = producer_cpu * 1e6 / max(run.enqueued, 1)
            progress(
                f"{shards} shard(s): {run.enqueued} jobs enqueued in {run.enqueue_s:.2f} s;"
                f" {workers(args.workers)} draining"
            )
            first, last = measure_drain(run, drain, args.jobs)
            run.redis_enqueue_us = (
                (sum(enqueued.redis_cpu) - sum(before.redis_cpu)) * 1e6 / max(run.enqueued, 1)
            )
            for s, names in enumerate(drain.on_shard):
                phases = (idle, before, enqueued, first, last)
                run.per_shard.append(shard_figures(s, names, share, phases, args.idle))
            counts = [Queue(q, connection=conn).counts() for q in queues]
            run.counted = {
                state: sum(getattr(c, state) for c in counts)
                for state in ("queued", "delayed", "active", "failed", "finished")
            }
        finally:
            drain.close()
            conn.close()
    run.load_after = os.getloadavg()
    return run


def measure_drain(run: Run, drain: Drain, jobs: int) -> tuple[Sample, Sample]:
    """Start the workers, follow the drain to its end, fill in `run`'s drain figures; returns
    the samples that bound the measured window."""
    drain.start()
    began = time.monotonic()
    start = drain.sample(drain.completed())
    marks: list[Sample] = []  # the samples at 5% and at 95% of the jobs done
    finished_at: float | None = None
    deadline = began + 120 + jobs / 1000
    while True:
        time.sleep(POLL_S)
        all_exited = drain.reap_exited()
        done = drain.completed()
        total = sum(done.values())
        if finished_at is None and total >= run.enqueued:
            finished_at = time.monotonic()
        while len(marks) < len(WINDOW) and total >= WINDOW[len(marks)] * run.enqueued:
            marks.append(drain.sample(done))
        if all_exited:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"the drain did not end in time:\n{drain.log_tail()}")
    failed = [proc.returncode for proc in drain.procs if proc.returncode != 0]
    if failed:
        raise RuntimeError(f"workers exited with {failed}:\n{drain.log_tail()}")
    end = drain.sample(drain.completed())
    run.completed = sum(end.done.values())
    run.drain_s = (finished_at or time.monotonic()) - began
    run.worker_total_us = sum(drain.exited.values()) * 1e6 / max(run.completed, 1)

    first, last = (marks[0], marks[1]) if len(marks) == 2 else (start, end)
    window_jobs = sum(last.done.values()) - sum(first.done.values())
    if last.t - first.t < 0.5 or window_jobs < 0.5 * run.completed:
        # Too short to tell from the start and the end (a small run): take the whole drain.
        first, last, window_jobs = start, end, run.completed
        run.window = "whole drain"
    else:
        run.window = f"{WINDOW[0]:.0%}-{WINDOW[1]:.0%} of the jobs done"
    run.window_s, run.window_jobs = last.t - first.t, window_jobs
    run.throughput = window_jobs / run.window_s if run.window_s > 0 else 0.0
    per_job = 1e6 / max(window_jobs, 1)
    redis_cpu = sum(last.redis_cpu) - sum(first.redis_cpu)
    run.redis_us = redis_cpu * per_job
    run.cmd_us = (sum(last.redis_usec) - sum(first.redis_usec)) / max(window_jobs, 1)
    run.worker_main_us = (last.worker_main - first.worker_main) * per_job
    run.worker_child_us = (last.worker_children - first.worker_children) * per_job
    run.worker_us = run.worker_main_us + run.worker_child_us
    run.machine_busy = (last.busy - first.busy) / max(last.total - first.total, 1)
    ours = redis_cpu + (run.worker_us / per_job) + last.tool_cpu - first.tool_cpu
    run.ours_busy = ours / (run.window_s * (os.cpu_count() or 1)) if run.window_s > 0 else 0.0
    return first, last


def shard_figures(
    s: int, names: list[str], share: dict[str, int], phases: tuple[Sample, ...], idle_s: float
) -> Shard:
    """Shard `s`'s figures from the samples (idle, before the enqueue, after it, the window)."""
    idle, before, enqueued, first, last = phases
    jobs = sum(share[q] for q in names)
    drained = sum(last.done[q] - first.done[q] for q in names)
    cpu = last.redis_cpu[s] - first.redis_cpu[s]
    window_s = last.t - first.t
    return Shard(
        queues=len(names),
        jobs=jobs,
        idle_ms_per_s=(before.redis_cpu[s] - idle.redis_cpu[s]) * 1e3 / idle_s if idle_s else 0,
        enqueue_us=per_job_us(enqueued.redis_cpu[s] - before.redis_cpu[s], jobs),
        enqueue_cmd_us=per_job_us((enqueued.redis_usec[s] - before.redis_usec[s]) / 1e6, jobs),
        drain_jobs=drained,
        drain_us=per_job_us(cpu, drained),
        drain_cmd_us=per_job_us((last.redis_usec[s] - first.redis_usec[s]) / 1e6, drained),
        drain_busy=cpu / window_s if window_s > 0 else 0.0,
        drain_commands=command_rates(first.commands[s], last.commands[s], drained),
    )


def command_rates(
    first: dict[str, tuple[int, int]], last: dict[str, tuple[int, int]], jobs: int
) -> dict[str, list[float]]:
    """{command: [calls per job, usec per call]} between two readings, busiest first."""
    rates = {}
    for name, (calls, usec) in last.items():
        calls0, usec0 = first.get(name, (0, 0))
        if calls > calls0 and jobs:
            rates[name] = [(calls - calls0) / jobs, (usec - usec0) / (calls - calls0)]
    return dict(sorted(rates.items(), key=lambda kv: -kv[1][0] * kv[1][1]))


# -- the report ------------------------------------------------------------------------------------


def projection(runs: list[Run]) -> dict[str, Any]:
    """What `TARGET_RATE` jobs/s needs, from the run with the most shards."""
    run = max(runs, key=lambda r: r.shards)
    redis_us = run.redis_enqueue_us + run.redis_us  # one job's whole life, summed over shards
    busiest = max(
        (sh.enqueue_us or 0) + (sh.drain_us or 0) for sh in run.per_shard if sh.drain_jobs
    )
    per_worker = run.throughput / run.workers if run.workers else 0.0
    # A worker's main process and its executor are one process each: the busier bounds it.
    worker_bound = 1e6 / max(run.worker_main_us, run.worker_child_us, 1e-9)
    return {
        "from_run_with_shards": run.shards,
        "target_jobs_per_s": TARGET_RATE,
        "redis_us_per_job": redis_us,
        "redis_us_per_job_busiest_shard": busiest,
        "shard_jobs_per_s_at_one_core": 1e6 / redis_us if redis_us else None,
        "shards_at_full_core": math.ceil(TARGET_RATE * redis_us / 1e6),
        "shards_at_headroom": math.ceil(TARGET_RATE * redis_us / 1e6 / HEADROOM),
        "headroom": HEADROOM,
        "worker_us_per_job": run.worker_us,
        "worker_cores": TARGET_RATE * run.worker_us / 1e6,
        "worker_jobs_per_s_measured": per_worker,
        "workers_at_measured_rate": math.ceil(TARGET_RATE / per_worker) if per_worker else None,
        "worker_jobs_per_s_cpu_bound": worker_bound,
        "workers_cpu_bound": math.ceil(TARGET_RATE / worker_bound),
        "producer_us_per_job": run.producer_us,
        "producer_cores": TARGET_RATE * run.producer_us / 1e6,
        "min_queues": math.ceil(TARGET_RATE * redis_us / 1e6 / HEADROOM),
    }


def workers(count: int) -> str:
    return f"{count} worker{'' if count == 1 else 's'}"


def fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def report(runs: list[Run], plan: dict[str, Any]) -> list[str]:
    cores = os.cpu_count() or 1
    lines = [
        f"machine: {cores} CPUs, {platform_text()}; server {runs[0].kind} {runs[0].version};"
        f" {runs[0].jobs:,} no-op jobs on {runs[0].queues} queues, {workers(runs[0].workers)}"
        " (`pyscheduler worker --burst`, 1 job at a time, prefetch on)",
        "",
        "| shards | queues per shard | drain jobs/s | vs 1 shard | Redis CPU us/job,"
        " enqueue + drain (per shard) | commandstats us/job, drain | worker CPU us/job"
        " (main + executor) | CPUs busy (this run) | load before / after |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    base = next((r.throughput for r in runs if r.shards == 1), None)
    for r in runs:
        shards = " / ".join(f"{fmt(sh.enqueue_us)} + {fmt(sh.drain_us)}" for sh in r.per_shard)
        cmd = " / ".join(fmt(sh.drain_cmd_us) for sh in r.per_shard)
        lines.append(
            f"| {r.shards} | {' / '.join(str(sh.queues) for sh in r.per_shard)}"
            f" | {r.throughput:,.0f} | {fmt(r.throughput / base, 2) + 'x' if base else 'n/a'}"
            f" | {shards} | {cmd}"
            f" | {r.worker_us:.0f} ({r.worker_main_us:.0f} + {r.worker_child_us:.0f})"
            f" | {r.machine_busy:.0%} ({r.ours_busy:.0%})"
            f" | {r.load_before[0]:.2f} / {r.load_after[0]:.2f} |"
        )
    lines.append("")
    for r in runs:
        lines.append(
            f"{r.shards} shard(s): enqueued {r.enqueued:,} in {r.enqueue_s:.2f} s"
            f" ({r.enqueue_rate:,.0f} jobs/s, producer {r.producer_us:.1f} us CPU/job);"
            f" completed {r.completed:,} in {r.drain_s:.2f} s; window {r.window}"
            f" ({r.window_jobs:,} jobs in {r.window_s:.2f} s); Redis {r.redis_enqueue_us:.1f}"
            f" + {r.redis_us:.1f} us/job over all shards (commandstats, drain: {r.cmd_us:.1f});"
            f" worker CPU over its whole life {r.worker_total_us:.0f} us/job;"
            f" left: {', '.join(f'{k} {v}' for k, v in r.counted.items())}"
        )
        for s, sh in enumerate(r.per_shard):
            lines.append(
                f"  shard {s}: {sh.queues} queues, {sh.jobs:,} jobs; idle {sh.idle_ms_per_s:.1f}"
                f" ms CPU/s; enqueue {fmt(sh.enqueue_us)} us/job (commandstats"
                f" {fmt(sh.enqueue_cmd_us)}); drain {fmt(sh.drain_us)} us/job (commandstats"
                f" {fmt(sh.drain_cmd_us)}) over {sh.drain_jobs:,} jobs, {sh.drain_busy:.0%} of a"
                " core"
            )
            top = list(sh.drain_commands.items())[:4]
            lines.append(
                "    drain commands per job: "
                + ", ".join(f"{name} {c:.3f} x {us:.1f} us" for name, (c, us) in top)
            )
    p = plan
    oversubscribed = max(r.shards for r in runs) + 2 * runs[0].workers
    lines += [
        "",
        f"Projection for {TARGET_RATE:,} jobs/s (from the {p['from_run_with_shards']}-shard run):",
        f"  Redis: {p['redis_us_per_job']:.1f} us of server CPU per job over its life (enqueue"
        f" + pop + complete; busiest shard {p['redis_us_per_job_busiest_shard']:.1f}), so one"
        f" shard on one core serves at most {fmt(p['shard_jobs_per_s_at_one_core'], 0)} jobs/s:"
        f" {p['shards_at_full_core']} shards at 100% of a core, {p['shards_at_headroom']} at"
        f" {HEADROOM:.0%}; at least that many busy queues, spread by name over the shards.",
        f"  Workers: {p['worker_us_per_job']:.0f} us of CPU per job (main process + executor),"
        f" so {p['worker_cores']:,.0f} cores of workers; {p['workers_at_measured_rate']:,}"
        f" worker processes at the {p['worker_jobs_per_s_measured']:,.0f} jobs/s each ran here,"
        f" {p['workers_cpu_bound']:,} if each ran at its CPU bound"
        f" ({p['worker_jobs_per_s_cpu_bound']:,.0f} jobs/s: its busier process at 100%).",
        f"  Producers: {p['producer_us_per_job']:.1f} us of client CPU per job in bulk"
        f" (prepare + enqueue_many): {p['producer_cores']:,.0f} cores.",
        "  Assumptions: one core per shard, nothing else on it; Redis CPU per job and worker"
        " CPU per job as measured here (no-op handlers: a real handler's own work is on top);"
        " linear scaling over shards, because every library call touches one queue's hash"
        " tag on one shard, and nothing crosses shards but splits, dependency notices and the"
        " registry write (once per client and queue); enough queues, spread evenly.",
        f"  This machine is the bound: {cores} CPUs run {max(r.shards for r in runs)} servers,"
        f" {workers(runs[0].workers)} of 2 processes each and this tool"
        f" ({oversubscribed} busy processes at the most) besides other work, so throughput"
        " cannot grow with shards here; the figure that transfers is the CPU per job per shard.",
    ]
    return lines


def platform_text() -> str:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{model or 'unknown CPU'}, Python {sys.version.split()[0]}, redis-py {redis.__version__}"
    )


# -- main ------------------------------------------------------------------------------------------


def shard_list(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not sizes or any(not 1 <= n <= 16 for n in sizes):
        raise argparse.ArgumentTypeError("shard counts are 1-16")
    return sizes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=shard_list, default=[1, 2, 3], help="sizes (1,2,3)")
    parser.add_argument("--jobs", type=int, default=60_000, help="jobs per size (60000)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    parser.add_argument("--queues", type=int, default=12, help="queues (12)")
    parser.add_argument("--kind", choices=("redis", "valkey"), default=None, help="server kind")
    parser.add_argument("--idle", type=float, default=1.0, help="seconds of idle reading (1)")
    parser.add_argument("--json", help="also write the figures to this file ('-': stdout)")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.workers < 1 or args.queues < max(args.shards):
        parser.error("--jobs and --workers must be positive, --queues at least the shards")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs: list[Run] = []
    logs = Path(tempfile.mkdtemp(prefix="psq-scale-"))
    try:
        for shards in args.shards:
            runs.append(run_size(args.kind, shards, args, logs))
    except (RuntimeError, redis.RedisError, OSError) as exc:
        print(f"scale: the run failed: {exc}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(logs, ignore_errors=True)
    plan = projection(runs)
    out = sys.stderr if args.json == "-" else sys.stdout
    for line in report(runs, plan):
        print(line, file=out)
    wrong = [r.shards for r in runs if not r.enqueued == r.completed == r.jobs]
    if args.json:
        figures = {
            "machine": {"cpus": os.cpu_count(), "platform": platform_text()},
            "runs": [asdict(r) for r in runs],
            "projection": plan,
        }
        text = json.dumps(figures, indent=2) + "\n"
        if args.json == "-":
            sys.stdout.write(text)
        else:
            Path(args.json).write_text(text)
    if wrong:
        print(f"scale: jobs enqueued, completed and asked for differ at {wrong} shards", file=out)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
