#!/usr/bin/env python3
"""What a drain costs per job: jobs/s, and the CPU of Redis and of the worker processes.

    python tools/drain_cpu.py                          # 1 worker, round-trip handlers
    python tools/drain_cpu.py --workers 2 --noop       # 2 workers, truly no-op handlers
    python tools/drain_cpu.py --noop --commands        # and the Redis commands per job
    PYTHONPATH=OTHER_TREE python tools/drain_cpu.py    # the same for another checkout

For comparing two trees on a noisy machine: run it for each, alternated, and compare the
pairs. CPU per job moves less with the machine than a rate does. It starts its own
redis-server on a free port, queues `--jobs` of `bench_tasks:noop` (the bench's W2 handler:
one RPUSH per job, or with `--noop` a count kept in memory), starts the workers
(`pyscheduler worker --concurrency 1`, their children found through /proc), lets them run
for a second, then measures `--seconds`: jobs done, Redis CPU (`INFO cpu`) and the workers'
CPU (main processes and children) per job. Jobs must outlast the window (it says so if not).

The pyscheduler it measures is the one Python imports (PYTHONPATH); with a tree older than
the `store/` layout it loads the library through that tree's own `pyscheduler.library`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))

import psutil  # noqa: E402
import redis  # noqa: E402

from pyscheduler import Queue  # noqa: E402

QUEUE = "bench"
WARM_UP_SECONDS = 1.5
SLOWLOG_ENTRIES = 2000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def load_library(conn: redis.Redis) -> None:
    try:
        library: Any = importlib.import_module("pyscheduler.store.library")
    except ImportError:  # a tree from before the store/ layout
        library = importlib.import_module("pyscheduler.library")
    library.load(conn)


def cpu_seconds(processes: list[psutil.Process]) -> float:
    return float(sum(p.cpu_times().user + p.cpu_times().system for p in processes))


def redis_cpu(conn: redis.Redis) -> float:
    info = conn.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def measure(args: argparse.Namespace, url: str, conn: redis.Redis) -> dict[str, float]:
    import bench_tasks

    load_library(conn)
    queue = Queue(QUEUE, connection=conn)
    for _ in range(0, args.jobs, 1000):
        queue.enqueue_many([queue.prepare(bench_tasks.noop) for _ in range(1000)])
    env = dict(os.environ, BENCH_REDIS_URL=url)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(TOOLS)) if p)
    if args.noop:
        env["BENCH_NOOP_MODE"] = "count"
    command = [sys.executable, "-m", "pyscheduler", "worker", QUEUE, "--url", url]
    command += ["--concurrency", "1", "--import", "bench_tasks"]
    workers = [
        subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(args.workers)
    ]
    try:
        time.sleep(WARM_UP_SECONDS)
        mains = [psutil.Process(w.pid) for w in workers]
        processes = mains + [c for m in mains for c in m.children(recursive=True)]
        left = queue.counts().queued
        conn.config_resetstat()
        if args.commands:
            conn.config_set("slowlog-max-len", SLOWLOG_ENTRIES)
            conn.config_set("slowlog-log-slower-than", 0)
            conn.slowlog_reset()
        workers_cpu, server_cpu = cpu_seconds(processes), redis_cpu(conn)
        start = time.monotonic()
        time.sleep(args.seconds)
        done = left - queue.counts().queued
        elapsed = time.monotonic() - start
        workers_cpu = cpu_seconds(processes) - workers_cpu
        server_cpu = redis_cpu(conn) - server_cpu
        commands = conn.info("commandstats")
        calls = conn.slowlog_get(SLOWLOG_ENTRIES) if args.commands else []
        if queue.counts().queued == 0:
            print("the queue ran dry inside the window: give more --jobs", file=sys.stderr)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait()
    per_job = 1e6 / max(1, done)
    if args.commands:
        print_commands(commands, max(1, done))
        print_functions(calls)
    return {
        "jobs_per_second": done / elapsed,
        "redis_us_per_job": server_cpu * per_job,
        "workers_us_per_job": workers_cpu * per_job,
        "all_us_per_job": (server_cpu + workers_cpu) * per_job,
    }


def print_commands(commands: dict[str, Any], done: int) -> None:
    """The window's commands (a function's nested ones included), by time in Redis per job."""
    rows = sorted(commands.items(), key=lambda item: -float(item[1]["usec"]))
    print(f"{'command':<22}{'calls/job':>10}{'us/job':>9}{'us/call':>9}")
    for name, stats in rows:
        calls, usec = int(stats["calls"]), float(stats["usec"])
        name = name.removeprefix("cmdstat_")
        print(f"{name:<22}{calls / done:>10.3f}{usec / done:>9.2f}{usec / max(1, calls):>9.2f}")


def print_functions(entries: list[dict[str, Any]]) -> None:
    """The last calls of each library function in the window (from the slow log, which then
    logs every command): how many there were and how long one took."""
    by_function: dict[str, list[float]] = {}
    for entry in entries:
        words = bytes(entry["command"]).decode(errors="replace").split()
        if len(words) > 1 and words[0].upper() in ("FCALL", "FCALL_RO"):
            by_function.setdefault(words[1], []).append(float(entry["duration"]))
    print(f"{'function':<22}{'calls':>7}{'median us':>11}{'max us':>9}")
    for name, durations in sorted(by_function.items(), key=lambda item: -sum(item[1])):
        durations.sort()
        median = durations[len(durations) // 2]
        print(f"{name:<22}{len(durations):>7}{median:>11.0f}{durations[-1]:>9.0f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--noop", action="store_true", help="no-op handlers (no round trip)")
    parser.add_argument("--jobs", type=int, default=80_000)
    parser.add_argument("--seconds", type=float, default=5.0, help="the measured window")
    parser.add_argument(
        "--commands", action="store_true", help="also list Redis's commands per job (commandstats)"
    )
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        conn = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                conn.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        figures = measure(args, f"redis://127.0.0.1:{port}/0", conn)
    finally:
        server.terminate()
        server.wait()
    print(
        f"{figures['jobs_per_second']:,.0f} jobs/s; CPU per job: Redis"
        f" {figures['redis_us_per_job']:.1f} us, workers {figures['workers_us_per_job']:.1f} us,"
        f" all {figures['all_us_per_job']:.1f} us"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
