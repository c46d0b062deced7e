"""The Lua library: rendering, versioning, headers, loading, the deploy tool, the server clock."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from helpers import server_ms

from pyscheduler import Queue
from pyscheduler.dev.engine import free_port
from pyscheduler.store import calls, library
from pyscheduler.store.keys import QueueKeys
from pyscheduler.store.operations import OPERATIONS, Operation
from pyscheduler.store.protocol import FUNCTION_PREFIX, LIBRARY_NAME, FailKind, template_context

pytestmark = pytest.mark.cluster  # also on a local Redis Cluster (conftest.py)

ROOT = Path(__file__).resolve().parent.parent
LUA_DIR = ROOT / "lua"
LOAD_SCRIPTS = str(ROOT / "tools" / "load_scripts.py")


def add(a: int, b: int = 0) -> int:
    return a + b


def header_of(name: str) -> str:
    text = (LUA_DIR / name).read_text()
    assert text.startswith("--[["), f"{name} does not start with a --[[ header ]]"
    return text[: text.index("]]")]


def declared_keys(name: str) -> list[int]:
    return [int(n) for n in re.findall(r"^KEYS\[(\d+)\]", header_of(name), re.MULTILINE)]


def function_of(name: str) -> str:
    return FUNCTION_PREFIX + name.removesuffix(".lua")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def load_outdated(conn: redis.Redis) -> None:
    version, code = library.library_code()
    conn.function_load(code.replace(version, "old"), replace=True)


# -- rendering and version --------------------------------------------------------------------


def test_library_is_one_functions_library_named_pyscheduler() -> None:
    code = library.library_code()[1]
    assert code.splitlines()[0] == f"#!lua name={LIBRARY_NAME}"


def test_version_is_a_digest_of_the_rendered_text() -> None:
    version, code = library.library_code()
    assert re.fullmatch(r"[0-9a-f]{16}", version)
    assert version == hashlib.sha256(library._render("").encode()).hexdigest()[:16]
    assert f"return '{version}'" in code


def test_rendering_leaves_no_template_syntax() -> None:
    code = library.library_code()[1]
    assert "{{" not in code
    assert "{%" not in code


def test_rendered_constants_come_from_protocol() -> None:
    code = library.library_code()[1]
    for name in ("PRIORITY_MAX", "MAX_LOST_LEASES", "ENQUEUE_BATCH_MAX", "PAST_TOLERANCE_MS"):
        assert f"local {name} = {template_context()[name]}\n" in code


def test_changing_a_constant_changes_the_version(monkeypatch: Any) -> None:
    version = library.code_version()
    changed = dict(template_context(), MAX_LOST_LEASES=99)
    monkeypatch.setattr(library, "template_context", lambda: changed)
    new_version, new_code = library.library_code.__wrapped__()
    assert new_version != version
    assert "local MAX_LOST_LEASES = 99\n" in new_code


def test_changing_a_lua_file_changes_the_version(monkeypatch: Any, tmp_path: Path) -> None:
    version = library.code_version()
    copy = tmp_path / "lua"
    shutil.copytree(LUA_DIR, copy)
    pop_lua = copy / "pop.lua"
    pop_lua.write_text(pop_lua.read_text() + "\n-- a comment is a change too\n")
    monkeypatch.setattr(library, "lua_dir", lambda: copy)
    assert library.library_code.__wrapped__()[0] != version


def test_version_is_the_same_in_another_process() -> None:
    result = run("-c", "from pyscheduler.store import library; print(library.code_version())")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == library.code_version()


# -- the operation files ----------------------------------------------------------------------


def test_every_lua_file_is_rendered_into_the_library() -> None:
    on_disk = {p.name for p in LUA_DIR.glob("*.lua")} - {"_helpers.lua", "_schedules.lua"}
    assert on_disk == set(library.OPERATION_FILES)


@pytest.mark.parametrize("name", library.OPERATION_FILES)
def test_operation_file_starts_with_a_header_naming_its_function(name: str) -> None:
    assert header_of(name).startswith(f"--[[ {function_of(name)}: ")


@pytest.mark.parametrize("name", library.OPERATION_FILES)
def test_operation_header_names_keys_argv_and_returns(name: str) -> None:
    header = header_of(name)
    assert re.search(r"^KEYS\[1\] ", header, re.MULTILINE) or "no keys" in header.lower()
    assert re.search(r"^ARGV\[1\] ", header, re.MULTILINE) or "no argv" in header.lower()
    assert re.search(r"^Returns: ", header, re.MULTILINE)


@pytest.mark.parametrize("name", library.OPERATION_FILES)
def test_operation_header_numbers_its_keys_in_order(name: str) -> None:
    keys = declared_keys(name)
    assert keys == list(range(1, len(keys) + 1))


@pytest.mark.parametrize("name", library.OPERATION_FILES)
def test_operation_file_registers_the_function_of_its_header(name: str) -> None:
    registered = re.findall(
        r"function_name = '(\w+)'|register_function\('(\w+)'", (LUA_DIR / name).read_text()
    )
    assert [a or b for a, b in registered] == [function_of(name)]


def declared_key_names(name: str) -> list[str]:
    return re.findall(r"^KEYS\[\d+\]\s+(\w+)", header_of(name), re.MULTILINE)


@pytest.mark.parametrize("op", OPERATIONS, ids=[op.name for op in OPERATIONS])
def test_operation_header_lists_the_keys_of_the_operations_table_in_order(op: Operation) -> None:
    names = declared_key_names(op.file)
    assert function_of(op.file) == op.name
    assert names[: len(op.keys)] == list(op.keys)
    # A per-item function may list its first job's subtasks key after the fixed keys.
    assert names[len(op.keys) :] == (
        ["subtasks"] if op.per_item and len(names) > len(op.keys) else []
    )


def test_operations_table_names_every_rendered_function_once() -> None:
    assert [op.file for op in OPERATIONS] == list(library.OPERATION_FILES)
    assert len({op.name for op in OPERATIONS}) == len(OPERATIONS)


@pytest.mark.parametrize("op", OPERATIONS, ids=[op.name for op in OPERATIONS])
def test_operations_table_is_rendered_into_the_library(op: Operation) -> None:
    _, code = library.library_code()
    table = code[code.index("local OPERATION_KEYS = {") :]
    entry = table[table.index(f"  {op.name} = {{") :]
    entry = entry[: entry.index("  },")]
    assert re.findall(r"'(\w+)'", entry) == list(op.keys)


def test_no_wrapper_in_calls_writes_a_key_list_by_hand() -> None:
    package = Path(calls.__file__).parent
    source = "".join(path.read_text() for path in sorted(package.glob("*.py")))
    attributes = "|".join(name for name in QueueKeys.__dataclass_fields__ if name != "queue")
    # A hand-written key list starts "[keys.jobs, ..." or spells a subtasks key.
    assert not re.findall(rf"\[\s*keys\.({attributes})\b", source)
    assert "keys.subtasks(" not in source


# Functions whose Python side lives outside store/calls/ (it builds their keys with keys_for too).
WRAPPED_ELSEWHERE = {"psq_heartbeat", "psq_list_workers"}  # pyscheduler/live_workers.py


@pytest.mark.one_server("spies on redis.Redis, which a cluster client is not")
def test_python_wrappers_pass_the_keys_each_header_declares_with_one_hash_tag(
    conn: redis.Redis, monkeypatch: Any
) -> None:
    queue = Queue("work", connection=conn)
    used: dict[str, int] = {}

    def spy(method: str) -> None:
        real = getattr(conn, method)

        def call(function: str, numkeys: int, *rest: Any) -> Any:
            used[function] = numkeys
            for key in rest[:numkeys]:  # one queue's keys: one slot on a Redis Cluster
                assert re.findall(r"\{[^}]*\}", key) == ["{work}"], (function, key)
            return real(function, numkeys, *rest)

        monkeypatch.setattr(conn, method, call)

    spy("fcall")
    spy("fcall_ro")
    keys = queue.keys
    calls.enqueue(conn, keys, [queue.prepare(add, (1,)), queue.prepare(add, (2,))])
    first, second = calls.pop(conn, keys, 2, 10_000, "w").leases
    calls.renew(conn, keys, 10_000, [(first.id, first.token)])
    calls.start_run(conn, keys, first.id, first.token)
    calls.complete(conn, keys, first.id, first.token, "3")
    calls.fail(conn, keys, second.id, second.token, FailKind.ERROR, "boom", 0.5)
    calls.cancel(conn, keys, [calls.enqueue(conn, keys, [queue.prepare(add, (3,))])[0].id])
    calls.fetch(conn, keys, first.id)
    calls.counts(conn, keys)
    calls.metrics(conn, keys)
    calls.list_jobs(conn, keys, keys.ready, 0, 10)
    calls.enqueue(conn, keys, [queue.prepare(add, (4,)), queue.prepare(add, (5,))])
    third, fourth = calls.pop(conn, keys, 2, 10_000, "w").leases
    calls.checkpoint(conn, keys, third.id, third.token, "1", 10_000, False)
    calls.split(conn, keys, fourth.id, fourth.token, 1, [("work", 1)], False, None)
    parent = calls.ParentRef("work", fourth.id, 1, 1)
    calls.subtask_done(conn, parent, True, "7")
    calls.subtask_outcomes(conn, keys, fourth.id, 1, 1, 1)
    calls.stale_notices(conn, keys, 10)
    calls.forget_notices(conn, keys, ["nothing"])
    calls.add_dependent(conn, keys, first.id, "work", "nothing")
    calls.dependency_done(conn, keys, "nothing", "work", first.id, True, "complete")
    calls.configure(conn, keys, {"paused": ""})
    calls.retry(conn, keys, [second.id])
    calls.purge(conn, keys, "complete")
    fifth = calls.pop(conn, keys, 1, 10_000, "w", extra=1).leases[0]
    calls.release(conn, keys, [(fifth.id, fifth.token)])
    calls.enqueue(conn, keys, [queue.prepare(add, (6,)), queue.prepare(add, (7,))])
    batch = calls.pop(conn, keys, 2, 10_000, "w").leases
    calls.complete_many(conn, keys, [(x.id, x.token, "1") for x in batch])
    calls.schedule(conn, keys, "s", json.dumps({"func": "m:f", "priority": 0, "timeout": 1,
        "retries": 0, "backoff": 1, "result_ttl": 1, "time_slice": 0, "catch_up": False,
        "cron": "* * * * *", "tz": "UTC", "ticks": []}))  # fmt: skip
    calls.refill_schedule(conn, keys, "s", "* * * * *", "UTC", [])
    calls.pause_schedule(conn, keys, "s", True)
    calls.list_schedules(conn, keys)
    calls.unschedule(conn, keys, "s")
    calls.enqueue(conn, keys, [queue.prepare(add, (8,))])
    (sixth,) = calls.pop(conn, keys, 1, 10_000, "w").leases
    calls.set_progress(conn, keys, sixth.id, sixth.token, "1")
    library.deployed_version(conn)
    expected = {
        function_of(name): len(declared_keys(name))
        for name in library.OPERATION_FILES
        if function_of(name) not in WRAPPED_ELSEWHERE
    }
    expected["psq_cancel"] += 1  # one subtasks key per cancelled job id
    expected["psq_complete_many"] += 2  # one subtasks key per completed job
    assert used == expected
    assert expected["psq_enqueue"] == calls.ENQUEUE_NUMKEYS


# -- loading ----------------------------------------------------------------------------------


@pytest.mark.one_server("reads FUNCTION LIST of one server (a cluster: test_cluster_deploy.py)")
def test_library_loads_with_every_psq_function(conn: redis.Redis) -> None:
    conn.function_flush()
    assert library.load(conn) == library.code_version()
    (entry,) = conn.function_list(library=LIBRARY_NAME)
    info = dict(zip(entry[::2], entry[1::2], strict=True))
    names = {dict(zip(f[::2], f[1::2], strict=True))[b"name"].decode() for f in info[b"functions"]}
    assert names == {function_of(name) for name in library.OPERATION_FILES}


@pytest.mark.one_server("reads FUNCTION LIST of one server (a cluster: test_cluster_deploy.py)")
def test_read_only_functions_are_flagged_no_writes(conn: redis.Redis) -> None:
    (entry,) = conn.function_list(library=LIBRARY_NAME)
    info = dict(zip(entry[::2], entry[1::2], strict=True))
    read_only = set()
    for function in info[b"functions"]:
        fields = dict(zip(function[::2], function[1::2], strict=True))
        if b"no-writes" in fields[b"flags"]:
            read_only.add(fields[b"name"].decode())
    assert read_only == {
        "psq_fetch",
        "psq_counts",
        "psq_metrics",
        "psq_list_jobs",
        "psq_version",
        "psq_subtask_outcomes",
        "psq_stale_notices",
        "psq_list_workers",
        "psq_list_schedules",
    }
    assert read_only == {op.name for op in OPERATIONS if op.read_only}


def test_loading_twice_replaces_the_library(conn: redis.Redis) -> None:
    load_outdated(conn)
    assert library.load(conn) == library.code_version()
    assert library.deployed_version(conn) == library.code_version()


def test_deployed_version_matches_the_code_after_load(conn: redis.Redis) -> None:
    assert library.deployed_version(conn) == library.code_version()


def test_deployed_version_is_none_without_the_library(conn: redis.Redis) -> None:
    conn.function_flush()
    assert library.deployed_version(conn) is None


# -- tools/load_scripts.py and `pyscheduler load-scripts` -------------------------------------


def test_load_scripts_print_writes_the_library() -> None:
    result = run(LOAD_SCRIPTS, "--print")
    assert result.returncode == 0, result.stderr
    assert result.stdout == library.library_code()[1]


def test_load_scripts_loads_the_library_and_prints_its_version(
    conn: redis.Redis, redis_url: str
) -> None:
    conn.function_flush()
    result = run(LOAD_SCRIPTS, redis_url)
    assert result.returncode == 0, result.stderr
    assert library.code_version() in result.stdout
    assert library.deployed_version(conn) == library.code_version()


def test_load_scripts_takes_the_url_from_redis_url(conn: redis.Redis, redis_url: str) -> None:
    conn.function_flush()
    result = run(LOAD_SCRIPTS, env={"REDIS_URL": redis_url})
    assert result.returncode == 0, result.stderr
    assert library.deployed_version(conn) == library.code_version()


def test_load_scripts_check_exits_0_when_the_library_matches(redis_url: str, conn: Any) -> None:
    result = run(LOAD_SCRIPTS, "--check", redis_url)
    assert result.returncode == 0, result.stderr
    assert library.code_version() in result.stdout


def test_load_scripts_check_exits_1_after_another_library_is_loaded(
    conn: redis.Redis, redis_url: str
) -> None:
    load_outdated(conn)
    result = run(LOAD_SCRIPTS, "--check", redis_url)
    assert result.returncode == 1
    assert "mismatch" in result.stderr
    assert "old" in result.stderr
    assert library.deployed_version(conn) == "old"  # --check never loads


def test_load_scripts_check_exits_1_without_a_library(conn: redis.Redis, redis_url: str) -> None:
    conn.function_flush()
    assert run(LOAD_SCRIPTS, "--check", redis_url).returncode == 1


def test_load_scripts_reports_an_unreachable_server() -> None:
    result = run(LOAD_SCRIPTS, f"redis://127.0.0.1:{free_port()}/0")
    assert result.returncode == 3
    assert "error" in result.stderr.lower()


def test_cli_load_scripts_check_exits_0_when_the_library_matches(
    conn: redis.Redis, redis_url: str
) -> None:
    result = run("-m", "pyscheduler", "load-scripts", "--url", redis_url, "--check")
    assert result.returncode == 0, result.stderr


def test_cli_load_scripts_check_exits_1_after_another_library_is_loaded(
    conn: redis.Redis, redis_url: str
) -> None:
    load_outdated(conn)
    result = run("-m", "pyscheduler", "load-scripts", "--url", redis_url, "--check")
    assert result.returncode == 1


def test_cli_load_scripts_loads_the_library(conn: redis.Redis, redis_url: str) -> None:
    load_outdated(conn)
    result = run("-m", "pyscheduler", "load-scripts", "--url", redis_url)
    assert result.returncode == 0, result.stderr
    assert library.code_version() in result.stdout
    assert library.deployed_version(conn) == library.code_version()


# -- the server clock -------------------------------------------------------------------------


@pytest.fixture
def skewed_client_clock(monkeypatch: Any) -> None:
    """The client's wall clock runs a day ahead; the library must not care."""
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 86_400)


def test_delayed_due_time_comes_from_the_server_clock(
    conn: redis.Redis, skewed_client_clock: None
) -> None:
    queue = Queue("work", connection=conn)
    before = server_ms(conn)
    job = queue.enqueue(add, 1, delay=2)
    after = server_ms(conn)
    record = job.info().record
    assert before + 2000 <= record["due"] <= after + 2000
    assert before <= record["created"] <= after


def test_lease_deadline_comes_from_the_server_clock(
    conn: redis.Redis, skewed_client_clock: None
) -> None:
    queue = Queue("work", connection=conn)
    queue.enqueue(add, 1)
    before = server_ms(conn)
    (lease,) = calls.pop(conn, queue.keys, 1, 3000, "w").leases
    after = server_ms(conn)
    assert before + 3000 <= lease.deadline_ms <= after + 3000


def test_delayed_job_becomes_due_by_the_server_clock(
    conn: redis.Redis, skewed_client_clock: None
) -> None:
    queue = Queue("work", connection=conn)
    job = queue.enqueue(add, 1, delay=0.1)
    assert calls.pop(conn, queue.keys, 1, 1000, "w").leases == []
    time.sleep(0.15)
    assert [lease.id for lease in calls.pop(conn, queue.keys, 1, 1000, "w").leases] == [job.id]
