#!/usr/bin/env python3
"""Failover on a Redis Cluster with replicas: acknowledged jobs lost with and without durable
enqueues, and what durable enqueues cost on W1.

    python tools/failover.py                         # both modes, 30 s each, 5 kills each
    python tools/failover.py --modes durable --seconds 20 --kills 3
    python tools/failover.py --w1-only               # only the cost on W1
    python tools/failover.py --json failover.json    # the figures as JSON too ('-': stdout)

For each mode (`plain`, `durable`) it starts a local Redis Cluster of 3 primaries and 3
replicas (private `redis-server`s in cluster mode on free ports, `cluster-node-timeout`
--node-timeout ms, joined by `redis-cli --cluster create ... --cluster-replicas 1`), loads the
library on every primary (`pyscheduler load-scripts`), then for --seconds:

  a producer (this process, one thread, a `redis+cluster://` client) enqueues no-op jobs
  one at a time, at most --rate a second, round robin over --queues queues spread over the
  shards, each with an id of its own; an enqueue that returns is *acknowledged* (its id is
  kept); one that raises is not (NotDurable, a connection lost, CLUSTERDOWN...: counted by
  kind). In durable mode every enqueue is `durable=Durability(replicas=1, timeout=--wait)`.
  --workers `pyscheduler worker --url redis+cluster://...` processes drain every queue; the
  handler (tools/failover_tasks.py) writes its job's id to a file, so a completion is known
  whatever Redis kept.
  --kills times, evenly spread, one primary (of the shards in turn) is SIGKILLed; the tool
  waits until its replica is promoted (cluster state ok again), restarts the killed node
  (same port and nodes.conf: it rejoins as a replica of the promoted one) and waits until its
  link to the new primary is up. Nothing restarts or tells the workers or the producer.

Then the producer stops, the workers get --drain seconds at most to empty the queues (jobs
whose lease was lost with a primary run again once it expires), and the tool counts:

  acknowledged   enqueues that returned;
  completed      acknowledged ids some handler run wrote down;
  in Redis       acknowledged ids not completed but still in their queue's job hash;
  lost           acknowledged ids neither completed nor in Redis: what a failover took away;
  re-runs        handler runs beyond the first of a job (at-least-once after a lost lease or a
                 completion lost with a primary);
  workers alive  worker processes still running at the end (they must carry on alone).

W1 (enqueue one at a time): a single primary with one replica (not a cluster), one client,
--w1-seconds of `enqueue` in a loop with and without `durable=True`: jobs/s of each and the
ratio, and the median and 99th percentile latency.

Exit 0 when durable mode lost no acknowledged job and every worker survived, 1 otherwise, 2
when a run failed.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis
from redis.cluster import RedisCluster

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyscheduler import Durability, Queue
from pyscheduler.dev.cluster import ReplicatedCluster, local_cluster_with_replicas
from pyscheduler.dev.engine import Engine
from pyscheduler.store import library
from pyscheduler.store.connection import connect
from pyscheduler.store.keys import QueueKeys

TOOLS_DIR = Path(__file__).resolve().parent
HOST = "127.0.0.1"
HANDLER = "failover_tasks:done"
ENV_DIR = "PSQ_FAILOVER_DIR"  # failover_tasks.ENV_DIR
READY_TIMEOUT_S = 30.0
START = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - START:6.1f} s] {message}", file=sys.stderr, flush=True)


# -- a local cluster with replicas ---------------------------------------------------------------


def client(port: int) -> redis.Redis:
    return redis.Redis(host=HOST, port=port, socket_timeout=2, decode_responses=True)


def role(port: int) -> dict[str, Any]:
    with client(port) as c:
        info: dict[str, Any] = c.info("replication")
        return info


def cluster_ok(ports: list[int]) -> bool:
    for port in ports:
        try:
            with client(port) as c:
                if c.cluster("info")["cluster_state"] != "ok":
                    return False
        except redis.RedisError:
            return False
    return True


def wait(predicate: Any, what: str, timeout: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


@contextlib.contextmanager
def local_cluster(kind: str | None, node_timeout_ms: int) -> Iterator[ReplicatedCluster]:
    """3 primaries with a replica each, quick to fail over: a replica may always take over."""
    extra = (
        "--cluster-node-timeout", str(node_timeout_ms),
        "--cluster-replica-validity-factor", "0",
    )  # fmt: skip
    with local_cluster_with_replicas(kind, 3, extra) as cluster:
        yield cluster


def ports_of(cluster: ReplicatedCluster) -> list[int]:
    return [node.port for node in cluster.nodes]


def deploy(url: str) -> None:
    command = [sys.executable, "-m", "pyscheduler", "load-scripts", "--url", url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"load-scripts exited {done.returncode}: {done.stderr}")


# -- the run ---------------------------------------------------------------------------------------


def queue_names(conn: RedisCluster, count: int) -> list[str]:
    """`count` queue names spread evenly over the primaries."""
    by_node: dict[str, list[str]] = {}
    for i in itertools.count():
        name = f"fo{i}"
        node: Any = conn.get_node_from_key(QueueKeys(name).jobs)
        by_node.setdefault(node.name, []).append(name)
        if len(by_node) == 3 and all(len(v) >= -(-count // 3) for v in by_node.values()):
            break
    rows = [by_node[k] for k in sorted(by_node)]
    return [name for group in zip(*rows, strict=False) for name in group][:count]


@dataclass
class Kill:
    port: int
    at_s: float
    promoted_after_s: float = 0.0
    rejoined_after_s: float = 0.0


@dataclass
class ModeResult:
    mode: str
    seconds: float
    attempted: int = 0
    acknowledged: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    first_errors: dict[str, str] = field(default_factory=dict)
    completed: int = 0
    in_redis: int = 0
    lost: int = 0
    lost_ids: list[str] = field(default_factory=list)
    runs: int = 0
    re_runs: int = 0
    unacknowledged_completed: int = 0
    completed_after_last_kill: int = 0
    workers_alive: int = 0
    workers: int = 0
    kills: list[Kill] = field(default_factory=list)
    drained: bool = False


class Producer(threading.Thread):
    def __init__(self, url: str, names: list[str], durable: Durability | None, rate: float) -> None:
        super().__init__(name="producer", daemon=True)
        self.conn = connect(url)
        self.queues = [Queue(n, connection=self.conn, durable=durable or False) for n in names]
        self.rate = rate
        self.stopping = threading.Event()
        self.acknowledged: list[str] = []
        self.attempted = 0
        self.refused: Counter[str] = Counter()
        self.first_errors: dict[str, str] = {}  # kind -> the first one's traceback

    def run(self) -> None:
        interval = 1.0 / self.rate if self.rate > 0 else 0.0
        next_at = time.monotonic()
        for n in itertools.count():
            if self.stopping.is_set():
                return
            queue = self.queues[n % len(self.queues)]
            job_id = f"j{n}"
            self.attempted += 1
            try:
                queue.enqueue(HANDLER, job_id=job_id)
                self.acknowledged.append(f"{queue.name} {job_id}")
            except Exception as exc:  # every refusal, counted by kind
                self.refused[type(exc).__name__] += 1
                self.first_errors.setdefault(type(exc).__name__, traceback.format_exc())
                time.sleep(0.02)
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_at = time.monotonic()


def start_workers(
    url: str, names: list[str], count: int, directory: Path
) -> list[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env[ENV_DIR] = str(directory)
    env["PYTHONPATH"] = os.pathsep.join([str(TOOLS_DIR.parent), env.get("PYTHONPATH", "")])
    procs = []
    for index in range(count):
        log = open(directory / f"worker-{index}.log", "wb")  # noqa: SIM115  (closed with the run)
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pyscheduler",
                    "worker",
                    *names,
                    "--url",
                    url,
                    "--lease",
                    "2",
                    "-i",
                    "failover_tasks",
                ],
                cwd=TOOLS_DIR,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    return procs


def completions(directory: Path) -> Counter[str]:
    done: Counter[str] = Counter()
    for path in directory.glob("done-*.txt"):
        for line in path.read_text().splitlines():
            if line:
                done[line] += 1
    return done


def kill_one(cluster: ReplicatedCluster, shard: int, at_s: float) -> Kill:
    primaries = sorted(cluster.primaries(), key=lambda e: e.port)
    victim = primaries[shard % len(primaries)]
    replica = cluster.replica_of(victim.port)
    kill = Kill(victim.port, at_s)
    started = time.monotonic()
    victim.kill()  # SIGKILL
    others = [p for p in ports_of(cluster) if p != victim.port]
    wait(
        lambda: role(replica.port)["role"] == "master" and cluster_ok(others),
        f"{replica.port} promoted in place of {victim.port}",
        timeout=60,
    )
    kill.promoted_after_s = time.monotonic() - started
    victim.start()  # same port and nodes.conf: it rejoins, as a replica of the promoted one
    wait(
        lambda: (
            role(victim.port)["role"] == "slave"
            and role(victim.port).get("master_link_status") == "up"
        ),
        f"{victim.port} back as a replica",
        timeout=60,
    )
    wait(lambda: cluster_ok(ports_of(cluster)), "the cluster ok with every node", timeout=60)
    kill.rejoined_after_s = time.monotonic() - started
    return kill


def remaining(conn: RedisCluster, names: list[str]) -> int:
    total = 0
    for name in names:
        counts = Queue(name, connection=conn).counts()
        total += counts.queued + counts.active + counts.delayed
    return total


def run_mode(mode: str, args: argparse.Namespace) -> ModeResult:
    result = ModeResult(mode, args.seconds)
    durable = Durability(replicas=1, timeout=args.wait) if mode == "durable" else None
    directory = Path(tempfile.mkdtemp(prefix=f"psq-failover-{mode}-"))
    with local_cluster(args.kind, args.node_timeout) as cluster:
        progress(f"{mode}: cluster up on {ports_of(cluster)}")
        deploy(cluster.url)
        conn = connect(cluster.url)
        assert isinstance(conn, RedisCluster)
        names = queue_names(conn, args.queues)
        workers = start_workers(cluster.url, names, args.workers, directory)
        result.workers = len(workers)
        try:
            time.sleep(2.0)  # the workers start
            producer = Producer(cluster.url, names, durable, args.rate)
            producer.start()
            began = time.monotonic()
            gap = args.seconds / (args.kills + 1)
            for index in range(args.kills):
                due = began + gap * (index + 1)
                time.sleep(max(0.0, due - time.monotonic()))
                progress(f"{mode}: kill {index + 1} of {args.kills}")
                kill = kill_one(cluster, index, time.monotonic() - began)
                progress(
                    f"{mode}:   {kill.port} killed; promoted after {kill.promoted_after_s:.1f} s,"
                    f" rejoined after {kill.rejoined_after_s:.1f} s"
                )
                result.kills.append(kill)
            last_kill_done = completions(directory)
            time.sleep(max(0.0, began + args.seconds - time.monotonic()))
            producer.stopping.set()
            producer.join(30)
            result.seconds = time.monotonic() - began
            progress(
                f"{mode}: producer stopped ({len(producer.acknowledged)} acknowledged); draining"
            )
            deadline = time.monotonic() + args.drain
            while time.monotonic() < deadline:
                try:
                    if remaining(conn, names) == 0:
                        result.drained = True
                        break
                except (redis.RedisError, redis.exceptions.RedisClusterException):
                    pass
                time.sleep(0.5)
            time.sleep(1.0)  # the last handler lines
            result.workers_alive = sum(1 for w in workers if w.poll() is None)
        finally:
            for worker in workers:
                if worker.poll() is None:
                    worker.send_signal(signal.SIGTERM)
            for worker in workers:
                try:
                    worker.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait()
        done = completions(directory)
        acknowledged = producer.acknowledged
        result.attempted = producer.attempted
        result.acknowledged = len(acknowledged)
        result.refused = dict(producer.refused)
        result.first_errors = {k: v[-1500:] for k, v in producer.first_errors.items()}
        result.runs = sum(done.values())
        result.re_runs = result.runs - len(done)
        acked_ids = {entry.split(" ", 1)[1] for entry in acknowledged}
        result.unacknowledged_completed = len(set(done) - acked_ids)
        result.completed_after_last_kill = len(set(done) - set(last_kill_done))
        present: set[str] = set()
        for name in names:
            for job_id in conn.hkeys(QueueKeys(name).jobs):
                present.add(job_id.decode() if isinstance(job_id, bytes) else str(job_id))
        lost = [
            entry
            for entry in acknowledged
            if entry.split(" ", 1)[1] not in done and entry.split(" ", 1)[1] not in present
        ]
        result.completed = sum(1 for entry in acknowledged if entry.split(" ", 1)[1] in done)
        result.in_redis = result.acknowledged - result.completed - len(lost)
        result.lost = len(lost)
        result.lost_ids = lost[:20]
        conn.close()
    shutil.rmtree(directory, ignore_errors=True)
    return result


def report(r: ModeResult) -> None:
    """One mode's figures, printed as soon as the mode is done."""
    kills = ", ".join(f"{k.promoted_after_s:.1f}/{k.rejoined_after_s:.1f}" for k in r.kills)
    print(
        f"{r.mode:8} {r.seconds:5.1f} s  attempted {r.attempted}  acknowledged"
        f" {r.acknowledged}  refused {r.refused or 0}  completed {r.completed}  in Redis"
        f" {r.in_redis}  LOST {r.lost}  re-runs {r.re_runs}  completed without an ack"
        f" {r.unacknowledged_completed}  after the last kill {r.completed_after_last_kill}"
        f"  workers alive {r.workers_alive}/{r.workers}  drained {r.drained}"
        f"  kills (promoted/rejoined s): {kills}",
        flush=True,
    )
    for kind, text in r.first_errors.items():
        if kind not in ("ConnectionError", "ClusterDownError", "NotDurable", "TimeoutError"):
            print(f"         first {kind}:\n{text}")
    if r.lost_ids:
        print(f"         lost (first {len(r.lost_ids)}): {' '.join(r.lost_ids)}")


# -- W1: enqueue one at a time ---------------------------------------------------------------------


@dataclass
class W1Result:
    mode: str
    jobs: int
    seconds: float
    jobs_per_s: float
    p50_ms: float
    p99_ms: float


def w1(args: argparse.Namespace) -> list[W1Result]:
    found = []
    base = ["--repl-diskless-sync-delay", "0"]
    with Engine(kind=args.kind, extra_args=base) as primary:
        replica_args = [*base, "--replicaof", HOST, str(primary.port)]
        with Engine(kind=args.kind, extra_args=replica_args):
            wait(
                lambda: role(primary.port).get("slave0", {}).get("state") == "online",
                "the W1 replica online",
            )
            conn = connect(primary.url)
            library.load(conn)
            for mode in ("plain", "durable", "plain", "durable"):  # interleaved: drift shows
                queue = Queue(f"w1-{mode}", connection=conn, durable=mode == "durable")
                queue.enqueue(HANDLER)  # registry write and first round trip out of the way
                latencies = []
                began = time.perf_counter()
                while (now := time.perf_counter()) - began < args.w1_seconds:
                    queue.enqueue(HANDLER)
                    latencies.append(time.perf_counter() - now)
                elapsed = time.perf_counter() - began
                latencies.sort()
                found.append(
                    W1Result(
                        mode,
                        len(latencies),
                        elapsed,
                        len(latencies) / elapsed,
                        statistics.median(latencies) * 1000,
                        latencies[int(len(latencies) * 0.99)] * 1000,
                    )
                )
                progress(f"W1 {mode}: {found[-1].jobs_per_s:.0f} jobs/s")
            conn.close()
    return found


# -- main ------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="plain,durable", help="plain,durable (default: both)")
    parser.add_argument("--seconds", type=float, default=30.0, help="producer time per mode")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument(
        "--rate", type=float, default=300.0, help="enqueues per second at most (0: no limit)"
    )
    parser.add_argument("--queues", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--wait", type=float, default=1.0, help="durable WAIT timeout (s)")
    parser.add_argument("--node-timeout", type=int, default=1500, help="cluster-node-timeout ms")
    parser.add_argument("--drain", type=float, default=60.0, help="seconds to drain at most")
    parser.add_argument("--kind", default="redis", choices=("redis", "valkey"))
    parser.add_argument("--w1-seconds", type=float, default=4.0)
    parser.add_argument("--w1-only", action="store_true")
    parser.add_argument("--no-w1", action="store_true")
    parser.add_argument("--json", help="write the figures as JSON here ('-': stdout)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results: list[ModeResult] = []
    w1_results: list[W1Result] = []
    try:
        if not args.w1_only:
            for mode in args.modes.split(","):
                results.append(run_mode(mode.strip(), args))
                report(results[-1])
        if not args.no_w1:
            w1_results = w1(args)
    except RuntimeError as exc:
        progress(f"run failed: {exc}")
        return 2
    by_mode: dict[str, list[W1Result]] = {}
    for w in w1_results:
        by_mode.setdefault(w.mode, []).append(w)
    for mode, rows in by_mode.items():
        rate = statistics.mean(w.jobs_per_s for w in rows)
        p50 = statistics.mean(w.p50_ms for w in rows)
        p99 = statistics.mean(w.p99_ms for w in rows)
        print(
            f"W1 {mode:8} {rate:7.0f} jobs/s  p50 {p50:.2f} ms  p99 {p99:.2f} ms ({len(rows)} runs)"
        )
    if "plain" in by_mode and "durable" in by_mode:
        ratio = statistics.mean(w.jobs_per_s for w in by_mode["durable"]) / statistics.mean(
            w.jobs_per_s for w in by_mode["plain"]
        )
        print(f"W1 durable / plain: {ratio:.2f}")
    if args.json:
        text = json.dumps(
            {"modes": [asdict(r) for r in results], "w1": [asdict(w) for w in w1_results]},
            indent=2,
        )
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    durable_ok = all(r.lost == 0 for r in results if r.mode == "durable")
    workers_ok = all(r.workers_alive == r.workers for r in results)
    return 0 if durable_ok and workers_ok else 1


if __name__ == "__main__":
    sys.exit(main())
