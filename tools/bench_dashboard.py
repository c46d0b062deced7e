#!/usr/bin/env python3
"""How the dashboard's overview scales: 100 queues holding 1,000,000 jobs (by default).

    .venv/bin/python tools/bench_dashboard.py [--queues 100] [--jobs 1000000] [--requests 20]

Starts a private engine (`pyscheduler.dev.engine.Engine`), fills it with `enqueue_many` in
batches (a tenth of each queue delayed; a few jobs per queue completed and failed so that the
throughput chart has data), serves the dashboard on a free port with uvicorn (in a thread)
and requests the overview `--requests` times over HTTP. It reports:

- server time: the median (and max) of the time the dashboard took to make the page, from
  its `Server-Timing` header (request received to response started), and the median of the
  whole request as the client on the same machine saw it;
- round trips: the writes of commands the dashboard's Redis client made per overview (a
  counting connection class);
- Redis's share: the commands it ran per overview, those inside the library's functions
  included (`INFO commandstats` delta), and the CPU time it used (`INFO cpu` delta).

It also times a queue's page and a job's page the same way. Filling takes a minute or two.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import redis
import uvicorn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pyscheduler import Queue  # noqa: E402
from pyscheduler.dev.engine import Engine, free_port  # noqa: E402
from pyscheduler.ops.dashboard.app import create_app  # noqa: E402
from pyscheduler.store import calls, library  # noqa: E402
from pyscheduler.store.protocol import ENQUEUE_BATCH_MAX, FailKind  # noqa: E402

BATCHES_PER_CALL = 10  # enqueue_many pipelines this many library batches per round trip


class Traffic:
    round_trips = 0


class CountingConnection(redis.Connection):
    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        Traffic.round_trips += 1
        super().send_packed_command(command, check_health)


def fill(conn: redis.Redis, queues: int, jobs: int) -> None:
    per_queue = jobs // queues
    started = time.monotonic()
    for n in range(queues):
        q = Queue(f"queue-{n:03d}", connection=conn)
        delayed = per_queue // 10
        step = ENQUEUE_BATCH_MAX * BATCHES_PER_CALL
        for start in range(0, per_queue, step):
            q.enqueue_many(
                q.prepare("app.tasks:work", [n, i], delay=3600 if i < delayed else None)
                for i in range(start, min(per_queue, start + step))
            )
        leases = calls.pop(conn, q.keys, 5, 60_000, "bench-worker").leases
        calls.complete_many(conn, q.keys, [(lease.id, lease.token, "1") for lease in leases[:3]])
        for lease in leases[3:]:
            calls.fail(conn, q.keys, lease.id, lease.token, FailKind.REFUSED, "Error: bench", 0.0)
        if n % 10 == 9:
            rate = (n + 1) * per_queue / (time.monotonic() - started)
            print(f"  filled {n + 1} queues ({rate:,.0f} jobs/s)", flush=True)


def server_load(conn: redis.Redis) -> tuple[int, float]:
    """(commands Redis ran, inside the library's functions too; CPU seconds it used)."""
    stats: Any = conn.info("commandstats")
    ran = sum(int(v["calls"]) for name, v in stats.items() if name != "cmdstat_info")
    cpu: Any = conn.info("cpu")
    return ran, float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def get(port: int, path: str) -> tuple[float, float]:
    """(the server's time for the page, from its Server-Timing header; the whole request's
    time as this client saw it), in seconds."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        started = time.perf_counter()
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        elapsed = time.perf_counter() - started
        assert response.status == 200, (path, response.status)
        timing = response.headers["server-timing"]  # "app;dur=12.3"
        return float(timing.partition("dur=")[2]) / 1000, elapsed
    finally:
        conn.close()


def measure(
    port: int, path: str, requests: int, admin: redis.Redis
) -> tuple[list[tuple[float, float]], float, float, float]:
    """(server and request times, round trips, commands Redis ran, Redis CPU seconds)."""
    get(port, path)  # warm: templates compiled, library version checked
    trips_before = Traffic.round_trips
    ran_before, cpu_before = server_load(admin)
    times = [get(port, path) for _ in range(requests)]
    ran_after, cpu_after = server_load(admin)
    trips = (Traffic.round_trips - trips_before) / requests
    return times, trips, (ran_after - ran_before) / requests, (cpu_after - cpu_before) / requests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queues", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    with Engine() as engine:
        admin = redis.Redis.from_url(engine.url)
        library.load(admin)
        print(
            f"{engine.kind} {engine.version}: filling {args.queues} queues with {args.jobs:,} jobs"
        )
        started = time.monotonic()
        fill(admin, args.queues, args.jobs)
        print(
            f"filled in {time.monotonic() - started:.0f} s;"
            f" used_memory {admin.info('memory')['used_memory_human']}"
        )
        client = redis.Redis.from_url(engine.url)
        client.connection_pool.connection_class = CountingConnection
        server = uvicorn.Server(
            uvicorn.Config(create_app(client), port=(port := free_port()), log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.02)
        first = Queue("queue-000", connection=admin)
        job_id = first.job_ids("queued", 0, 1)[0]
        try:
            for label, path in (
                ("overview", "/"),
                ("queue page", "/queues/queue-000"),
                ("job page", f"/queues/queue-000/jobs/{job_id}"),
            ):
                times, trips, commands, cpu = measure(port, path, args.requests, admin)
                made = [t for t, _ in times]
                whole = [t for _, t in times]
                print(
                    f"{label:10}: server time median {statistics.median(made) * 1000:.1f} ms"
                    f" (max {max(made) * 1000:.1f}), whole request median"
                    f" {statistics.median(whole) * 1000:.1f} ms, over {args.requests} requests;"
                    f" per request {trips:g} round trips, {commands:g} commands run by Redis"
                    f" (inside the functions too), {cpu * 1000:.1f} ms of Redis CPU"
                )
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            client.close()
            admin.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
