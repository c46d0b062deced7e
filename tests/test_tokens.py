"""Fencing tokens are not guessable, and are shown only when asked for."""

from __future__ import annotations

import re
from typing import Any

import redis

from pyscheduler import Queue
from pyscheduler.store import calls
from pyscheduler.store.protocol import RENEW_BATCH_MAX

TOKEN = re.compile(r"^[0-9a-f]{32}$")


def test_each_lease_gets_its_own_128_bit_random_token(conn: redis.Redis) -> None:
    queue = Queue("tok", connection=conn)
    queue.enqueue_many(queue.prepare("tasks:noop") for _ in range(200))
    leases = calls.pop(conn, queue.keys, 200, 10_000, "test").leases

    tokens = [lease.token for lease in leases]
    assert len(tokens) == 200
    assert all(TOKEN.match(token) for token in tokens), tokens[:3]
    assert len(set(tokens)) == 200
    # Nothing about one token tells another: no shared prefix beyond chance, no counter.
    assert len({token[:8] for token in tokens}) > 190


def test_counting_through_candidate_tokens_finds_no_live_lease(conn: redis.Redis) -> None:
    queue = Queue("tok", connection=conn)
    job = queue.enqueue("tasks:noop")
    (lease,) = calls.pop(conn, queue.keys, 1, 10_000, "test").leases
    candidates = [(job.id, f"{n:032x}") for n in range(2 * RENEW_BATCH_MAX)]

    for first in range(0, len(candidates), RENEW_BATCH_MAX):
        batch = candidates[first : first + RENEW_BATCH_MAX]
        assert calls.renew(conn, queue.keys, 10_000, batch) == [0] * len(batch)
    assert calls.renew(conn, queue.keys, 10_000, [(job.id, lease.token)])[0] > 0


def test_job_info_shows_the_token_only_when_asked(conn: redis.Redis) -> None:
    queue = Queue("tok", connection=conn)
    job = queue.enqueue("tasks:noop")
    (lease,) = calls.pop(conn, queue.keys, 1, 10_000, "test").leases

    shown: dict[str, Any] = job.info(show_token=True).record
    assert shown["token"] == lease.token
    assert "token" not in job.info().record
    assert lease.token not in repr(job.info())
