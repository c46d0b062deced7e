#!/usr/bin/env python3
"""Instructions Redis executes per job for the library's enqueue, pop and completion calls.

    python tools/redis_instructions.py                     # batches of 8 and 64 jobs
    python tools/redis_instructions.py --batch 16 --jobs 4096
    PYTHONPATH=OTHER_TREE python tools/redis_instructions.py

A rate on this machine moves by 10-30% from minute to minute, more than a change of a few
percent in what a call costs. An instruction count does not: it starts `redis-server` under
`valgrind --tool=callgrind` on a free port, loads the library, and for each batch size counts
the instructions of three phases separately (callgrind's counters zeroed before and dumped
after each): enqueueing `--jobs` no-op jobs in calls of that many jobs, popping them in calls
of that many, and completing them in calls of that many. The same calls in the same order
each time, so two trees compared this way differ only by what their library does. The server's
own cost per command (reading and parsing it, the reply) is in the counts, as in a real drain;
the workers' side is not (see tools/drain_cpu.py for that).

The pyscheduler it measures is the one Python imports (PYTHONPATH).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))

import redis  # noqa: E402

from pyscheduler import Queue  # noqa: E402
from pyscheduler.dev.engine import free_port  # noqa: E402
from pyscheduler.store import calls, library  # noqa: E402

QUEUE = "instructions"
LEASE_MS = 600_000  # far longer than a run under valgrind
WORKER = "instructions-tool"


class CountedServer:
    """A redis-server under callgrind, whose counters each phase zeroes and dumps."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                "valgrind",
                "--tool=callgrind",
                "--collect-atstart=yes",
                f"--callgrind-out-file={workdir}/callgrind.out.%p",
                "redis-server",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.conn = redis.Redis(port=self.port, socket_timeout=120)
        deadline = time.monotonic() + 120
        while True:
            try:
                self.conn.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.2)

    def _control(self, *args: str) -> None:
        subprocess.run(
            ["callgrind_control", *args, str(self.process.pid)],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def zero(self) -> None:
        self._control("--zero")

    def dump(self) -> int:
        """The instructions counted since the last `zero`."""
        before = set(self.workdir.iterdir())
        self._control("--dump")
        dumps = sorted(set(self.workdir.iterdir()) - before)
        total = 0
        for path in dumps:
            match = re.search(r"^(?:summary|totals): (\d+)", path.read_text(), re.MULTILINE)
            if match:
                total = max(total, int(match.group(1)))
            path.unlink()
        return total

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def measure(server: CountedServer, jobs: int, batch: int) -> dict[str, float]:
    import bench_tasks

    conn = server.conn
    conn.flushall()
    library.load(conn)
    queue = Queue(QUEUE, connection=conn)
    keys = queue.keys
    prepared = [queue.prepare(bench_tasks.noop) for _ in range(jobs)]
    counts: dict[str, float] = {}

    server.zero()
    for first in range(0, jobs, batch):
        calls.enqueue(conn, keys, prepared[first : first + batch])
    counts["enqueue"] = server.dump() / jobs

    leases: list[calls.Lease] = []
    server.zero()
    while len(leases) < jobs:
        popped = calls.pop(conn, keys, batch, LEASE_MS, WORKER).leases
        if not popped:
            break
        leases += popped
    counts["pop"] = server.dump() / jobs

    server.zero()
    for first in range(0, len(leases), batch):
        items = [(lease.id, lease.token, "null") for lease in leases[first : first + batch]]
        calls.complete_many(conn, keys, items)
    counts["complete"] = server.dump() / jobs

    if len(leases) != jobs or queue.counts().finished != jobs:
        raise SystemExit(f"expected {jobs} jobs through, got {len(leases)} leased")
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=2048, help="jobs per batch size")
    parser.add_argument(
        "--batch", type=int, action="append", help="jobs per call (repeatable; default 8, 64)"
    )
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind (with callgrind_control) is not installed", file=sys.stderr)
        return 1
    batches = args.batch or [8, 64]
    with tempfile.TemporaryDirectory(prefix="pyscheduler-callgrind-") as workdir:
        server = CountedServer(Path(workdir))
        try:
            print(f"pyscheduler from {Path(calls.__file__).parents[2]}, {args.jobs} jobs")
            print(f"{'jobs/call':>9}{'enqueue':>12}{'pop':>12}{'complete':>12}{'all':>12}")
            for batch in batches:
                counts = measure(server, args.jobs, batch)
                every = sum(counts.values())
                print(
                    f"{batch:>9}{counts['enqueue']:>12,.0f}{counts['pop']:>12,.0f}"
                    f"{counts['complete']:>12,.0f}{every:>12,.0f}"
                )
        finally:
            server.stop()
    print("(instructions per job inside redis-server, counted by callgrind)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
