"""Wrappers of the lease cycle: job ids, pop, start, renew, release, complete, fail."""

from __future__ import annotations

import itertools
import json
import os
import secrets
import string
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ...exceptions import LibraryError, PySchedulerError, error_from_reply
from ..connection import Client
from ..keys import QueueKeys
from ..operations import BY_NAME, keys_for
from ..protocol import (
    JOB_ID_RE,
    QUEUE_NAME_RE,
    RENEW_BATCH_MAX,
    TOKEN_LENGTH,
    FailKind,
)
from .fcall import fcall, text_of


@dataclass(frozen=True, slots=True)
class Lease:
    """A job leased to this worker by `psq_pop`.

    `id` is well formed (the library fails a job with a malformed id instead of leasing it);
    `record`, `payload` and `checkpoint` are the bytes Redis holds, undecoded: another producer
    may have written anything there, and decoding them is the worker's job (it fails a job
    whose bytes are not valid UTF-8 JSON with a reason)."""

    queue: str
    id: str
    token: str  # TOKEN_LENGTH lowercase hex characters, opaque
    deadline_ms: int
    record: bytes
    payload: bytes
    checkpoint: bytes | None = None


@dataclass(frozen=True, slots=True)
class PopResult:
    leases: list[Lease]
    wait_ms: int  # -1: nothing scheduled; else ms until the next due job or lease deadline


POP_NUMKEYS = len(BY_NAME["psq_pop"].keys)


# Job ids: 20 characters: 16 random ones (about 95 bits) drawn per process (again in a forked
# child, and after 16.7 million ids), then a counter in 4 characters. An id that clashes with a
# stored one makes its enqueue a no-op (the job would be lost), so the prefix is long enough
# that no two processes ever draw the same one (uuid4's odds; 12 bytes shorter per copy).
_ID_ALPHABET = string.ascii_letters + string.digits + "-_"
_ID_PAIRS = [a + b for a in _ID_ALPHABET for b in _ID_ALPHABET]
_ID_SPAN = len(_ID_PAIRS) ** 2
_id_lock = threading.Lock()


def _draw_ids() -> tuple[str, Iterator[int]]:
    first = secrets.choice(string.ascii_letters + string.digits)  # ids start with one
    return first + "".join(secrets.choice(_ID_ALPHABET) for _ in range(15)), itertools.count()


_id_state = _draw_ids()


def new_job_id() -> str:
    """A job id unique across processes (about 95 random bits per prefix), 20 characters."""
    global _id_state
    while True:
        state = _id_state
        n = next(state[1])
        if n < _ID_SPAN:
            return state[0] + _ID_PAIRS[n >> 12] + _ID_PAIRS[n & 4095]
        with _id_lock:
            if _id_state is state:
                _id_state = _draw_ids()


def _new_ids_in_child() -> None:
    global _id_state
    _id_state = _draw_ids()


os.register_at_fork(after_in_child=_new_ids_in_child)


def new_nonce() -> str:
    """128 random bits for one psq_pop call, from which the library derives its tokens."""
    return secrets.token_hex(TOKEN_LENGTH // 2)


def pop_args(
    keys: QueueKeys,
    max_jobs: int,
    lease_ms: int,
    worker: str,
    extra: int = 0,
    nonce: str | None = None,
) -> list[Any]:
    """The keys and arguments of one `psq_pop` call, for a client or a pipeline.

    `extra`: up to this many jobs more than `max_jobs` (prefetch), only leased when the queue
    has no concurrency or rate limit; hand back the ones never started with `release`.
    `nonce`: the call's random nonce (default: a fresh one from `new_nonce`).
    """
    return [
        *keys_for("psq_pop", keys),
        max_jobs,
        lease_ms,
        worker,
        extra,
        new_nonce() if nonce is None else nonce,
    ]


def _raw(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def parse_pop_reply(keys: QueueKeys, reply: Sequence[Any]) -> PopResult:
    leases = [
        Lease(
            keys.queue,
            # ascii: the library leases only ids and tokens of ASCII characters.
            _raw(reply[i]).decode("ascii"),
            _raw(reply[i + 1]).decode("ascii"),
            int(reply[i + 2]),
            _raw(reply[i + 3]),
            _raw(reply[i + 4]),
            None if reply[i + 5] is None else _raw(reply[i + 5]),
        )
        for i in range(2, len(reply), 6)
    ]
    return PopResult(leases, int(reply[0]))


def pop(
    conn: Client,
    keys: QueueKeys,
    max_jobs: int,
    lease_ms: int,
    worker: str,
    extra: int = 0,
    nonce: str | None = None,
) -> PopResult:
    call = pop_args(keys, max_jobs, lease_ms, worker, extra, nonce)
    reply = fcall(conn, "psq_pop", call[:POP_NUMKEYS], call[POP_NUMKEYS:])
    return parse_pop_reply(keys, reply)


def start_run(conn: Client, keys: QueueKeys, job_id: str, token: str) -> int:
    """Ask to start the handler of a job leased under the queue's rate limit: 0 when it may
    start now (its start is counted), else the milliseconds to wait before asking again.
    Raises LeaseLost when the token no longer holds the lease, JobNotFound."""
    wait = fcall(conn, "psq_start_run", keys_for("psq_start_run", keys), [job_id, token])
    return int(wait)


def renew(
    conn: Client, keys: QueueKeys, lease_ms: int, held: Sequence[tuple[str, str]]
) -> list[int]:
    """New deadlines, one per (id, token); 0 where the lease is lost. Sent in calls of at most
    `RENEW_BATCH_MAX` pairs."""
    deadlines: list[int] = []
    for start in range(0, len(held), RENEW_BATCH_MAX):
        args: list[Any] = [lease_ms]
        for job_id, token in held[start : start + RENEW_BATCH_MAX]:
            args += (job_id, token)
        deadlines += (int(x) for x in fcall(conn, "psq_renew", keys_for("psq_renew", keys), args))
    return deadlines


def release_keys(keys: QueueKeys) -> list[str]:
    """The keys `psq_release` takes, in its header's order."""
    return keys_for("psq_release", keys)


def release(conn: Client, keys: QueueKeys, held: Sequence[tuple[str, str]]) -> int:
    """Hand back leased jobs that were never started: each (id, token) whose token still holds
    the lease goes back to `ready` where it was, its attempt and rate-limit start undone; the
    others are skipped. Returns how many were released. At most `RELEASE_BATCH_MAX` pairs per
    call (more raises InvalidOption, nothing released)."""
    if not held:
        return 0
    args: list[Any] = []
    for job_id, token in held:
        args += (job_id, token)
    return int(fcall(conn, "psq_release", release_keys(keys), args))


COMPLETE_MANY_FIXED_KEYS = len(BY_NAME["psq_complete_many"].keys)
# The one function that completes jobs; a single job's call takes its fixed keys and the
# job's subtasks key.
COMPLETE_FUNCTION = "psq_complete_many"
COMPLETE_NUMKEYS = COMPLETE_MANY_FIXED_KEYS + 1


def complete_args(keys: QueueKeys, job_id: str, token: str, result: str) -> list[Any]:
    """The keys and arguments of a `psq_complete_many` call completing one job, for a client
    or a pipeline: `pipe.fcall(COMPLETE_FUNCTION, COMPLETE_NUMKEYS, *call)`; its reply is a
    list of one entry (`parse_complete_many_reply`)."""
    return [*keys_for("psq_complete_many", keys, [job_id]), job_id, token, result]


def complete(conn: Client, keys: QueueKeys, job_id: str, token: str, result: str) -> int:
    """Store the result; returns the run time in ms. Raises LeaseLost on a stale token,
    JobNotFound, and PayloadTooLarge when the result is over the queue's limit: the job has then
    failed for good (the library did that atomically, with a reason naming the size and the
    limit)."""
    (outcome,) = complete_many(conn, keys, [(job_id, token, result)])
    if isinstance(outcome, PySchedulerError):
        raise outcome
    return outcome


def complete_many_args(
    keys: QueueKeys, items: Sequence[tuple[str, str, str]]
) -> tuple[int, list[Any]]:
    """The number of keys and the keys and arguments of one `psq_complete_many` call, for a
    client or a pipeline: `pipe.fcall("psq_complete_many", numkeys, *flat)`."""
    flat: list[Any] = keys_for("psq_complete_many", keys, [job_id for job_id, _, _ in items])
    numkeys = len(flat)
    for job_id, token, result in items:
        flat += (job_id, token, result)
    return numkeys, flat


class Completed(int):
    """The run time in ms of a completed job that other jobs depend on, with those jobs
    (`dependents`: [(queue, id), ...]) to tell next (client/dependencies.py)."""

    dependents: list[tuple[str, str]]


def dependents_from(text: bytes | str) -> list[tuple[str, str]]:
    """The [[queue, id], ...] of a reply; entries another writer spoiled are left out (a
    record is untrusted input: it must not stop a worker)."""
    try:
        return dependent_refs(json.loads(text_of(text)))
    except ValueError:
        return []


def dependent_refs(listed: object) -> list[tuple[str, str]]:
    """The well-formed (queue, id) pairs of a record's decoded `dependents` (or `deps`)."""
    if not isinstance(listed, list):
        return []
    return [
        (ref[0], ref[1])
        for ref in listed
        if isinstance(ref, list)
        and len(ref) >= 2
        and isinstance(ref[0], str)
        and QUEUE_NAME_RE.match(ref[0])
        and isinstance(ref[1], str)
        and JOB_ID_RE.match(ref[1])
    ]


def parse_complete_many_reply(reply: Sequence[Any]) -> list[int | PySchedulerError]:
    """Per job, in order: its run time in ms (a `Completed` when it has dependents), or the
    exception `complete` would raise for it (LeaseLost for a stale token, JobNotFound;
    PayloadTooLarge: the result was over the queue's limit and the job failed for good)."""
    outcomes: list[int | PySchedulerError] = []
    for entry in reply:
        if isinstance(entry, int):
            outcomes.append(entry)
            continue
        if isinstance(entry, list) and len(entry) == 2:
            done = Completed(int(entry[0]))
            done.dependents = dependents_from(entry[1])
            outcomes.append(done)
            continue
        text = text_of(entry)
        mapped = error_from_reply(text)
        if mapped is None:
            raise LibraryError(f"unexpected entry in the reply of psq_complete_many: {text!r}")
        outcomes.append(mapped)
    return outcomes


def complete_many(
    conn: Client, keys: QueueKeys, items: Sequence[tuple[str, str, str]]
) -> list[int | PySchedulerError]:
    """Complete many leased jobs of one queue in one call: `items` are (id, token, result JSON).
    Returns, per item, the run time in ms, or the exception instance (not raised) when that job
    was skipped (LeaseLost, JobNotFound); the others are completed anyway. At most
    `COMPLETE_BATCH_MAX` items per call (more raises InvalidOption, nothing completed)."""
    if not items:
        return []
    numkeys, flat = complete_many_args(keys, items)
    reply = fcall(conn, "psq_complete_many", flat[:numkeys], flat[numkeys:])
    return parse_complete_many_reply(reply)


def fail(
    conn: Client,
    keys: QueueKeys,
    job_id: str,
    token: str,
    kind: FailKind,
    error: str,
    jitter: float,
) -> tuple[str, int]:
    """Record a failed run; returns (new status, retry delay ms). Raises LeaseLost."""
    failed = fail_run(conn, keys, job_id, token, kind, error, jitter)
    return failed.status, failed.delay_ms


@dataclass(frozen=True, slots=True)
class FailedRun:
    """What `psq_fail` did: the job's new status, its retry delay, and when it failed for good,
    the jobs depending on it (to tell next: client/dependencies.py)."""

    status: str
    delay_ms: int
    dependents: list[tuple[str, str]]


def fail_run(
    conn: Client,
    keys: QueueKeys,
    job_id: str,
    token: str,
    kind: FailKind,
    error: str,
    jitter: float,
    retry: bool = True,
) -> FailedRun:
    """Record a failed run (`retry=False`: fail it for good now, whatever its retries; the
    error is not one its `retry_on` lists). Raises LeaseLost."""
    args: list[Any] = [job_id, token, kind.value, error, jitter]
    if not retry:
        args.append("0")
    reply = fcall(conn, "psq_fail", keys_for("psq_fail", keys), args)
    dependents = dependents_from(reply[2]) if len(reply) > 2 else []
    return FailedRun(text_of(reply[0]), int(reply[1]), dependents)
