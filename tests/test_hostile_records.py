"""A worker no record can crash: job records, payloads and checkpoints written raw into the
queue's keys, as a hostile or buggy producer could, fail (or are refused) with a reason naming
what is wrong; the worker and its children live on, and nothing that cannot succeed is retried.
"""

from __future__ import annotations

import json
import signal
import subprocess
from typing import Any

import pytest
import redis
from conftest import ServerHandle
from helpers import WorkerLog, executor_pids, start_worker, wait_until, worker_process

from pyscheduler import Queue, Worker
from pyscheduler.dev.engine import Engine, free_port
from pyscheduler.exceptions import PayloadNotJSON
from pyscheduler.runtime.allowlist import HandlerPolicy
from pyscheduler.runtime.child_protocol import OutcomeKind, RunRequest
from pyscheduler.runtime.executor import Executor
from pyscheduler.store.keys import QueueKeys

QUEUE = "hostile"
KEYS = QueueKeys(QUEUE)


def raw_record(conn: redis.Redis, job_id: str) -> dict[str, Any]:
    return dict(json.loads(conn.hget(KEYS.jobs, job_id) or b"{}"))


def write_record(conn: redis.Redis, job_id: str, **fields: Any) -> None:
    """Overwrite fields of a stored record, as another producer could."""
    record = raw_record(conn, job_id)
    record.update(fields)
    conn.hset(KEYS.jobs, job_id, json.dumps(record))


def failed_error(conn: redis.Redis, job_id: str, timeout: float = 15.0) -> str:
    """Wait until the job has failed for good; its error text (read raw: the record may not
    be valid UTF-8)."""
    wait_until(
        lambda: conn.zscore(KEYS.failed, job_id) is not None, timeout, what=f"{job_id} failed"
    )
    error: Any = conn.hget(KEYS.errors, job_id)
    return error.decode("utf-8", "replace") if error else ""


class Watched:
    """A worker process on a paused queue, with its children noted after one good job (a
    child starts when a job needs it)."""

    def __init__(self, conn: redis.Redis, workers: Any) -> None:
        self.queue = Queue(QUEUE, connection=conn)
        self.proc, self.log = start_worker(workers, QUEUE)
        assert self.queue.enqueue("tasks:add", 1, 1).wait(15) == 2
        self.queue.pause()
        self.children = sorted(executor_pids(self.proc.pid))

    def run(self) -> None:
        self.queue.resume()

    def assert_lives_on(self) -> None:
        """A good job still completes, by the same processes."""
        assert self.queue.enqueue("tasks:add", 2, 3).wait(15) == 5
        assert self.proc.poll() is None, self.log.text
        assert sorted(executor_pids(self.proc.pid)) == self.children, self.log.text


def assert_refused(conn: redis.Redis, job_id: str, error: str, *needles: str) -> None:
    for needle in needles:
        assert needle in error, error
    record = conn.hget(KEYS.jobs, job_id) or b""
    assert b'"failure":"refused"' in record, record
    assert int(conn.hget(KEYS.stats, "retried") or 0) == 0  # refused, so never retried


# -- bytes that are not UTF-8 -----------------------------------------------------------------


def test_record_with_invalid_utf8_is_refused(conn: redis.Redis, workers: Any) -> None:
    watched = Watched(conn, workers)
    job = watched.queue.enqueue("tasks:add", 1, 2, retries=3)
    record: Any = conn.hget(KEYS.jobs, job.id) or b""
    conn.hset(KEYS.jobs, job.id, record.replace(b'"tasks:add"', b'"tasks:\xffadd"'))
    watched.run()

    error = failed_error(conn, job.id)
    assert_refused(conn, job.id, error, "job record is not valid UTF-8", "0xff")
    watched.assert_lives_on()


def test_payload_with_invalid_utf8_is_refused(conn: redis.Redis, workers: Any) -> None:
    watched = Watched(conn, workers)
    job = watched.queue.enqueue("tasks:echo", "x", retries=3)
    conn.hset(KEYS.payloads, job.id, b'{"args":["\xc3\x28"],"kwargs":{}}')
    watched.run()

    error = failed_error(conn, job.id)
    assert_refused(conn, job.id, error, "job payload is not valid UTF-8", "0xc3")
    watched.assert_lives_on()


def test_checkpoint_with_invalid_utf8_is_refused(conn: redis.Redis, workers: Any) -> None:
    watched = Watched(conn, workers)
    job = watched.queue.enqueue("tasks:add", 1, 2, retries=3)
    conn.hset(KEYS.checkpoints, job.id, b'{"done":"\xfe"}')
    watched.run()

    error = failed_error(conn, job.id)
    assert_refused(conn, job.id, error, "job checkpoint is not valid UTF-8", "0xfe")
    watched.assert_lives_on()


# -- forged fields of the record --------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "raw_value"),
    [
        ("timeout", "1e400"),
        ("timeout", '"abc"'),
        ("timeout", "-5"),
        ("timeout", "NaN"),
        ("time_slice", '"abc"'),
        ("time_slice", "-1"),
        ("retries", '"3"'),
        ("attempts", "1.5"),
        ("split", '"x"'),
        ("split_total", "-2"),
        ("results_arg", '"yes"'),
        ("parent", '{"queue": "hostile", "id": "p", "split": 1, "index": 1, "x": 1}'),
        ("parent", '{"queue": "no such/queue", "id": "p", "split": 1, "index": 1}'),
        ("split_groups", '[["hostile"]]'),
    ],
)
def test_forged_record_field_is_refused_with_its_name(
    conn: redis.Redis, workers: Any, field: str, raw_value: str
) -> None:
    watched = Watched(conn, workers)
    job = watched.queue.enqueue("tasks:add", 1, 2, retries=3)
    record = json.dumps(raw_record(conn, job.id))
    # Spliced in as text: NaN and 1e400 are not values json.dumps writes.
    conn.hset(KEYS.jobs, job.id, record[:-1] + f', "{field}": {raw_value}}}')
    watched.run()

    error = failed_error(conn, job.id)
    if "corrupt job record" in error:
        pass  # the library refused the record itself, before leasing it
    else:
        assert_refused(conn, job.id, error, f"the job record's {field} must be")
    watched.assert_lives_on()


def test_forged_timeout_is_refused_by_in_process_worker(conn: redis.Redis) -> None:
    """The worker's own main process (not a child) reads the timeout: it must not raise."""
    queue = Queue(QUEUE, connection=conn)
    bad = queue.enqueue("tasks:add", 1, 2, retries=3)
    write_record(conn, bad.id, timeout=-5)
    good = queue.enqueue("tasks:add", 2, 3)

    assert Worker([queue]).work(burst=True) == 2

    assert_refused(conn, bad.id, failed_error(conn, bad.id), "timeout must be")
    assert good.wait(1) == 5


# -- values too deep, strings JSON cannot carry -----------------------------------------------


def test_payload_nested_too_deep_is_refused_not_retried(conn: redis.Redis, workers: Any) -> None:
    watched = Watched(conn, workers)
    job = watched.queue.enqueue("tasks:echo", "x", retries=3)
    deep = "[" * 2000 + "]" * 2000
    conn.hset(KEYS.payloads, job.id, '{"args":[' + deep + '],"kwargs":{}}')
    watched.run()

    error = failed_error(conn, job.id)
    assert_refused(conn, job.id, error, "payload", "nested too deep")
    watched.assert_lives_on()


def test_handler_returning_lone_surrogate_fails_clearly(conn: redis.Redis, workers: Any) -> None:
    watched = Watched(conn, workers)
    job = watched.queue.enqueue("tasks:echo", "x")
    # Valid JSON (an escape), which decodes to a lone surrogate the handler returns.
    conn.hset(KEYS.payloads, job.id, '{"args":["\\ud800"],"kwargs":{}}')
    watched.run()

    error = failed_error(conn, job.id)
    assert "the handler returned a string with a lone surrogate" in error, error
    assert "JSON cannot carry" in error, error
    watched.assert_lives_on()


def test_async_handler_returning_lone_surrogate_fails_clearly(
    conn: redis.Redis, workers: Any
) -> None:
    watched = Watched(conn, workers)
    warm = watched.queue.enqueue("tasks:async_add", 1, 2)  # the event loop learns the handler
    watched.run()
    assert warm.wait(15) == 3
    watched.children = sorted(executor_pids(watched.proc.pid))  # now with the loop's process
    watched.queue.pause()
    job = watched.queue.enqueue("tasks:async_add", "a", "b", timeout=60)
    conn.hset(KEYS.payloads, job.id, '{"args":["\\ud800","x"],"kwargs":{}}')
    watched.run()

    error = failed_error(conn, job.id)
    assert "the handler returned a string with a lone surrogate" in error, error
    watched.assert_lives_on()


def test_enqueue_of_lone_surrogate_raises_payload_not_json(conn: redis.Redis) -> None:
    queue = Queue(QUEUE, connection=conn)
    with pytest.raises(PayloadNotJSON, match=r"args\[1\]\['k'\] has a lone surrogate"):
        queue.enqueue("tasks:echo", "fine", {"k": "a\ud800"})
    with pytest.raises(PayloadNotJSON, match=r"kwargs\['value'\] key has a lone surrogate"):
        queue.enqueue("tasks:echo", value={"\udc80": 1})
    assert conn.hlen(KEYS.jobs) == 0


# -- the handler's module ---------------------------------------------------------------------


def test_handler_module_that_cannot_be_imported_is_an_ordinary_failed_attempt(
    conn: redis.Redis, workers: Any
) -> None:
    watched = Watched(conn, workers)
    job = watched.queue.enqueue("no_such_app_module:handler", retries=1, backoff=0)
    watched.run()

    error = failed_error(conn, job.id)
    assert "no_such_app_module" in error, error
    record = raw_record(conn, job.id)
    assert (record["failure"], record["attempts"]) == ("error", 2)  # retries applied
    watched.assert_lives_on()


# -- a child never dies of a malformed request ------------------------------------------------


@pytest.mark.parametrize(
    "broken",
    [
        {"record": b""},
        {"record": b"[1, 2"},
        {"payload": b""},
        {"payload": b"\xff\xfe"},
        {"checkpoint": b"[" * 5000},
        {"queue": "not a queue name!"},
    ],
    ids=["no-record", "bad-record", "no-payload", "bad-payload", "deep-checkpoint", "bad-queue"],
)
def test_malformed_request_gives_an_outcome_and_the_child_lives(broken: dict[str, Any]) -> None:
    record = {"status": "active", "func": "tasks:add", "priority": 0, "attempts": 1}
    good: dict[str, Any] = {
        "queue": QUEUE,
        "job_id": "job-1",
        "token": "0" * 32,
        "record": json.dumps(record).encode(),
        "payload": b'{"args":[1,2],"kwargs":{}}',
        "checkpoint": None,
        "lease_ms": 10_000,
        "timeout": 10,
    }
    executor = Executor(HandlerPolicy(), redis.Redis(port=free_port()))
    try:
        requests = [RunRequest(**{**good, **broken}), RunRequest(**good)]
        executor.number(requests)
        executor.submit(requests)
        first, second = executor.receive(), executor.receive()
        assert first is not None and second is not None, "the child died"
        assert first.kind in (OutcomeKind.REFUSED, OutcomeKind.ERROR), first
        assert first.error, first
        assert second.ok and json.loads(second.result) == 3, second
        assert executor.process.is_alive()
    finally:
        executor.kill()


# -- a worker started while Redis is down -----------------------------------------------------


def start_cli_worker(url: str, *extra: str) -> tuple[subprocess.Popen[str], WorkerLog]:
    proc = worker_process(url, QUEUE, args=extra)
    return proc, WorkerLog(proc)


def test_worker_started_while_redis_is_down_waits_then_works(engine: ServerHandle) -> None:
    if engine.kind not in ("redis", "valkey"):
        pytest.skip("needs a local server binary of a known kind")
    port = free_port()
    proc, log = start_cli_worker(f"redis://127.0.0.1:{port}/0", "--auto-load")
    try:
        log.wait_for("cannot reach Redis", timeout=15)
        wait_until(lambda: log.count("cannot reach Redis") >= 1 and proc.poll() is None)
        with Engine(kind=engine.kind, port=port) as server:
            log.wait_for("started on", timeout=30)
            conn = redis.Redis.from_url(server.url)
            job = Queue(QUEUE, connection=conn).enqueue("tasks:add", 20, 22)
            assert job.wait(15) == 42
            assert proc.poll() is None
            conn.close()
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_sigterm_while_waiting_for_redis_exits_cleanly(engine: ServerHandle) -> None:
    proc, log = start_cli_worker(f"redis://127.0.0.1:{free_port()}/0")
    try:
        log.wait_for("cannot reach Redis", timeout=15)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, log.text
        text = log.finish()
        assert "stopped while waiting for Redis" in text, text
        assert "Traceback" not in text, text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
