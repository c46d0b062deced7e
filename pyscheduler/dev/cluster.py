"""A private Redis Cluster (or Valkey cluster) of engines, for the tests and the tools.

`local_cluster` starts cluster-mode engines on free ports, splits the 16,384 slots evenly
between them (CLUSTER ADDSLOTSRANGE), joins them (CLUSTER MEET) and waits until every node
says the cluster is ok: what `redis-cli --cluster create --cluster-replicas 0` does, without its
refusal of fewer than 3 primaries. A cluster with replicas needs `redis-cli --cluster create
--cluster-replicas 1`: `cli_binary` finds the one that goes with an engine's server.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.crc import key_slot

from .engine import Engine

HOST = "127.0.0.1"
CLUSTER_SLOTS = 16384
CLUSTER_ARGS = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
READY_TIMEOUT_S = 15.0
# A cluster node also listens on its port + 10,000 (the cluster bus), so a node's port is at
# most 65,535 - 10,000.
_BUS_OFFSET = 10_000
_PORT_RANGE = (20_000, 65_536 - _BUS_OFFSET)


def cluster_port(host: str = HOST) -> int:
    """A port free for a cluster node: it and its bus port free now."""
    for _ in range(200):
        port = random.randrange(*_PORT_RANGE)
        with contextlib.ExitStack() as stack:
            try:
                for candidate in (port, port + _BUS_OFFSET):
                    sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                    sock.bind((host, candidate))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port pair for a cluster node")


def cli_binary(server_binary: str) -> str:
    """The redis-cli (or valkey-cli) that goes with a server binary: next to it, else on PATH."""
    folder = Path(server_binary).resolve().parent
    for name in ("valkey-cli", "redis-cli"):
        candidate = folder / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    for name in ("redis-cli", "valkey-cli"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError(f"no redis-cli or valkey-cli next to {server_binary} or on PATH")


@dataclass
class LocalCluster:
    """Engines in cluster mode, every slot covered, no replicas."""

    nodes: list[Engine]

    @property
    def url(self) -> str:
        return f"redis+cluster://{HOST}:{self.nodes[0].port}"

    @property
    def names(self) -> list[str]:
        return [f"{HOST}:{node.port}" for node in self.nodes]

    def node(self, index: int) -> redis.Redis:
        return redis.Redis(host=HOST, port=self.nodes[index].port)

    def shard_of(self, key: str) -> int:
        """The index of the node that owns `key`'s slot (as `local_cluster` split them)."""
        per_node = CLUSTER_SLOTS // len(self.nodes)
        return min(key_slot(key.encode()) // per_node, len(self.nodes) - 1)


@contextlib.contextmanager
def local_cluster(kind: str | None, primaries: int = 3) -> Iterator[LocalCluster]:
    """`primaries` cluster-mode engines of `kind` (see the module docstring), stopped on exit."""
    with contextlib.ExitStack() as stack:
        nodes = [
            stack.enter_context(Engine(kind=kind, port=cluster_port(), extra_args=CLUSTER_ARGS))
            for _ in range(primaries)
        ]
        clients = [redis.Redis(host=HOST, port=node.port) for node in nodes]
        for client in clients:
            stack.callback(client.close)
        per_node = CLUSTER_SLOTS // primaries
        for index, client in enumerate(clients):
            last = CLUSTER_SLOTS - 1 if index == primaries - 1 else (index + 1) * per_node - 1
            client.cluster("ADDSLOTSRANGE", index * per_node, last)
        for node in nodes[1:]:
            clients[0].cluster("MEET", HOST, node.port)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not all(
            info["cluster_state"] == "ok" and int(info["cluster_known_nodes"]) == primaries
            for info in (client.cluster("info") for client in clients)
        ):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the {primaries}-node {kind or 'redis'} cluster did not come up"
                )
            time.sleep(0.05)
        yield LocalCluster(nodes)


def _info(port: int, section: str) -> dict[str, object]:
    with redis.Redis(host=HOST, port=port, socket_timeout=2, decode_responses=True) as client:
        info: dict[str, object] = client.info(section)
        return info


def online_replicas(port: int) -> list[int]:
    """The ports of the replicas the server on `port` counts as online (INFO replication)."""
    return [
        int(value["port"])
        for name, value in _info(port, "replication").items()
        if name.startswith("slave") and isinstance(value, dict) and value.get("state") == "online"
    ]


@dataclass
class ReplicatedCluster(LocalCluster):
    """Cluster-mode engines joined with a replica per primary (`nodes`: all of them)."""

    def primaries(self) -> list[Engine]:
        """The running nodes that are primaries now (a failover changes which)."""
        return [
            node
            for node in self.nodes
            if node.running and _info(node.port, "replication")["role"] == "master"
        ]

    def replica_of(self, primary_port: int) -> Engine:
        """The engine of a replica that follows the primary on `primary_port` (online or still
        syncing)."""
        info = _info(primary_port, "replication")
        ports = {
            int(value["port"])
            for name, value in info.items()
            if name.startswith("slave") and isinstance(value, dict)
        }
        return next(node for node in self.nodes if node.port in ports)


@contextlib.contextmanager
def local_cluster_with_replicas(
    kind: str | None, primaries: int = 3, extra_args: tuple[str, ...] = ()
) -> Iterator[ReplicatedCluster]:
    """`2 * primaries` cluster-mode engines joined by `redis-cli --cluster create
    --cluster-replicas 1`; ready once every node says the cluster is ok and every primary
    counts its replica online. A replica's first sync starts at once (diskless, no delay)."""
    args = (*CLUSTER_ARGS, "--repl-diskless-sync-delay", "0", *extra_args)
    with contextlib.ExitStack() as stack:
        nodes = [
            stack.enter_context(Engine(kind=kind, port=cluster_port(), extra_args=args))
            for _ in range(2 * primaries)
        ]
        command = [
            cli_binary(nodes[0].binary),
            "--cluster", "create",
            *(f"{HOST}:{node.port}" for node in nodes),
            "--cluster-replicas", "1",
            "--cluster-yes",
        ]  # fmt: skip
        created = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if created.returncode != 0:
            raise RuntimeError(
                f"redis-cli --cluster create failed:\n{created.stdout}{created.stderr}"
            )
        cluster = ReplicatedCluster(nodes)
        clients = [redis.Redis(host=HOST, port=node.port) for node in nodes]
        for client in clients:
            stack.callback(client.close)

        def ready() -> bool:
            for client in clients:
                info = client.cluster("info")
                if info["cluster_state"] != "ok" or int(info["cluster_known_nodes"]) != len(nodes):
                    return False
            now_primaries = cluster.primaries()
            return len(now_primaries) == primaries and all(
                online_replicas(node.port) for node in now_primaries
            )

        deadline = time.monotonic() + 2 * READY_TIMEOUT_S
        while True:
            with contextlib.suppress(redis.RedisError):
                if ready():
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {kind or 'redis'} cluster with replicas did not come up")
            time.sleep(0.1)
        yield cluster
