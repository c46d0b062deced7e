"""The minimal ACL users of docs/security.md, on a server of our own with `default` switched off.

The users' rules are read from the `ACL SETUSER psq-...` lines of docs/security.md, so the
page states what this file proves. After each test, `ACL LOG` must hold no refusal the test
did not ask for: a command missing from a role's rules fails the test with the command's name,
the user and where it ran (`toplevel`, or `lua` for a command run inside a library function),
even where the refusal itself was swallowed (a worker that logs and retries).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner, Result
from helpers import cli_process, run_cli, terminate, wait_until, worker_process
from helpers import wait_result as result_or_fail
from prometheus_client import generate_latest
from servers import (
    ACL_ROLES,
    ADMIN_PASSWORD,
    ADMIN_USER,
    SECURITY_DOC,
    acl_server,
    documented_rules,
    user_url,
    with_password,
)

from pyscheduler import Job, Queue, Status, Worker
from pyscheduler.dev.engine import Engine
from pyscheduler.exceptions import PySchedulerError, WaitTimeout
from pyscheduler.ops.cli import main
from pyscheduler.ops.metrics import registry_for
from pyscheduler.store import library, registry

ROOT = Path(__file__).resolve().parent.parent
# redis-py sends it on connect and ignores the refusal; the page says so.
IGNORED_REFUSALS = {"client|setinfo"}
WORKER_TIMEOUT_S = 60.0
# A refusal inside a library call may reach the caller as redis-py's error or the library's.
REFUSED = (redis.RedisError, PySchedulerError)

pytestmark = pytest.mark.timeout(120)


def command_rules(user: str) -> list[str]:
    """A role's rules about commands and channels, without its name, password and keys."""
    rules = documented_rules()[user]
    return [r for r in rules if r.startswith(("+", "-")) or r == "resetchannels"]


def granted_commands(rules: list[str]) -> set[str]:
    return {rule[1:] for rule in rules if rule.startswith("+") and not rule.startswith("+@")}


def library_commands() -> set[str]:
    """The Redis commands the rendered library calls by name (directly or through `write`)."""
    code = library.library_code()[1]
    called = re.findall(r"redis\.p?call\(\s*['\"](\w+)['\"]", code)
    written = re.findall(r"\bwrite\(\s*\w+,\s*['\"](\w+)['\"]", code)
    return {name.lower() for name in called + written}


def send(client: redis.Redis, *command: Any) -> Any:
    """One raw command (redis-py's `execute_command` has no type hints)."""
    return client.execute_command(*command)  # type: ignore[no-untyped-call]


def password(user: str) -> str:
    # Characters a URL must percent-encode: every role's URL goes through them.
    return f"{user}-p/w@:%#?"


@dataclass
class AclServer:
    engine: Engine
    admin: redis.Redis
    expected_refusals: set[tuple[str, str]] = field(default_factory=set)

    def url(self, user: str) -> str:
        return user_url(self.engine.port, user, password(user))

    def client(self, user: str) -> redis.Redis:
        return redis.Redis.from_url(self.url(user))

    def expect_refusal(self, user: str, what: str) -> None:
        """A refusal of `what` (a command or key; `prefix*` for any key under it) for `user`
        that the test provokes."""
        self.expected_refusals.add((user, what))

    def _expected(self, user: str, what: str) -> bool:
        return any(
            user == u and (what == w or (w.endswith("*") and what.startswith(w[:-1])))
            for u, w in self.expected_refusals
        )

    def refusals(self) -> list[str]:
        """ACL LOG entries nobody expected, one line each."""
        lines = []
        for entry in self.admin.acl_log():
            user, what = str(entry["username"]), str(entry["object"])
            if what in IGNORED_REFUSALS or self._expected(user, what):
                continue
            lines.append(
                f"user {user} was refused {what!r} (reason {entry['reason']}, context"
                f" {entry['context']}) {entry['count']} time(s)"
            )
        return lines

    def assert_no_refusals(self) -> None:
        unexpected = self.refusals()
        assert not unexpected, "the rules of docs/security.md are missing something:\n" + "\n".join(
            unexpected
        )

    def why(self) -> str:
        """For a failure message: the refusals so far, the likely cause of a stuck job."""
        unexpected = self.refusals()
        return "ACL LOG: " + ("; ".join(unexpected) if unexpected else "no refusal")


@pytest.fixture(scope="module", params=["redis", "valkey"])
def acl(request: pytest.FixtureRequest) -> Iterator[AclServer]:
    with acl_server(str(request.param)) as (engine, admin):
        for user, rules in documented_rules().items():
            send(admin, "ACL", "SETUSER", user, *with_password(rules, password(user)))
        yield AclServer(engine, admin)


@pytest.fixture
def server(acl: AclServer) -> Iterator[AclServer]:
    """The module's server, emptied, with the library loaded and a fresh ACL LOG."""
    acl.admin.flushall()
    registry.forget(acl.admin)  # the queues this process listed are gone with the data
    library.load(acl.admin)
    acl.admin.acl_log_reset()
    acl.expected_refusals = set()
    yield acl
    acl.assert_no_refusals()


def cli(server: AclServer, user: str, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--url", server.url(user)], catch_exceptions=False)


def burst(server: AclServer, user: str, *queues: str) -> Any:
    """`pyscheduler worker --burst` as `user`, to its end; its output."""
    args = ("--url", server.url(user), "--lease", "2", "--burst")
    code, output = run_cli("worker", *queues, *args, timeout=WORKER_TIMEOUT_S)
    assert code == 0, f"worker exited {code}; {server.why()}\n{output}"
    return output


def wait_result(server: AclServer, job: Job, timeout: float = 10.0) -> Any:
    return result_or_fail(job, timeout, why=server.why())


# --------------------------------------------------------------------------- the page itself


def test_every_command_the_library_calls_is_granted_to_producer_and_worker() -> None:
    rules = documented_rules()
    inside = library_commands()
    assert len(inside) >= 10, f"found too few commands in the library: {sorted(inside)}"
    for user in ("psq-producer", "psq-worker"):
        missing = inside - granted_commands(rules[user])
        assert not missing, f"{user} in docs/security.md lacks +{' +'.join(sorted(missing))}"


def test_the_page_lists_exactly_the_commands_the_library_calls() -> None:
    section = SECURITY_DOC.read_text().split("## Minimal ACL users per role", 1)[1]
    block = re.search(r"\n\n((?:    \S.*\n)+)", section)
    assert block is not None, "no indented list of commands under 'Minimal ACL users per role'"
    listed, called = set(block.group(1).split()), library_commands()

    assert listed == called, (
        f"listed, not called: {sorted(listed - called)};"
        f" called, not listed: {sorted(called - listed)}"
    )


def test_producer_and_worker_are_granted_only_what_the_library_or_the_client_sends() -> None:
    # What pyscheduler's Python code sends itself, beside the library's own commands
    # (docs/security.md names each one's use); a grant nothing uses any more shows up here.
    direct = {"fcall", "fcall_ro", "sadd", "smembers", "hexists", "hmget", "xread", "xrevrange"}
    expected = {
        "psq-producer": library_commands() | direct,
        "psq-worker": library_commands() | direct | {"blpop"},
    }
    rules = documented_rules()
    for user, commands in expected.items():
        granted = granted_commands(rules[user])
        assert granted == commands, (
            f"{user}: granted but unused: {sorted(granted - commands)},"
            f" used but not granted: {sorted(commands - granted)}"
        )


@pytest.mark.parametrize("kind", ["redis", "valkey"])
def test_the_rules_load_from_an_acl_file(kind: str, tmp_path: Path) -> None:
    acl_file = tmp_path / "users.acl"
    lines = [f"user {user} {' '.join(rules)}" for user, rules in documented_rules().items()]
    acl_file.write_text("\n".join(["user default on nopass ~* &* +@all", *lines, ""]))

    with Engine(kind=kind, extra_args=["--aclfile", str(acl_file)]) as engine:
        listed = redis.Redis(host=engine.host, port=engine.port).acl_users()

    assert {u.decode() if isinstance(u, bytes) else u for u in listed} >= set(ACL_ROLES)


# --------------------------------------------------------------------------- deploy


def test_deploy_user_loads_the_library_with_load_scripts(server: AclServer) -> None:
    server.admin.function_flush()
    url = server.url("psq-deploy")
    load = [sys.executable, str(ROOT / "tools" / "load_scripts.py"), url]
    loaded = subprocess.run(load, capture_output=True, text=True, timeout=60)
    check = subprocess.run([*load[:2], "--check", url], capture_output=True, text=True, timeout=60)

    assert loaded.returncode == 0, f"{loaded.stdout}{loaded.stderr}; {server.why()}"
    assert library.code_version() in loaded.stdout
    assert check.returncode == 0, f"{check.stdout}{check.stderr}; {server.why()}"
    assert library.deployed_version(server.admin) == library.code_version()


def test_deploy_user_reads_and_writes_no_key(server: AclServer) -> None:
    Queue("q", connection=server.admin).enqueue("tasks:add", 1, 2)
    deploy = server.client("psq-deploy")
    server.expect_refusal("psq-deploy", "*")  # every attempt below

    with pytest.raises(redis.exceptions.NoPermissionError):
        deploy.hgetall("psq:{q}:jobs")
    with pytest.raises(redis.exceptions.NoPermissionError):
        deploy.hset("psq:{q}:jobs", "forged", "{}")
    with pytest.raises(REFUSED):
        Queue("q", connection=deploy).enqueue("tasks:add", 1, 2)

    assert Queue("q", connection=server.admin).counts().queued == 1


# --------------------------------------------------------------------------- producer


def test_producer_enqueues_reads_and_cancels_under_its_rights(server: AclServer) -> None:
    producer = server.client("psq-producer")
    queue = Queue("q", connection=producer)

    one = queue.enqueue("tasks:add", 1, 2, priority=3, retries=2)
    many = queue.enqueue_many(queue.prepare("tasks:add", (i, i)) for i in range(5))
    later = queue.enqueue("tasks:add", 0, 0, delay=60)
    fetched = Job.fetch(one.id, connection=producer)  # searches the known queues
    with pytest.raises(WaitTimeout):
        one.wait(timeout=0.05)
    was = later.cancel()

    assert fetched.info().status == Status.QUEUED
    assert one.info().args == [1, 2]
    assert [job.info().status for job in many] == [Status.QUEUED] * 5
    assert was == Status.DELAYED
    assert later.info().status == Status.CANCELLED
    assert queue.counts().queued == 6


def test_producer_cannot_load_functions_or_run_scripts_or_admin_commands(
    server: AclServer,
) -> None:
    producer = server.client("psq-producer")
    refused: list[str] = []
    attempts: list[tuple[str, tuple[Any, ...]]] = [
        ("function|load", ("FUNCTION", "LOAD", "REPLACE", library.library_code()[1])),
        ("function|delete", ("FUNCTION", "DELETE", "pyscheduler")),
        ("eval", ("EVAL", "return 1", "0")),
        ("flushall", ("FLUSHALL",)),
        ("keys", ("KEYS", "*")),
        ("config|set", ("CONFIG", "SET", "maxmemory", "1")),
        ("acl|setuser", ("ACL", "SETUSER", "psq-producer", "+@all")),
        ("publish", ("PUBLISH", "psq", "x")),
    ]
    for name, command in attempts:
        server.expect_refusal("psq-producer", name)
        try:
            send(producer, *command)
        except redis.exceptions.NoPermissionError:
            refused.append(name)

    assert refused == [name for name, _ in attempts]
    assert library.deployed_version(server.admin) == library.code_version()


def test_a_command_run_inside_a_library_function_is_checked_against_the_caller(
    server: AclServer,
) -> None:
    # Why the page grants HSET, ZADD, ... to producers: take one away and enqueue breaks.
    rules = [r for r in command_rules("psq-producer") if r != "+time"]
    send(server.admin, "ACL", "SETUSER", "psq-no-time", "reset", "on", ">pw", "~psq:*", *rules)
    server.expect_refusal("psq-no-time", "time")
    client = redis.Redis.from_url(user_url(server.engine.port, "psq-no-time", "pw"))

    with pytest.raises(REFUSED) as raised:
        Queue("q", connection=client).enqueue("tasks:add", 1, 2)

    entries = [
        e
        for e in server.admin.acl_log()
        if e["username"] == "psq-no-time" and e["object"] not in IGNORED_REFUSALS
    ]
    assert [(e["object"], e["context"]) for e in entries] == [("time", "lua")], raised.value
    assert Queue("q", connection=server.admin).counts().queued == 0


def test_a_user_without_the_psq_key_pattern_cannot_read_the_queue(server: AclServer) -> None:
    Queue("q", connection=server.admin).enqueue("tasks:add", 1, 2)
    rules = command_rules("psq-worker")
    send(server.admin, "ACL", "SETUSER", "psq-elsewhere", "reset", "on", ">pw", "~app:*", *rules)
    server.expect_refusal("psq-elsewhere", "psq:*")
    url = user_url(server.engine.port, "psq-elsewhere", "pw")
    outsider = redis.Redis.from_url(url)

    with pytest.raises(redis.exceptions.NoPermissionError):
        outsider.hgetall("psq:{q}:jobs")
    with pytest.raises(REFUSED):
        Queue("q", connection=outsider).counts()
    result = CliRunner().invoke(main, ["stats", "--url", url], catch_exceptions=False)

    assert result.exit_code == 3, result.output
    assert "permission" in result.output.lower(), result.output


def test_a_queue_scoped_user_reaches_its_own_queue_only(server: AclServer) -> None:
    rules = command_rules("psq-producer")
    send(
        server.admin,
        "ACL", "SETUSER", "psq-orders", "reset", "on", ">pw", "~psq:{orders}:*", "~psq:queues",
        *rules,
    )  # fmt: skip
    server.expect_refusal("psq-orders", "psq:{mail}:*")
    client = redis.Redis.from_url(user_url(server.engine.port, "psq-orders", "pw"))

    job = Queue("orders", connection=client).enqueue("tasks:add", 1, 2)
    with pytest.raises(REFUSED):
        Queue("mail", connection=client).enqueue("tasks:add", 1, 2)

    assert Job.fetch(job.id, connection=client, queue="orders").info().status == Status.QUEUED
    assert Queue("mail", connection=server.admin).counts().queued == 0


# --------------------------------------------------------------------------- worker


def test_worker_runs_jobs_to_completion_under_worker_rights(server: AclServer) -> None:
    producer = server.client("psq-producer")
    queue = Queue("q", connection=producer)
    admin_url = user_url(server.engine.port, ADMIN_USER, ADMIN_PASSWORD)
    added = queue.enqueue("tasks:add", 2, 3)
    batch = queue.enqueue_many(queue.prepare("tasks:add", (i, 1)) for i in range(3))
    split = queue.enqueue("long_tasks:fan_out", 3, "q")  # subtasks, then the continuation
    # The handler's own writes go through its own URL: the worker's user needs no other key.
    stepped = queue.enqueue("long_tasks:stepper", admin_url, "app:steps", 3, 0.01)
    sliced = queue.enqueue("long_tasks:sliced_stepper", admin_url, "app:sliced", 4, 0.1)
    failing = queue.enqueue("long_tasks:refuse", "no", retries=1, backoff=0)
    timed_out = queue.enqueue("tasks:sleep_in_c", 30, timeout=0.5, retries=0)
    awaited = queue.enqueue("tasks:async_add", 4, 5)

    output = burst(server, "psq-worker", "q")

    assert wait_result(server, added) == 5, output
    assert [wait_result(server, job) for job in batch] == [1, 2, 3]
    assert wait_result(server, split) == {"count": 3, "sum": 3}
    assert wait_result(server, stepped) == 3  # saved a checkpoint after each step
    assert wait_result(server, sliced) == 6  # paused by its time slice, resumed
    assert wait_result(server, awaited) == 9
    assert failing.info().status == Status.FAILED
    assert failing.info().attempts == 2
    assert "ValueError: no" in (failing.info().error or "")
    assert timed_out.info().status == Status.FAILED


def test_worker_from_python_runs_under_worker_rights(server: AclServer) -> None:
    job = Queue("q", connection=server.client("psq-producer")).enqueue("tasks:add", 20, 22)

    processed = Worker([Queue("q", connection=server.client("psq-worker"))]).work(burst=True)

    assert processed == 1, server.why()
    assert wait_result(server, job) == 42


def test_idle_worker_blocks_in_redis_and_takes_a_new_job(server: AclServer) -> None:
    proc = worker_process(server.url("psq-worker"), "q", args=("--lease", "2"))
    try:

        def idle_workers() -> int:
            return sum(
                1
                for c in server.admin.client_list()
                if c.get("user") == "psq-worker" and c.get("cmd") == "blpop"
            )

        wait_until(idle_workers, timeout=20, what=f"the worker to block in BLPOP; {server.why()}")
        job = Queue("q", connection=server.client("psq-producer")).enqueue("tasks:add", 1, 1)
        assert wait_result(server, job) == 2
        for user in ("psq-worker", "psq-monitor"):  # the live workers, from their heartbeats
            listed = cli(server, user, "workers", "q", "--json")
            assert listed.exit_code == 0, f"{user}: {listed.output}; {server.why()}"
    finally:
        output = terminate(proc)
    assert proc.returncode == 0, output


def test_pool_runs_jobs_under_worker_rights(server: AclServer) -> None:
    queue = Queue("q", connection=server.client("psq-producer"))
    jobs = [queue.enqueue("tasks:add", i, i) for i in range(4)]
    args = ["pool", "--group", "q:1", "--check-interval", "0.2", "--url", server.url("psq-worker")]
    proc = cli_process(*args)
    try:
        results = [wait_result(server, job, timeout=30) for job in jobs]
    finally:
        output = terminate(proc)
    assert results == [0, 2, 4, 6], output
    assert proc.returncode == 0, output


# --------------------------------------------------------------------------- command line


def test_operator_commands_work_under_the_worker_user(server: AclServer) -> None:
    queue = Queue("q", connection=server.client("psq-producer"))
    failing = queue.enqueue("long_tasks:refuse", "no", retries=0)
    pending = queue.enqueue("tasks:add", 1, 2, delay=60)
    burst(server, "psq-worker", "q")
    worker = "psq-worker"

    stats = cli(server, worker, "stats", "--json")
    workers = cli(server, worker, "workers", "--json")
    listed = cli(server, worker, "jobs", "q", "--status", "failed", "--json")
    shown = cli(server, worker, "job", failing.id, "--json")
    retried = cli(server, worker, "retry", "q", failing.id)
    cancelled = cli(server, worker, "cancel", pending.id)
    paused = cli(server, worker, "pause", "q")
    resumed = cli(server, worker, "resume", "q")
    limits = cli(server, worker, "limit", "q")
    purged = cli(server, worker, "purge", "q", "--status", "cancelled", "--yes")

    results = (stats, workers, listed, shown, retried, cancelled, paused, resumed, limits, purged)
    for result in results:
        assert result.exit_code == 0, f"{result.output}; {server.why()}"
    assert '"q"' in stats.output
    assert failing.id in listed.output
    assert json.loads(shown.output)["status"] == Status.FAILED
    assert failing.info().status == Status.QUEUED
    assert Queue("q", connection=server.admin).counts().finished == 0  # the cancelled job, purged


def test_producer_enqueues_and_reads_stats_from_the_command_line(server: AclServer) -> None:
    enqueued = cli(server, "psq-producer", "enqueue", "q", "tasks:add", "1", "2")
    stats = cli(server, "psq-producer", "stats", "q", "--json")

    assert enqueued.exit_code == 0, f"{enqueued.output}; {server.why()}"
    assert stats.exit_code == 0, f"{stats.output}; {server.why()}"
    assert Queue("q", connection=server.admin).counts().queued == 1


def test_monitor_user_reads_but_changes_nothing(server: AclServer) -> None:
    job = Queue("q", connection=server.admin).enqueue("tasks:add", 1, 2)
    monitor = server.client("psq-monitor")
    server.expect_refusal("psq-monitor", "fcall")
    server.expect_refusal("psq-monitor", "hset")

    stats = cli(server, "psq-monitor", "stats", "--json")
    workers = cli(server, "psq-monitor", "workers", "--json")
    listed = cli(server, "psq-monitor", "jobs", "q", "--json")
    shown = cli(server, "psq-monitor", "job", job.id, "--json")
    events = cli(server, "psq-monitor", "events", "q", "--from-start", "--count", "1", "--json")
    cancelled = cli(server, "psq-monitor", "cancel", job.id)
    with pytest.raises(redis.exceptions.NoPermissionError):
        monitor.hset("psq:{q}:jobs", "forged", "{}")

    for result in (stats, workers, listed, shown, events):
        assert result.exit_code == 0, f"{result.output}; {server.why()}"
    assert job.id in listed.output
    assert job.id in events.output
    scrape = generate_latest(registry_for(monitor)).decode()
    assert 'pyscheduler_queue_ready{queue="q"} 1.0' in scrape
    assert cancelled.exit_code == 3, cancelled.output
    assert job.info().status == Status.QUEUED
