#!/usr/bin/env python3
"""A chaos run: jobs on a few queues while workers and the Redis server itself are killed.

    python tools/chaos.py                          # 20,000 jobs, 4 workers, about 5 minutes
    python tools/chaos.py --jobs 500 --seconds 30  # a small run
    python tools/chaos.py --kind valkey --workers 2 --seed 7

It starts a private server (`pyscheduler.dev.engine.Engine`) with an append-only file synced
on every write (`appendfsync always`: a write it acknowledged survives a SIGKILL), enqueues the
jobs in batches spread over `--seconds` while `--workers` worker processes (`pyscheduler
worker`, cwd tools/) run them, and meanwhile, at random intervals: SIGKILLs a worker (and
starts another), SIGSTOPs one for longer than its lease and then SIGCONTs it, or SIGKILLs the
server and restarts it on its port.

The handler (`chaos_tasks.run`) notes each run's start and end with its fencing token in a file
of its own process, and returns its token. Afterwards it checks:
  lost          every acknowledged enqueue ended complete;
  stale         each completed job's stored result comes from the run whose token the library
                accepted (the record's token), and that run was recorded;
  late starts   no run started after its job was complete (the record's end time);
and reports how long the jobs that ran on a killed worker waited for their rerun, and how many
jobs enqueued behind one (its queue, priority at most its own) started first: from the kill
on, and from when its lease had surely run out. Exit 0 when every check holds, 1 when one
fails, 2 when the run could not be made. `--json FILE` writes the figures too.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import functools
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import redis

from pyscheduler import Job, Queue
from pyscheduler.dev.engine import Engine
from pyscheduler.store import library
from pyscheduler.store.keys import QueueKeys

TOOLS_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS_DIR))
from chaos_tasks import ENV_DIR  # noqa: E402  (a module of this folder, as the workers import it)

QUEUES = ("chaos-a", "chaos-b", "chaos-c")
PRIORITIES = (0, 0, 0, 5, 10)  # most jobs at the default priority, some above it
LONG_SHARE = 0.03  # of jobs that sleep 0.3-3 s (some longer than the lease: renewed)
MAX_LOST_LEASES = 1000  # the kills must not fail a job for good: every job has to complete
BATCHES = 100  # the enqueues come in this many batches, spread over the chaos
RESULT_TTL_S = 86_400.0  # the records must outlive the run, to be checked
DECK = ("kill", "kill", "pause", "server")  # the chaos events, dealt in shuffled rounds
T = TypeVar("T")


@dataclass(frozen=True)
class Planned:
    id: str
    queue: str
    priority: int
    seconds: float


@dataclass
class Events:
    kills: list[tuple[float, int]] = field(default_factory=list)  # (time, worker pid)
    pauses: list[float] = field(default_factory=list)  # seconds stopped
    server_kills: int = 0
    worker_exits: list[str] = field(default_factory=list)  # exits nobody asked for


def retrying(action: Callable[[], T], seconds: float = 60.0) -> T:
    """Run `action`, again while the server is down or loading (it is killed on purpose)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return action()
        except (redis.ConnectionError, redis.TimeoutError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# -- processes ---------------------------------------------------------------------------------


class Workers:
    """`--workers` worker processes, each slot restarted when the chaos kills its process."""

    def __init__(self, url: str, count: int, args: argparse.Namespace, directory: Path) -> None:
        self.url, self.args, self.directory = url, args, directory
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", **{ENV_DIR: str(directory)})
        self.started = 0
        self.procs = [self._start() for _ in range(count)]

    def _start(self) -> subprocess.Popen[bytes]:
        self.started += 1
        command = [sys.executable, "-m", "pyscheduler", "worker", *QUEUES, "--url", self.url]
        command += ["--import", "chaos_tasks", "--auto-load", "--lease", str(self.args.lease)]
        command += ["--concurrency", str(self.args.concurrency)]
        with open(self.directory / f"worker-{self.started}.log", "wb") as out:
            return subprocess.Popen(
                command,
                cwd=TOOLS_DIR,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill(self, slot: int) -> int:
        proc = self.procs[slot]
        proc.kill()  # the main process only: its children die with it (parent-death signal)
        proc.wait(timeout=10)
        self.procs[slot] = self._start()
        return proc.pid

    def restart_exited(self, events: Events) -> None:
        for slot, proc in enumerate(self.procs):
            if proc.poll() is not None:
                events.worker_exits.append(f"pid {proc.pid} exited {proc.returncode}")
                self.procs[slot] = self._start()

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)  # in case a pause was cut short
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


class Producer(threading.Thread):
    """Enqueues the plan in batches spread evenly over `seconds`, so every kill finds work in
    flight; a batch whose reply was lost goes again with the same ids (an id that exists is
    left as it is), so every job ends acknowledged once."""

    def __init__(self, url: str, plan: list[Planned], seconds: float) -> None:
        super().__init__(daemon=True)
        self.conn = redis.Redis.from_url(url, socket_timeout=10)
        self.plan = plan
        self.seconds = seconds
        self.acknowledged: set[str] = set()
        self.error: BaseException | None = None

    def run(self) -> None:
        size = max(1, -(-len(self.plan) // BATCHES))
        begun = time.monotonic()
        try:
            for n, start in enumerate(range(0, len(self.plan), size)):
                time.sleep(max(0.0, begun + n * self.seconds / BATCHES - time.monotonic()))
                batch = self.plan[start : start + size]
                for queue, jobs in group_by_queue(batch).items():
                    done = retrying(functools.partial(self.enqueue, queue, jobs))
                    self.acknowledged.update(job.id for job in done)
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def enqueue(self, queue: str, jobs: list[Planned]) -> list[Job]:
        q = Queue(queue, connection=self.conn)  # `prepare` reads the queue's limits too
        prepared = [
            q.prepare(
                "chaos_tasks:run",
                [job.seconds],
                priority=job.priority,
                job_id=job.id,
                result_ttl=RESULT_TTL_S,
            )
            for job in jobs
        ]
        return q.enqueue_many(prepared)


def group_by_queue(jobs: list[Planned]) -> dict[str, list[Planned]]:
    grouped: dict[str, list[Planned]] = defaultdict(list)
    for job in jobs:
        grouped[job.queue].append(job)
    return grouped


def make_plan(count: int, rng: random.Random) -> list[Planned]:
    plan = []
    for n in range(count):
        long = rng.random() < LONG_SHARE
        seconds = rng.uniform(0.3, 3.0) if long else rng.choice((0.0, 0.001, 0.003, 0.01))
        queue, priority = rng.choice(QUEUES), rng.choice(PRIORITIES)
        plan.append(Planned(f"chaos-{n:06d}", queue, priority, round(seconds, 4)))
    return plan


# -- the run -----------------------------------------------------------------------------------


def remaining(conn: redis.Redis) -> int:
    """Jobs not finished yet, over every queue."""
    return sum(
        c.queued + c.delayed + c.active
        for c in (retrying(Queue(q, connection=conn).counts) for q in QUEUES)
    )


def chaos(
    engine: Engine, workers: Workers, producer: Producer, args: argparse.Namespace, events: Events
) -> float:
    """The kills and pauses, until the jobs are done or --seconds are over; its duration."""
    rng = random.Random(args.seed + 1)
    conn = redis.Redis.from_url(engine.url, socket_timeout=10)
    started = time.monotonic()
    deck: list[str] = []
    while time.monotonic() - started < args.seconds:
        time.sleep(rng.uniform(0.5, 2.5))
        workers.restart_exited(events)
        if not producer.is_alive() and remaining(conn) == 0:
            break
        if not deck:  # every kind of event in each few, in a random order
            deck = rng.sample(DECK, len(DECK))
        action = deck.pop()
        slot = rng.randrange(len(workers.procs))
        if action == "kill":
            events.kills.append((time.time(), workers.kill(slot)))
        elif action == "pause":
            pid, stopped = workers.procs[slot].pid, args.lease * rng.uniform(1.5, 2.5)
            with contextlib.suppress(ProcessLookupError):  # it may have exited meanwhile
                os.kill(pid, signal.SIGSTOP)
                time.sleep(stopped)
                os.kill(pid, signal.SIGCONT)
                events.pauses.append(stopped)
        else:
            engine.kill()
            time.sleep(rng.uniform(0.1, 1.0))
            engine.start()  # the same port and directory: it loads its append-only file
            events.server_kills += 1
    conn.close()
    return time.monotonic() - started


def drain(conn: redis.Redis, producer: Producer, seconds: float) -> float:
    started = time.monotonic()
    producer.join(timeout=seconds)
    while time.monotonic() - started < seconds and remaining(conn) > 0:
        time.sleep(0.2)
    return time.monotonic() - started


# -- the checks --------------------------------------------------------------------------------


@dataclass
class Run:
    id: str
    token: str
    t: float  # wall-clock seconds (the server's clock too: the same machine)
    ppid: int


def read_runs(directory: Path) -> tuple[list[Run], set[tuple[str, str]]]:
    """Every run start, and the (job, token) pairs whose run ended, from the handlers' files."""
    starts, ends = [], set()
    for path in directory.glob("runs-*.jsonl"):
        for line in path.read_text().splitlines():
            try:
                note = json.loads(line)
            except ValueError:  # a process killed mid-line would leave one (a write is whole)
                continue
            if note["e"] == "start":
                starts.append(Run(note["id"], note["tok"], note["t"], note["ppid"]))
            else:
                ends.add((note["id"], note["tok"]))
    return starts, ends


def read_jobs(conn: redis.Redis, plan: list[Planned]) -> dict[str, tuple[Any, Any]]:
    """Each planned job's stored record and result (parsed; None where missing)."""
    out: dict[str, tuple[Any, Any]] = {}
    for queue, jobs in group_by_queue(plan).items():
        keys = QueueKeys(queue)
        for start in range(0, len(jobs), 1000):
            ids = [job.id for job in jobs[start : start + 1000]]
            records = conn.hmget(keys.jobs, ids)
            results = conn.hmget(keys.results, ids)
            for job_id, record, result in zip(ids, records, results, strict=True):
                out[job_id] = (
                    json.loads(record) if record else None,
                    json.loads(result) if result else None,
                )
    return out


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def check(self, ok: bool, text: str) -> None:
        self.lines.append(f"{'PASS' if ok else 'FAIL'} {text}")
        if not ok:
            self.failed.append(text)


def check(
    plan: list[Planned],
    acknowledged: set[str],
    jobs: dict[str, tuple[Any, Any]],
    starts: list[Run],
    ends: set[tuple[str, str]],
    events: Events,
    lease: float,
) -> Report:
    report = Report()
    runs_of: dict[str, list[Run]] = defaultdict(list)
    for run in sorted(starts, key=lambda r: r.t):
        runs_of[run.id].append(run)

    statuses = Counter((jobs[i][0] or {}).get("status", "missing") for i in acknowledged)
    complete = statuses.get("complete", 0)
    others = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()) if s != "complete")
    report.check(
        complete == len(acknowledged),
        f"lost: {complete}/{len(acknowledged)} acknowledged jobs complete"
        + (f" ({others})" if others else ""),
    )

    stale = unrecorded = late = 0
    accepted: dict[str, str] = {}
    for job_id in acknowledged:
        record, result = jobs[job_id]
        if not record or record.get("status") != "complete":
            continue
        token = accepted[job_id] = record.get("token", "")
        if not isinstance(result, dict) or result.get("tok") != token:
            stale += 1
        elif (job_id, token) not in ends or token not in {r.token for r in runs_of[job_id]}:
            unrecorded += 1
        ended_s = float(record.get("ended", 0)) / 1000
        late += sum(1 for r in runs_of[job_id] if r.token != token and r.t > ended_s)
    report.check(stale == 0, f"stale: {stale} results not from the run the library accepted")
    report.check(unrecorded == 0, f"stale: {unrecorded} accepted runs with no recorded end")
    report.check(late == 0, f"late starts: {late} runs started after their job was complete")

    reruns = sum(1 for runs in runs_of.values() if len(runs) > 1)
    lost_leases = sum(int((jobs[i][0] or {}).get("lost", 0)) for i in acknowledged)
    report.lines.append(
        f"runs: {len(starts)} starts of {len(runs_of)} jobs; {reruns} jobs ran more than once;"
        f" {lost_leases} lost leases in the records"
    )
    line, figures = rerun_delays(plan, runs_of, accepted, events, lease)
    report.lines.append(line)
    report.figures.update(
        acknowledged=len(acknowledged),
        complete=complete,
        stale=stale,
        unrecorded=unrecorded,
        late_starts=late,
        starts=len(starts),
        jobs_run_again=reruns,
        lost_leases=lost_leases,
        worker_kills=len(events.kills),
        pauses=len(events.pauses),
        server_kills=events.server_kills,
        **figures,
    )
    return report


def rerun_delays(
    plan: list[Planned],
    runs_of: dict[str, list[Run]],
    accepted: dict[str, str],
    events: Events,
    lease: float,
) -> tuple[str, dict[str, float]]:
    """How long the jobs running on a killed worker waited for their rerun, and how many jobs
    enqueued behind one (its queue, a priority at most its own) started before it: from the
    kill on, and from when its lease had surely run out (the kill plus a lease)."""
    by_id = {job.id: job for job in plan}
    order = {job.id: n for n, job in enumerate(plan)}  # the order of the enqueues
    starts_in: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for job_id, runs in runs_of.items():
        starts_in[by_id[job_id].queue] += ((r.t, job_id) for r in runs)
    for queue_starts in starts_in.values():
        queue_starts.sort()

    def behind_started(job: Planned, since: float, until: float) -> int:
        queue_starts = starts_in[job.queue]
        first = bisect.bisect_right(queue_starts, (since, "\uffff"))
        last = bisect.bisect_left(queue_starts, (until, ""))
        return len(
            {
                i
                for _, i in queue_starts[first:last]
                if order[i] > order[job.id] and by_id[i].priority <= job.priority
            }
        )

    delays: list[float] = []
    after_kill: list[int] = []
    after_lease: list[int] = []
    for killed_at, pid in events.kills:
        for job_id, runs in runs_of.items():
            victim = [r for r in runs if r.ppid == pid and r.t < killed_at]
            if not victim or victim[-1].token == accepted.get(job_id):
                continue  # not running there, or its report got in before the kill
            rerun = next((r for r in runs if r.t > killed_at), None)
            if rerun is None:
                continue
            delays.append(rerun.t - killed_at)
            after_kill.append(behind_started(by_id[job_id], killed_at, rerun.t))
            after_lease.append(behind_started(by_id[job_id], killed_at + lease, rerun.t))
    if not delays:
        return "reruns after a kill: none (no job was running on a killed worker)", {}
    figures = {
        "reruns_after_kill": len(delays),
        "rerun_delay_median_s": statistics.median(delays),
        "rerun_delay_max_s": max(delays),
        "behind_started_first_after_kill_max": max(after_kill),
        "behind_started_first_after_lease_max": max(after_lease),
    }
    return (
        f"reruns after a kill: {len(delays)} jobs; kill to rerun median"
        f" {statistics.median(delays):.2f} s, max {max(delays):.2f} s; jobs enqueued behind one"
        f" (its queue, priority <= its own) that started first: after the kill median"
        f" {statistics.median(after_kill):.0f}, max {max(after_kill)}; after its lease ran out"
        f" median {statistics.median(after_lease):.0f}, max {max(after_lease)}"
    ), figures


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs to enqueue (20000)")
    parser.add_argument("--workers", type=int, default=4, help="worker processes (4)")
    parser.add_argument("--concurrency", type=int, default=4, help="jobs per worker (4)")
    parser.add_argument("--lease", type=float, default=2.0, help="lease seconds (2)")
    parser.add_argument(
        "--seconds", type=float, default=300.0, help="seconds of chaos; enqueues spread over it"
    )
    parser.add_argument(
        "--drain", type=float, default=180.0, help="most seconds to finish afterwards (180)"
    )
    parser.add_argument("--kind", choices=("redis", "valkey"), default=None, help="server kind")
    parser.add_argument("--seed", type=int, default=1, help="random seed (1)")
    parser.add_argument("--keep", action="store_true", help="keep the run's files")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    return parser.parse_args(argv)


@contextlib.contextmanager
def run_directory(args: argparse.Namespace) -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="psq-chaos-"))
    try:
        yield directory
    finally:
        if args.keep:
            print(f"files of the run: {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = make_plan(args.jobs, random.Random(args.seed))
    events = Events()
    aof = ("--appendonly", "yes", "--appendfsync", "always")
    with run_directory(args) as directory, Engine(kind=args.kind, extra_args=aof) as engine:
        conn = redis.Redis.from_url(engine.url, socket_timeout=10)
        library.load(conn)
        for name in QUEUES:
            Queue(name, connection=conn).set_max_lost_leases(MAX_LOST_LEASES)
        workers = Workers(engine.url, args.workers, args, directory)
        producer = Producer(engine.url, plan, args.seconds * 0.8)
        try:
            producer.start()
            chaos_s = chaos(engine, workers, producer, args, events)
            drain_s = drain(conn, producer, args.drain)
        finally:
            workers.stop()
        if producer.error is not None:
            print(f"chaos: the producer failed: {producer.error!r}", file=sys.stderr)
            return 2
        jobs = retrying(lambda: read_jobs(conn, plan))
        starts, ends = read_runs(directory)
        report = check(plan, producer.acknowledged, jobs, starts, ends, events, args.lease)
        conn.close()
        pauses = (
            f"{len(events.pauses)} pauses of {min(events.pauses):.1f}-{max(events.pauses):.1f} s"
            if events.pauses
            else "0 pauses"
        )
        print(
            f"chaos: {len(plan)} jobs on {len(QUEUES)} queues, {args.workers} workers x"
            f" {args.concurrency}, lease {args.lease} s, {engine.kind} {engine.version};"
            f" {chaos_s:.1f} s of chaos, then {drain_s:.1f} s to finish"
        )
        print(
            f"events: {len(events.kills)} worker kills, {pauses} (SIGSTOP past the lease),"
            f" {events.server_kills} server kills; {len(events.worker_exits)} unasked worker exits"
            + (f" ({'; '.join(events.worker_exits[:5])})" if events.worker_exits else "")
        )
        for line in report.lines:
            print(line)
        print(f"chaos: {'FAILED: ' + '; '.join(report.failed) if report.failed else 'OK'}")
        if args.json is not None:
            figures = {**report.figures, "lines": report.lines, "failed": report.failed}
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
        if report.failed:
            args.keep = True  # the files say what happened
        return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
