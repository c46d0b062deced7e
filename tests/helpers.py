"""Shared helpers of the worker tests: waiting on conditions, reading worker logs, processes."""

from __future__ import annotations

import os
import signal
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psutil
import redis

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.005, what: str = ""
) -> T:
    """Poll `predicate` until it returns a truthy value (returned), or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


class WorkerLog:
    """Collects a worker process's output (stdout+stderr) line by line, in a thread."""

    def __init__(self, proc: Any) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for line in self.proc.stdout:
                with self._lock:
                    self.lines.append(line.rstrip("\n"))
        except (ValueError, OSError):  # the fixture closed the pipe
            pass

    @property
    def text(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def count(self, needle: str) -> int:
        with self._lock:
            return sum(needle in line for line in self.lines)

    def wait_for(self, needle: str, timeout: float = 10.0) -> None:
        wait_until(lambda: self.count(needle) > 0, timeout, what=f"{needle!r} in the log")

    def finish(self, timeout: float = 10.0) -> str:
        """Wait for the process to exit and its output to end; the whole log."""
        self.proc.wait(timeout=timeout)
        self._thread.join(timeout=timeout)
        return self.text


def start_worker(workers: Any, *queues: str, **options: Any) -> tuple[Any, WorkerLog]:
    """Start a worker process and wait until it has started; (process, its log)."""
    proc = workers.start(*queues, **options)
    log = WorkerLog(proc)
    try:
        log.wait_for("started on", timeout=15)
    except AssertionError:
        raise AssertionError(f"worker did not start; its output:\n{log.text}") from None
    return proc, log


def blocked_clients(conn: redis.Redis) -> int:
    """How many clients are blocked in BLPOP: idle workers waiting for a job."""
    return sum(
        1 for c in conn.client_list() if c.get("cmd") == "blpop" and "b" in c.get("flags", "")
    )


def wait_idle(conn: redis.Redis, workers: int = 1, timeout: float = 10.0) -> None:
    """Wait until `workers` workers are idle: blocked in Redis waiting for a job."""
    wait_until(lambda: blocked_clients(conn) >= workers, timeout, what=f"{workers} idle workers")


def executor_pids(worker_pid: int) -> list[int]:
    """The executor child processes of a worker."""
    return [child.pid for child in psutil.Process(worker_pid).children()]


def is_gone(pid: int) -> bool:
    """The process exited (a zombie waiting for its reaper counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def send(proc: Any, sig: signal.Signals) -> None:
    os.kill(proc.pid, sig)


def as_int(value: Any) -> int:
    return int(value) if value is not None else 0


def summary_ms(samples: list[float]) -> str:
    return (
        f"p50 {statistics.median(samples):.2f} ms, max {max(samples):.2f} ms,"
        f" min {min(samples):.2f} ms over {len(samples)} samples"
    )


def other_token(token: str) -> str:
    """A well-formed fencing token that is not `token` (a stale or forged one)."""
    return ("0" if token[0] != "0" else "1") + token[1:]


def server_ms(conn: redis.Redis) -> int:
    """The Redis server's clock in milliseconds (the clock leases and due times are on)."""
    seconds, micros = conn.time()
    return int(seconds) * 1000 + int(micros) // 1000


def cluster_port(host: str = "127.0.0.1") -> int:
    """A port free for a cluster node: it and its bus port (10,000 higher) free now, which also
    keeps it at or below 55535 as cluster mode requires."""
    import random
    import socket

    for _ in range(200):
        port = random.randrange(20_000, 55_536)
        sockets = []
        try:
            for candidate in (port, port + 10_000):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.bind((host, candidate))
            return port
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no free port pair for a cluster node")


def snapshot(conn: redis.Redis) -> dict[Any, Any]:
    """Every key with its serialised value: equal snapshots mean nothing was written."""
    return {key: conn.dump(key) for key in conn.keys("*")}


def max_in_window(times: list[int], width: int) -> int:
    """The most of `times` within any window (t - width, t]."""
    ordered = sorted(times)
    most = first = 0
    for i, t in enumerate(ordered):
        while ordered[first] <= t - width:
            first += 1
        most = max(most, i - first + 1)
    return most
