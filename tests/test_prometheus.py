"""The Prometheus endpoint: what a scrape shows, what it costs, and a real Prometheus reading it.

The Prometheus server and promtool come from the Debian package `prometheus` (tools/dev.sh
installs it in CI). Without them the tests that need them are skipped, except in CI (`CI` set),
where their absence is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from helpers import cli_process, terminate, wait_until
from prometheus_client.parser import text_string_to_metric_families
from test_round_trips import counting_client

from pyscheduler import Queue
from pyscheduler.dev.engine import free_port
from pyscheduler.ops.metrics import METRIC_NAMES, metrics_app, metrics_server
from pyscheduler.store import calls


def add(a: int, b: int = 0) -> int:
    return a + b


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} not found (Debian package `prometheus`; tools/dev.sh installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def endpoint(conn: redis.Redis) -> Iterator[str]:
    with serving(conn) as url:
        yield url


@contextmanager
def serving(conn: redis.Redis) -> Iterator[str]:
    """The metrics of `conn`'s queues served at this URL, in a thread of this process."""
    server = metrics_server(conn, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def samples(text: str) -> dict[tuple[str, str], float]:
    """(sample name, queue label) -> value, for the samples without other labels than queue
    (histogram buckets are left out)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if set(sample.labels) == {"queue"}:
                out[(sample.name, sample.labels["queue"])] = sample.value
    return out


def busy_queue(conn: redis.Redis) -> Queue:
    """A queue with 3 jobs enqueued, 2 of them run (1 completed, 1 failed), 1 ready."""
    queue = Queue("work", connection=conn)
    for n in range(3):
        queue.enqueue(add, n)
    first, second = calls.pop(conn, queue.keys, 2, 10_000, "w").leases
    calls.complete(conn, queue.keys, first.id, first.token, "1")
    calls.fail(conn, queue.keys, second.id, second.token, calls.FailKind.ERROR, "boom", 0.5)
    return queue


def test_a_scrape_shows_the_counters_and_gauges_of_each_queue(
    conn: redis.Redis, endpoint: str
) -> None:
    busy_queue(conn)
    Queue("idle", connection=conn).enqueue(add, 1).cancel()
    values = samples(scrape(endpoint))
    assert values[("pyscheduler_jobs_enqueued_total", "work")] == 3
    assert values[("pyscheduler_jobs_started_total", "work")] == 2
    assert values[("pyscheduler_jobs_completed_total", "work")] == 1
    assert values[("pyscheduler_jobs_failed_total", "work")] == 1
    assert values[("pyscheduler_jobs_cancelled_total", "idle")] == 1
    assert values[("pyscheduler_queue_ready", "work")] == 1
    assert values[("pyscheduler_queue_failed", "work")] == 1
    assert values[("pyscheduler_queue_paused", "work")] == 0
    assert values[("pyscheduler_job_wait_seconds_count", "work")] == 2
    assert values[("pyscheduler_job_run_seconds_count", "work")] == 2
    assert values[("pyscheduler_queue_oldest_ready_age_seconds", "work")] >= 0


def test_a_scrape_names_every_documented_metric(conn: redis.Redis, endpoint: str) -> None:
    busy_queue(conn)
    names = {family.name for family in text_string_to_metric_families(scrape(endpoint))}
    # The parser names a counter family without its _total suffix.
    assert {n.removesuffix("_total") for n in METRIC_NAMES} <= names


def test_a_paused_queue_shows_paused(conn: redis.Redis, endpoint: str) -> None:
    busy_queue(conn).pause()
    assert samples(scrape(endpoint))[("pyscheduler_queue_paused", "work")] == 1


def test_live_workers_are_counted_from_the_heartbeats(conn: redis.Redis, endpoint: str) -> None:
    busy_queue(conn)
    ms = int(conn.time()[0]) * 1000
    conn.zadd(Queue("work", connection=conn).keys.workers, {"alive": ms + 60_000, "gone": 1})
    assert samples(scrape(endpoint))[("pyscheduler_workers", "work")] == 1


def test_a_scrape_costs_two_round_trips_however_many_queues_and_jobs(
    conn: redis.Redis, redis_url: str
) -> None:
    for name in ("a", "b", "c"):
        queue = Queue(name, connection=conn)
        queue.enqueue_many([queue.prepare(add, (n,)) for n in range(200)])
    client, traffic = counting_client(redis_url)
    registry_text = scrape_with(client)
    assert "pyscheduler_queue_ready" in registry_text
    traffic.reset()
    scrape_with(client)
    assert traffic.round_trips == 2  # the queue names, then one pipeline for all queues


def scrape_with(client: redis.Redis) -> str:
    from prometheus_client import generate_latest

    from pyscheduler.ops.metrics import registry_for

    return generate_latest(registry_for(client)).decode()


def test_the_asgi_app_answers_a_scrape(conn: redis.Redis) -> None:
    import asyncio

    busy_queue(conn)
    app = metrics_app(conn)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "query_string": b"", "headers": []}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 200
    body = b"".join(m.get("body", b"") for m in sent[1:]).decode()
    assert samples(body)[("pyscheduler_jobs_enqueued_total", "work")] == 3


def test_promtool_accepts_a_scrape(conn: redis.Redis, endpoint: str) -> None:
    promtool = tool("promtool")
    busy_queue(conn)
    checked = subprocess.run(
        [promtool, "check", "metrics"],
        input=scrape(endpoint),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.fixture
def prometheus(tmp_path: Path, endpoint: str) -> Iterator[str]:
    with running_prometheus(tmp_path, endpoint) as url:
        yield url


@contextmanager
def running_prometheus(tmp_path: Path, endpoint: str) -> Iterator[str]:
    """A Prometheus server scraping `endpoint` every second; its URL."""
    binary = tool("prometheus")
    target = urllib.parse.urlparse(endpoint)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: pyscheduler\n"
        f"    metrics_path: {target.path}\n"
        f"    static_configs:\n      - targets: ['{target.netloc}']\n"
    )
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        log.close()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def query(prometheus: str, expression: str) -> list[dict[str, Any]]:
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:  # a refused query: never taken for "no data yet"
        if exc.code == 503:  # still starting
            return []
        raise AssertionError(f"{expression}: {exc.read().decode(errors='replace')}") from exc
    except OSError:  # not listening yet
        return []
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


def test_a_real_prometheus_scrapes_the_endpoint(conn: redis.Redis, prometheus: str) -> None:
    busy_queue(conn)
    expression = 'pyscheduler_jobs_enqueued_total{queue="work"}'
    result = wait_until(
        lambda: query(prometheus, expression), timeout=60, interval=0.5, what="a scrape"
    )
    assert float(result[0]["value"][1]) == 3
    ready = query(prometheus, 'pyscheduler_queue_ready{queue="work"}')
    assert float(ready[0]["value"][1]) == 1


def test_the_metrics_command_serves_the_endpoint(conn: redis.Redis, redis_url: str) -> None:
    busy_queue(conn)
    port = free_port()
    proc = cli_process("metrics", "--port", str(port), "--url", redis_url)
    try:
        text = wait_until(
            lambda: _try_scrape(f"http://127.0.0.1:{port}/metrics"), timeout=30, what="a scrape"
        )
        assert samples(text)[("pyscheduler_jobs_enqueued_total", "work")] == 3
    finally:
        terminate(proc)


def _try_scrape(url: str) -> str | None:
    try:
        return scrape(url)
    except OSError:
        return None
