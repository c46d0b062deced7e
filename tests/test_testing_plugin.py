"""The pytest plugin for applications (`pyscheduler.testing`): a user's test file, run by
pytest in a subprocess, with eager queues and with a private engine."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CONFTEST = 'pytest_plugins = ["pyscheduler.testing"]\n'

SHOP = """
def total(prices):
    return sum(prices)


def refund(amount):
    raise ValueError(f"cannot refund {amount}")
"""

EAGER_TESTS = """
import pytest

from pyscheduler import JobFailed
from pyscheduler.testing import eager_jobs
from shop import refund, total


def test_the_result_is_there_at_once(psq_eager_queue):
    assert psq_eager_queue.enqueue(total, [1, 2, 3]).result == 6


def test_a_failed_job_raises_on_wait(psq_eager_queue):
    job = psq_eager_queue.enqueue(refund, 5, retries=2)
    with pytest.raises(JobFailed):
        job.wait()
    assert job.attempts == 3


def test_the_factory_gives_one_queue_per_name(psq_eager_queues):
    emails = psq_eager_queues("emails")
    emails.enqueue(total, [1])
    assert [job.result for job in eager_jobs(psq_eager_queues("emails"))] == [1]
"""

ENGINE_TESTS = """
from shop import total


def test_a_burst_worker_runs_the_job(psq_queue, psq_run_jobs):
    job = psq_queue.enqueue(total, [40, 2])
    assert psq_run_jobs() == 1
    assert job.wait(10) == 42


def test_each_test_has_its_own_queue(psq_queue):
    assert len(psq_queue) == 0
"""

FAILING_TEST = """
from shop import total


def test_a_wrong_expectation(psq_eager_queue):
    assert psq_eager_queue.enqueue(total, [1, 2]).result == 4
"""


def run_user_tests(tmp_path: Path, tests: str, **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "shop.py").write_text(textwrap.dedent(SHOP))
    (tmp_path / "test_user.py").write_text(textwrap.dedent(tests))
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    environment = {**os.environ, "PYTHONPATH": path, **env}
    # The plugin's own choice of server is under test: it starts one unless REDIS_URL is set.
    if "REDIS_URL" not in env:
        environment.pop("REDIS_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_user.py"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=110,
    )


def test_eager_fixtures_pass_without_any_server(tmp_path: Path) -> None:
    done = run_user_tests(tmp_path, EAGER_TESTS, REDIS_URL="redis://127.0.0.1:1/0")

    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout


def test_private_engine_fixtures_run_jobs_with_a_worker(tmp_path: Path) -> None:
    done = run_user_tests(tmp_path, ENGINE_TESTS)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout


def test_a_failing_user_assertion_is_reported_as_a_failure(tmp_path: Path) -> None:
    done = run_user_tests(tmp_path, FAILING_TEST)

    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 failed" in done.stdout
