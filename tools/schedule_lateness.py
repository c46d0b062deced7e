#!/usr/bin/env python3
"""How late periodic jobs start: three workers, one `every` schedule, 60 ticks.

    python tools/schedule_lateness.py                 # every=0.5 s, 60 ticks (~35 s)
    python tools/schedule_lateness.py --every 1 --ticks 60 --workers 3

It starts its own Redis (redis-server/valkey-server on a free port, as `pyscheduler.dev.engine`
does) unless REDIS_URL is set (then it uses queue `lateness-<pid>` there and removes its keys
at the end), starts the worker processes (`pyscheduler worker`, idle, concurrency 1), defines
the schedule and waits for the ticks. Each run's record holds its tick and the time its lease
started (both from the Redis server's clock), so lateness = started - tick needs no handler
timing. It prints the ticks due, the runs made (must be equal: one per tick, none twice) and
the lateness p50/p99/max in ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from pyscheduler import Queue  # noqa: E402
from pyscheduler.dev.engine import Engine  # noqa: E402
from pyscheduler.store import library  # noqa: E402


def start_workers(url: str, queue: str, count: int) -> list[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["BENCH_REDIS_URL"] = url  # bench_tasks:noop writes one value there, as in the bench
    return [
        subprocess.Popen(
            [sys.executable, "-m", "pyscheduler", "worker", queue, "--url", url],
            cwd=ROOT / "tools",  # bench_tasks:noop imports from here
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]


def wait_for_workers(conn: redis.Redis, queue: Queue, count: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if conn.zcard(queue.keys.workers) >= count:
            return
        time.sleep(0.05)
    raise SystemExit(f"the {count} workers did not start within 30 s")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(url: str, queue_name: str, every: float, ticks: int, workers: int) -> dict[str, object]:
    conn = redis.Redis.from_url(url)
    library.load(conn)
    queue = Queue(queue_name, connection=conn)
    procs = start_workers(url, queue_name, workers)
    try:
        wait_for_workers(conn, queue, workers)
        time.sleep(1.0)  # let every worker reach its idle wait
        schedule = queue.schedule("lateness", "bench_tasks:noop", every=every, result_ttl=3600)
        assert schedule.next_run is not None
        first_ms = round(schedule.next_run.timestamp() * 1000)
        last_ms = first_ms + round(every * 1000) * (ticks - 1)
        # Wait past the last tick, then stop the schedule; runs of later ticks are not counted.
        while int(conn.time()[0]) * 1000 < last_ms + 500:
            time.sleep(0.1)
        queue.unschedule("lateness")
        time.sleep(1.0)
        due = list(range(first_ms, last_ms + 1, round(every * 1000)))
        lateness: list[float] = []
        fired: list[int] = []
        for tick in due:
            raw = conn.hget(queue.keys.jobs, f"schedule:lateness:{tick}")
            if raw is None:
                continue
            record = json.loads(raw)
            fired.append(tick)
            if isinstance(record.get("started"), int | float):
                lateness.append(record["started"] - tick)
        ids = [i.decode() for i in conn.hkeys(queue.keys.jobs) if i.startswith(b"schedule:")]
        ticks_of_runs = [int(i.rsplit(":", 1)[1]) for i in ids]
        in_window = [t for t in ticks_of_runs if first_ms <= t <= last_ms]
        return {
            "workers": workers,
            "every_s": every,
            "ticks_due": len(due),
            "runs_made": len(in_window),
            "ticks_fired": len(fired),
            "duplicates": len(in_window) - len(set(in_window)),
            "lateness_ms": {
                "p50": statistics.median(lateness) if lateness else None,
                "p99": percentile(lateness, 0.99) if lateness else None,
                "max": max(lateness) if lateness else None,
            },
        }
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--every", type=float, default=0.5, help="seconds between ticks")
    parser.add_argument("--ticks", type=int, default=60)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    url = os.environ.get("REDIS_URL")
    if url:
        name = f"lateness-{os.getpid()}"
        try:
            result = measure(url, name, args.every, args.ticks, args.workers)
        finally:
            keys = Queue(name, connection=redis.Redis.from_url(url)).keys
            names = [
                getattr(keys, f) for f in keys.__dataclass_fields__ if f not in ("queue", "prefix")
            ]
            redis.Redis.from_url(url).delete(*names)  # only this tool's own queue
    else:
        with Engine() as engine:
            result = measure(engine.url, "lateness", args.every, args.ticks, args.workers)
    if args.json:
        print(json.dumps(result))
        return
    late = result["lateness_ms"]
    assert isinstance(late, dict)
    print(
        f"{result['workers']} workers, every {result['every_s']} s: {result['ticks_due']} ticks"
        f" due, {result['ticks_fired']} fired ({result['runs_made']} runs,"
        f" {result['duplicates']} twice); lateness p50 {late['p50']} ms, p99 {late['p99']} ms,"
        f" max {late['max']} ms"
    )


if __name__ == "__main__":
    main()
