"""Shared helpers of the worker tests: waiting on conditions, reading worker logs, processes."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import psutil
import redis
from redis.cluster import RedisCluster

from pyscheduler.dev.cluster import cluster_port  # noqa: F401  (the tests import it from here)
from pyscheduler.exceptions import WaitTimeout
from pyscheduler.store.connection import connect

T = TypeVar("T")

TESTS_DIR = Path(__file__).resolve().parent


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


# -- processes of the command line ---------------------------------------------------------------


def cli_process(*args: str) -> subprocess.Popen[str]:
    """`python -m pyscheduler *args` in tests/ (so the handler modules here import), with its
    stdout and stderr in one unbuffered pipe. Every command here is given `--url`: an inherited
    REDIS_URL must not stand in for a missing one."""
    env = {name: value for name, value in os.environ.items() if name != "REDIS_URL"}
    return subprocess.Popen(
        [sys.executable, "-m", "pyscheduler", *args],
        cwd=TESTS_DIR,
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def worker_process(url: str, *queues: str, args: Sequence[str] = ()) -> subprocess.Popen[str]:
    """`pyscheduler worker` on `queues` of the server at `url`, with more `args`."""
    return cli_process("worker", *queues, "--url", url, *args)


def run_cli(*args: str, timeout: float = 60.0) -> tuple[int, str]:
    """Run `python -m pyscheduler *args` to its end: (exit code, output)."""
    proc = cli_process(*args)
    try:
        output, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, output


def terminate(proc: subprocess.Popen[str], timeout: float = 30.0) -> str:
    """SIGTERM a process of `cli_process` and read its output to the end."""
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=timeout)
    return output


def _started(log: WorkerLog, timeout: float) -> None:
    try:
        log.wait_for("started on", timeout=timeout)
    except AssertionError:
        raise AssertionError(f"worker did not start; its output:\n{log.text}") from None


def start_worker(workers: Any, *queues: str, **options: Any) -> tuple[Any, WorkerLog]:
    """Start a worker process and wait until it has started; (process, its log)."""
    proc = workers.start(*queues, **options)
    log = WorkerLog(proc)
    _started(log, timeout=15)
    return proc, log


def start_workers(workers: Any, n: int, *queues: str, **options: Any) -> list[WorkerLog]:
    """Start `n` worker processes at once; wait until each has started."""
    logs = [WorkerLog(workers.start(*queues, **options)) for _ in range(n)]
    for log in logs:
        _started(log, timeout=20)
    return logs


def stop_worker(proc: Any, log: WorkerLog, timeout: float = 10.0) -> str:
    """SIGTERM a worker and check that it exits cleanly; its whole log."""
    send(proc, signal.SIGTERM)
    text = log.finish(timeout=timeout)
    assert proc.returncode == 0, text
    return text


def timed_stop(proc: Any, log: WorkerLog) -> tuple[float, str]:
    """SIGTERM a worker: (seconds it took to exit, its whole log)."""
    send(proc, signal.SIGTERM)
    signalled = time.monotonic()
    proc.wait(timeout=10)
    exit_s = time.monotonic() - signalled
    return exit_s, log.finish(timeout=5)


def kill_worker(proc: Any, *executors: int) -> None:
    """SIGKILL a worker; wait until it and its `executors` (noted before) are gone."""
    send(proc, signal.SIGKILL)
    proc.wait(timeout=5)
    # The killed worker's executors must not run on without it.
    for pid in executors:
        wait_until(partial(is_gone, pid), timeout=5, what="the orphaned executor to die")


def pause_while_sleeping(proc: Any) -> None:
    """SIGSTOP a worker once it sleeps (waiting on its run), not halfway through a Redis call."""
    wait_until(
        lambda: psutil.Process(proc.pid).status() == psutil.STATUS_SLEEPING,
        what="the worker to sleep",
    )
    send(proc, signal.SIGSTOP)


def is_stopped(pid: int) -> bool:
    return psutil.Process(pid).status() == psutil.STATUS_STOPPED


def worker_pid_of(record: dict[str, Any]) -> int:
    """The pid in a worker name (host:pid:suffix) stored in a job record."""
    return int(str(record["worker"]).split(":")[-2])


# -- jobs ---------------------------------------------------------------------------------------


def wait_status(queue: Any, job_id: str, *statuses: str, timeout: float = 10.0) -> Any:
    """Poll until the job is in one of `statuses`; its info."""

    def reached() -> Any:
        info = queue.fetch_info(job_id)
        return info if info.status in statuses else None

    return wait_until(reached, timeout, what=f"job {job_id} to be {'/'.join(statuses)}")


def wait_result(job: Any, timeout: float = 10.0, why: str = "") -> Any:
    """The job's result, or a failure that says `why` it may not have ended."""
    try:
        return job.wait(timeout=timeout)
    except WaitTimeout:
        raise AssertionError(f"job {job.id} did not end; {why}") from None


def spans(conn: redis.Redis, key: str) -> list[dict[str, Any]]:
    """The runs a `span` handler recorded under `key`, oldest first."""
    return [json.loads(item) for item in conn.lrange(key, 0, -1)]


def max_overlap(intervals: Iterable[tuple[int, int]]) -> int:
    """The most intervals open at one moment (one that ends as another starts: not both)."""
    events = sorted(e for start, end in intervals for e in ((start, 1), (end, -1)))
    most = running = 0
    for _, delta in events:
        running += delta
        most = max(most, running)
    return most


def most_at_once(runs: list[dict[str, Any]]) -> int:
    """The most of `spans` running at one moment."""
    return max_overlap((run["start"], run["end"]) for run in runs)


def servers_of(conn: Any) -> list[redis.Redis]:
    """The servers behind a client: itself, or each primary of a cluster (a command such as
    CLIENT LIST or KEYS sent through a cluster client asks one node only)."""
    if isinstance(conn, RedisCluster):
        return [conn.get_redis_connection(node) for node in conn.get_primaries()]
    return [conn]


def blocked_clients(conn: redis.Redis) -> int:
    """How many clients are blocked in BLPOP: idle workers waiting for a job."""
    return sum(
        1
        for server in servers_of(conn)
        for c in server.client_list()
        if c.get("cmd") == "blpop" and "b" in c.get("flags", "")
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


def server_us(conn: redis.Redis) -> int:
    """The Redis server's clock in microseconds."""
    seconds, micros = conn.time()
    return int(seconds) * 1_000_000 + int(micros)


def server_ms(conn: redis.Redis) -> int:
    """The Redis server's clock in milliseconds (the clock leases and due times are on)."""
    return server_us(conn) // 1000


def let_expire(conn: redis.Redis, *leases: Any) -> None:
    """Wait until the server's clock has passed every lease's deadline (`calls.Lease`s)."""
    last = max(lease.deadline_ms for lease in leases)
    wait_until(lambda: server_ms(conn) > last, timeout=5, what="the leases to expire")


def all_keys(conn: redis.Redis) -> list[bytes]:
    """Every key, of every primary on a cluster, sorted."""
    return sorted(key for server in servers_of(conn) for key in server.keys("*"))


def snapshot(conn: redis.Redis) -> dict[Any, Any]:
    """Every key with its serialised value: equal snapshots mean nothing was written."""
    return {key: s.dump(key) for s in servers_of(conn) for key in s.keys("*")}


def max_in_window(times: list[int], width: int) -> int:
    """The most of `times` within any window (t - width, t]."""
    ordered = sorted(times)
    most = first = 0
    for i, t in enumerate(ordered):
        while ordered[first] <= t - width:
            first += 1
        most = max(most, i - first + 1)
    return most


# -- the dashboard ------------------------------------------------------------------------------

TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "tasks.py", line 3, in crunch\n'
    "    raise ValueError(f'bad row {row}')\n"
    "ValueError: bad row [7]\n"
)


def failed_job(queue: Any, error: str = TRACEBACK, **options: Any) -> str:
    """Enqueue a job without retries, lease it and fail it with `error` (no worker)."""
    from pyscheduler.store import calls
    from pyscheduler.store.protocol import FailKind

    job_id: str = queue.enqueue_call("tasks:add", [1, 2], None, retries=0, **options).id
    leases = calls.pop(queue.connection, queue.keys, 1, 10_000, "test").leases
    assert [lease.id for lease in leases] == [job_id], "fail jobs on a queue with none ready"
    calls.fail(queue.connection, queue.keys, job_id, leases[0].token, FailKind.ERROR, error, 0.0)
    return job_id


class DashboardServer:
    """The dashboard app (`create_app(connection, **settings)`) on a real uvicorn server, in a
    thread of the test process, on a free port of 127.0.0.1; `url` is its base URL."""

    def __init__(self, redis_url: str, **settings: Any) -> None:
        import uvicorn

        from pyscheduler.dev.engine import free_port
        from pyscheduler.ops.dashboard.app import create_app

        self.connection = connect(redis_url)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(
            create_app(self.connection, **settings),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> DashboardServer:
        self.thread.start()
        wait_until(lambda: self.server.started, timeout=10, what="the dashboard to listen")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.connection.close()


# -- counting what a client sends --------------------------------------------------------------


@dataclass
class Traffic:
    """What a client sent: each command's name (with the function of an FCALL) and writes."""

    commands: list[str] = field(default_factory=list)
    round_trips: int = 0

    def reset(self) -> None:
        self.commands.clear()
        self.round_trips = 0

    def counts(self) -> Counter[str]:
        return Counter(self.commands)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _name(args: Sequence[Any]) -> str:
    name = _text(args[0]).upper()
    if name in ("FCALL", "FCALL_RO") and len(args) > 1:
        return f"{name} {_text(args[1])}"
    return name


def counting_client(url: str) -> tuple[redis.Redis, Traffic]:
    """A client whose connections record their traffic, with its connection already open."""
    traffic = Traffic()

    class CountingConnection(redis.Connection):
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            traffic.round_trips += 1
            super().send_packed_command(command, check_health)

        def send_command(self, *args: Any, **kwargs: Any) -> None:
            traffic.commands.append(_name(args))
            super().send_command(*args, **kwargs)

        def pack_commands(self, commands: Iterable[Sequence[Any]]) -> Any:
            commands = list(commands)
            traffic.commands.extend(_name(c) for c in commands)
            return super().pack_commands(commands)

    pool = redis.ConnectionPool.from_url(url, connection_class=CountingConnection)
    client = redis.Redis(connection_pool=pool)
    client.ping()  # the connection's handshake is not what the tests count
    traffic.reset()
    return client, traffic
