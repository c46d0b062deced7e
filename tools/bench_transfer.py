"""Time moving a big payload from a worker to its child process, and a big result back.

No Redis: it drives one `Executor` (the worker's child) directly, the way the worker does.

    .venv/bin/python tools/bench_transfer.py --mb 10 100

(`--redis`: through a whole worker and a private Redis/Valkey server instead) prints, per
size, the wall time from sending the request to having the outcome, for a job
whose payload is that big (its result small), and for one whose result is that big (its
payload small), with the worker's own CPU time for each.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from multiprocessing.connection import wait as wait_for_ready
from typing import Any

import redis


def payload_size(text: str) -> int:
    """A handler taking a big payload: returns its length."""
    return len(text)


def big_result(size: int) -> str:
    """A handler making a big result."""
    return "x" * size


def _request(func: str, args: list[Any]) -> Any:
    from pyscheduler.runtime.child_protocol import RunRequest

    record = {"status": "active", "func": func, "priority": 0, "attempts": 1, "timeout": 600}
    payload = json.dumps({"args": args, "kwargs": {}}).encode()
    record_bytes = json.dumps(record).encode()
    return RunRequest("bench", "bench-1", "0" * 32, record_bytes, payload, None, 600_000, 600)


def _run(executor: Any, request: Any) -> tuple[float, float, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    executor.number([request])
    executor.submit([request])
    # As the worker's loop does: wait until the pipe has room or data, then take what is there.
    while not executor.flush():
        wait_for_ready([executor.conn], 0.001)
    outcomes: list[Any] = []
    while not outcomes:
        wait_for_ready([executor.conn])
        outcomes = executor.outcomes() or []
    return time.perf_counter() - wall, time.process_time() - cpu, outcomes[0]


def through_redis(sizes_mb: list[float]) -> None:
    """The same through a whole worker and a private Redis, limits raised for the sizes."""
    from pyscheduler import Queue, Worker
    from pyscheduler.dev.engine import Engine
    from pyscheduler.store import calls

    top = int(max(sizes_mb) * 1_000_000) * 2 + 1024
    with Engine() as engine:
        conn = redis.Redis.from_url(engine.url)
        queue = Queue("bench", connection=conn, max_payload_bytes=top, auto_load=True)
        limits = {"max_payload_bytes": str(top), "max_result_bytes": str(top)}
        queue.enqueue("bench_transfer:payload_size", "")  # loads the library
        with contextlib.suppress(Exception):  # older versions: no size limits in Redis
            calls.configure(conn, queue.keys, limits)
        Worker([queue]).work(burst=True)
        for mb in sizes_mb:
            size = int(mb * 1_000_000)
            for what, func, arg in (
                ("payload", "bench_transfer:payload_size", "x" * size),
                ("result ", "bench_transfer:big_result", size),
            ):
                job = queue.enqueue(func, arg)
                wall, cpu = time.perf_counter(), time.process_time()
                Worker([queue]).work(burst=True)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                assert job.status == "complete", job.error
                print(f"{what} {mb:g} MB through Redis: {wall:.2f} s (worker CPU {cpu:.2f} s)")
                conn.hdel(queue.keys.results, job.id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, nargs="+", default=[10.0, 100.0])
    parser.add_argument("--redis", action="store_true", help="through a worker and Redis")
    options = parser.parse_args()
    # The handlers are this module's, imported by the child as `bench_transfer`.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)
    os.chdir(here)
    if options.redis:
        through_redis(options.mb)
        return
    from pyscheduler.runtime.allowlist import HandlerPolicy
    from pyscheduler.runtime.executor import Executor

    executor = Executor(HandlerPolicy(), redis.Redis())
    try:
        for mb in options.mb:
            size = int(mb * 1_000_000)
            wall, cpu, outcome = _run(
                executor, _request("bench_transfer:payload_size", ["x" * size])
            )
            assert outcome.ok and json.loads(outcome.result) == size, outcome
            print(f"payload {mb:g} MB: {wall:.2f} s (worker CPU {cpu:.2f} s)", flush=True)
            wall, cpu, outcome = _run(executor, _request("bench_transfer:big_result", [size]))
            assert outcome.ok and len(outcome.result) == size + 2, str(outcome)[:300]
            print(f"result  {mb:g} MB: {wall:.2f} s (worker CPU {cpu:.2f} s)", flush=True)
    finally:
        executor.kill()


if __name__ == "__main__":
    main()
