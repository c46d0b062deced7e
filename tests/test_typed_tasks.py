"""Typed tasks: `@task` functions get `.enqueue(...)` and `.options(...).enqueue(...)`, typed by
the function's own signature, and stay callable as the function; real workers and real mypy."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
import typed_task_handlers as handlers
from helpers import start_worker

from pyscheduler import InvalidOption, Queue, Task, task
from pyscheduler.client.tasks import reference_of, registered_task, task_options

REPO = Path(__file__).resolve().parent.parent


def queue_name() -> str:
    return f"typed-{uuid.uuid4().hex[:8]}"


def test_enqueue_makes_a_job_that_a_worker_runs(conn: redis.Redis, workers: Any) -> None:
    name = queue_name()
    start_worker(workers, name)

    job = handlers.add.options(queue=Queue(name, connection=conn)).enqueue(40, 2)

    assert job.wait(10) == 42


def test_task_queue_is_the_default_of_enqueue(conn: redis.Redis, workers: Any) -> None:
    name = queue_name()
    start_worker(workers, name)
    multiply = task(queue=Queue(name, connection=conn))(handlers.multiply)

    job = multiply.enqueue(6, 7)

    assert job.queue.name == name
    assert job.wait(10) == 42


def test_options_reach_the_job_record(conn: redis.Redis) -> None:
    queue = Queue(queue_name(), connection=conn)
    job_id = f"typed-{uuid.uuid4().hex}"

    job = handlers.add.options(queue=queue, priority=7, job_id=job_id, delay=60).enqueue(1, 2)

    info = job.info()
    assert (job.id, info.queue, info.priority) == (job_id, queue.name, 7)


def test_later_options_add_to_earlier_ones(conn: redis.Redis) -> None:
    queue = Queue(queue_name(), connection=conn)

    job = handlers.add.options(queue=queue, priority=3).options(delay=60).enqueue(1, 2)

    assert job.info().priority == 3


def test_task_defaults_still_apply_to_enqueue(conn: redis.Redis) -> None:
    queue = Queue(queue_name(), connection=conn)

    job = handlers.greeting.options(queue=queue, delay=60).enqueue("ada")

    assert job.info().record["retries"] == 2


def test_an_async_task_runs(conn: redis.Redis, workers: Any) -> None:
    name = queue_name()
    start_worker(workers, name)

    job = handlers.greeting.options(queue=Queue(name, connection=conn)).enqueue("ada")

    assert job.wait(10) == "hello ada"


def test_queue_enqueue_of_a_task_still_works(conn: redis.Redis, workers: Any) -> None:
    name = queue_name()
    start_worker(workers, name)

    assert Queue(name, connection=conn).enqueue(handlers.add, 2, 3).wait(10) == 5


def test_strict_worker_runs_a_task_enqueued_with_enqueue(conn: redis.Redis, workers: Any) -> None:
    name = queue_name()
    start_worker(workers, name, extra=("--strict", "--import", "typed_task_handlers"))
    queue = Queue(name, connection=conn)

    assert handlers.renamed.options(queue=queue).enqueue("abc").wait(10) == "ABC"
    assert handlers.greeting.options(queue=queue).enqueue("bob").wait(10) == "hello bob"


def test_a_renamed_task_still_runs_by_its_module_path(conn: redis.Redis, workers: Any) -> None:
    # Not registered under this reference: the worker finds the Task in the module and runs
    # the function it wraps.
    name = queue_name()
    start_worker(workers, name)

    job = Queue(name, connection=conn).enqueue("typed_task_handlers:renamed", "abc")

    assert job.wait(10) == "ABC"


def test_enqueue_without_a_queue_is_refused() -> None:
    with pytest.raises(InvalidOption, match=r"no queue to enqueue into.*@task\(queue=\.\.\.\)"):
        handlers.add.enqueue(1, 2)


def test_calling_a_task_calls_the_function() -> None:
    assert handlers.add(2, b=5) == 7


def test_a_task_keeps_the_function_s_names_and_doc() -> None:
    function = handlers.add.__wrapped__

    assert isinstance(handlers.add, Task)
    assert inspect.isfunction(function)
    assert (handlers.add.__module__, handlers.add.__qualname__, handlers.add.__name__) == (
        "typed_task_handlers",
        "add",
        "add",
    )
    assert handlers.add.__doc__ == "Add two numbers."


def test_the_registry_and_references_name_the_plain_function() -> None:
    assert reference_of(handlers.add) == "typed_task_handlers:add"
    assert reference_of(handlers.renamed) == "typed:renamed"
    assert registered_task("typed_task_handlers:add") is handlers.add.__wrapped__
    assert inspect.iscoroutinefunction(registered_task("typed_task_handlers:greeting"))
    assert task_options(handlers.greeting) == {"retries": 2}


SNIPPET = """\
from pyscheduler import Queue, task

import typed_task_handlers as handlers


@task(retries=1)
def scale(value: float, factor: int = 2) -> float:
    return value * factor


queue = Queue("q")
handlers.add.options(queue=queue, priority=1).enqueue(1, 2)
scale.enqueue(1.5, factor=3)
handlers.add.enqueue(1, "two")
handlers.add.enqueue(1)
scale.options(queue=queue).enqueue("big")
wrong: str = handlers.add(1, 2)
"""
CORRECT_LINES = (12, 13)
WRONG_LINES = (14, 15, 16, 17)


def test_mypy_checks_enqueue_arguments_against_the_signature(tmp_path: Path) -> None:
    snippet = tmp_path / "use_tasks.py"
    snippet.write_text(SNIPPET)
    # The editable install is an import hook mypy does not follow: name the folders.
    env = {**os.environ, "MYPYPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    mypy = [sys.executable, "-m", "mypy", "--strict", "--no-incremental"]
    done = subprocess.run(
        [*mypy, "--config-file", os.devnull, snippet.name],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    reported = {
        int(line.split(":")[1])
        for line in done.stdout.splitlines()
        if line.startswith(f"{snippet.name}:") and ": error:" in line
    }
    assert reported == set(WRONG_LINES), textwrap.indent(done.stdout + done.stderr, "  ")
    assert not reported & set(CORRECT_LINES)
