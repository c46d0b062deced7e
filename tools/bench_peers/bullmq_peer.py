"""BullMQ on Node.js: `queue.add` and `queue.addBulk` in a Node producer process this adapter
drives over a pipe, and `node worker.mjs QUEUE` workers with `concurrency: 1` (BullMQ has no
worker command of its own: a worker is a script). The Node project is `bench_peers/bullmq/`,
with BullMQ pinned in its package.json and package-lock.json; `npm ci` installs it on first
use. Without node or npm the peer is "n/a" with the reason.

BullMQ's priorities run lower numbers first and jobs without one before all others, so every
job of the priority queue gets one (see `common.mjs`). It has a global concurrency per queue,
but a worker takes one queue, so (D)'s workers taking fast then slow cannot be expressed.
Jobs keep BullMQ's defaults (completed jobs are kept, as out of the box).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, ClassVar

from .base import PlannedJob, System, worker_env

PROJECT_DIR = Path(__file__).resolve().parent / "bullmq"
NODE_MIN_MAJOR = 16  # the scripts: ES modules, a global `performance` (checked on Node 20)
INSTALL_SECONDS = 600
READY_SECONDS = 60
REPLY_SECONDS = 600  # the longest command: 20,000 one-at-a-time adds on a loaded machine


def node_binary() -> str:
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node not found on PATH (the BullMQ peer runs on Node.js)")
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()
    major = int(version.lstrip("v").split(".")[0])
    if major < NODE_MIN_MAJOR:
        raise RuntimeError(f"node {version} is too old (the BullMQ peer needs {NODE_MIN_MAJOR}+)")
    return node


def pinned_version() -> str:
    """The BullMQ version package.json pins."""
    manifest = json.loads((PROJECT_DIR / "package.json").read_text())
    return str(manifest["dependencies"]["bullmq"])


def installed_version() -> str | None:
    try:
        manifest = json.loads((PROJECT_DIR / "node_modules/bullmq/package.json").read_text())
    except (OSError, ValueError):
        return None
    return str(manifest.get("version"))


def ensure_installed() -> None:
    """`npm ci` in the Node project when its node_modules are missing (the first use) or hold
    another BullMQ than the one pinned."""
    if installed_version() == pinned_version():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(f"npm not found on PATH (needed once, to install {PROJECT_DIR.name}/)")
    print(f"bullmq: npm ci in {PROJECT_DIR}", file=sys.stderr, flush=True)
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=INSTALL_SECONDS,
        check=False,
    )
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"npm ci failed with code {done.returncode}: {tail[0]}")


class BullmqSystem(System):
    name = "bullmq"
    unsupported: ClassVar[dict[str, str]] = {
        "limit": "a worker takes one queue (a global limit exists, no worker takes fast then slow)",
    }

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.node = node_binary()
        ensure_installed()
        # The producer's stderr (BullMQ's warnings, a crash), for the error of a failed call.
        self.log: IO[bytes] = tempfile.TemporaryFile(prefix="bullmq-producer-")  # noqa: SIM115
        self.producer: subprocess.Popen[bytes] | None = None
        self.pending = b""
        self.version = str(self._start().get("bullmq", "unknown"))

    # -- the producer process: one JSON command per line, one JSON answer per line ------------

    def _start(self) -> dict[str, Any]:
        self.pending = b""
        self.producer = subprocess.Popen(
            [self.node, os.fspath(PROJECT_DIR / "producer.mjs")],
            cwd=PROJECT_DIR,
            env=worker_env(self.url),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            bufsize=0,
        )
        try:
            return self._reply(self.producer, READY_SECONDS)
        except Exception:
            self._stop()
            raise

    def _log_tail(self) -> str:
        self.log.seek(0)
        lines = self.log.read().decode(errors="replace").strip().splitlines()
        self.log.seek(0, os.SEEK_END)
        return lines[-1] if lines else "no output"

    def _reply(self, producer: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
        assert producer.stdout is not None
        fd = producer.stdout.fileno()
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" not in self.pending:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([fd], [], [], left)[0]:
                    self._stop()  # its answer may still come: a new producer starts clean
                    raise TimeoutError(f"the BullMQ producer did not answer within {timeout:.0f} s")
                data = os.read(fd, 1 << 16)
                if not data:
                    code = producer.wait(timeout=5)
                    self._stop()
                    raise RuntimeError(f"the BullMQ producer exited ({code}): {self._log_tail()}")
                self.pending += data
            line, self.pending = self.pending.split(b"\n", 1)
            if line.startswith(b"{"):  # anything else on stdout is not an answer
                break
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            raise RuntimeError(f"BullMQ producer: {reply.get('error')}")
        return reply

    def _call(self, **command: Any) -> dict[str, Any]:
        if self.producer is None:
            self._start()
        producer = self.producer
        assert producer is not None and producer.stdin is not None
        producer.stdin.write(json.dumps(command).encode() + b"\n")
        return self._reply(producer, REPLY_SECONDS)

    def _stop(self) -> None:
        producer, self.producer = self.producer, None
        if producer is None:
            return
        if producer.stdin is not None:
            with contextlib.suppress(OSError):
                producer.stdin.close()  # end of input: the producer closes its queues and exits
        try:
            producer.wait(timeout=10)
        except subprocess.TimeoutExpired:
            producer.kill()
            producer.wait(timeout=5)
        if producer.stdout is not None:
            producer.stdout.close()

    def close(self) -> None:
        self._stop()
        self.log.close()

    # -- enqueueing ------------------------------------------------------------------------------

    def enqueue(self, func: str, args: Sequence[Any], queue: str, priority: int = 0) -> None:
        self._call(op="add", func=func, args=list(args), queue=queue, priority=priority)

    def enqueue_noops(self, n: int, queue: str) -> float:
        return float(self._call(op="one", n=n, queue=queue)["seconds"])

    def enqueue_noops_bulk(self, n: int, queue: str) -> float:
        return float(self._call(op="bulk", n=n, queue=queue)["seconds"])

    def run_plan(self, plan: Sequence[PlannedJob]) -> None:
        jobs = [[j.offset, j.func, j.queue, j.priority, j.kind, j.seconds] for j in plan]
        self._call(op="plan", jobs=jobs)

    # -- workers -------------------------------------------------------------------------------

    def worker_command(self, queues: Sequence[str], index: int) -> list[str]:
        (queue,) = queues
        return [self.node, os.fspath(PROJECT_DIR / "worker.mjs"), queue]


SYSTEM = BullmqSystem
