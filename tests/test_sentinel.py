"""A Sentinel-managed primary named by a `redis+sentinel://` URL: jobs enqueued and run
through it, the command line on it, and a worker that carries on through a failover.

Each test starts its own primary, replica and sentinel (tests/servers.py `sentinel_setup`), of
Redis and of Valkey (both ship sentinel mode in their server binary), with a short
`down-after-milliseconds` so a killed primary is failed over within a few seconds.
"""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Iterator

import pytest
import redis
from helpers import run_cli, wait_until, worker_process
from servers import SentinelSetup, sentinel_setup

from pyscheduler import Durability, InvalidURL, Queue
from pyscheduler.store import library
from pyscheduler.store.connection import connect
from pyscheduler.store.keys import QueueKeys

pytestmark = pytest.mark.crash

JOBS = 60
FAILOVER_TIMEOUT_S = 60.0


@pytest.fixture(params=["redis", "valkey"])
def setup(request: pytest.FixtureRequest) -> Iterator[SentinelSetup]:
    with sentinel_setup(request.param) as started:
        yield started


@pytest.fixture
def conn(setup: SentinelSetup) -> Iterator[redis.Redis]:
    client = connect(setup.url)
    assert isinstance(client, redis.Redis)  # the primary's client
    library.load(client)
    yield client
    client.close()


def finish(proc: subprocess.Popen[str]) -> str:
    try:
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return output


def test_a_sentinel_url_reaches_the_primary_the_sentinel_names(
    setup: SentinelSetup, conn: redis.Redis
) -> None:
    conn.set("psq-test:where", "here")
    primary = setup.pair.primary_client()
    try:
        assert primary.get("psq-test:where") == b"here"
    finally:
        primary.close()


def test_jobs_enqueued_through_a_sentinel_url_run(setup: SentinelSetup, conn: redis.Redis) -> None:
    queue = Queue("s", connection=conn)
    jobs = [queue.enqueue("tasks:add", i, i) for i in range(10)]
    output = finish(worker_process(setup.url, "s", args=["--burst"]))
    assert [job.result for job in jobs] == [2 * i for i in range(10)], output


def test_the_command_line_takes_a_sentinel_url(setup: SentinelSetup) -> None:
    code, output = run_cli("load-scripts", "--url", setup.url)
    assert code == 0, output
    code, output = run_cli("load-scripts", "--check", "--url", setup.url)
    assert code == 0, output
    code, output = run_cli("enqueue", "s", "tasks:noop", "--url", setup.url)
    assert code == 0, output
    code, output = run_cli("stats", "s", "--url", setup.url)
    assert code == 0 and "s" in output, output


def test_a_durable_enqueue_through_a_sentinel_url_reaches_the_replica(
    setup: SentinelSetup, conn: redis.Redis
) -> None:
    job = Queue("s", connection=conn).enqueue("tasks:noop", durable=Durability(timeout=5))
    replica = setup.pair.replica_client()
    try:
        assert replica.hexists(QueueKeys("s").jobs, job.id)
    finally:
        replica.close()


@pytest.mark.parametrize("how", ["sentinel-failover", "sigkill"])
def test_a_worker_carries_on_through_a_failover_during_a_drain(
    setup: SentinelSetup, conn: redis.Redis, how: str
) -> None:
    """`SENTINEL FAILOVER` demotes the primary (writes on connections to it get READONLY);
    a SIGKILL takes it away. Either way the worker rides it out and every job completes,
    on the promoted replica: jobs whose completion was lost with the old primary run again
    once their leases expire."""
    queue = Queue("s", connection=conn, durable=Durability(timeout=5))  # on the replica too
    jobs = [queue.enqueue("tasks:sleep_in_c", 0.05) for _ in range(JOBS)]
    worker = worker_process(setup.url, "s", args=["--lease", "1"])
    try:
        wait_until(lambda: queue.counts().finished >= 5, timeout=30, what="the drain under way")
        old_port = setup.pair.primary.port
        if how == "sigkill":
            setup.pair.primary.kill()
        else:
            setup.sentinel.failover()
        wait_until(
            lambda: setup.sentinel.primary_port_now() == setup.pair.replica.port,
            timeout=FAILOVER_TIMEOUT_S,
            what="the replica promoted",
        )
        # Through the same URL, the producer's client finds the new primary too.
        late = wait_until(
            lambda: _enqueue_or_none(queue), timeout=FAILOVER_TIMEOUT_S, what="an enqueue"
        )
        wait_until(
            lambda: all(job.status == "complete" for job in [*jobs, late]),
            timeout=FAILOVER_TIMEOUT_S,
            interval=0.2,
            what="every job complete after the failover",
        )
        assert worker.poll() is None, "the worker stopped"
        if how == "sentinel-failover":
            old = redis.Redis(host="127.0.0.1", port=old_port)
            try:
                wait_until(  # the sentinel turns it into a replica of the new primary
                    lambda: old.info("replication")["role"] == "slave",
                    timeout=FAILOVER_TIMEOUT_S,
                    what="the old primary demoted",
                )
                # A job enqueued now goes to the new primary and runs there.
                again = queue.enqueue("tasks:noop", durable=False)
                wait_until(lambda: again.status == "complete", timeout=30, what="a later job")
            finally:
                old.close()
    except AssertionError as exc:
        output = _stop(worker)
        try:
            counts: object = queue.counts()
        except redis.RedisError as failed:
            counts = failed
        raise AssertionError(
            f"{exc}\ncounts: {counts}\nworker output:\n{output}\n"
            f"sentinel log:\n{setup.sentinel.log_tail()}"
        ) from None
    finally:
        output = _stop(worker)
    # (redis-py may reconnect to the new primary by itself: the worker need not see an error.)
    assert "Traceback" not in output, output


def _enqueue_or_none(queue: Queue) -> object:
    # Durable needs a replica: after a SIGKILL the promoted one has none, so this one is not.
    try:
        return queue.enqueue("tasks:noop", durable=False)
    except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError):
        return None


def _stop(worker: subprocess.Popen[str]) -> str:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
    try:
        output, _ = worker.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        output, _ = worker.communicate()
    return output


# -- the URL form (no server needed) -----------------------------------------------------------


def test_a_sentinel_url_names_sentinels_service_database_and_credentials() -> None:
    url = "redis+sentinel://app:p%2Fw@10.0.0.1,10.0.0.2:26380/orders/3?sentinel_password=s"
    client = connect(url)
    assert isinstance(client, redis.Redis)
    pool = client.connection_pool
    assert pool.service_name == "orders"
    assert pool.connection_kwargs["db"] == 3
    assert pool.connection_kwargs["password"] == "p/w"  # the primary's
    sentinels = pool.sentinel_manager.sentinels
    assert [
        (s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
        for s in sentinels
    ] == [("10.0.0.1", 26379), ("10.0.0.2", 26380)]
    assert all(s.connection_pool.connection_kwargs["password"] == "s" for s in sentinels)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+sentinel://10.0.0.1:26379", "no service name"),
        ("redis+sentinel://10.0.0.1,,10.0.0.2/orders", "no sentinel address"),
        ("redis+sentinel://10.0.0.1:99999/orders", "no port in 1..65535"),
        ("redis+sentinel://10.0.0.1/orders/x", "not an integer"),
        ("redis+sentinel://10.0.0.1/orders/1/2", "is not /SERVICE[/DB]"),
        ("redis+sentinel://10.0.0.1/or ders", "whitespace"),
        ("redis+sentinel://10.0.0.1/orders?bogus=1", "unknown option 'bogus'"),
    ],
)
def test_a_bad_sentinel_url_is_refused_in_words(url: str, problem: str) -> None:
    with pytest.raises(InvalidURL, match=re.escape(problem)):
        connect(url)


def test_a_sentinel_url_hides_its_password_in_messages() -> None:
    with pytest.raises(InvalidURL) as info:
        connect("redis+sentinel://app:secret@10.0.0.1/orders/x")
    assert "secret" not in str(info.value)
