"""The BullMQ peer of tools/bench.py measures what the Python peers measure.

A Node producer enqueues through BullMQ's own client, `node worker.mjs` workers run the jobs
one at a time, and the handlers write the records `tools/bench.py` reads (see
`tools/bench_handlers.py`). Skipped, with the reason, where Node.js is missing or its
node_modules cannot be installed (`npm ci` needs the npm registry once).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

TOOLS_DIR = Path(__file__).resolve().parent.parent / "tools"
if str(TOOLS_DIR) not in sys.path:
    sys.path.insert(0, str(TOOLS_DIR))

from bench_peers import bullmq_peer  # noqa: E402
from bench_peers.base import PlannedJob, worker_env  # noqa: E402

OUT_KEY = "bench:out"
WAIT_SECONDS = 30  # a loose bound: Node starts in well under a second


@pytest.fixture
def bullmq(conn: Any, redis_url: str) -> Iterator[bullmq_peer.BullmqSystem]:
    if shutil.which("node") is None:
        pytest.skip("node is not installed (the BullMQ peer runs on Node.js)")
    try:
        bullmq_peer.ensure_installed()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"BullMQ's node_modules could not be installed: {exc}")
    system = bullmq_peer.BullmqSystem(redis_url)
    yield system
    system.close()


@pytest.fixture
def start_worker(redis_url: str) -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(system: bullmq_peer.BullmqSystem, queue: str, **env: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            system.worker_command([queue], 0),
            cwd=TOOLS_DIR,
            env={**worker_env(redis_url), **env},
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def records_when(conn: Any, done: Any) -> list[str]:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        lines = [x.decode() for x in conn.lrange(OUT_KEY, 0, -1)]
        if done(lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


def test_noop_jobs_added_one_at_a_time_and_in_bulk_are_each_counted_once(
    conn: Any, bullmq: bullmq_peer.BullmqSystem, start_worker: Any
) -> None:
    assert bullmq.enqueue_noops(30, "bench") > 0
    assert bullmq.enqueue_noops_bulk(30, "bench") > 0
    start_worker(bullmq, "bench", BENCH_NOOP_MODE="count")

    def counted(lines: list[str]) -> int:
        return sum(int(line.split()[0]) for line in lines)

    records_when(conn, lambda lines: counted(lines) >= 60)
    lines = records_when(conn, lambda lines: conn.zcard("bull:bench:completed") >= 60)
    assert counted(lines) == 60
    assert conn.zcard("bull:bench:completed") == 60


def test_timed_jobs_record_their_enqueue_time_and_their_start(
    conn: Any, bullmq: bullmq_peer.BullmqSystem, start_worker: Any
) -> None:
    start_worker(bullmq, "bench")
    bullmq.enqueue("timed", (time.time(),), "bench")
    records_when(conn, lambda lines: len(lines) >= 1)
    conn.delete(OUT_KEY)
    before = time.time()
    bullmq.run_plan([PlannedJob(i * 0.005, "timed", "bench") for i in range(5)])
    lines = records_when(conn, lambda lines: len(lines) >= 5)
    assert len(lines) == 5
    for line in lines:
        enqueued, started = (float(x) for x in line.split())
        assert before <= enqueued <= started < enqueued + WAIT_SECONDS


def test_the_higher_bench_priority_runs_first_on_the_priority_queue(
    conn: Any, bullmq: bullmq_peer.BullmqSystem, start_worker: Any
) -> None:
    for kind, priority in (("slow", 0), ("fast", 10), ("slow", 0)):
        bullmq.enqueue("sleeper", (kind, time.time(), 0.0), "prio", priority)
    start_worker(bullmq, "prio")
    lines = records_when(conn, lambda lines: len(lines) >= 3)
    by_start = sorted(lines, key=lambda line: float(line.split()[2]))
    assert [line.split()[0] for line in by_start] == ["fast", "slow", "slow"]
