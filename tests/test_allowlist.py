"""A worker runs only registered tasks and functions defined in allowed application modules.

The forms below are the ways a job record could try to reach other code: through an allowed
module's attributes, through classes, instances, properties and `__getattr__`, builtins,
pyscheduler itself, the standard library and installed packages, `__main__`. The unit tests ask
`HandlerPolicy` directly (no worker, so they can also check that no attribute code ran); the
worker tests enqueue the same forms with a command that would touch a file if it ran.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import allowlist_app
import pytest
import redis
from helpers import start_worker, wait_until

from pyscheduler import HandlerRefused, HandlerUnavailable, Queue, Status
from pyscheduler.runtime.allowlist import HandlerPolicy

# Reachable from an allowed application module by attribute, but not defined there.
THROUGH_ATTRIBUTES = [
    "allowlist_app:os.popen",
    "allowlist_app:os.system",
    "allowlist_app:os.path.join",
    "allowlist_app:subprocess.run",
    "allowlist_app:subprocess.getoutput",
    "allowlist_app:shutil.rmtree",
    "allowlist_app:importlib.import_module",
    "allowlist_app:redis.from_url",
    "allowlist_app:functools.partial",
    "allowlist_app:imported_add",
    "allowlist_app:popen_alias",
    "allowlist_app:renamed",
    "allowlist_app:__builtins__.eval",
    "allowlist_app:__loader__.load_module",
    "allowlist_app:__spec__.loader.exec_module",
]
# Defined here, but not plain functions.
NOT_FUNCTIONS = [
    "allowlist_app:partial_popen",
    "allowlist_app:builtin_eval",
    "allowlist_app:Greeter",
    "allowlist_app:Greeter.static_popen",
    "allowlist_app:callable_thing",
    "allowlist_app:CallableThing",
    "allowlist_app:TOUCHED",
]
# Names whose lookup would run code if attributes were followed.
RUN_CODE_ON_LOOKUP = [
    "allowlist_app:Greeter.touching",
    "allowlist_app:Greeter.touching.__call__",
    "allowlist_app:touchy.anything",
    "allowlist_app:no_such_name",
    "allowlist_app:Touchy.__getattr__.__globals__",
]
MALFORMED = [
    "allowlist_app:<lambda>",
    "allowlist_app:make_inner.<locals>.inner",
    "allowlist_app:nested_inner",
    "allowlist_app:",
    ":greet",
    "allowlist_app",
    "allowlist_app:greet()",
    "allowlist_app:greet.__call__",
    "allowlist_app:greet.__globals__",
    "../allowlist_app:greet",
    "allowlist_app:1greet",
]
# Modules no job may name.
FOREIGN = [
    "os:popen",
    "os:system",
    "subprocess:run",
    "shutil:rmtree",
    "builtins:eval",
    "importlib:import_module",
    "redis:from_url",
    "redis.client:Redis",
    "jinja2:Template",
    "__main__:main",
    "__main__:os.popen",
    "pyscheduler.dev.engine:os.popen",
    "pyscheduler.ops.cli:main",
    "pyscheduler.client.tasks:task",
    "pyscheduler:Queue",
]

EVERY_BYPASS = THROUGH_ATTRIBUTES + NOT_FUNCTIONS + RUN_CODE_ON_LOOKUP + MALFORMED + FOREIGN


@pytest.mark.parametrize("ref", EVERY_BYPASS)
def test_reference_not_defined_in_an_allowed_module_is_refused(ref: str) -> None:
    with pytest.raises(HandlerRefused):
        HandlerPolicy().resolve(ref)


@pytest.mark.parametrize("ref", EVERY_BYPASS)
def test_reference_is_refused_even_when_its_module_is_imported_for_the_worker(ref: str) -> None:
    with pytest.raises(HandlerRefused):
        HandlerPolicy(allowed_modules=["allowlist_app"]).resolve(ref)


@pytest.mark.parametrize("ref", RUN_CODE_ON_LOOKUP)
def test_looking_up_a_reference_runs_no_property_or_getattr(ref: str) -> None:
    allowlist_app.TOUCHED.clear()
    with pytest.raises(HandlerRefused):
        HandlerPolicy().resolve(ref)
    assert allowlist_app.TOUCHED == []


@pytest.mark.parametrize(
    "ref",
    ["allowlist_app:greet", "allowlist_app:own_helper", "allowlist_app:Greeter.hello"],
)
def test_function_defined_in_an_application_module_runs(ref: str) -> None:
    function = HandlerPolicy().resolve(ref)
    module, _, qualname = ref.partition(":")
    assert (function.__module__, function.__qualname__) == (module, qualname)


def test_strict_mode_refuses_functions_that_are_not_registered() -> None:
    with pytest.raises(HandlerRefused, match="not a registered task"):
        HandlerPolicy(strict=True).resolve("allowlist_app:greet")


def test_strict_with_import_runs_only_that_module_s_registered_tasks() -> None:
    policy = HandlerPolicy(strict=True, allowed_modules=["allowlist_app"])
    assert policy.resolve("allowlist_app:registered_greet")("x") == "hi x"
    # `tasks` is imported by allowlist_app, so its @task functions are registered in this
    # process, but they are not allowlist_app's.
    with pytest.raises(HandlerRefused, match="only the tasks of allowlist_app"):
        policy.resolve("tasks:registered_add")
    with pytest.raises(HandlerRefused):
        policy.resolve("allowlist_app:greet")


def test_import_of_the_standard_library_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="standard library"):
        HandlerPolicy(allowed_modules=["os"])


def test_allowed_installed_package_runs_only_what_it_defines() -> None:
    policy = HandlerPolicy(allowed_modules=["jinja2"])
    function = policy.resolve("jinja2.filters:do_upper")
    assert function("a") == "A"
    with pytest.raises(HandlerRefused):
        policy.resolve("jinja2.filters:Markup")  # a class imported from markupsafe


def test_module_that_cannot_be_imported_is_unavailable_not_refused() -> None:
    with pytest.raises(HandlerUnavailable) as caught:
        HandlerPolicy().resolve("no_such_application_module:work")
    message = str(caught.value)
    assert "could not import" in message
    assert os.getcwd() in message
    assert "--import" in message


def test_function_of_main_is_refused_at_enqueue(conn: redis.Redis) -> None:
    queue = Queue("fast", connection=conn)

    def in_main() -> None: ...

    in_main.__module__ = "__main__"
    in_main.__qualname__ = "in_main"
    with pytest.raises(HandlerRefused, match="move the function into a module"):
        queue.enqueue(in_main)
    with pytest.raises(HandlerRefused, match="move the function into a module"):
        queue.enqueue("__main__:in_main")
    assert conn.dbsize() == 0


def test_function_of_pyscheduler_is_refused_at_enqueue(conn: redis.Redis) -> None:
    from pyscheduler.dev import engine

    with pytest.raises(HandlerRefused, match="pyscheduler itself"):
        Queue("fast", connection=conn).enqueue(engine.free_port)


# -- a real worker ----------------------------------------------------------------------------

WORKER_BYPASSES = [
    ("allowlist_app:os.popen", "touch {canary}"),
    ("allowlist_app:os.system", "touch {canary}"),
    ("allowlist_app:subprocess.getoutput", "touch {canary}"),
    ("allowlist_app:popen_alias", "touch {canary}"),
    ("allowlist_app:partial_popen", "touch {canary}"),
    ("allowlist_app:Greeter.static_popen", "touch {canary}"),
    ("allowlist_app:callable_thing", "touch {canary}"),
    ("allowlist_app:touchy.popen", "touch {canary}"),
    ("tasks:os.popen", "touch {canary}"),
    ("__main__:os.popen", "touch {canary}"),
    ("pyscheduler.dev.engine:os.popen", "touch {canary}"),
    ("pyscheduler.ops.cli:os.popen", "touch {canary}"),
    ("os:popen", "touch {canary}"),
    ("allowlist_app:shutil.rmtree", "{victim}"),
]


def _enqueue_raw(conn: redis.Redis, queue: Queue, ref: str, arg: str) -> str:
    """Enqueue a job naming `ref` as a hostile producer would (the client refuses some)."""
    from pyscheduler.store import calls

    job = queue.prepare("allowlist_app:greet", [arg], retries=2)
    forged = calls.NewJob(**{**_fields(job), "func": ref})
    return queue.enqueue_many([forged])[0].id


def _fields(job: Any) -> dict[str, Any]:
    return {name: getattr(job, name) for name in job.__slots__}


def test_worker_runs_none_of_the_bypass_forms(
    conn: redis.Redis, workers: Any, tmp_path: Path
) -> None:
    canary = tmp_path / "canary"
    victim = tmp_path / "victim"
    victim.mkdir()
    queue = Queue("fast", connection=conn)
    proc, _ = start_worker(workers, "fast", extra=("--import", "allowlist_app"))
    ids = {
        ref: _enqueue_raw(conn, queue, ref, arg.format(canary=canary, victim=victim))
        for ref, arg in WORKER_BYPASSES
    }
    for ref, job_id in ids.items():
        info = wait_until(
            lambda job_id=job_id: (i := queue.fetch_info(job_id)).status == Status.FAILED and i,
            timeout=20,
            what=f"{ref} to fail",
        )
        assert info.record["failure"] == "refused", (ref, info.error)
        assert info.attempts == 1, ref  # refused jobs are never retried
        assert "refused" in (info.error or ""), (ref, info.error)
    assert not canary.exists()
    assert victim.exists()
    assert queue.enqueue("allowlist_app:greet", "you").wait(10) == "hello you"
    assert proc.poll() is None


def test_strict_worker_with_import_runs_only_that_module_s_tasks(
    conn: redis.Redis, workers: Any
) -> None:
    queue = Queue("fast", connection=conn)
    proc, _ = start_worker(workers, "fast", extra=("--strict", "--import", "allowlist_app"))
    assert queue.enqueue("allowlist_app:registered_greet", "x").wait(10) == "hi x"
    for ref in ("tasks:registered_add", "allowlist_app:greet"):
        job = queue.enqueue(ref, 1, 2)
        info = wait_until(
            lambda job=job: (i := job.info()).status == Status.FAILED and i, timeout=20
        )
        assert info.record["failure"] == "refused"
        assert "not a registered task (strict mode" in (info.error or "")
    assert proc.poll() is None


def test_worker_that_cannot_import_the_module_retries_and_says_why(
    conn: redis.Redis, workers: Any
) -> None:
    queue = Queue("fast", connection=conn)
    proc, _ = start_worker(workers, "fast")
    job = queue.enqueue("not_on_this_worker:work", retries=1, backoff=0)
    info = wait_until(lambda: (i := job.info()).status == Status.FAILED and i, timeout=20)
    assert info.attempts == 2  # an ordinary failed attempt: the retry ran too
    assert info.record["failure"] == "error"
    assert "could not import" in (info.error or "")
    assert "working directory" in (info.error or "")
    assert proc.poll() is None
