"""The suite's own promise: it empties (FLUSHALL) only servers it started itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import redis

from pyscheduler.dev.engine import Engine

TESTS = Path(__file__).resolve().parent
ONE_TEST = "test_enqueue.py::test_enqueue_returns_job_with_queued_status"


def run_suite_on(url: str, **env: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", ONE_TEST, "-q", "-rs", "-p", "no:cacheprovider"],
        cwd=TESTS,
        env={**os.environ, "REDIS_URL": url, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.stdout + done.stderr


def test_the_suite_leaves_the_data_of_a_server_it_did_not_start() -> None:
    with Engine(kind="redis") as server:
        client = redis.Redis.from_url(server.url)
        client.set("someone-else's", "data")

        output = run_suite_on(server.url)

        assert "1 skipped" in output and "PYSCHEDULER_TEST_FLUSH=1" in output, output
        assert client.get("someone-else's") == b"data"
