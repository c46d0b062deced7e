"""Bad input gets a clear exception naming what is wrong, and nothing is written to Redis.

"Nothing written" is checked by comparing a DUMP of every key before and after the call.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from helpers import snapshot

from pyscheduler import (
    HandlerRefused,
    InvalidInput,
    InvalidJobId,
    InvalidOption,
    InvalidQueueName,
    LeaseLost,
    LibraryError,
    PayloadNotJSON,
    PayloadTooLarge,
    Queue,
)
from pyscheduler.exceptions import InvalidKeys
from pyscheduler.store import calls, library
from pyscheduler.store.keys import QueueKeys
from pyscheduler.store.operations import keys_for
from pyscheduler.store.protocol import (
    COMPLETE_BATCH_MAX,
    RELEASE_BATCH_MAX,
    SIZE_LIMIT_DEFAULTS,
    FailKind,
)


def add(a: Any = 0, b: Any = 0) -> Any:
    return a


class Greeter:
    def hello(self) -> str:
        return "hello"


Snapshot = dict[bytes, bytes | None]


@pytest.fixture
def queue(conn: redis.Redis) -> Queue:
    """A queue that already holds one job, so a bad call has something it could spoil."""
    q = Queue("work", connection=conn)
    q.enqueue(add, 1, job_id="existing")
    return q


@pytest.fixture
def before(conn: redis.Redis, queue: Queue) -> Snapshot:
    return snapshot(conn)


def assert_nothing_written(conn: redis.Redis, before: Snapshot) -> None:
    assert snapshot(conn) == before


# -- payloads ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "where"),
    [
        (object(), "args[0]"),
        ({1, 2}, "args[0]"),
        (math.nan, "args[0]"),
        (math.inf, "args[0]"),
        (b"bytes", "args[0]"),
        ([1, [2, object()]], "args[0][1][1]"),
        ({1: "int key"}, "args[0] key 1"),
        ({"ok": {None: 1}}, "args[0]['ok'] key None"),
    ],
    ids=["object", "set", "nan", "inf", "bytes", "nested", "int-key", "none-key"],
)
def test_non_json_argument_is_refused(
    conn: redis.Redis, queue: Queue, before: Snapshot, value: Any, where: str
) -> None:
    with pytest.raises(PayloadNotJSON) as caught:
        queue.enqueue(add, value)
    assert where in str(caught.value)
    assert_nothing_written(conn, before)


def test_non_json_keyword_argument_is_refused(
    conn: redis.Redis, queue: Queue, before: Snapshot
) -> None:
    with pytest.raises(PayloadNotJSON, match=r"kwargs\['b'\]"):
        queue.enqueue(add, 1, b=object())
    assert_nothing_written(conn, before)


def test_circular_argument_is_refused(conn: redis.Redis, queue: Queue, before: Snapshot) -> None:
    circular: list[Any] = []
    circular.append(circular)
    with pytest.raises(PayloadNotJSON):
        queue.enqueue(add, circular)
    assert_nothing_written(conn, before)


def test_payload_over_max_payload_bytes_is_refused(conn: redis.Redis, before: Snapshot) -> None:
    small = Queue("work", connection=conn, max_payload_bytes=100)
    with pytest.raises(PayloadTooLarge, match="over the limit of 100 bytes"):
        small.enqueue(add, "x" * 200)
    assert_nothing_written(conn, before)


def test_payload_at_max_payload_bytes_is_accepted(conn: redis.Redis) -> None:
    exact = Queue("work", connection=conn, max_payload_bytes=100)
    overhead = len('{"args":[""],"kwargs":{}}')
    job = exact.enqueue(add, "x" * (100 - overhead))
    assert job.status == "queued"


def test_invalid_input_errors_are_value_errors() -> None:
    assert issubclass(InvalidInput, ValueError)
    for cls in (PayloadNotJSON, PayloadTooLarge, InvalidQueueName, InvalidJobId, InvalidOption):
        assert issubclass(cls, InvalidInput)


# -- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["", "has space", "{tag}", "a:b", "-leading-dash", "x" * 101, "naïve", 42, None],
    ids=["empty", "space", "braces", "colon", "dash", "too-long", "non-ascii", "int", "none"],
)
def test_invalid_queue_name_is_refused(conn: redis.Redis, name: Any) -> None:
    with pytest.raises(InvalidQueueName, match="invalid queue name"):
        Queue(name, connection=conn)
    assert conn.dbsize() == 0


def test_longest_valid_queue_name_is_accepted(conn: redis.Redis) -> None:
    name = "q" * 100
    assert Queue(name, connection=conn).enqueue(add, 1).status == "queued"


@pytest.mark.parametrize(
    "job_id",
    ["", "has space", "{tag}", "a/b", "_leading", "x" * 257, 42],
    ids=["empty", "space", "braces", "slash", "underscore", "too-long", "int"],
)
def test_invalid_job_id_is_refused(
    conn: redis.Redis, queue: Queue, before: Snapshot, job_id: Any
) -> None:
    with pytest.raises(InvalidJobId, match="invalid job id"):
        queue.enqueue(add, 1, job_id=job_id)
    assert_nothing_written(conn, before)


def test_job_id_with_colons_and_dots_is_accepted(queue: Queue) -> None:
    assert queue.enqueue(add, 1, job_id="invoice:2024.07-A_1").id == "invoice:2024.07-A_1"


# -- options ----------------------------------------------------------------------------------


BAD_OPTIONS: list[tuple[dict[str, Any], str]] = [
    ({"delay": -1}, "delay must not be negative"),
    ({"delay": timedelta(seconds=-5)}, "delay must not be negative"),
    ({"delay": math.nan}, "delay must be a finite"),
    ({"delay": math.inf}, "delay must be a finite"),
    ({"delay": "5"}, "delay must be a number"),
    ({"timeout": -1}, "timeout must be positive"),
    ({"timeout": 0}, "timeout must be positive"),
    ({"timeout": timedelta(0)}, "timeout must be positive"),
    ({"timeout": math.nan}, "timeout must be a finite"),
    ({"timeout": math.inf}, "timeout must be a finite"),
    ({"priority": 1001}, "priority must be in -1000..1000"),
    ({"priority": -1001}, "priority must be in -1000..1000"),
    ({"priority": 1.5}, "priority must be an integer"),
    ({"priority": True}, "priority must be an integer"),
    ({"priority": "1"}, "priority must be an integer"),
    ({"retries": -1}, "retries must be a non-negative integer"),
    ({"retries": 1.5}, "retries must be a non-negative integer"),
    ({"backoff": -1}, "backoff and result_ttl must not be negative"),
    ({"backoff": math.nan}, "backoff must be a finite"),
    ({"result_ttl": -1}, "backoff and result_ttl must not be negative"),
    ({"result_ttl": math.inf}, "result_ttl must be a finite"),
    ({"delay": 1, "at": 4_102_444_800}, "either delay or at"),
    ({"at": "tomorrow"}, "at must be a datetime or epoch seconds"),
    ({"at": math.nan}, "at must be a finite"),
]


@pytest.mark.parametrize(
    ("options", "message"),
    BAD_OPTIONS,
    ids=[",".join(f"{k}={v!r}"[:24] for k, v in o.items()) for o, _ in BAD_OPTIONS],
)
def test_invalid_option_is_refused(
    conn: redis.Redis, queue: Queue, before: Snapshot, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidOption, match=message):
        queue.enqueue(add, 1, **options)
    assert_nothing_written(conn, before)


@pytest.mark.parametrize(
    "at",
    [time.time() - 3600, datetime(2001, 1, 1, tzinfo=UTC)],
    ids=["epoch", "datetime"],
)
def test_at_in_the_past_is_refused(
    conn: redis.Redis, queue: Queue, before: Snapshot, at: Any
) -> None:
    with pytest.raises(InvalidOption, match="in the past"):
        queue.enqueue(add, 1, at=at)
    assert_nothing_written(conn, before)


def test_default_timeout_of_zero_is_refused(conn: redis.Redis, before: Snapshot) -> None:
    with pytest.raises(InvalidOption, match="timeout must be positive"):
        Queue("work", connection=conn, default_timeout=0).enqueue(add, 1)
    assert_nothing_written(conn, before)


# -- handlers ---------------------------------------------------------------------------------


def test_lambda_handler_is_refused(conn: redis.Redis, queue: Queue, before: Snapshot) -> None:
    with pytest.raises(HandlerRefused, match="lambda"):
        queue.enqueue(lambda: 1)
    assert_nothing_written(conn, before)


def test_nested_function_handler_is_refused(
    conn: redis.Redis, queue: Queue, before: Snapshot
) -> None:
    def nested() -> int:
        return 1

    with pytest.raises(HandlerRefused, match="nested function"):
        queue.enqueue(nested)
    assert_nothing_written(conn, before)


def test_bound_method_handler_is_refused(conn: redis.Redis, queue: Queue, before: Snapshot) -> None:
    with pytest.raises(HandlerRefused, match="bound method"):
        queue.enqueue(Greeter().hello)
    assert_nothing_written(conn, before)


def test_partial_handler_is_refused(conn: redis.Redis, queue: Queue, before: Snapshot) -> None:
    with pytest.raises(HandlerRefused):
        queue.enqueue(functools.partial(add, 1))
    assert_nothing_written(conn, before)


@pytest.mark.parametrize(
    "func",
    [os.system, print, json.dumps, os.path.join],
    ids=["os.system", "print", "json.dumps", "os.path.join"],
)
def test_standard_library_function_is_refused(
    conn: redis.Redis, queue: Queue, before: Snapshot, func: Callable[..., Any]
) -> None:
    with pytest.raises(HandlerRefused, match="standard library"):
        queue.enqueue(func, "echo hello")
    assert_nothing_written(conn, before)


def test_empty_handler_reference_is_refused(
    conn: redis.Redis, queue: Queue, before: Snapshot
) -> None:
    with pytest.raises(HandlerRefused, match="must not be empty"):
        queue.enqueue("")
    assert_nothing_written(conn, before)


# -- batches ----------------------------------------------------------------------------------


def test_enqueue_many_with_one_invalid_job_writes_nothing(
    conn: redis.Redis, queue: Queue, before: Snapshot
) -> None:
    good = [queue.prepare(add, (i,)) for i in range(5)]
    # Built by hand, so only the library's own check stands between it and Redis.
    bad = dataclasses.replace(queue.prepare(add, (9,)), timeout=-1.0)
    with pytest.raises(InvalidOption, match="timeout must be a number of seconds in"):
        queue.enqueue_many([*good, bad])
    assert_nothing_written(conn, before)


def _new_job(**changes: Any) -> calls.NewJob:
    job = calls.NewJob(
        id="new",
        func="app:run",
        payload='{"args":[],"kwargs":{}}',
        priority=0,
        delay_ms=0,
        at_ms=None,
        timeout=10.0,
        retries=0,
        backoff=1.0,
        result_ttl=60.0,
    )
    return dataclasses.replace(job, **changes)


LUA_BAD_JOBS: list[tuple[dict[str, Any], str]] = [
    ({"timeout": -1.0}, "timeout must be a number of seconds"),
    ({"timeout": 0.0}, "timeout must be a number of seconds"),
    ({"timeout": math.nan}, "timeout must be a number of seconds"),
    ({"timeout": math.inf}, "timeout must be a number of seconds"),
    ({"priority": 1001}, "priority must be an integer"),
    ({"priority": -1001}, "priority must be an integer"),
    ({"delay_ms": -1}, "delay_ms must be an integer"),
    ({"at_ms": 1_000_000}, "due time is in the past"),
    ({"retries": -1}, "retries must be an integer"),
    ({"retries": math.nan}, "retries must be an integer"),
    ({"backoff": math.nan}, "backoff, result_ttl and time_slice"),
    ({"result_ttl": math.inf}, "backoff, result_ttl and time_slice"),
    ({"id": ""}, "id must be"),
    ({"func": ""}, "func must be"),
    ({"payload": "x" * 101}, "payload must be JSON"),
]


@pytest.mark.parametrize(
    ("changes", "message"),
    LUA_BAD_JOBS,
    ids=[f"{next(iter(c))}={next(iter(c.values()))!r}"[:40] for c, _ in LUA_BAD_JOBS],
)
def test_library_refuses_a_batch_with_one_invalid_job(
    conn: redis.Redis, queue: Queue, before: Snapshot, changes: dict[str, Any], message: str
) -> None:
    batch = [_new_job(id="first"), _new_job(id="second", delay_ms=5000), _new_job(**changes)]
    with pytest.raises(InvalidOption, match=message):
        calls.enqueue(conn, queue.keys, batch)
    assert_nothing_written(conn, before)


def test_library_refuses_a_batch_over_the_size_limit(
    conn: redis.Redis, queue: Queue, before: Snapshot
) -> None:
    batch = [_new_job(id=f"j{i}") for i in range(1001)]
    with pytest.raises(InvalidOption, match=r"pass a count of 1\.\.1000"):
        calls.enqueue(conn, queue.keys, batch)
    assert_nothing_written(conn, before)


# -- other calls ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "limit"), [(0, 0), (0, 1001), (-1, 10)], ids=["zero", "too-many", "negative"]
)
def test_invalid_listing_page_is_refused(queue: Queue, offset: int, limit: int) -> None:
    with pytest.raises(InvalidOption):
        queue.job_ids("queued", offset=offset, limit=limit)


def test_pop_of_zero_jobs_is_refused(conn: redis.Redis, queue: Queue, before: Snapshot) -> None:
    with pytest.raises(InvalidOption, match="max_jobs"):
        calls.pop(conn, queue.keys, 0, 1000, "w")
    assert_nothing_written(conn, before)


@pytest.mark.parametrize("extra", [-1, 1.5, "abc", "inf", "nan"])
def test_pop_with_a_bad_extra_is_refused(
    conn: redis.Redis, queue: Queue, before: Snapshot, extra: Any
) -> None:
    with pytest.raises(InvalidOption, match="max_jobs and extra must be integers"):
        calls.pop(conn, queue.keys, 1, 1000, "w", extra=extra)
    assert_nothing_written(conn, before)


@pytest.fixture
def leased(conn: redis.Redis, queue: Queue) -> calls.Lease:
    """The queue's one job, leased, so a bad release has a lease it could spoil."""
    (lease,) = calls.pop(conn, queue.keys, 1, 10_000, "w").leases
    return lease


@pytest.mark.parametrize(
    ("tail", "message"),
    [
        (["odd"], "pairs"),
        (["other", "not-a-token"], "not a job id and a token"),
        (["other", "-3"], "not a job id and a token"),
    ],
    ids=["odd", "text-token", "negative-token"],
)
def test_release_with_bad_arguments_is_refused(
    conn: redis.Redis, queue: Queue, leased: calls.Lease, tail: list[str], message: str
) -> None:
    before = snapshot(conn)
    with pytest.raises(InvalidOption, match=message):
        try:
            conn.fcall(
                "psq_release",
                len(calls.release_keys(queue.keys)),
                *calls.release_keys(queue.keys),
                leased.id,
                leased.token,
                *tail,
            )
        except redis.ResponseError as exc:
            calls.raise_mapped(exc)
    assert_nothing_written(conn, before)


def test_release_of_more_pairs_than_the_batch_limit_is_refused(
    conn: redis.Redis, queue: Queue, leased: calls.Lease
) -> None:
    before = snapshot(conn)
    held = [(leased.id, leased.token)] + [("other", "1" * 32)] * RELEASE_BATCH_MAX
    with pytest.raises(InvalidOption, match="id/token pairs"):
        calls.release(conn, queue.keys, held)
    assert_nothing_written(conn, before)


def _complete_many_raw(conn: redis.Redis, keys: list[str], args: list[Any]) -> None:
    """psq_complete_many as sent, so only the library's own checks stand before Redis."""
    try:
        conn.fcall("psq_complete_many", len(keys), *keys, *args)
    except redis.ResponseError as exc:
        calls.raise_mapped(exc)


@pytest.mark.parametrize(
    ("drop_keys", "tail", "message"),
    [
        (1, [], "takes 17 keys here, got 16"),
        (0, ["other"], "triples"),
        (0, ["other", "1"], "triples"),
        (-1, ["other", "not-a-token", "1"], "not a job id and a token"),
        (-1, ["other", "-3", "1"], "not a job id and a token"),
        (-1, ["other", "1.5", "1"], "not a job id and a token"),
    ],
    ids=["missing-key", "one-extra-arg", "two-extra-args", "text-token", "negative", "fraction"],
)
def test_complete_many_with_bad_arguments_is_refused(
    conn: redis.Redis,
    queue: Queue,
    leased: calls.Lease,
    drop_keys: int,
    tail: list[str],
    message: str,
) -> None:
    """The good triple first: nothing of it may be written when a later part is bad."""
    before = snapshot(conn)
    numkeys, flat = calls.complete_many_args(queue.keys, [(leased.id, leased.token, "1")])
    keys, args = flat[:numkeys], flat[numkeys:] + tail
    if drop_keys > 0:
        keys = keys[:-drop_keys]
    elif drop_keys < 0:  # a whole bad triple: its subtasks key too
        keys = [*keys, queue.keys.subtasks("other")]
    with pytest.raises(InvalidInput, match=message):
        _complete_many_raw(conn, keys, args)
    assert_nothing_written(conn, before)


def test_complete_many_with_an_extra_key_is_refused(
    conn: redis.Redis, queue: Queue, leased: calls.Lease
) -> None:
    before = snapshot(conn)
    numkeys, flat = calls.complete_many_args(queue.keys, [(leased.id, leased.token, "1")])
    keys = [*flat[:numkeys], queue.keys.subtasks("other")]
    with pytest.raises(InvalidKeys, match="takes 17 keys here, got 18"):
        _complete_many_raw(conn, keys, flat[numkeys:])
    assert_nothing_written(conn, before)


def test_complete_many_of_more_than_the_batch_limit_is_refused(
    conn: redis.Redis, queue: Queue, leased: calls.Lease
) -> None:
    before = snapshot(conn)
    items = [(leased.id, leased.token, "1")] + [("other", "1" * 32, "1")] * COMPLETE_BATCH_MAX
    with pytest.raises(InvalidOption, match="id/token/result triples"):
        calls.complete_many(conn, queue.keys, items)
    assert_nothing_written(conn, before)


def test_renew_with_a_zero_lease_is_refused(
    conn: redis.Redis, queue: Queue, before: Snapshot
) -> None:
    with pytest.raises(InvalidOption, match="lease_ms"):
        calls.renew(conn, queue.keys, 0, [("existing", "1" * 32)])
    assert_nothing_written(conn, before)


# -- corrupt records --------------------------------------------------------------------------


def _pop_ids(queue: Queue, max_jobs: int = 10) -> list[str]:
    result = calls.pop(queue.connection, queue.keys, max_jobs, 10_000, "w")
    return [lease.id for lease in result.leases]


CORRUPT_RECORDS = [
    "{not json",
    "[1, 2]",
    '"a string"',
    "{}",
    '{"status": "queued", "priority": 0}',
    '{"status": "queued", "func": "app:run", "priority": "high"}',
]
CORRUPT_IDS = ["not-json", "array", "string", "empty", "no-func", "text-priority"]
# Records that decode, with a field the library computes with that it cannot use.
UNUSABLE_RECORDS = [
    '{"status": "queued", "func": "app:run", "priority": 0, "attempts": "abc"}',
    '{"status": "queued", "func": "app:run", "priority": 0, "backoff": NaN}',
    '{"status": "queued", "func": "app:run", "priority": 0, "extra": [1, Infinity]}',
    '{"status": "lost-in-space", "func": "app:run", "priority": 0}',
    '{"status": "queued", "func": "app:run", "priority": 0.5}',
]
UNUSABLE_IDS = ["text-attempts", "nan-backoff", "nested-infinity", "unknown-status", "fraction"]


@pytest.mark.parametrize("garbage", UNUSABLE_RECORDS, ids=UNUSABLE_IDS)
def test_pop_moves_a_record_with_unusable_fields_to_failed(
    conn: redis.Redis, queue: Queue, garbage: str
) -> None:
    conn.hset(queue.keys.jobs, "existing", garbage)
    assert _pop_ids(queue) == []
    assert conn.zrange(queue.keys.failed, 0, -1) == [b"existing"]
    assert b"corrupt job record" in conn.hget(queue.keys.errors, "existing")
    assert conn.zcard(queue.keys.active) == 0


@pytest.mark.parametrize("garbage", CORRUPT_RECORDS, ids=CORRUPT_IDS)
def test_pop_moves_a_corrupt_queued_record_to_failed(
    conn: redis.Redis, queue: Queue, garbage: str
) -> None:
    corrupt = queue.enqueue(add, 2, job_id="corrupt")
    conn.hset(queue.keys.jobs, corrupt.id, garbage)
    _pop_ids(queue)
    assert queue.job_ids("failed") == ["corrupt"]
    info = corrupt.info()
    assert info.status == "failed"
    assert "corrupt job record" in (info.error or "")
    assert queue.counts().stats["failed"] == 1


@pytest.mark.parametrize("garbage", CORRUPT_RECORDS, ids=CORRUPT_IDS)
def test_pop_still_leases_the_good_jobs_around_a_corrupt_record(
    conn: redis.Redis, queue: Queue, garbage: str
) -> None:
    corrupt = queue.enqueue(add, 2, job_id="corrupt")
    queue.enqueue(add, 3, job_id="after")
    conn.hset(queue.keys.jobs, corrupt.id, garbage)
    assert _pop_ids(queue) == ["existing", "after"]


def test_pop_of_only_a_corrupt_record_asks_to_call_again(conn: redis.Redis) -> None:
    queue = Queue("work", connection=conn)
    queue.enqueue(add, 1, job_id="corrupt")
    conn.hset(queue.keys.jobs, "corrupt", "garbage")
    result = calls.pop(conn, queue.keys, 1, 10_000, "w")
    assert (result.leases, result.wait_ms) == ([], 0)


@pytest.mark.parametrize("garbage", CORRUPT_RECORDS, ids=CORRUPT_IDS)
def test_pop_moves_a_corrupt_delayed_record_to_failed(
    conn: redis.Redis, queue: Queue, garbage: str
) -> None:
    queue.enqueue(add, 2, job_id="corrupt", delay=0.05)
    conn.hset(queue.keys.jobs, "corrupt", garbage)
    time.sleep(0.08)
    assert _pop_ids(queue) == ["existing"]
    assert queue.job_ids("failed") == ["corrupt"]


@pytest.mark.parametrize("garbage", CORRUPT_RECORDS, ids=CORRUPT_IDS)
def test_pop_moves_a_corrupt_record_of_an_expired_lease_to_failed(
    conn: redis.Redis, queue: Queue, garbage: str
) -> None:
    (lease,) = calls.pop(conn, queue.keys, 1, 20, "w").leases
    conn.hset(queue.keys.jobs, lease.id, garbage)
    queue.enqueue(add, 3, job_id="after")
    time.sleep(0.04)
    assert _pop_ids(queue) == ["after"]
    assert queue.job_ids("failed") == [lease.id]


def test_pop_fails_a_job_whose_payload_is_missing(conn: redis.Redis, queue: Queue) -> None:
    job = queue.enqueue(add, 2, job_id="no-payload")
    conn.hdel(queue.keys.payloads, job.id)
    assert _pop_ids(queue) == ["existing"]
    info = job.info()
    assert (info.status, info.error) == ("failed", "job payload is missing")


def test_corrupt_record_of_an_active_job_refuses_complete(conn: redis.Redis, queue: Queue) -> None:
    (lease,) = calls.pop(conn, queue.keys, 1, 10_000, "w").leases
    conn.hset(queue.keys.jobs, lease.id, "garbage")
    with pytest.raises(LeaseLost):
        calls.complete(conn, queue.keys, lease.id, lease.token, "1")
    assert conn.hget(queue.keys.results, lease.id) is None


# -- the library ------------------------------------------------------------------------------


def test_missing_library_raises_library_error_naming_the_deploy_tool(conn: redis.Redis) -> None:
    conn.function_flush()
    with pytest.raises(LibraryError, match=r"tools/load_scripts\.py") as caught:
        Queue("work", connection=conn).enqueue(add, 1)
    assert "not loaded" in str(caught.value)
    assert conn.dbsize() == 0


def test_missing_library_is_reported_by_inspection_calls(conn: redis.Redis) -> None:
    conn.function_flush()
    with pytest.raises(LibraryError, match=r"tools/load_scripts\.py"):
        len(Queue("work", connection=conn))


def test_library_removed_after_the_check_raises_library_error(
    conn: redis.Redis, queue: Queue, before: Snapshot
) -> None:
    conn.function_flush()
    with pytest.raises(LibraryError, match=r"tools/load_scripts\.py"):
        queue.enqueue(add, 2)
    assert_nothing_written(conn, before)


def _load_outdated(conn: redis.Redis) -> None:
    version, code = library.library_code()
    conn.function_load(code.replace(version, "old"), replace=True)


def test_outdated_library_raises_library_error(conn: redis.Redis) -> None:
    _load_outdated(conn)
    with pytest.raises(LibraryError, match="is version old") as caught:
        Queue("work", connection=conn).enqueue(add, 1)
    assert library.code_version() in str(caught.value)
    assert "tools/load_scripts.py" in str(caught.value)
    assert conn.dbsize() == 0


def test_auto_load_loads_a_missing_library(conn: redis.Redis) -> None:
    conn.function_flush()
    job = Queue("work", connection=conn, auto_load=True).enqueue(add, 1)
    assert job.status == "queued"
    assert library.deployed_version(conn) == library.code_version()


def test_auto_load_replaces_an_outdated_library(conn: redis.Redis) -> None:
    _load_outdated(conn)
    job = Queue("work", connection=conn, auto_load=True).enqueue(add, 1)
    assert job.status == "queued"
    assert library.deployed_version(conn) == library.code_version()


def test_auto_load_from_the_environment(conn: redis.Redis, monkeypatch: Any) -> None:
    _load_outdated(conn)
    monkeypatch.setenv("PYSCHEDULER_AUTO_LOAD", "1")
    Queue("work", connection=conn).enqueue(add, 1)
    assert library.deployed_version(conn) == library.code_version()


def test_auto_load_false_wins_over_the_environment(conn: redis.Redis, monkeypatch: Any) -> None:
    _load_outdated(conn)
    monkeypatch.setenv("PYSCHEDULER_AUTO_LOAD", "1")
    with pytest.raises(LibraryError):
        Queue("work", connection=conn, auto_load=False).enqueue(add, 1)
    assert library.deployed_version(conn) == "old"


def test_queue_keys_of_an_invalid_name_are_never_built() -> None:
    with pytest.raises(InvalidQueueName):
        QueueKeys("bad name")


# -- the library refuses before it writes (issue 9, point 2) ----------------------------------


def _raw_call(conn: redis.Redis, function: str, keys: list[str], args: list[Any]) -> Any:
    """A library call as sent, so only the library's own checks stand between it and Redis."""
    try:
        return conn.fcall(function, len(keys), *keys, *args)
    except redis.ResponseError as exc:
        calls.raise_mapped(exc)


def _pop_call(queue: Queue, lease_ms: Any) -> list[Any]:
    keys = calls.pop_args(queue.keys, 1, 1000, "w")[: calls.POP_NUMKEYS]
    return [*keys, 1, lease_ms, "w", 0, calls.new_nonce()]


@pytest.mark.parametrize("lease_ms", ["nan", "inf", "-inf", "1e3", "1.5", "0", "86400001", ""])
def test_pop_with_a_bad_lease_is_refused_before_popping(
    conn: redis.Redis, queue: Queue, before: Snapshot, lease_ms: str
) -> None:
    call = _pop_call(queue, lease_ms)
    with pytest.raises(InvalidOption, match=r"lease_ms must be an integer in 1\.\.86400000"):
        _raw_call(conn, "psq_pop", call[: calls.POP_NUMKEYS], call[calls.POP_NUMKEYS :])
    assert_nothing_written(conn, before)


def test_complete_without_its_result_is_refused_and_the_job_stays_leased(
    conn: redis.Redis, queue: Queue, leased: calls.Lease
) -> None:
    before = snapshot(conn)
    call = calls.complete_args(queue.keys, leased.id, leased.token, "1")
    with pytest.raises(InvalidOption, match=r"pass 1\.\.\d+ id/token/result triples"):
        _raw_call(
            conn, "psq_complete_many", call[: calls.COMPLETE_NUMKEYS], [leased.id, leased.token]
        )
    assert_nothing_written(conn, before)


def test_complete_with_another_queues_keys_is_refused(
    conn: redis.Redis, queue: Queue, leased: calls.Lease
) -> None:
    before = snapshot(conn)
    other = calls.complete_args(QueueKeys("other"), leased.id, leased.token, "1")
    mixed = [queue.keys.jobs, *other[1 : calls.COMPLETE_NUMKEYS]]
    with pytest.raises(InvalidKeys, match=r"KEYS\[2\] must be psq:\{work\}:payloads"):
        _raw_call(conn, "psq_complete_many", mixed, [leased.id, leased.token, "1"])
    assert_nothing_written(conn, before)


def test_keys_out_of_order_are_refused(
    conn: redis.Redis, queue: Queue, leased: calls.Lease
) -> None:
    before = snapshot(conn)
    keys = calls.complete_args(queue.keys, leased.id, leased.token, "1")[: calls.COMPLETE_NUMKEYS]
    keys[1], keys[2] = keys[2], keys[1]
    with pytest.raises(InvalidKeys, match=r"KEYS\[2\] must be"):
        _raw_call(conn, "psq_complete_many", keys, [leased.id, leased.token, "1"])
    assert_nothing_written(conn, before)


def test_subtasks_key_of_another_job_is_refused(
    conn: redis.Redis, queue: Queue, leased: calls.Lease
) -> None:
    before = snapshot(conn)
    keys = calls.complete_args(queue.keys, "someone-else", leased.token, "1")
    with pytest.raises(InvalidKeys, match="subtasks:" + leased.id):
        _raw_call(
            conn,
            "psq_complete_many",
            keys[: calls.COMPLETE_NUMKEYS],
            [leased.id, leased.token, "1"],
        )
    assert_nothing_written(conn, before)


def test_a_key_of_an_invalid_queue_name_is_refused(conn: redis.Redis, before: Snapshot) -> None:
    with pytest.raises(InvalidKeys, match="not a key of a valid queue"):
        _raw_call(conn, "psq_renew", ["psq:{bad name}:jobs", "psq:{bad name}:active"], [1000])
    assert_nothing_written(conn, before)


@pytest.mark.parametrize(
    "split",
    [
        '{"total": 1, "groups": [["work", NaN]], "collect": false, "results_arg": true}',
        '{"total": NaN, "groups": [], "collect": false, "results_arg": true}',
        '{"total": 1.5, "groups": [], "collect": false, "results_arg": true}',
        '{"total": 2, "groups": [["work", 1]], "collect": false, "results_arg": true}',
        '{"total": 1, "groups": [["bad queue", 1]], "collect": false, "results_arg": true}',
        '{"total": 1, "groups": [["work", 1]], "collect": "yes", "results_arg": true}',
    ],
    ids=["nan-count", "nan-total", "fraction-total", "counts-differ", "bad-queue", "text-flag"],
)
def test_malformed_split_json_late_in_a_batch_writes_nothing(
    conn: redis.Redis, queue: Queue, before: Snapshot, split: str
) -> None:
    batch = [_new_job(id="first"), _new_job(id="second")]
    call = calls.enqueue_args(queue.keys, [*batch, _new_job(id="third")])
    call[-2] = split  # the last job's split field (its `extra` field follows)
    with pytest.raises(InvalidOption, match="split must be JSON"):
        _raw_call(conn, "psq_enqueue", call[: calls.ENQUEUE_NUMKEYS], call[calls.ENQUEUE_NUMKEYS :])
    assert_nothing_written(conn, before)


@pytest.mark.parametrize(
    "parent",
    [
        '{"queue": "work", "id": "p", "split": NaN, "index": 1}',
        '{"queue": "work", "id": "p", "split": 1, "index": 1.5}',
        '{"queue": "work", "id": "bad id", "split": 1, "index": 1}',
        '{"queue": "work", "id": "p", "split": 1, "index": 1, "extra": Infinity}',
    ],
    ids=["nan-split", "fraction-index", "bad-id", "extra-infinity"],
)
def test_malformed_parent_json_writes_nothing(
    conn: redis.Redis, queue: Queue, before: Snapshot, parent: str
) -> None:
    call = calls.enqueue_args(queue.keys, [_new_job(id="first"), _new_job(id="second")])
    call[-3] = parent  # the last job's parent field (split and extra follow)
    if "extra" in parent:  # the rebuilt parent keeps known fields only: accepted, encodable
        _raw_call(conn, "psq_enqueue", call[: calls.ENQUEUE_NUMKEYS], call[calls.ENQUEUE_NUMKEYS :])
        assert json.loads(conn.hget(queue.keys.jobs, "second"))["parent"] == {
            "queue": "work",
            "id": "p",
            "split": 1,
            "index": 1,
        }
        return
    with pytest.raises(InvalidOption, match="parent must be JSON"):
        _raw_call(conn, "psq_enqueue", call[: calls.ENQUEUE_NUMKEYS], call[calls.ENQUEUE_NUMKEYS :])
    assert_nothing_written(conn, before)


def test_pop_fails_a_job_with_a_malformed_id_instead_of_leasing_it(
    conn: redis.Redis, queue: Queue
) -> None:
    conn.zadd(queue.keys.ready, {"bad id\xff": 0})
    conn.hset(queue.keys.jobs, "bad id\xff", '{"status": "queued", "func": "a:b", "priority": 0}')
    conn.hset(queue.keys.payloads, "bad id\xff", "{}")
    ids = _pop_ids(queue)
    assert ids == ["existing"]
    assert conn.zscore(queue.keys.failed, "bad id\xff") is not None
    assert b"malformed job id" in conn.hget(queue.keys.errors, "bad id\xff")


@pytest.mark.parametrize(
    ("function", "args", "message"),
    [
        ("psq_renew", [1000, *["x", "1" * 32] * 1001], "at most 1000 id/token pairs"),
        ("psq_forget_notices", ["x"] * 1001, "1..1000 subtask ids"),
        ("psq_retry", [1, *["x"] * 1001], "at most 1000 ids"),
    ],
    ids=["renew", "forget_notices", "retry"],
)
def test_variadic_calls_over_their_batch_cap_are_refused(
    conn: redis.Redis, queue: Queue, before: Snapshot, function: str, args: list[Any], message: str
) -> None:
    with pytest.raises(InvalidOption, match=message):
        _raw_call(conn, function, keys_for(function, queue.keys), args)
    assert_nothing_written(conn, before)


# -- size limits live in Redis (issue 9, point 2) ---------------------------------------------


def test_size_limits_default_to_the_library_constants(conn: redis.Redis, queue: Queue) -> None:
    assert calls.size_limits(conn, queue.keys) == SIZE_LIMIT_DEFAULTS


def test_size_limits_read_the_queue_settings(conn: redis.Redis, queue: Queue) -> None:
    calls.configure(conn, queue.keys, {"max_result_bytes": "123", "max_error_bytes": "77"})
    limits = calls.size_limits(conn, queue.keys)
    assert (limits["max_result_bytes"], limits["max_error_bytes"]) == (123, 77)


@pytest.mark.parametrize("value", ["0", "-1", "1.5", "nan", "536870913", "1e3", "abc"])
def test_size_limit_settings_must_be_positive_integers_within_bounds(
    conn: redis.Redis, queue: Queue, before: Snapshot, value: str
) -> None:
    message = r"max_payload_bytes must be an integer in 1\.\.536870912"
    with pytest.raises(InvalidOption, match=message):
        calls.configure(conn, queue.keys, {"max_payload_bytes": value})
    assert_nothing_written(conn, before)


def test_payload_over_the_queues_limit_is_refused_by_the_library(
    conn: redis.Redis, queue: Queue
) -> None:
    calls.configure(conn, queue.keys, {"max_payload_bytes": "30"})
    before = snapshot(conn)
    job = _new_job(id="big", payload=json.dumps({"args": ["x" * 30], "kwargs": {}}))
    with pytest.raises(PayloadTooLarge, match="exceeds the limit of 30 bytes"):
        calls.enqueue(conn, queue.keys, [_new_job(id="small"), job])
    assert_nothing_written(conn, before)


def test_result_over_the_limit_fails_the_job_for_good_naming_size_and_limit(
    conn: redis.Redis, queue: Queue, leased: calls.Lease
) -> None:
    calls.configure(conn, queue.keys, {"max_result_bytes": "10"})
    with pytest.raises(PayloadTooLarge, match="result of 12 bytes exceeds the limit of 10 bytes"):
        calls.complete(conn, queue.keys, leased.id, leased.token, '"0123456789"')
    assert conn.zscore(queue.keys.active, leased.id) is None
    assert conn.zscore(queue.keys.failed, leased.id) is not None
    assert json.loads(conn.hget(queue.keys.jobs, leased.id))["status"] == "failed"
    assert b"12 bytes exceeds the limit of 10" in conn.hget(queue.keys.errors, leased.id)
    assert conn.hget(queue.keys.results, leased.id) is None


def test_result_over_the_limit_in_a_batch_fails_that_job_and_completes_the_others(
    conn: redis.Redis, queue: Queue
) -> None:
    queue.enqueue(add, 2, job_id="second")
    first, second = calls.pop(conn, queue.keys, 2, 10_000, "w").leases
    calls.configure(conn, queue.keys, {"max_result_bytes": "5"})
    outcomes = calls.complete_many(
        conn, queue.keys, [(first.id, first.token, "1"), (second.id, second.token, "1234567")]
    )
    assert isinstance(outcomes[0], int)
    assert isinstance(outcomes[1], PayloadTooLarge)
    assert json.loads(conn.hget(queue.keys.jobs, first.id))["status"] == "complete"
    assert json.loads(conn.hget(queue.keys.jobs, second.id))["status"] == "failed"
    assert conn.zcard(queue.keys.active) == 0


def test_checkpoint_over_the_limit_is_refused_and_nothing_saved(
    conn: redis.Redis, queue: Queue, leased: calls.Lease
) -> None:
    calls.configure(conn, queue.keys, {"max_checkpoint_bytes": "4"})
    before = snapshot(conn)
    with pytest.raises(PayloadTooLarge, match="checkpoint of 5 bytes exceeds the limit of 4"):
        calls.checkpoint(conn, queue.keys, leased.id, leased.token, "12345", 10_000, False)
    assert_nothing_written(conn, before)


def test_error_text_over_the_limit_is_cut_keeping_head_and_last_line(
    conn: redis.Redis, queue: Queue, leased: calls.Lease
) -> None:
    calls.configure(conn, queue.keys, {"max_error_bytes": "200"})
    text = "Traceback (most recent call last):\n" + "  frame é\n" * 500 + "ValueError: the end"
    status, _ = calls.fail(conn, queue.keys, leased.id, leased.token, FailKind.ERROR, text, 0.5)
    assert status == "failed"
    stored = conn.hget(queue.keys.errors, leased.id)
    assert len(stored) <= 200
    kept = stored.decode()  # cut at character boundaries: still valid UTF-8
    assert kept.startswith("Traceback (most recent call last):")
    assert kept.endswith("ValueError: the end")
    assert "bytes cut" in kept


@pytest.mark.parametrize(
    "result", ["", "{not json", "[1,", "nan-ish"], ids=["empty", "broken", "open", "text"]
)
def test_complete_with_a_result_that_is_not_json_is_refused(
    conn: redis.Redis, queue: Queue, leased: calls.Lease, result: str
) -> None:
    before = snapshot(conn)
    with pytest.raises(InvalidOption, match="result must be JSON"):
        calls.complete(conn, queue.keys, leased.id, leased.token, result)
    assert_nothing_written(conn, before)


def test_pop_hands_a_record_with_invalid_utf8_over_as_bytes(
    conn: redis.Redis, queue: Queue
) -> None:
    raw = b'{"status": "queued", "func": "app:run", "priority": 0, "note": "\xff\xfe"}'
    conn.hset(queue.keys.jobs, "existing", raw)
    (lease,) = calls.pop(conn, queue.keys, 1, 10_000, "w").leases
    assert isinstance(lease.record, bytes) and b"\xff\xfe" in lease.record
    assert isinstance(lease.payload, bytes)
    assert lease.id == "existing"


def test_fetch_of_a_record_with_invalid_utf8_does_not_raise(
    conn: redis.Redis, queue: Queue
) -> None:
    conn.hset(queue.keys.jobs, "existing", b'{"status": "queued", "x": "\xff"}')
    fetched = calls.fetch(conn, queue.keys, "existing")
    assert "\ufffd" in fetched.record
