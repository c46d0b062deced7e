"""A worker's log, read as a person would: readable lines, failures that say what comes next,
an optional line per finished job, counts in words that agree with their number.

Each test runs a real worker process and reads its output.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from helpers import WorkerLog, start_worker

from pyscheduler import Queue

TESTS_DIR = Path(__file__).parent
# "2026-12-01 20:38:55,123 INFO pyscheduler.worker: message"
READABLE_LINE = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?:INFO|WARNING|ERROR) pyscheduler\.\w+: "

RUN_WORKER_FROM_PYTHON = """
import logging, sys
import redis
from pyscheduler import Queue, Worker
if sys.argv[2] == "app-logging":
    logging.basicConfig(format="APP|%(levelname)s|%(name)s|%(message)s", level=logging.INFO)
Worker([Queue("logs", connection=redis.Redis.from_url(sys.argv[1]))]).work(burst=True)
"""


def run_from_python(redis_url: str, mode: str) -> list[str]:
    """Run `Worker([q]).work(burst=True)` in a fresh interpreter; its stderr lines."""
    done = subprocess.run(
        [sys.executable, "-c", RUN_WORKER_FROM_PYTHON, redis_url, mode],
        cwd=TESTS_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stderr.splitlines()


def burst_log(workers: Any, *queues: str, extra: tuple[str, ...] = ()) -> list[str]:
    """Run `pyscheduler worker --burst` to the end; its output lines."""
    proc = workers.start(*queues, burst=True, extra=extra)
    text = WorkerLog(proc).finish(timeout=60)
    assert proc.returncode == 0, text
    return text.splitlines()


def test_worker_run_from_python_without_logging_set_up_logs_readable_lines(
    conn: redis.Redis, redis_url: str
) -> None:
    Queue("logs", connection=conn).enqueue("tasks:noop")

    lines = run_from_python(redis_url, "no-logging")

    started = [line for line in lines if " started on logs" in line]
    stopped = [line for line in lines if " stopped after " in line]
    assert len(started) == 1 and len(stopped) == 1, lines
    assert re.match(READABLE_LINE + r"worker \S+ started on logs \(concurrency 1\)$", started[0])
    assert re.match(READABLE_LINE + r"worker \S+ stopped after 1 job$", stopped[0])


def test_worker_leaves_the_logging_the_application_set_up_alone(
    conn: redis.Redis, redis_url: str
) -> None:
    Queue("logs", connection=conn).enqueue("tasks:noop")

    lines = run_from_python(redis_url, "app-logging")

    ours = [line for line in lines if "pyscheduler.worker" in line]
    assert ours, lines
    assert all(line.startswith("APP|") for line in ours), lines  # its format, once per line
    assert sum(" started on logs" in line for line in ours) == 1, lines


@pytest.mark.parametrize(("jobs", "words"), [(1, "1 job"), (2, "2 jobs")])
def test_stop_line_counts_jobs_in_words_that_agree(
    conn: redis.Redis, workers: Any, jobs: int, words: str
) -> None:
    queue = Queue("logs", connection=conn)
    for _ in range(jobs):
        queue.enqueue("tasks:noop")

    lines = burst_log(workers, "logs")

    stopped = [line for line in lines if " stopped after " in line]
    assert len(stopped) == 1, lines
    assert stopped[0].endswith(f" stopped after {words}"), stopped


def test_failure_that_will_be_retried_says_when_and_which_attempt_unlike_the_last(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue = Queue("logs", connection=conn)
    job = queue.enqueue(
        "tasks:boom", redis_url, f"test:runs:{uuid.uuid4().hex}", retries=2, backoff=0.2
    )
    _, log = start_worker(workers, "logs")

    log.wait_for(f"job {job.id} (tasks:boom) failed", timeout=15)
    log.wait_for("for good", timeout=15)
    lines = [line for line in log.text.splitlines() if f"job {job.id} " in line]

    error = "ValueError: boom: this handler always fails"
    retried = rf"job {job.id} \(tasks:boom\) failed after [\d.]+ m?s, retrying in ([\d.]+) s"
    assert len(lines) == 3, lines
    first = re.search(rf"INFO .*{retried} \(attempt 1 of 3\): {error}$", lines[0])
    second = re.search(rf"INFO .*{retried} \(attempt 2 of 3\): {error}$", lines[1])
    assert first and second, lines
    # The delays psq_fail chose: the backoff, then twice it, each scaled by 0.5 .. 1 (jitter).
    assert 0.1 <= float(first.group(1)) <= 0.2, lines[0]
    assert 0.2 <= float(second.group(1)) <= 0.4, lines[1]
    final = rf"WARNING .*job {job.id} \(tasks:boom\) failed after [\d.]+ m?s for good"
    assert re.search(rf"{final} \(attempt 3 of 3\): {error}$", lines[2]), lines
    assert "retrying" not in lines[2]


def test_log_jobs_writes_a_line_per_finished_job_with_its_run_time(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue = Queue("logs", connection=conn)
    key = f"test:spans:{uuid.uuid4().hex}"
    slow = [queue.enqueue("tasks:span", redis_url, key, 0.2) for _ in range(2)]
    quick = queue.enqueue("tasks:noop")

    lines = burst_log(workers, "logs", extra=("--log-jobs",))

    finished = [line for line in lines if " finished in " in line]
    assert len(finished) == 3, lines
    for job in slow:
        [line] = [line for line in finished if f"job {job.id} (tasks:span) finished in " in line]
        run_ms = float(re.findall(r"finished in ([\d.]+) ms$", line)[0])
        assert 200 <= run_ms < 5000, line
    assert any(f"job {quick.id} (tasks:noop) finished in " in line for line in finished)


def test_without_log_jobs_finished_jobs_get_no_line_each(conn: redis.Redis, workers: Any) -> None:
    queue = Queue("logs", connection=conn)
    for _ in range(3):
        queue.enqueue("tasks:noop")

    lines = burst_log(workers, "logs")

    assert any(line.endswith(" stopped after 3 jobs") for line in lines), lines
    assert not [line for line in lines if " finished in " in line], lines
