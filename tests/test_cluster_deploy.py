"""Deploying the library to a Redis Cluster: every primary gets it, and every primary is checked.

Redis keeps functions per server, so a FUNCTION LOAD sent to one node leaves the others
without the library, and a keyless FCALL (the version check) lands on any node. Each test
starts a private 3-primary cluster of the session's engine kind.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from redis.cluster import RedisCluster
from servers import Cluster, cluster

from pyscheduler import InvalidURL, LibraryError, Queue
from pyscheduler.store import library
from pyscheduler.store.connection import connect

LOAD_SCRIPTS = ["tools/load_scripts.py"]


@pytest.fixture
def three_primaries(engine: Any) -> Iterator[Cluster]:
    kind = engine.kind if engine.kind != "external" else "redis"
    with cluster(kind) as nodes:
        yield nodes


def load_scripts(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *LOAD_SCRIPTS, *args], capture_output=True, text=True, timeout=60
    )


def has_library(client: Any) -> bool:
    # FUNCTION LIST replies with flat [name, value, ...] lists, one per library.
    return any(
        dict(zip(entry[::2], entry[1::2], strict=True)).get(b"library_name") == b"pyscheduler"
        for entry in client.function_list()
    )


def test_load_scripts_loads_the_library_on_every_primary(three_primaries: Cluster) -> None:
    done = load_scripts(three_primaries.url)

    assert done.returncode == 0, done.stderr
    assert "on 3 primaries" in done.stdout
    assert all(has_library(three_primaries.node(i)) for i in range(3))


def test_check_passes_when_every_primary_has_this_version(three_primaries: Cluster) -> None:
    load_scripts(three_primaries.url)

    done = load_scripts("--check", three_primaries.url)

    assert done.returncode == 0, done.stderr
    assert f"{library.code_version()} is deployed on 3 primaries" in done.stdout


def test_check_exits_1_naming_only_the_primaries_without_it(three_primaries: Cluster) -> None:
    load_scripts(three_primaries.url)
    three_primaries.node(1).function_flush()

    done = load_scripts("--check", three_primaries.url)

    assert done.returncode == 1
    missing, *others = three_primaries.names[1:2] + three_primaries.names[:1]
    assert f"not loaded on {missing}" in done.stderr
    assert all(name not in done.stderr for name in others + three_primaries.names[2:])


def test_version_check_asks_every_primary(three_primaries: Cluster) -> None:
    client = connect(three_primaries.url)
    assert isinstance(client, RedisCluster)
    library.load(client)
    three_primaries.node(2).function_flush()

    # A keyless call goes to any node: checking one node would pass on two of three.
    for _ in range(10):
        fresh = connect(three_primaries.url)
        with pytest.raises(LibraryError, match=f"not loaded on {three_primaries.names[2]}"):
            library.ensure_loaded(fresh)
        fresh.close()
    client.close()


def test_auto_load_loads_every_primary(three_primaries: Cluster) -> None:
    client = connect(three_primaries.url)
    library.ensure_loaded(client, auto_load=True)

    assert all(has_library(three_primaries.node(i)) for i in range(3))
    assert set(library.deployed_versions(client).values()) == {library.code_version()}
    client.close()


def test_check_of_an_unreachable_cluster_exits_3() -> None:
    done = load_scripts("--check", "redis+cluster://127.0.0.1:1")

    assert done.returncode == 3
    assert "cannot be connected" in done.stderr


def test_cluster_url_with_a_database_other_than_0_is_refused() -> None:
    with pytest.raises(InvalidURL, match="database 0 only"):
        connect("redis+cluster://127.0.0.1:7000/2")


def test_queue_takes_a_cluster_url_from_redis_url(
    three_primaries: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_scripts(three_primaries.url)
    monkeypatch.setenv("REDIS_URL", three_primaries.url)

    job = Queue("q").enqueue("tasks:add", 1, 2)

    assert isinstance(job.queue.connection, RedisCluster)
    assert job.status == "queued"
