"""What `tools/bench.py` needs from each system it measures.

A `System` enqueues the benchmark's three handlers (`noop`, `timed`, `sleeper`, see
`bench_handlers.py`) through its library's normal client API and names the command that starts
one worker process running one job at a time. Workers run with `cwd=tools/`, so the handler
modules import. Features a system lacks are listed in `unsupported` with the reason, and the
workloads that need them show "n/a" for it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

TOOLS_DIR = Path(__file__).resolve().parent.parent
BIN_DIR = Path(sys.executable).parent


def console_script(name: str) -> str:
    """A console script installed next to this Python (the venv's bin/)."""
    path = BIN_DIR / name
    return str(path) if path.exists() else name


@dataclass(frozen=True, slots=True)
class PlannedJob:
    """One job of a paced workload: enqueued `offset` seconds after the start."""

    offset: float
    func: str  # "timed", "sleeper" or "sliced_sleeper"
    queue: str
    priority: int = 0  # higher runs first (adapters translate)
    kind: str = ""  # sleeper: "fast" / "slow" / "warm"
    seconds: float = 0.0  # sleeper: how long it sleeps


def job_args(job: PlannedJob, enqueued: float) -> tuple[Any, ...]:
    if job.func == "timed":
        return (enqueued,)
    return (job.kind, enqueued, job.seconds)


class System:
    """A job system under test. Sync client APIs override `enqueue`; see `AsyncSystem`."""

    name: ClassVar[str]
    # feature -> why it is missing: "bulk" (a batch enqueue API), "priority" (job priorities
    # across one queue), "limit" (a global per-queue concurrency limit).
    unsupported: ClassVar[dict[str, str]] = {}
    # Features only some systems have, that a workload may need: "time_slice" (a running job
    # paused at a checkpoint and queued again, so the jobs behind it run meanwhile).
    features: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, url: str) -> None:
        self.url = url

    def prepare_run(self) -> None:
        """Called after the benchmark flushed Redis, before a run enqueues anything."""

    def close(self) -> None:
        """Release clients."""

    # -- enqueueing ------------------------------------------------------------------------------

    def enqueue(self, func: str, args: Sequence[Any], queue: str, priority: int = 0) -> None:
        raise NotImplementedError

    def enqueue_noops(self, n: int, queue: str) -> float:
        """Enqueue `n` no-op jobs one call at a time; returns the seconds it took."""
        start = time.perf_counter()
        for _ in range(n):
            self.enqueue("noop", (), queue)
        return time.perf_counter() - start

    def enqueue_noops_bulk(self, n: int, queue: str) -> float:
        """Enqueue `n` no-op jobs with the library's batch API; returns the seconds it took."""
        raise NotImplementedError

    def fill(self, n: int, queue: str) -> None:
        """Queue `n` no-op jobs as fast as the client allows (not measured)."""
        if "bulk" in self.unsupported:
            self.enqueue_noops(n, queue)
        else:
            self.enqueue_noops_bulk(n, queue)

    def run_plan(self, plan: Sequence[PlannedJob]) -> None:
        """Enqueue each job at its offset, passing the enqueue time (time.time()) along."""
        start = time.perf_counter()
        for job in plan:
            pause = start + job.offset - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            self.enqueue(job.func, job_args(job, time.time()), job.queue, job.priority)

    # -- workers -------------------------------------------------------------------------------

    def worker_command(self, queues: Sequence[str], index: int) -> list[str]:
        """The command of one worker process taking `queues` in order, one job at a time."""
        raise NotImplementedError

    def set_concurrency_limit(self, queue: str, limit: int) -> None:
        raise NotImplementedError


class AsyncSystem(System):
    """A system whose client API is asyncio: one event loop for the whole benchmark."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.loop = asyncio.new_event_loop()

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.loop.close()

    async def aenqueue(self, func: str, args: Sequence[Any], queue: str, priority: int) -> None:
        raise NotImplementedError

    def enqueue(self, func: str, args: Sequence[Any], queue: str, priority: int = 0) -> None:
        self.run(self.aenqueue(func, args, queue, priority))

    def enqueue_noops(self, n: int, queue: str) -> float:
        async def go() -> float:
            start = time.perf_counter()
            for _ in range(n):
                await self.aenqueue("noop", (), queue, 0)
            return time.perf_counter() - start

        return float(self.run(go()))

    def fill(self, n: int, queue: str) -> None:
        async def go() -> None:
            for start in range(0, n, 50):  # 50 calls in flight
                batch = range(start, min(n, start + 50))
                await asyncio.gather(*(self.aenqueue("noop", (), queue, 0) for _ in batch))

        self.run(go())

    def run_plan(self, plan: Sequence[PlannedJob]) -> None:
        async def go() -> None:
            start = time.perf_counter()
            for job in plan:
                pause = start + job.offset - time.perf_counter()
                if pause > 0:
                    await asyncio.sleep(pause)
                args = job_args(job, time.time())
                await self.aenqueue(job.func, args, job.queue, job.priority)

        self.run(go())


def worker_env(url: str) -> dict[str, str]:
    """The environment of worker processes: the Redis URL, and tools/ on the import path."""
    env = dict(os.environ)
    env["BENCH_REDIS_URL"] = url
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TOOLS_DIR), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env
