"""Property-based fuzzing of the Lua library (issue 9, point 2): every function, called with
generated good and bad calls on a queue holding jobs in every state, answers with a success or
a clear `PSQ_*` error, never another error; an error leaves Redis unchanged (the DUMP of every
key); a read-only function changes nothing; and after a success the state invariants hold
(every job in exactly one state set, its record's status matching it, every active job with a
finite lease deadline and a token), also when records were spoiled by another writer. The
generators are tools/fuzz_library.py's, which runs
them longer (`--calls 10000`).
"""

from __future__ import annotations

import contextlib
import random
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyscheduler.store.operations import OPERATIONS

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import fuzz_library as fuzz

FUZZ_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)


def _check(tally: fuzz.Tally) -> None:
    assert tally.raw_errors == 0, tally.examples
    assert tally.wrote_on_error == 0, tally.examples
    assert tally.violations == 0, tally.examples


@pytest.mark.parametrize("name", [op.name for op in OPERATIONS])
@FUZZ_SETTINGS
@given(rnd=st.randoms(use_true_random=False), count=st.integers(1, 4))
def test_each_function_answers_generated_calls_with_success_or_a_clear_error(
    conn: redis.Redis, name: str, rnd: random.Random, count: int
) -> None:
    state = fuzz.set_up(conn)
    tally = fuzz.Tally()
    for _ in range(count):
        called, keys, args, _ = fuzz.random_call(rnd, state, name)
        fuzz.run_call(conn, state, tally, called, keys, args)
    assert tally.calls == count
    _check(tally)


@settings(FUZZ_SETTINGS, max_examples=60)
@given(rnd=st.randoms(use_true_random=False), count=st.integers(2, 10))
def test_sequences_of_mixed_calls_keep_the_state_invariants(
    conn: redis.Redis, rnd: random.Random, count: int
) -> None:
    state = fuzz.set_up(conn)
    tally = fuzz.Tally()
    for _ in range(count):
        name, keys, args, _ = fuzz.random_call(rnd, state)
        fuzz.run_call(conn, state, tally, name, keys, args)
    _check(tally)


@settings(FUZZ_SETTINGS, max_examples=60)
@given(rnd=st.randoms(use_true_random=False), count=st.integers(1, 6))
def test_calls_meeting_records_spoiled_by_another_writer_fail_cleanly(
    conn: redis.Redis, rnd: random.Random, count: int
) -> None:
    state = fuzz.set_up(conn)
    tally = fuzz.Tally()
    for _ in range(count):
        fuzz.spoil_a_record(conn, rnd, state)
        name, keys, args, _ = fuzz.random_call(rnd, state)
        fuzz.run_call(conn, state, tally, name, keys, args)
    _check(tally)


def test_the_checks_catch_a_write_before_an_error(conn: redis.Redis) -> None:
    """The fuzz checks themselves: a script that writes then fails is counted as such."""
    state = fuzz.set_up(conn)
    tally = fuzz.Tally()
    before = fuzz.snapshot(conn)
    with contextlib.suppress(redis.ResponseError):
        conn.eval(
            "redis.call('HSET', KEYS[1], 'x', '1'); return redis.error_reply('PSQ_X no')",
            1,
            state.keys.jobs,
        )
    assert fuzz.changed_keys(conn, before, fuzz.snapshot(conn)) == [state.keys.jobs.encode()]
    conn.hdel(state.keys.jobs, "x")
    assert fuzz.invariant_violations(conn, state) == []
    conn.zadd(state.keys.ready, {state.ids["active"][0]: 1})
    assert fuzz.invariant_violations(conn, state)
    assert tally.calls == 0


def test_set_up_holds_a_job_in_every_state(conn: redis.Redis) -> None:
    state = fuzz.set_up(conn)
    statuses: dict[str, Any] = state.ids
    assert all(statuses[s] for s in ("queued", "delayed", "active", "waiting", "failed"))
    assert statuses["complete"] and statuses["cancelled"]
    assert fuzz.invariant_violations(conn, state) == []


@settings(FUZZ_SETTINGS, max_examples=40)
@given(rnd=st.randoms(use_true_random=False), count=st.integers(1, 4))
def test_calls_meeting_keys_of_the_wrong_type_fail_cleanly(
    conn: redis.Redis, rnd: random.Random, count: int
) -> None:
    state = fuzz.set_up(conn)
    fuzz.spoil_a_key(conn, rnd, state)
    tally = fuzz.Tally()
    for _ in range(count):
        name, keys, args, _ = fuzz.random_call(rnd, state)
        fuzz.run_call(conn, state, tally, name, keys, args)
    _check(tally)
