"""One typed wrapper per Lua function of the library.

Each wrapper passes exactly the keys its Lua file declares, in that order, and turns the
library's error replies into the exceptions of `pyscheduler.exceptions`.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import string
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import redis

from ..exceptions import LibraryError, PySchedulerError, error_from_reply
from .connection import Client
from .keys import QueueKeys
from .library import DEPLOY_HINT
from .operations import BY_NAME, keys_for
from .protocol import (
    CANCEL_BATCH_MAX,
    FORGET_BATCH_MAX,
    HISTOGRAM_BOUNDS_MS,
    JOB_ID_RE,
    QUEUE_NAME_RE,
    RENEW_BATCH_MAX,
    SIZE_LIMIT_DEFAULTS,
    SIZE_LIMIT_MAX,
    TOKEN_LENGTH,
    FailKind,
)

# redis-py prefixes the error of a pipelined command with "Command # N (...) of pipeline
# caused error: "; the library's reply follows it.
_PIPELINE_ERROR_MARK = " of pipeline caused error: "


def raise_mapped(exc: redis.ResponseError) -> NoReturn:
    message = str(exc).split(_PIPELINE_ERROR_MARK, 1)[-1]
    mapped = error_from_reply(message)
    if mapped is not None:
        raise mapped from None
    if "function not found" in message.lower():
        raise LibraryError(f"the pyscheduler Lua library is not loaded: {DEPLOY_HINT}") from None
    raise exc


def _fcall(conn: Client, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
    try:
        return conn.fcall(name, len(keys), *keys, *args)
    except redis.ResponseError as exc:
        raise_mapped(exc)


def _fcall_ro(conn: Client, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
    try:
        return conn.fcall_ro(name, len(keys), *keys, *args)
    except redis.ResponseError as exc:
        raise_mapped(exc)


def _text(value: bytes | str) -> str:
    # Another writer may have stored bytes that are not UTF-8: an inspection call shows them
    # replaced (U+FFFD) rather than failing. Leases keep the raw bytes (`Lease`).
    return value.decode(errors="replace") if isinstance(value, bytes) else value


@dataclass(frozen=True, slots=True)
class ParentRef:
    """Names the split a subtask belongs to: subtask `index` of split `split` of job `id`."""

    queue: str
    id: str
    split: int
    index: int

    def to_json(self) -> str:
        return json.dumps(
            {"queue": self.queue, "id": self.id, "split": self.split, "index": self.index}
        )


@dataclass(frozen=True, slots=True)
class SplitPlan:
    """A job enqueued to wait for `total` subtasks (a client-side group)."""

    total: int
    groups: list[tuple[str, int]]
    collect: bool
    results_arg: bool

    def to_json(self) -> str:
        return json.dumps(
            {
                "total": self.total,
                "groups": [list(g) for g in self.groups],
                "collect": self.collect,
                "results_arg": self.results_arg,
            }
        )


# Not frozen: a frozen dataclass's __init__ costs twice as much, once per job of a bulk enqueue.
@dataclass(slots=True)
class NewJob:
    """One job as `psq_enqueue` takes it (treat it as read-only; `dataclasses.replace` makes
    a changed copy)."""

    id: str
    func: str
    payload: str
    priority: int
    delay_ms: int
    at_ms: int | None
    timeout: float
    retries: int
    backoff: float
    result_ttl: float
    time_slice: float = 0.0
    parent: ParentRef | None = None
    split: SplitPlan | None = None
    # '' or the JSON object of the rarely used options (see lua/enqueue.lua: expires,
    # unique_for, unique_key, on_success, on_failure, retry_on, depends_on,
    # on_dependency_failure); a job without them sends one empty field.
    extra: str = ""
    # The jobs it depends on as (queue, id), registered with them after the enqueue.
    depends_on: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class EnqueueOutcome:
    id: str
    status: str
    created: bool


ENQUEUE_NUMKEYS = len(BY_NAME["psq_enqueue"].keys)
# The fixed head of each queue's psq_enqueue FCALL, made once per queue name.
_ENQUEUE_HEADS: dict[str, tuple[Any, ...]] = {}
_ENQUEUE_HEADS_MAX = 10_000


def enqueue_command(keys: QueueKeys, jobs: Sequence[NewJob]) -> list[Any]:
    """The whole `FCALL psq_enqueue ...` command of one call (for `execute_command`). The payload
    size limit is the queue's (`size_limits`), enforced by the library."""
    head = _ENQUEUE_HEADS.get(keys.queue)
    if head is None:
        if len(_ENQUEUE_HEADS) >= _ENQUEUE_HEADS_MAX:
            _ENQUEUE_HEADS.clear()
        head = ("FCALL", "psq_enqueue", ENQUEUE_NUMKEYS, *keys_for("psq_enqueue", keys))
        _ENQUEUE_HEADS[keys.queue] = head
    command = [*head, len(jobs)]
    for job in jobs:
        command += (
            job.id,
            job.func,
            job.payload,
            job.priority,
            job.delay_ms,
            "" if job.at_ms is None else job.at_ms,
            job.timeout,
            job.retries,
            job.backoff,
            job.result_ttl,
            job.time_slice,
            "" if job.parent is None else job.parent.to_json(),
            "" if job.split is None else job.split.to_json(),
            job.extra,
        )
    return command


_ENQUEUE_COUNT_AT = 3 + ENQUEUE_NUMKEYS  # where an enqueue command's job count is


def enqueue_size(command: Sequence[Any]) -> int:
    """How many jobs an `enqueue_command` holds."""
    return int(command[_ENQUEUE_COUNT_AT])


def join_enqueue_commands(commands: list[Sequence[Any]]) -> list[Any]:
    """One `psq_enqueue` command of the jobs of several of one queue (at most
    ENQUEUE_BATCH_MAX in all), in order."""
    joined = [*commands[0][:_ENQUEUE_COUNT_AT], sum(enqueue_size(c) for c in commands)]
    for command in commands:
        joined += command[_ENQUEUE_COUNT_AT + 1 :]
    return joined


def split_enqueue_reply(reply: Sequence[Any], commands: list[Sequence[Any]]) -> list[Any]:
    """The reply of a joined command cut into the replies of the commands joined."""
    parts, at = [], 0
    for command in commands:
        end = at + 3 * enqueue_size(command)
        parts.append(reply[at:end])
        at = end
    return parts


def enqueue_args(keys: QueueKeys, jobs: Sequence[NewJob]) -> list[Any]:
    """The keys and arguments of one `psq_enqueue` call, for a client or a pipeline."""
    return enqueue_command(keys, jobs)[3:]


def enqueued_ids(reply: Sequence[Any]) -> list[str]:
    """The ids of a `psq_enqueue` reply, in order (the jobs created and those that existed)."""
    return [_text(job_id) for job_id in reply[::3]]


def parse_enqueue_reply(reply: Sequence[Any]) -> list[EnqueueOutcome]:
    return [
        EnqueueOutcome(_text(reply[i]), _text(reply[i + 1]), bool(reply[i + 2]))
        for i in range(0, len(reply), 3)
    ]


def enqueue(conn: Client, keys: QueueKeys, jobs: Sequence[NewJob]) -> list[EnqueueOutcome]:
    call = enqueue_args(keys, jobs)
    reply = _fcall(conn, "psq_enqueue", call[:ENQUEUE_NUMKEYS], call[ENQUEUE_NUMKEYS:])
    return parse_enqueue_reply(reply)


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
    reply = _fcall(conn, "psq_pop", call[:POP_NUMKEYS], call[POP_NUMKEYS:])
    return parse_pop_reply(keys, reply)


def start_run(conn: Client, keys: QueueKeys, job_id: str, token: str) -> int:
    """Ask to start the handler of a job leased under the queue's rate limit: 0 when it may
    start now (its start is counted), else the milliseconds to wait before asking again.
    Raises LeaseLost when the token no longer holds the lease, JobNotFound."""
    wait = _fcall(conn, "psq_start_run", keys_for("psq_start_run", keys), [job_id, token])
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
        deadlines += (int(x) for x in _fcall(conn, "psq_renew", keys_for("psq_renew", keys), args))
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
    return int(_fcall(conn, "psq_release", release_keys(keys), args))


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


def _dependents(text: bytes | str) -> list[tuple[str, str]]:
    """The [[queue, id], ...] of a reply; entries another writer spoiled are left out (a
    record is untrusted input: it must not stop a worker)."""
    try:
        return dependent_refs(json.loads(_text(text)))
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
            done.dependents = _dependents(entry[1])
            outcomes.append(done)
            continue
        text = _text(entry)
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
    reply = _fcall(conn, "psq_complete_many", flat[:numkeys], flat[numkeys:])
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
    reply = _fcall(conn, "psq_fail", keys_for("psq_fail", keys), args)
    dependents = _dependents(reply[2]) if len(reply) > 2 else []
    return FailedRun(_text(reply[0]), int(reply[1]), dependents)


@dataclass(frozen=True, slots=True)
class Cancelled:
    """What `psq_cancel` did to one job."""

    was: str  # the status it had, 'missing', or 'ended:<status>' (then nothing changed)
    record: str | None


def cancel(
    conn: Client, keys: QueueKeys, job_ids: Sequence[str], cascade: bool = False
) -> list[Cancelled]:
    """Cancel jobs; with `cascade`, their parent is being cancelled and is not told. Each
    library call takes at most `CANCEL_BATCH_MAX` ids (each such batch is atomic)."""
    done: list[Cancelled] = []
    for start in range(0, len(job_ids), CANCEL_BATCH_MAX):
        batch = job_ids[start : start + CANCEL_BATCH_MAX]
        reply = _fcall(
            conn,
            "psq_cancel",
            keys_for("psq_cancel", keys, batch),
            ["1" if cascade else "0", *batch],
        )
        done += (
            Cancelled(_text(reply[i]), None if reply[i + 1] is None else _text(reply[i + 1]))
            for i in range(0, len(reply), 2)
        )
    return done


@dataclass(frozen=True, slots=True)
class FetchedJob:
    record: str
    payload: str | None
    result: str | None
    error: str | None
    checkpoint: str | None
    subtasks_done: int | None


def fetch(conn: Client, keys: QueueKeys, job_id: str) -> FetchedJob:
    """Read one job in full. Raises JobNotFound."""
    reply = _fcall_ro(
        conn,
        "psq_fetch",
        keys_for("psq_fetch", keys, [job_id]),
        [job_id],
    )
    record, payload, result, error, checkpoint, done = (
        None if x is None else _text(x) for x in reply
    )
    assert record is not None  # the library raises NOT_FOUND instead
    return FetchedJob(
        record, payload, result, error, checkpoint, None if done is None else int(done)
    )


@dataclass(frozen=True, slots=True)
class Counts:
    queued: int
    delayed: int
    active: int
    failed: int
    finished: int
    stats: dict[str, int]
    waiting: int = 0
    oldest_ready_age_ms: int | None = None
    settings: dict[str, str] | None = None


def counts(conn: Client, keys: QueueKeys) -> Counts:
    return parse_counts(_fcall_ro(conn, "psq_counts", keys_for("psq_counts", keys), []))


def pipe_counts(pipe: redis.client.Pipeline, keys: QueueKeys) -> None:
    """Queue one `psq_counts` call on a pipeline; `parse_counts` reads its reply."""
    names = keys_for("psq_counts", keys)
    pipe.fcall_ro("psq_counts", len(names), *names)


def parse_counts(reply: Any) -> Counts:
    queued, delayed, active, failed, finished, waiting, age = (int(x) for x in reply[:7])
    n_settings = int(reply[7])
    at = 8 + 2 * n_settings
    settings = {_text(reply[i]): _text(reply[i + 1]) for i in range(8, at, 2)}
    stats = {_text(reply[i]): int(reply[i + 1]) for i in range(at, len(reply), 2)}
    return Counts(
        queued,
        delayed,
        active,
        failed,
        finished,
        stats,
        waiting,
        None if age < 0 else age,
        settings,
    )


@dataclass(frozen=True, slots=True)
class MetricsReply:
    """What `psq_metrics` read: bucket counts (not cumulative, +Inf last) in the order of
    `protocol.HISTOGRAM_BOUNDS_MS`; throughput as (minute start ms, completed, failed), oldest
    first; the live workers of the queue (heartbeat not expired)."""

    server_ms: int
    live_workers: int
    wait_buckets: tuple[int, ...]
    wait_sum_ms: int
    wait_count: int
    run_buckets: tuple[int, ...]
    run_sum_ms: int
    run_count: int
    throughput: tuple[tuple[int, int, int], ...]
    stats: dict[str, int]


def pipe_metrics(pipe: redis.client.Pipeline, keys: QueueKeys, minutes: int) -> None:
    """Queue one `psq_metrics` call on a pipeline; `parse_metrics` reads its reply."""
    names = keys_for("psq_metrics", keys)
    pipe.fcall_ro("psq_metrics", len(names), *names, minutes)


def parse_metrics(reply: Any) -> MetricsReply:
    n = len(HISTOGRAM_BOUNDS_MS) + 1
    values = [int(x) for x in reply[: 2 + 2 * (n + 2) + 1]]
    wait, run = values[2 : 2 + n + 2], values[2 + n + 2 : 2 + 2 * (n + 2)]
    points = values[-1]
    at = len(values)
    throughput = tuple(
        (int(reply[i]), int(reply[i + 1]), int(reply[i + 2])) for i in range(at, at + 3 * points, 3)
    )
    at += 3 * points
    stats = {_text(reply[i]): int(reply[i + 1]) for i in range(at, len(reply), 2)}
    return MetricsReply(
        values[0],
        values[1],
        tuple(wait[:n]),
        wait[n],
        wait[n + 1],
        tuple(run[:n]),
        run[n],
        run[n + 1],
        throughput,
        stats,
    )


def metrics(conn: Client, keys: QueueKeys, minutes: int = 60) -> MetricsReply:
    """The queue's counters, wait and run time histograms, and the last `minutes` (1..
    THROUGHPUT_MINUTES) minutes of throughput, in one read-only call."""
    names = keys_for("psq_metrics", keys)
    return parse_metrics(_fcall_ro(conn, "psq_metrics", names, [minutes]))


def size_limits(conn: Client, keys: QueueKeys) -> dict[str, int]:
    """The size limits the library enforces on this queue, in bytes: max_payload_bytes,
    max_result_bytes, max_checkpoint_bytes and max_error_bytes, each the queue's setting
    (`configure`) or else the library's default (`protocol.SIZE_LIMIT_DEFAULTS`)."""
    fields = list(SIZE_LIMIT_DEFAULTS)
    values = conn.hmget(keys.config, fields)
    limits: dict[str, int] = {}
    for field, value in zip(fields, values, strict=True):
        # The library ignores a value it would not have stored; so does this.
        text = _text(value) if value is not None else ""
        number = int(text) if text.isdigit() else 0
        limits[field] = number if 1 <= number <= SIZE_LIMIT_MAX else SIZE_LIMIT_DEFAULTS[field]
    return limits


def configure(conn: Client, keys: QueueKeys, changes: dict[str, str]) -> dict[str, str]:
    """Change queue settings ('' removes one); returns the settings after the change."""
    args: list[Any] = []
    for field, value in changes.items():
        args += (field, value)
    reply = _fcall(conn, "psq_configure", keys_for("psq_configure", keys), args)
    return {_text(reply[i]): _text(reply[i + 1]) for i in range(0, len(reply), 2)}


def retry(
    conn: Client, keys: QueueKeys, job_ids: Sequence[str] = (), count: int = 1000
) -> list[str]:
    """Failed jobs back to the queue: the ids given, else the oldest `count`; returns moved ids."""
    reply = _fcall(
        conn,
        "psq_retry",
        keys_for("psq_retry", keys),
        [count, *job_ids],
    )
    return [_text(x) for x in reply]


def purge(
    conn: Client,
    keys: QueueKeys,
    status: str,
    job_ids: Sequence[str] = (),
    count: int = 1000,
    offset: int = 0,
) -> tuple[int, int]:
    """Delete ended jobs with `status`: the ids given, else a page of the state set from
    `offset`; returns (deleted, looked at)."""
    state = "failed" if status == "failed" else "finished"
    reply = _fcall(
        conn,
        "psq_purge",
        keys_for("psq_purge", keys, state=state),
        [status, count, offset, *job_ids],
    )
    return int(reply[0]), int(reply[1])


def list_jobs(
    conn: Client, keys: QueueKeys, state_set: str, offset: int, count: int
) -> list[tuple[str, str | None]]:
    """A page of a state set: `state_set` is that set's key (`keys.state_set(status)`)."""
    state = state_set.removeprefix(keys.prefix)
    reply = _fcall_ro(
        conn, "psq_list_jobs", keys_for("psq_list_jobs", keys, state=state), [offset, count]
    )
    return [
        (_text(reply[i]), None if reply[i + 1] is None else _text(reply[i + 1]))
        for i in range(0, len(reply), 2)
    ]


def checkpoint(
    conn: Client,
    keys: QueueKeys,
    job_id: str,
    token: str,
    saved: str,
    lease_ms: int,
    pause: bool,
    preemptible: bool = False,
) -> int:
    """Save a checkpoint and renew the lease; returns the new deadline, or 0 when paused
    (asked to, or, when `preemptible`, preempted by a job of higher priority)."""
    mode = "1" if pause else "p" if preemptible else "0"
    return int(
        _fcall(
            conn,
            "psq_checkpoint",
            keys_for("psq_checkpoint", keys),
            [job_id, token, saved, lease_ms, mode],
        )
    )


def split_keys(keys: QueueKeys, job_id: str) -> list[str]:
    """The keys `psq_split` takes, in its header's order."""
    return keys_for("psq_split", keys, [job_id])


def split(
    conn: Client,
    keys: QueueKeys,
    job_id: str,
    token: str,
    number: int,
    groups: Sequence[tuple[str, int]],
    collect: bool,
    saved: str | None,
) -> str:
    """Make a running job wait for its `number`-th split; returns its new status."""
    total = sum(count for _, count in groups)
    return _text(
        _fcall(
            conn,
            "psq_split",
            split_keys(keys, job_id),
            [
                job_id,
                token,
                number,
                total,
                json.dumps([list(g) for g in groups]),
                "1" if collect else "0",
                "" if saved is None else saved,
            ],
        )
    )


def subtask_done_args(parent: ParentRef, ok: bool, value: str) -> list[Any]:
    """The keys and arguments of one `psq_subtask_done` call, for a client or a pipeline."""
    keys = QueueKeys(parent.queue)
    return [
        *keys_for("psq_subtask_done", keys, [parent.id]),
        parent.id,
        parent.split,
        parent.index,
        "1" if ok else "0",
        value,
    ]


SUBTASK_DONE_NUMKEYS = len(BY_NAME["psq_subtask_done"].keys) + 1


def subtask_done(conn: Client, parent: ParentRef, ok: bool, value: str) -> str:
    """Record a subtask's end in its parent's queue; see lua/subtask_done.lua for replies."""
    call = subtask_done_args(parent, ok, value)
    return _text(
        _fcall(
            conn,
            "psq_subtask_done",
            call[:SUBTASK_DONE_NUMKEYS],
            call[SUBTASK_DONE_NUMKEYS:],
        )
    )


def subtask_outcomes(
    conn: Client, keys: QueueKeys, parent_id: str, number: int, first: int, count: int
) -> list[str | None]:
    """A page of outcomes (JSON text) of split `number`, from index `first`."""
    reply = _fcall_ro(
        conn,
        "psq_subtask_outcomes",
        keys_for("psq_subtask_outcomes", keys, [parent_id]),
        [parent_id, number, first, count],
    )
    return [None if x is None else _text(x) for x in reply]


@dataclass(frozen=True, slots=True)
class Notice:
    """A job's end that its parent's queue (a subtask) or its dependents' queues may not have
    recorded yet."""

    subtask_id: str
    parent: ParentRef | None
    ok: bool
    value: str
    status: str = ""
    dependents: tuple[tuple[str, str], ...] = ()


def stale_notices(conn: Client, keys: QueueKeys, count: int) -> list[Notice]:
    reply = _fcall_ro(
        conn,
        "psq_stale_notices",
        keys_for("psq_stale_notices", keys),
        [count],
    )
    notices = []
    for i in range(0, len(reply), 6):
        parent_json = _text(reply[i + 1])
        parent = ParentRef(**json.loads(parent_json)) if parent_json else None
        dependents = tuple(_dependents(reply[i + 5])) if _text(reply[i + 5]) else ()
        notices.append(
            Notice(
                _text(reply[i]),
                parent,
                _text(reply[i + 2]) == "1",
                _text(reply[i + 3]),
                _text(reply[i + 4]),
                dependents,
            )
        )
    return notices


ADD_DEPENDENT_NUMKEYS = len(BY_NAME["psq_add_dependent"].keys)


def add_dependent_args(keys: QueueKeys, job_id: str, queue: str, dependent: str) -> list[Any]:
    """The keys and arguments of one `psq_add_dependent` call, for a client or a pipeline."""
    return [*keys_for("psq_add_dependent", keys), job_id, queue, dependent]


def parse_add_dependent_reply(reply: Any) -> tuple[str, str]:
    return _text(reply[0]), _text(reply[1])


def add_dependent(
    conn: Client, keys: QueueKeys, job_id: str, queue: str, dependent: str
) -> tuple[str, str]:
    """Note in job `job_id` (of `keys`) that job `dependent` of `queue` waits for it; returns
    ('pending', '') when noted, else the job's end: ('complete', ''), ('failed' / 'cancelled'
    / 'expired', error text) or ('missing', '')."""
    call = add_dependent_args(keys, job_id, queue, dependent)
    reply = _fcall(
        conn, "psq_add_dependent", call[:ADD_DEPENDENT_NUMKEYS], call[ADD_DEPENDENT_NUMKEYS:]
    )
    return parse_add_dependent_reply(reply)


def dependency_done(
    conn: Client, keys: QueueKeys, job_id: str, queue: str, dep: str, ok: bool, status: str
) -> str:
    """Record in job `job_id`'s queue (`keys`) that its dependency `dep` of `queue` ended;
    see lua/dependency_done.lua for the replies."""
    return _text(
        _fcall(
            conn,
            "psq_dependency_done",
            keys_for("psq_dependency_done", keys),
            [job_id, queue, dep, "1" if ok else "0", status],
        )
    )


def forget_notices(conn: Client, keys: QueueKeys, subtask_ids: Sequence[str]) -> int:
    forgotten = 0
    for start in range(0, len(subtask_ids), FORGET_BATCH_MAX):
        batch = list(subtask_ids[start : start + FORGET_BATCH_MAX])
        forgotten += int(
            _fcall(conn, "psq_forget_notices", keys_for("psq_forget_notices", keys), batch)
        )
    return forgotten


# -- periodic jobs (lua/schedule.lua and friends) and progress ---------------------------------


@dataclass(frozen=True, slots=True)
class StoredSchedule:
    """A schedule as `psq_list_schedules` read it: its definition is the JSON text stored
    (untrusted: client/schedules.py checks it); `next_tick_ms` None when paused or unknown."""

    name: str
    definition: str
    next_tick_ms: int | None


def schedule(conn: Client, keys: QueueKeys, name: str, definition: str) -> tuple[bool, int | None]:
    """Define or replace schedule `name`; returns (created, next tick in ms or None)."""
    reply = _fcall(conn, "psq_schedule", keys_for("psq_schedule", keys), [name, definition])
    tick = int(reply[1])
    return bool(int(reply[0])), None if tick < 0 else tick


def unschedule(conn: Client, keys: QueueKeys, name: str) -> bool:
    """Remove schedule `name`; False when there was none."""
    return bool(_fcall(conn, "psq_unschedule", keys_for("psq_unschedule", keys), [name]))


def pause_schedule(conn: Client, keys: QueueKeys, name: str, paused: bool) -> int | None:
    """Pause or resume schedule `name`; returns its next tick (ms) or None. Raises JobNotFound
    (the error code NOT_FOUND) when there is no such schedule."""
    args = [name, "1" if paused else "0"]
    tick = int(_fcall(conn, "psq_pause_schedule", keys_for("psq_pause_schedule", keys), args))
    return None if tick < 0 else tick


def refill_schedule(
    conn: Client, keys: QueueKeys, name: str, cron: str, tz: str, ticks: Sequence[int]
) -> int:
    """Add tick times to cron schedule `name`; returns how many it lists now, -1 when it is
    gone or was redefined with other timing."""
    args = [name, cron, tz, json.dumps(list(ticks))]
    return int(_fcall(conn, "psq_refill_schedule", keys_for("psq_refill_schedule", keys), args))


def list_schedules(conn: Client, keys: QueueKeys) -> tuple[int, list[StoredSchedule]]:
    """The server's time (ms) and the queue's schedules, sorted by name."""
    reply = _fcall_ro(conn, "psq_list_schedules", keys_for("psq_list_schedules", keys), [])
    found = [
        StoredSchedule(
            _text(reply[i]),
            _text(reply[i + 1]),
            None if int(reply[i + 2]) < 0 else int(reply[i + 2]),
        )
        for i in range(1, len(reply), 3)
    ]
    return int(reply[0]), found


def set_progress(conn: Client, keys: QueueKeys, job_id: str, token: str, progress: str) -> None:
    """Store a running job's progress (JSON text). Raises LeaseLost, JobNotFound,
    PayloadTooLarge."""
    _fcall(conn, "psq_set_progress", keys_for("psq_set_progress", keys), [job_id, token, progress])
