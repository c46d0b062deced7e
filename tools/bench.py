#!/usr/bin/env python3
"""Benchmark pyscheduler, and the peer libraries that are installed, on the same workloads.

    python tools/bench.py                     # every workload, all installed peers (~10 min)
    python tools/bench.py --quick             # small N, 1 run (a smoke test, a few minutes)
    python tools/bench.py --only W1,W3 --peers rq,dramatiq
    python tools/bench.py --peers none --json bench.json

It starts its own Redis (redis-server/valkey-server on a free port, as `pyscheduler.engine`
does), so nothing else shares it. Peers are optional columns: `pip install -e '.[bench]'`
installs rq, celery, dramatiq, saq and huey; arq pins redis<6, so it is not in the extra
(`pip install --no-deps arq` adds it). A peer that is missing or breaks shows "n/a" with the
reason; the rest of the run goes on.

Workloads (every handler writes one value to Redis; see `bench_handlers.py`):
  W1  enqueue N no-op jobs one call at a time, and with the library's batch API.
  W2  drain N queued no-op jobs with 1 worker process, then with 2 (each runs one job at a
      time). The rate is taken from the handlers' own timestamps, skipping the first 5% of
      jobs, so worker start-up is not counted; a drain still running after --drain-cap seconds
      is measured on the jobs done by then (marked "partial").
      W2 no-op: the same drains with truly no-op handlers (BENCH_NOOP_MODE=count: each worker
      process counts jobs in memory and flushes the count every 10 ms, like an independent
      harness), with the CPU each job costs Redis (INFO cpu) and the worker processes (/proc),
      taken from the first flush to the end, to tell which one bounds two workers.
  W3  idle latency: one idle worker; jobs enqueued 5 ms apart; enqueue-to-start p50/p99/max.
  W4  head-of-line: 2 workers; over 3 s, 9 slow jobs (1 s) and 600 fast ones (1 ms),
      interleaved: (A) one FIFO queue; (B) fast and slow queues with a dedicated worker each;
      (C) one queue, fast jobs at a higher priority; (D) both workers take both queues,
      fast first, with a global concurrency limit of 1 on the slow queue; (E) one FIFO queue
      whose slow jobs sleep in 10 ms steps with a checkpoint each and a 50 ms time slice (the
      long-jobs feature; pyscheduler only); (F) as (C), the slow jobs saving a checkpoint every
      10 ms with no time slice: preemption pauses one for a waiting fast job when both workers
      are busy (pyscheduler only); (G) as (F) with preemption off, which shows what the
      checkpoints alone cost. Fast-job wait (enqueue to start) p50/p99 and the makespan
      (first enqueue to last end).
  ceiling  the raw rate of the library's psq_enqueue, psq_pop and psq_complete as FCALLs
      pipelined 1,000 deep over a raw socket (no client library in the way), and the server's
      own microseconds per call (INFO commandstats): what Redis itself allows; also pops of 64
      jobs and psq_complete_many of 64, the calls a prefetching worker sends.
  producer  pyscheduler's enqueue path alone: one `Queue.enqueue` against a bare LPUSH from
      the same client in the same loop (interleaved blocks; the redis-py version shown), one
      thread against 16 threads sharing one client (automatic pipelining), and the Redis
      memory (INFO used_memory) a queued no-op job holds, over 100,000 jobs.
  aio  the asyncio client (`pyscheduler.aio`): one coroutine enqueueing no-op jobs one await
      at a time, against 200 coroutines sharing one client (their enqueues share round trips).

Figures are the median of --runs runs (pyscheduler, default 3) with min and max; each peer
runs --peer-runs times (default 1, which keeps the default run near 10 minutes with six peers).
Results and the machine they ran on: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

TOOLS_DIR = Path(__file__).resolve().parent
ROOT = TOOLS_DIR.parent
if str(TOOLS_DIR) not in sys.path:
    sys.path.insert(0, str(TOOLS_DIR))

import hiredis  # noqa: E402
import redis  # noqa: E402

from pyscheduler import Queue  # noqa: E402
from pyscheduler.dev.engine import Engine  # noqa: E402
from pyscheduler.runtime.worker import PREFETCH_MAX  # noqa: E402
from pyscheduler.store import calls, library  # noqa: E402
from pyscheduler.store.keys import QueueKeys  # noqa: E402
from pyscheduler.store.protocol import ENQUEUE_BATCH_MAX  # noqa: E402

WORKLOADS = ("W1", "W2", "W3", "W4", "ceiling", "producer", "aio")
OUT_KEY = "bench:out"
URL_ENV = "BENCH_REDIS_URL"
NOOP_MODE_ENV = "BENCH_NOOP_MODE"  # bench_handlers.NOOP_MODE_ENV
START = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - START:6.1f} s] {message}", file=sys.stderr, flush=True)


# -- results ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str  # "jobs/s", "calls/s", "ms", "s", "us"
    higher_is_better: bool
    section: str


def _metrics() -> list[Metric]:
    out = [
        Metric("w1_one", "enqueue one at a time", "jobs/s", True, "W1"),
        Metric("w1_bulk", "enqueue in bulk", "jobs/s", True, "W1"),
        Metric("w2_1", "drain, 1 worker", "jobs/s", True, "W2"),
        Metric("w2_2", "drain, 2 workers", "jobs/s", True, "W2"),
        Metric("w2n_1", "drain, 1 worker, no-op handlers", "jobs/s", True, "W2"),
        Metric("w2n_2", "drain, 2 workers, no-op handlers", "jobs/s", True, "W2"),
        Metric("w2n_1_redis", "no-op drain, 1 worker: Redis CPU", "us/job", False, "W2"),
        Metric("w2n_2_redis", "no-op drain, 2 workers: Redis CPU", "us/job", False, "W2"),
        Metric("w2n_1_worker", "no-op drain, 1 worker: worker CPU", "us/job", False, "W2"),
        Metric("w2n_2_worker", "no-op drain, 2 workers: worker CPU", "us/job", False, "W2"),
        Metric("w3_p50", "enqueue-to-start p50", "ms", False, "W3"),
        Metric("w3_p99", "enqueue-to-start p99", "ms", False, "W3"),
        Metric("w3_max", "enqueue-to-start max", "ms", False, "W3"),
    ]
    for variant, what in VARIANT_TITLES.items():
        out += [
            Metric(f"w4{variant}_p50", f"({variant}) {what}: fast wait p50", "ms", False, "W4"),
            Metric(f"w4{variant}_p99", f"({variant}) {what}: fast wait p99", "ms", False, "W4"),
            Metric(f"w4{variant}_span", f"({variant}) {what}: makespan", "s", False, "W4"),
        ]
    out += [
        Metric("c_enqueue", "psq_enqueue, 1 job per call", "calls/s", True, "ceiling"),
        Metric("c_enqueue_batch", "psq_enqueue, 1,000 jobs per call", "jobs/s", True, "ceiling"),
        Metric("c_pop", "psq_pop, 1 job per call", "calls/s", True, "ceiling"),
        Metric("c_complete", "psq_complete", "calls/s", True, "ceiling"),
        Metric("c_drain", "pop + complete per job", "jobs/s", True, "ceiling"),
        Metric(
            "c_drain_batch",
            f"pop + complete_many, {PREFETCH_MAX} jobs per call",
            "jobs/s",
            True,
            "ceiling",
        ),
        Metric("c_enqueue_us", "psq_enqueue in Redis", "us/call", False, "ceiling"),
        Metric("c_pop_us", "psq_pop in Redis", "us/call", False, "ceiling"),
        Metric("c_complete_us", "psq_complete in Redis", "us/call", False, "ceiling"),
    ]
    return out


def producer_metrics() -> list[Metric]:
    return [
        Metric("p_lpush_us", "bare LPUSH round trip", "us", False, "producer"),
        Metric("p_enqueue_us", "Queue.enqueue, one no-op job", "us", False, "producer"),
        Metric(
            "p_ratio",
            f"enqueue ÷ bare LPUSH (redis-py {redis.__version__})",
            "x",
            False,
            "producer",
        ),
        Metric("p_threads_1", "enqueue, 1 thread", "jobs/s", True, "producer"),
        Metric("p_threads_16", "enqueue, 16 threads sharing a client", "jobs/s", True, "producer"),
        Metric("p_threads_ratio", "16 threads ÷ 1 thread", "x", True, "producer"),
        Metric("p_memory", "Redis memory per queued no-op job", "bytes", False, "producer"),
    ]


VARIANT_TITLES = {
    "A": "one FIFO queue",
    "B": "fast + slow queues, a worker each",
    "C": "one queue, fast at higher priority",
    "D": "both take fast then slow, slow limit 1",
    "E": "one FIFO queue, slow jobs in 50 ms time slices",
    "F": "one queue, fast at higher priority, slow jobs preempted",
    "G": "as (F), preemption off: the checkpoints' own cost",
}
AIO_COROUTINES = 200


def aio_metrics() -> list[Metric]:
    return [
        Metric("a_1", "async enqueue, 1 coroutine", "jobs/s", True, "aio"),
        Metric(
            "a_many",
            f"async enqueue, {AIO_COROUTINES} coroutines sharing a client",
            "jobs/s",
            True,
            "aio",
        ),
        Metric("a_ratio", f"async enqueue: {AIO_COROUTINES} coroutines ÷ 1", "x", True, "aio"),
    ]


METRICS = _metrics() + producer_metrics() + aio_metrics()


@dataclass
class Results:
    values: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    missing: dict[str, dict[str, str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, metric: str, system: str, value: float) -> None:
        self.values.setdefault(metric, {}).setdefault(system, []).append(value)

    def na(self, metric: str, system: str, reason: str) -> None:
        self.missing.setdefault(metric, {})[system] = reason

    def note(self, text: str) -> None:
        self.notes.append(text)
        progress(f"note: {text}")

    def median(self, metric: str, system: str) -> float | None:
        runs = self.values.get(metric, {}).get(system)
        return statistics.median(runs) if runs else None


# -- worker processes ------------------------------------------------------------------------------


class WorkerDied(RuntimeError):
    pass


class WorkerGroup:
    """Worker processes of one system, each in its own session, stopped by their ids."""

    def __init__(
        self,
        system: Any,
        queue_sets: Sequence[Sequence[str]],
        logdir: Path,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        from bench_peers.base import worker_env

        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        env = {**worker_env(system.url), **(extra_env or {})}
        stamp = f"{system.name}-{int(time.monotonic() * 1000)}"
        for index, queues in enumerate(queue_sets):
            log = logdir / f"{stamp}-{index}.log"
            self.logs.append(log)
            with open(log, "wb") as out:
                self.procs.append(
                    subprocess.Popen(
                        system.worker_command(list(queues), index),
                        cwd=TOOLS_DIR,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )

    def check(self) -> None:
        for proc, log in zip(self.procs, self.logs, strict=True):
            if proc.poll() is not None:
                tail = log.read_text(errors="replace").strip().splitlines()[-15:]
                raise WorkerDied(
                    f"worker exited with code {proc.returncode}:\n  " + "\n  ".join(tail)
                )

    def _signal(self, sig: signal.Signals) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, sig)

    def stop(self) -> None:
        self._signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        # Kill whatever is left of each group (a forked child may outlive its parent).
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)


@contextlib.contextmanager
def workers(
    system: Any,
    queue_sets: Sequence[Sequence[str]],
    logdir: Path,
    extra_env: dict[str, str] | None = None,
) -> Iterator[WorkerGroup]:
    group = WorkerGroup(system, queue_sets, logdir, extra_env)
    try:
        yield group
    finally:
        group.stop()


def wait_records(
    conn: redis.Redis,
    want: int,
    timeout: float,
    group: WorkerGroup | None = None,
    give_up: bool = False,
) -> int:
    """Poll the output list until it holds `want` records or `timeout` passes.

    With `give_up`, stop early once the last 3 s show that the rest cannot be done in time.
    """
    start = time.monotonic()
    deadline = start + timeout
    next_check = 0.0
    seen: list[tuple[float, int]] = []
    while True:
        now = time.monotonic()
        have = int(conn.llen(OUT_KEY))
        if have >= want or now >= deadline:
            return have
        if now >= next_check:
            if group is not None:
                group.check()
            next_check = now + 1.0
            seen.append((now, have))
            old = [(t, h) for t, h in seen if t <= now - 3]
            if give_up and old:
                rate = (have - old[-1][1]) / (now - old[-1][0])
                if rate * (deadline - now) < want - have:
                    return have
        time.sleep(0.02)


def counted(conn: redis.Redis) -> int:
    """Jobs the no-op handlers counted ("<count> <time>" records, see bench_handlers)."""
    return sum(int(line.split()[0]) for line in records(conn))


def wait_counted(conn: redis.Redis, want: int, timeout: float, group: WorkerGroup) -> int:
    """Poll the counts until they add up to `want` or `timeout` passes."""
    deadline = time.monotonic() + timeout
    next_check = 0.0
    while True:
        have = counted(conn)
        now = time.monotonic()
        if have >= want or now >= deadline:
            return have
        if now >= next_check:
            group.check()
            next_check = now + 1.0
        time.sleep(0.02)


def redis_cpu(conn: redis.Redis) -> float:
    """CPU seconds the Redis server has used (user + system, every thread)."""
    info = conn.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def group_cpu(group: WorkerGroup) -> float:
    """CPU seconds used by the workers' processes (each started in a session of its own, so
    its process group id is its pid) and by their children that ended."""
    sessions = {proc.pid for proc in group.procs}
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) in sessions:  # field 5 of stat: the process group
                ticks += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def records(conn: redis.Redis) -> list[str]:
    return [x.decode() for x in conn.lrange(OUT_KEY, 0, -1)]


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = q / 100 * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# -- the workloads ---------------------------------------------------------------------------------


@dataclass
class Config:
    runs: int
    peer_runs: int
    jobs: int  # W1, W2
    latency_jobs: int  # W3
    latency_gap: float  # W3 seconds between enqueues
    hol_seconds: float  # W4 enqueue window
    hol_slow: int
    hol_fast: int
    slow_seconds: float
    fast_seconds: float
    drain_cap: float
    ceiling_calls: int


class Bench:
    def __init__(self, url: str, config: Config, results: Results, logdir: Path) -> None:
        self.url = url
        self.conn = redis.Redis.from_url(url)
        self.config = config
        self.results = results
        self.logdir = logdir

    def runs(self, system: Any) -> int:
        return self.config.runs if system.name == "pyscheduler" else self.config.peer_runs

    def reset(self, system: Any) -> None:
        """Empty Redis (the Lua library stays: FLUSHALL keeps functions) for a new run."""
        self.conn.flushall()
        system.prepare_run()

    # W1 + W2: each run fills the queue (timed: W1) and drains it (W2).
    def enqueue_and_drain(self, system: Any, do_w1: bool, do_w2: bool) -> None:
        name, cfg = system.name, self.config
        n = cfg.jobs
        bulk_missing = system.unsupported.get("bulk")
        if do_w1 and bulk_missing:
            self.results.na("w1_bulk", name, bulk_missing)
        for run in range(self.runs(system)):
            for mode, workers_n in (("one", 1), ("bulk", 2)):
                self.reset(system)
                if do_w1 and (mode == "one" or not bulk_missing):
                    if mode == "one":
                        seconds = system.enqueue_noops(n, "bench")
                    else:
                        seconds = system.enqueue_noops_bulk(n, "bench")
                    self.results.add(f"w1_{mode}", name, n / seconds)
                    progress(f"{name} W1 {mode} run {run + 1}: {n / seconds:,.0f} jobs/s")
                elif do_w2:
                    system.fill(n, "bench")
                if do_w2:
                    self.drain(system, n, workers_n, run)
        self.reset(system)

    def drain(self, system: Any, n: int, workers_n: int, run: int) -> None:
        name, cap = system.name, self.config.drain_cap
        with workers(system, [["bench"]] * workers_n, self.logdir) as group:
            if wait_records(self.conn, 1, 120, group) < 1:
                raise WorkerDied("no job ran within 120 s of starting the workers")
            done = wait_records(self.conn, n, cap, group)
        stamps = sorted(float(x) for x in records(self.conn))
        skip = max(1, len(stamps) // 20)
        if len(stamps) - skip < 10:
            raise RuntimeError(f"only {len(stamps)} jobs ran in {cap} s")
        rate = (len(stamps) - skip - 1) / (stamps[-1] - stamps[skip])
        self.results.add(f"w2_{workers_n}", name, rate)
        if done < n:
            self.results.note(
                f"{name} W2 {workers_n} worker(s) run {run + 1}: partial, {len(stamps):,} of"
                f" {n:,} jobs in the {cap:.0f} s cap"
            )
        progress(f"{name} W2 {workers_n} worker(s) run {run + 1}: {rate:,.0f} jobs/s")

    # W2, no-op handlers (bench_handlers: counted in memory, flushed every 10 ms)
    def counted_drains(self, system: Any) -> None:
        n = self.config.jobs
        for run in range(self.runs(system)):
            for workers_n in (1, 2):
                self.reset(system)
                system.fill(n, "bench")
                self.counted_drain(system, n, workers_n, run)
        self.reset(system)

    def counted_drain(self, system: Any, n: int, workers_n: int, run: int) -> None:
        name, cap = system.name, self.config.drain_cap
        env = {NOOP_MODE_ENV: "count"}
        with workers(system, [["bench"]] * workers_n, self.logdir, env) as group:
            if wait_counted(self.conn, 1, 120, group) < 1:
                raise WorkerDied("no job ran within 120 s of starting the workers")
            # CPU from the first flush on: the workers have started by then.
            done0, redis0, workers0 = counted(self.conn), redis_cpu(self.conn), group_cpu(group)
            done = wait_counted(self.conn, n, cap, group)
            redis1, workers1 = redis_cpu(self.conn), group_cpu(group)
        points = sorted(
            (float(t), int(c)) for c, t in (line.split() for line in records(self.conn))
        )
        total, skip = 0, max(1, n // 20)
        cumulative = []
        for at, count in points:
            total += count
            cumulative.append((at, total))
        start = next(((t, c) for t, c in cumulative if c >= skip), None)
        if start is None or total - start[1] < 10 or cumulative[-1][0] <= start[0]:
            raise RuntimeError(f"only {total} jobs ran in {cap} s")
        rate = (total - start[1]) / (cumulative[-1][0] - start[0])
        self.results.add(f"w2n_{workers_n}", name, rate)
        jobs = max(1, done - done0)
        self.results.add(f"w2n_{workers_n}_redis", name, (redis1 - redis0) / jobs * 1e6)
        self.results.add(f"w2n_{workers_n}_worker", name, (workers1 - workers0) / jobs * 1e6)
        if done < n:
            self.results.note(
                f"{name} W2 no-op {workers_n} worker(s) run {run + 1}: partial, {done:,} of"
                f" {n:,} jobs in the {cap:.0f} s cap"
            )
        progress(
            f"{name} W2 no-op {workers_n} worker(s) run {run + 1}: {rate:,.0f} jobs/s;"
            f" CPU per job: Redis {(redis1 - redis0) / jobs * 1e6:.1f} us,"
            f" workers {(workers1 - workers0) / jobs * 1e6:.1f} us;"
            f" load {os.getloadavg()[0]:.2f}"
        )

    # W3
    def idle_latency(self, system: Any) -> None:
        from bench_peers.base import PlannedJob

        name, cfg = system.name, self.config
        self.reset(system)
        with workers(system, [["bench"]], self.logdir) as group:
            system.enqueue("timed", (time.time(),), "bench")  # warm-up: the worker is ready
            if wait_records(self.conn, 1, 120, group) < 1:
                raise WorkerDied("the warm-up job did not run within 120 s")
            plan = [
                PlannedJob(i * cfg.latency_gap, "timed", "bench") for i in range(cfg.latency_jobs)
            ]
            for run in range(self.runs(system)):
                self.conn.delete(OUT_KEY)
                time.sleep(0.2)
                system.run_plan(plan)
                got = wait_records(self.conn, len(plan), 15, group, give_up=True)
                if got < len(plan):
                    raise RuntimeError(
                        f"a backlog built up: {got} of {len(plan)} jobs had started when the"
                        " rest could no longer start within 15 s of the last enqueue"
                    )
                waits = []
                for line in records(self.conn):
                    enqueued, started = (float(x) for x in line.split())
                    waits.append((started - enqueued) * 1000)
                for q, key in ((50, "w3_p50"), (99, "w3_p99"), (100, "w3_max")):
                    self.results.add(key, name, percentile(waits, q))
                progress(
                    f"{name} W3 run {run + 1}: p50 {percentile(waits, 50):.2f} ms,"
                    f" p99 {percentile(waits, 99):.2f} ms, max {max(waits):.2f} ms"
                )
        self.reset(system)

    # W4
    def head_of_line(self, system: Any, variant: str) -> None:
        from bench_peers.base import PlannedJob

        name, cfg = system.name, self.config
        spec = VARIANTS[variant]
        missing = [system.unsupported[f] for f in spec["needs"] if f in system.unsupported]
        missing += [
            FEATURE_MISSING.get(f, f"no {f.replace('_', ' ')}s")
            for f in spec.get("features", ())
            if f not in system.features
        ]
        if missing:
            for suffix in ("p50", "p99", "span"):
                self.results.na(f"w4{variant}_{suffix}", name, "; ".join(missing))
            return
        self.reset(system)
        if "limit" in spec:
            system.set_concurrency_limit(*spec["limit"])
        if spec.get("preemption_off"):  # only systems with the "preemption" feature get here
            system.queue(spec["slow"][0]).set_preemption(False)
        fast_queue, fast_priority = spec["fast"]
        slow_queue, slow_priority = spec["slow"]
        total = cfg.hol_fast + cfg.hol_slow
        slow_at = {round((j + 0.5) * total / cfg.hol_slow) for j in range(cfg.hol_slow)}
        plan = [
            PlannedJob(
                i * cfg.hol_seconds / total,
                spec.get("slow_func", "sleeper") if i in slow_at else "sleeper",
                slow_queue if i in slow_at else fast_queue,
                slow_priority if i in slow_at else fast_priority,
                "slow" if i in slow_at else "fast",
                cfg.slow_seconds if i in slow_at else cfg.fast_seconds,
            )
            for i in range(total)
        ]
        with workers(system, spec["workers"], self.logdir) as group:
            self.warm_up(system, spec["warm"], group)
            for run in range(self.runs(system)):
                self.conn.delete(OUT_KEY)
                time.sleep(0.2)
                system.run_plan(plan)
                timeout = cfg.hol_slow * cfg.slow_seconds + 30
                got = wait_records(self.conn, total, timeout, group, give_up=True)
                if got < total:
                    raise RuntimeError(
                        f"{got} of {total} jobs had run when the rest could no longer run within"
                        f" {timeout:.0f} s of the last enqueue"
                    )
                waits, first_enqueue, last_end = [], float("inf"), 0.0
                for line in records(self.conn):
                    kind, enqueued, started, ended = line.split()
                    first_enqueue = min(first_enqueue, float(enqueued))
                    last_end = max(last_end, float(ended))
                    if kind == "fast":
                        waits.append((float(started) - float(enqueued)) * 1000)
                p50, p99, span = (
                    percentile(waits, 50),
                    percentile(waits, 99),
                    last_end - first_enqueue,
                )
                self.results.add(f"w4{variant}_p50", name, p50)
                self.results.add(f"w4{variant}_p99", name, p99)
                self.results.add(f"w4{variant}_span", name, span)
                progress(
                    f"{name} W4 ({variant}) run {run + 1}: fast wait p50 {p50:.1f} ms,"
                    f" p99 {p99:.1f} ms, makespan {span:.2f} s"
                )
        self.reset(system)

    def warm_up(self, system: Any, queues: Sequence[str], group: WorkerGroup) -> None:
        """Run short jobs until every worker is taking jobs (two on one queue at once)."""
        for attempt in range(8):
            self.conn.delete(OUT_KEY)
            for queue in queues:
                system.enqueue("sleeper", ("warm", time.time(), 0.4), queue)
            timeout = 120 if attempt == 0 else 15
            if wait_records(self.conn, len(queues), timeout, group) < len(queues):
                raise WorkerDied(f"warm-up jobs did not run within {timeout} s")
            starts = sorted(float(line.split()[2]) for line in records(self.conn))
            if len(set(queues)) == len(queues) or starts[-1] - starts[0] < 0.25:
                break
        else:
            self.results.note(f"{system.name}: could not see both workers run at once (warm-up)")
        self.conn.delete(OUT_KEY)


# Why a system shows "n/a" for a workload that needs a feature only some have.
FEATURE_MISSING = {
    "time_slice": "no time slices (a job paused at a checkpoint and queued again)",
    "preemption": "no preemption (a running job paused for a job of higher priority)",
}

VARIANTS: dict[str, dict[str, Any]] = {
    "A": {
        "workers": [["bench"], ["bench"]],
        "fast": ("bench", 0),
        "slow": ("bench", 0),
        "warm": ["bench", "bench"],
        "needs": (),
    },
    "B": {
        "workers": [["fast"], ["slow"]],
        "fast": ("fast", 0),
        "slow": ("slow", 0),
        "warm": ["fast", "slow"],
        "needs": (),
    },
    "C": {
        "workers": [["prio"], ["prio"]],
        "fast": ("prio", 10),
        "slow": ("prio", 0),
        "warm": ["prio", "prio"],
        "needs": ("priority",),
    },
    "D": {
        "workers": [["fast", "slow"], ["fast", "slow"]],
        "fast": ("fast", 0),
        "slow": ("slow", 0),
        "warm": ["fast", "fast"],
        "needs": ("limit",),
        "limit": ("slow", 1),
    },
    "E": {
        "workers": [["bench"], ["bench"]],
        "fast": ("bench", 0),
        "slow": ("bench", 0),
        "warm": ["bench", "bench"],
        "needs": (),
        "features": ("time_slice",),
        "slow_func": "sliced_sleeper",
    },
    "F": {
        "workers": [["prio"], ["prio"]],
        "fast": ("prio", 10),
        "slow": ("prio", 0),
        "warm": ["prio", "prio"],
        "needs": ("priority",),
        "features": ("preemption",),
        "slow_func": "checkpointing_sleeper",
    },
    "G": {
        "workers": [["prio"], ["prio"]],
        "fast": ("prio", 10),
        "slow": ("prio", 0),
        "warm": ["prio", "prio"],
        "needs": ("priority",),
        "features": ("preemption",),
        "slow_func": "checkpointing_sleeper",
        "preemption_off": True,
    },
}


# -- the ceiling: raw FCALLs, pipelined ------------------------------------------------------------


def resp(*parts: Any) -> bytes:
    """One command in the Redis protocol (as redis-py encodes it: str() of numbers)."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = (
            part
            if isinstance(part, bytes)
            else (part if isinstance(part, str) else repr(part)).encode()
        )
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def pipelined(url: str, commands: Sequence[bytes], depth: int = 1000) -> tuple[float, list[Any]]:
    """Send the commands `depth` at a time over a raw socket; (seconds, replies)."""
    parsed = urlparse(url)
    chunks = [b"".join(commands[i : i + depth]) for i in range(0, len(commands), depth)]
    sizes = [len(commands[i : i + depth]) for i in range(0, len(commands), depth)]
    reader = hiredis.Reader()
    replies: list[Any] = []
    with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = time.perf_counter()
        for chunk, size in zip(chunks, sizes, strict=True):
            sock.sendall(chunk)
            want = len(replies) + size
            while len(replies) < want:
                data = sock.recv(1 << 20)
                if not data:
                    raise ConnectionError("Redis closed the connection")
                reader.feed(data)
                while (reply := reader.gets()) is not False:
                    replies.append(reply)
        seconds = time.perf_counter() - start
    errors = [r for r in replies if isinstance(r, Exception)]
    if errors:
        raise RuntimeError(f"{len(errors)} calls failed, e.g. {errors[0]}")
    return seconds, replies


def fcall_usec(conn: redis.Redis) -> float:
    stats = conn.info("commandstats").get("cmdstat_fcall", {})
    return float(stats.get("usec_per_call", float("nan")))


def batched_drain_rate(url: str, keys: QueueKeys, n: int) -> float:
    """Jobs/s of what a prefetching worker sends: pops of PREFETCH_MAX jobs, then
    psq_complete_many of as many (the `n` jobs enqueued just before)."""
    pop = resp(
        "FCALL",
        "psq_pop",
        calls.POP_NUMKEYS,
        *calls.pop_args(keys, 1, 60_000, "bench", PREFETCH_MAX - 1),
    )
    pop_seconds, replies = pipelined(url, [pop] * -(-n // PREFETCH_MAX))
    leases = [lease for reply in replies for lease in calls.parse_pop_reply(keys, reply).leases]
    if len(leases) != n:
        raise RuntimeError(f"the batched pops leased {len(leases)} of {n} jobs")
    completes = []
    for i in range(0, n, PREFETCH_MAX):
        items = [(lease.id, lease.token, "null") for lease in leases[i : i + PREFETCH_MAX]]
        numkeys, args = calls.complete_many_args(keys, items)
        completes.append(resp("FCALL", "psq_complete_many", numkeys, *args))
    complete_seconds, _ = pipelined(url, completes)
    return n / (pop_seconds + complete_seconds)


def measure_ceiling(url: str, config: Config, results: Results) -> None:
    import bench_tasks

    conn = redis.Redis.from_url(url)
    library.load(conn)
    queue = Queue("ceiling", connection=conn)
    keys, n = queue.keys, config.ceiling_calls
    for run in range(config.runs):
        conn.flushall()
        jobs = [queue.prepare(bench_tasks.noop) for _ in range(n)]
        enqueue = [
            resp(
                "FCALL",
                "psq_enqueue",
                calls.ENQUEUE_NUMKEYS,
                *calls.enqueue_args(keys, [job]),
            )
            for job in jobs
        ]
        conn.config_resetstat()
        enqueue_seconds, _ = pipelined(url, enqueue)
        results.add("c_enqueue", "pyscheduler", n / enqueue_seconds)
        results.add("c_enqueue_us", "pyscheduler", fcall_usec(conn))

        pop = resp("FCALL", "psq_pop", calls.POP_NUMKEYS, *calls.pop_args(keys, 1, 60_000, "bench"))
        conn.config_resetstat()
        seconds, replies = pipelined(url, [pop] * n)
        results.add("c_pop", "pyscheduler", n / seconds)
        results.add("c_pop_us", "pyscheduler", fcall_usec(conn))
        leases = [lease for reply in replies for lease in calls.parse_pop_reply(keys, reply).leases]
        if len(leases) != n:
            raise RuntimeError(f"the pops leased {len(leases)} of {n} jobs")
        complete = [
            resp(
                "FCALL",
                "psq_complete_many",
                calls.COMPLETE_NUMKEYS,
                *calls.complete_args(keys, lease.id, lease.token, "null"),
            )
            for lease in leases
        ]
        conn.config_resetstat()
        seconds, _ = pipelined(url, complete)
        results.add("c_complete", "pyscheduler", n / seconds)
        results.add("c_complete_us", "pyscheduler", fcall_usec(conn))
        pop_rate, complete_rate = results.values["c_pop"]["pyscheduler"][-1], n / seconds
        results.add("c_drain", "pyscheduler", 1 / (1 / pop_rate + 1 / complete_rate))

        conn.flushall()
        batch = 1000
        jobs = [queue.prepare(bench_tasks.noop) for _ in range(n)]
        batches = [
            resp(
                "FCALL",
                "psq_enqueue",
                calls.ENQUEUE_NUMKEYS,
                *calls.enqueue_args(keys, jobs[i : i + batch]),
            )
            for i in range(0, n, batch)
        ]
        seconds, _ = pipelined(url, batches, depth=10)
        results.add("c_enqueue_batch", "pyscheduler", n / seconds)
        results.add("c_drain_batch", "pyscheduler", batched_drain_rate(url, keys, n))
        progress(
            f"ceiling run {run + 1}: enqueue {n / enqueue_seconds:,.0f}/s,"
            f" pop {pop_rate:,.0f}/s, complete {complete_rate:,.0f}/s"
        )
    conn.flushall()
    conn.close()


# -- producer: the enqueue path against the client's own round trip ------------------------------


def per_call_us(call: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - start) / n * 1e6


def threaded_enqueue_rate(queue: Queue, threads: int, n: int) -> float:
    """Jobs/s of `threads` threads enqueueing `n` no-op jobs in all, one call each, through
    the queue's one client."""
    import threading

    import bench_tasks

    start_line = threading.Barrier(threads + 1)
    each = n // threads

    def produce() -> None:
        start_line.wait()
        for _ in range(each):
            queue.enqueue(bench_tasks.noop)

    pool = [threading.Thread(target=produce) for _ in range(threads)]
    for thread in pool:
        thread.start()
    start_line.wait()
    start = time.perf_counter()
    for thread in pool:
        thread.join()
    return each * threads / (time.perf_counter() - start)


MEMORY_JOBS = 100_000


def measure_producer(url: str, config: Config, results: Results) -> None:
    import bench_tasks

    conn = redis.Redis.from_url(url)
    library.load(conn)
    noop, n = bench_tasks.noop, config.ceiling_calls
    for run in range(config.runs):
        conn.flushall()
        queue = Queue("producer", connection=conn)
        queue.enqueue(noop)  # the first call reads limits, checks the library, registers
        # Interleaved blocks, so both see the same load on a shared machine.
        lpush, enqueue = [], []
        push_one = functools.partial(conn.lpush, "bench:lpush", 1)
        enqueue_one = functools.partial(queue.enqueue, noop)
        for _ in range(10):
            lpush.append(per_call_us(push_one, n // 10))
            enqueue.append(per_call_us(enqueue_one, n // 10))
        lpush_us, enqueue_us = statistics.median(lpush), statistics.median(enqueue)
        results.add("p_lpush_us", "pyscheduler", lpush_us)
        results.add("p_enqueue_us", "pyscheduler", enqueue_us)
        results.add("p_ratio", "pyscheduler", enqueue_us / lpush_us)

        conn.flushall()
        one = threaded_enqueue_rate(queue, 1, n)
        sixteen = threaded_enqueue_rate(queue, 16, n)
        results.add("p_threads_1", "pyscheduler", one)
        results.add("p_threads_16", "pyscheduler", sixteen)
        results.add("p_threads_ratio", "pyscheduler", sixteen / one)

        conn.flushall()
        queue = Queue("memory", connection=conn)
        queue.enqueue(noop)
        conn.delete(queue.keys.jobs, queue.keys.ready, queue.keys.events)
        before = int(conn.info("memory")["used_memory"])
        for _ in range(MEMORY_JOBS // ENQUEUE_BATCH_MAX):
            queue.enqueue_many([queue.prepare(noop) for _ in range(ENQUEUE_BATCH_MAX)])
        after = int(conn.info("memory")["used_memory"])
        results.add("p_memory", "pyscheduler", (after - before) / MEMORY_JOBS)
        keys = queue.keys
        parts = {
            name: (conn.memory_usage(key, samples=0) or 0) / MEMORY_JOBS
            for name, key in (
                ("jobs", keys.jobs),
                ("ready", keys.ready),
                ("payloads", keys.payloads),
                ("events", keys.events),
            )
        }
        progress(
            f"producer run {run + 1}: LPUSH {lpush_us:.1f} us, enqueue {enqueue_us:.1f} us"
            f" ({enqueue_us / lpush_us:.2f}x, spread {min(enqueue):.1f}-{max(enqueue):.1f} us);"
            f" 1 thread {one:,.0f}/s, 16 threads {sixteen:,.0f}/s ({sixteen / one:.2f}x);"
            f" {(after - before) / MEMORY_JOBS:.0f} bytes per queued job ("
            + ", ".join(f"{name} {size:.0f}" for name, size in parts.items())
            + ")"
        )
    conn.flushall()
    conn.close()


# -- aio: the asyncio client's enqueues, one coroutine against many ------------------------------


def async_enqueue_rate(url: str, coroutines: int, n: int) -> float:
    """Jobs/s of `coroutines` coroutines enqueueing `n` no-op jobs in all, one await each,
    through one redis.asyncio client, in a fresh event loop."""
    import asyncio

    import bench_tasks
    import redis.asyncio

    from pyscheduler import aio

    async def main() -> float:
        async with redis.asyncio.Redis.from_url(url) as client:
            queue = aio.Queue("aio", connection=client)
            await queue.enqueue(bench_tasks.noop)  # checks the library, reads limits, registers
            each = n // coroutines

            async def produce() -> None:
                for _ in range(each):
                    await queue.enqueue(bench_tasks.noop)

            start = time.perf_counter()
            await asyncio.gather(*(produce() for _ in range(coroutines)))
            return each * coroutines / (time.perf_counter() - start)

    return asyncio.run(main())


def measure_aio(url: str, config: Config, results: Results) -> None:
    conn = redis.Redis.from_url(url)
    library.load(conn)
    n = config.ceiling_calls
    for run in range(config.runs):
        conn.flushall()
        one = async_enqueue_rate(url, 1, n)
        conn.flushall()
        many = async_enqueue_rate(url, AIO_COROUTINES, n)
        results.add("a_1", "pyscheduler", one)
        results.add("a_many", "pyscheduler", many)
        results.add("a_ratio", "pyscheduler", many / one)
        progress(
            f"aio run {run + 1}: 1 coroutine {one:,.0f}/s, {AIO_COROUTINES} coroutines"
            f" {many:,.0f}/s ({many / one:.2f}x)"
        )
    conn.flushall()
    conn.close()


# -- output ----------------------------------------------------------------------------------------


def fmt(value: float, unit: str) -> str:
    if value != value:  # NaN
        return "nan"
    if unit in ("jobs/s", "calls/s"):
        return f"{value:,.0f}"
    if unit == "s":
        return f"{value:.2f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def cell(results: Results, metric: Metric, system: str) -> str:
    runs = results.values.get(metric.key, {}).get(system)
    if not runs:
        reason = results.missing.get(metric.key, {}).get(system)
        return "n/a" if reason is None else "n/a*"
    text = fmt(statistics.median(runs), metric.unit)
    if len(runs) > 1:
        text += f" ({fmt(min(runs), metric.unit)}-{fmt(max(runs), metric.unit)})"
    return text


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append(
            "| "
            + " | ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
            + " |"
        )
        if n == 0:
            lines.append(
                "|"
                + "|".join(
                    "-" * (w + 1) + ":" if i else ":" + "-" * (w + 1) for i, w in enumerate(widths)
                )
                + "|"
            )
    return "\n".join(lines)


def report(results: Results, systems: list[str], config: Config) -> str:
    out: list[str] = []
    runs, peer_runs = config.runs, config.peer_runs
    spread = f"median of {runs} runs (min-max)" if runs > 1 else "1 run"
    if len(systems) > 1 and peer_runs != runs:
        spread += f"; peers: {peer_runs} run" + ("s" if peer_runs > 1 else "")
    for section in WORKLOADS:
        metrics = [
            m
            for m in METRICS
            if m.section == section and m.key in {*results.values, *results.missing}
        ]
        if not metrics:
            continue
        shown = ["pyscheduler"] if section in ("ceiling", "producer", "aio") else systems
        rows = [[f"{section}: {spread}", "unit", *shown]]
        for m in metrics:
            rows.append(
                [
                    m.label,
                    m.unit + (" ↑" if m.higher_is_better else " ↓"),
                    *(cell(results, m, s) for s in shown),
                ]
            )
        out += [table(rows), ""]
    peers = [s for s in systems if s != "pyscheduler"]
    ratio_rows = [["peer ÷ pyscheduler (medians)", "better", *peers]]
    for m in METRICS:
        if m.section in ("ceiling", "producer", "aio"):
            continue
        base = results.median(m.key, "pyscheduler")
        if base is None:
            continue
        row = [m.label, "↑" if m.higher_is_better else "↓"]
        for peer in peers:
            value = results.median(m.key, peer)
            row.append("n/a" if value is None or base == 0 else f"{value / base:.2f}x")
        ratio_rows.append(row)
    if peers and len(ratio_rows) > 1:
        out += [table(ratio_rows), ""]
    fractions = [
        ("W1 one at a time ÷ psq_enqueue calls/s", "w1_one", "c_enqueue"),
        ("W1 in bulk ÷ psq_enqueue 1,000-job calls", "w1_bulk", "c_enqueue_batch"),
        ("W2 1 worker ÷ pop + complete ceiling", "w2_1", "c_drain"),
        ("W2 2 workers ÷ pop + complete ceiling", "w2_2", "c_drain"),
        ("W2 1 worker ÷ batched pop + complete_many ceiling", "w2_1", "c_drain_batch"),
        ("W2 2 workers ÷ batched pop + complete_many ceiling", "w2_2", "c_drain_batch"),
        ("W2 no-op handlers: 2 workers ÷ 1 worker", "w2n_2", "w2n_1"),
        ("W4 (F) makespan ÷ (A) makespan", "w4F_span", "w4A_span"),
        (
            "W4 (F) makespan ÷ (G) makespan (the same checkpoints, no preemption)",
            "w4F_span",
            "w4G_span",
        ),
    ]
    frac_rows = [["pyscheduler as a share of the Redis ceiling", "share"]]
    for label, key, ceiling in fractions:
        value, limit = results.median(key, "pyscheduler"), results.median(ceiling, "pyscheduler")
        if value is not None and limit:
            frac_rows.append([label, f"{100 * value / limit:.1f}%"])
    if len(frac_rows) > 1:
        out += [table(frac_rows), ""]
    reasons = sorted(
        {(s, r) for by_system in results.missing.values() for s, r in by_system.items()}
    )
    if reasons:
        out.append("n/a* (not supported or failed):")
        out += [f"- {s}: {r}" for s, r in reasons]
        out.append("")
    if results.notes:
        out.append("Notes:")
        out += [f"- {n}" for n in results.notes]
        out.append("")
    return "\n".join(out)


def machine_info(conn: redis.Redis) -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    server = conn.info("server")
    kind = "valkey" if "valkey_version" in server else "redis"
    versions = {}
    for dist in ("redis", "hiredis", "rq", "dramatiq", "arq", "huey", "saq", "celery", "kombu"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[dist] = importlib.metadata.version(dist)
    with contextlib.suppress(OSError, ValueError, KeyError):  # Node.js, pinned in package.json
        manifest = json.loads((TOOLS_DIR / "bench_peers/bullmq/package.json").read_text())
        versions["bullmq (node)"] = manifest["dependencies"]["bullmq"]
    return {
        "cpus": os.cpu_count(),
        "cpu": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "server": f"{kind} {server.get('valkey_version') or server.get('redis_version')}",
        "packages": versions,
        "load_average_at_start": os.getloadavg(),
    }


# -- main ------------------------------------------------------------------------------------------


def load_systems(names: Sequence[str], url: str, results: Results) -> list[Any]:
    from bench_peers import SYSTEMS

    loaded = []
    for name in names:
        try:
            module = importlib.import_module(f"bench_peers.{SYSTEMS[name]}")
            loaded.append(module.SYSTEM(url))
        except Exception as exc:  # a peer that is missing or broken is a column of n/a
            reason = f"not available: {type(exc).__name__}: {exc}".splitlines()[0]
            results.na("load", name, reason)
            progress(f"{name}: {reason}")
    return loaded


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from bench_peers import SYSTEMS

    peers = [n for n in SYSTEMS if n != "pyscheduler"]
    parser = argparse.ArgumentParser(
        description="Benchmark pyscheduler (and installed peers) on a private Redis.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Workloads" + __doc__.split("Workloads", 1)[1] if __doc__ else None,
    )
    parser.add_argument("--quick", action="store_true", help="small N and 1 run (a smoke test)")
    parser.add_argument(
        "--only", default=",".join(WORKLOADS), help="workloads, e.g. W1,W3 (default: all)"
    )
    parser.add_argument(
        "--peers", default="all", help=f"all (installed ones), none, or some of: {','.join(peers)}"
    )
    parser.add_argument(
        "--runs", type=int, help="pyscheduler's runs per figure (default 3; --quick: 1)"
    )
    parser.add_argument(
        "--peer-runs", type=int, help="each peer's runs per figure (default 1, to stay near 10 min)"
    )
    parser.add_argument("--jobs", type=int, help="W1/W2 job count (default 20000; --quick: 2000)")
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help="W4 variants, e.g. A,F (default: all)"
    )
    parser.add_argument(
        "--drain-cap", type=float, help="W2: seconds a drain may take (default 15; --quick: 5)"
    )
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="PATH",
        help="also write the results as JSON (to stdout without PATH)",
    )
    parser.add_argument(
        "--server", help="redis-server/valkey-server binary (default: found like the tests do)"
    )
    args = parser.parse_args(argv)
    only = [w.strip() for w in args.only.split(",") if w.strip()]
    unknown = [w for w in only if w not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {unknown}: choose from {','.join(WORKLOADS)}")
    args.only = only
    if args.peers == "all":
        args.peers = peers
    elif args.peers == "none":
        args.peers = []
    else:
        args.peers = [p.strip() for p in args.peers.split(",") if p.strip()]
        bad = [p for p in args.peers if p not in peers]
        if bad:
            parser.error(f"unknown peer(s) {bad}: choose from {','.join(peers)}, all or none")
    return args


def build_config(args: argparse.Namespace) -> Config:
    quick = args.quick
    return Config(
        runs=args.runs or (1 if quick else 3),
        peer_runs=args.peer_runs or 1,
        jobs=args.jobs or (2_000 if quick else 20_000),
        latency_jobs=300 if quick else 2_000,
        latency_gap=0.005,
        hol_seconds=3.0,
        hol_slow=9,
        hol_fast=600,
        slow_seconds=1.0,
        fast_seconds=0.001,
        drain_cap=args.drain_cap or (5.0 if quick else 15.0),
        ceiling_calls=5_000 if quick else 20_000,
    )


def run_system(
    bench: Bench,
    system: Any,
    only: Sequence[str],
    results: Results,
    variants: Sequence[str] = tuple(VARIANTS),
) -> None:
    steps: list[tuple[str, Callable[[], None], list[str]]] = []
    if "W1" in only or "W2" in only:
        keys = (["w1_one", "w1_bulk"] if "W1" in only else []) + (
            ["w2_1", "w2_2"] if "W2" in only else []
        )
        steps.append(
            ("W1/W2", lambda: bench.enqueue_and_drain(system, "W1" in only, "W2" in only), keys)
        )
    if "W2" in only:
        keys = [f"w2n_{n}{s}" for n in (1, 2) for s in ("", "_redis", "_worker")]
        steps.append(("W2 no-op", lambda: bench.counted_drains(system), keys))
    if "W3" in only:
        steps.append(("W3", lambda: bench.idle_latency(system), ["w3_p50", "w3_p99", "w3_max"]))
    if "W4" in only:
        for variant in (v for v in VARIANTS if v in variants):
            keys = [f"w4{variant}_{s}" for s in ("p50", "p99", "span")]
            steps.append((f"W4 {variant}", lambda v=variant: bench.head_of_line(system, v), keys))  # type: ignore[misc]
    for label, step, keys in steps:
        try:
            step()
        except Exception as exc:
            reason = f"{label} failed: {type(exc).__name__}: {exc}"
            progress(f"{system.name}: {reason}")
            for key in keys:
                if not results.values.get(key, {}).get(system.name):
                    results.na(key, system.name, reason.splitlines()[0])
            with contextlib.suppress(Exception):
                bench.reset(system)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config = build_config(args)
    results = Results()
    command = "python tools/bench.py" + (
        ""
        if argv is None and len(sys.argv) < 2
        else " " + " ".join(sys.argv[1:] if argv is None else argv)
    )
    logdir = Path(tempfile.mkdtemp(prefix="pyscheduler-bench-"))
    with Engine(binary=args.server) as engine:
        os.environ[URL_ENV] = engine.url
        conn = redis.Redis.from_url(engine.url)
        info = machine_info(conn)
        progress(f"{info['server']} on {engine.url}; {info['cpus']} CPUs; worker logs in {logdir}")
        systems = load_systems(["pyscheduler", *args.peers], engine.url, results)
        names = [s.name for s in systems]
        bench = Bench(engine.url, config, results, logdir)
        if "ceiling" in args.only:
            try:
                measure_ceiling(engine.url, config, results)
            except Exception as exc:
                results.note(f"ceiling failed: {type(exc).__name__}: {exc}")
        if "producer" in args.only:
            try:
                measure_producer(engine.url, config, results)
            except Exception as exc:
                results.note(f"producer failed: {type(exc).__name__}: {exc}")
        if "aio" in args.only:
            try:
                measure_aio(engine.url, config, results)
            except Exception as exc:
                results.note(f"aio failed: {type(exc).__name__}: {exc}")
        for system in systems:
            run_system(bench, system, args.only, results, args.variants.split(","))
            system.close()
        conn.close()
    failed = any("failed" in r for by in results.missing.values() for r in by.values())
    if failed:
        progress(f"worker logs kept in {logdir}")
    else:
        shutil.rmtree(logdir, ignore_errors=True)
    text = report(results, names + [n for n in args.peers if n not in names], config)
    header = (
        f"{command}\n{info['cpus']} CPUs ({info['cpu']}), {info['server']},"
        f" Python {info['python']}; load average at start {info['load_average_at_start'][0]:.2f}\n"
    )
    print(header)
    print(text)
    if args.json:
        payload = {
            "command": command,
            "machine": info,
            "config": config.__dict__,
            "systems": {name: "ok" for name in names}
            | {
                name: results.missing.get("load", {}).get(name, "n/a")
                for name in args.peers
                if name not in names
            },
            "results": {
                m.key: {
                    "label": f"{m.section} {m.label}",
                    "unit": m.unit,
                    "higher_is_better": m.higher_is_better,
                    **{
                        system: {
                            "median": statistics.median(runs),
                            "min": min(runs),
                            "max": max(runs),
                            "runs": runs,
                        }
                        for system, runs in results.values.get(m.key, {}).items()
                    },
                    **{
                        system: {"na": reason}
                        for system, reason in results.missing.get(m.key, {}).items()
                    },
                }
                for m in METRICS
                if m.key in results.values or m.key in results.missing
            },
            "notes": results.notes,
        }
        text_json = json.dumps(payload, indent=2)
        if args.json == "-":
            print(text_json)
        else:
            Path(args.json).write_text(text_json + "\n")
            progress(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
