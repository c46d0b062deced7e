"""One typed wrapper per Lua function of the library.

Each wrapper passes exactly the keys its Lua file declares, in that order, and turns the
library's error replies into the exceptions of `pyscheduler.exceptions`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import redis

from .exceptions import LibraryError, PySchedulerError, error_from_reply
from .keys import QueueKeys
from .library import DEPLOY_HINT
from .protocol import FailKind

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


def _fcall(conn: redis.Redis, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
    try:
        return conn.fcall(name, len(keys), *keys, *args)
    except redis.ResponseError as exc:
        raise_mapped(exc)


def _fcall_ro(conn: redis.Redis, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
    try:
        return conn.fcall_ro(name, len(keys), *keys, *args)
    except redis.ResponseError as exc:
        raise_mapped(exc)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


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


@dataclass(frozen=True, slots=True)
class NewJob:
    """One job as `psq_enqueue` takes it."""

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


@dataclass(frozen=True, slots=True)
class EnqueueOutcome:
    id: str
    status: str
    created: bool


ENQUEUE_NUMKEYS = 9


def enqueue_args(keys: QueueKeys, jobs: Sequence[NewJob], max_payload: int) -> list[Any]:
    """The keys and arguments of one `psq_enqueue` call, for a client or a pipeline."""
    args: list[Any] = [
        keys.jobs,
        keys.payloads,
        keys.ready,
        keys.delayed,
        keys.seq,
        keys.stats,
        keys.wake,
        keys.waiting,
        keys.config,
        len(jobs),
        max_payload,
    ]
    for job in jobs:
        args += (
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
        )
    return args


def parse_enqueue_reply(reply: Sequence[Any]) -> list[EnqueueOutcome]:
    return [
        EnqueueOutcome(_text(reply[i]), _text(reply[i + 1]), bool(reply[i + 2]))
        for i in range(0, len(reply), 3)
    ]


def enqueue(
    conn: redis.Redis, keys: QueueKeys, jobs: Sequence[NewJob], max_payload: int
) -> list[EnqueueOutcome]:
    call = enqueue_args(keys, jobs, max_payload)
    reply = _fcall(conn, "psq_enqueue", call[:ENQUEUE_NUMKEYS], call[ENQUEUE_NUMKEYS:])
    return parse_enqueue_reply(reply)


@dataclass(frozen=True, slots=True)
class Lease:
    """A job leased to this worker by `psq_pop`."""

    queue: str
    id: str
    token: int
    deadline_ms: int
    record: str
    payload: str
    checkpoint: str | None = None


@dataclass(frozen=True, slots=True)
class PopResult:
    leases: list[Lease]
    wait_ms: int  # -1: nothing scheduled; else ms until the next due job or lease deadline


POP_NUMKEYS = 16


def pop_args(
    keys: QueueKeys, max_jobs: int, lease_ms: int, worker: str, extra: int = 0
) -> list[Any]:
    """The keys and arguments of one `psq_pop` call, for a client or a pipeline.

    `extra`: up to this many jobs more than `max_jobs` (prefetch), only leased when the queue
    has no concurrency or rate limit; hand back the ones never started with `release`.
    """
    return [
        keys.jobs,
        keys.payloads,
        keys.errors,
        keys.ready,
        keys.delayed,
        keys.active,
        keys.failed,
        keys.seq,
        keys.stats,
        keys.wake,
        keys.results,
        keys.finished,
        keys.checkpoints,
        keys.notices,
        keys.config,
        keys.starts,
        max_jobs,
        lease_ms,
        worker,
        extra,
    ]


def parse_pop_reply(keys: QueueKeys, reply: Sequence[Any]) -> PopResult:
    leases = [
        Lease(
            keys.queue,
            _text(reply[i]),
            int(reply[i + 1]),
            int(reply[i + 2]),
            _text(reply[i + 3]),
            _text(reply[i + 4]),
            None if reply[i + 5] is None else _text(reply[i + 5]),
        )
        for i in range(2, len(reply), 6)
    ]
    return PopResult(leases, int(reply[0]))


def pop(
    conn: redis.Redis,
    keys: QueueKeys,
    max_jobs: int,
    lease_ms: int,
    worker: str,
    extra: int = 0,
) -> PopResult:
    call = pop_args(keys, max_jobs, lease_ms, worker, extra)
    reply = _fcall(conn, "psq_pop", call[:POP_NUMKEYS], call[POP_NUMKEYS:])
    return parse_pop_reply(keys, reply)


def renew(
    conn: redis.Redis, keys: QueueKeys, lease_ms: int, held: Sequence[tuple[str, int]]
) -> list[int]:
    """New deadlines, one per (id, token); 0 where the lease is lost."""
    args: list[Any] = [lease_ms]
    for job_id, token in held:
        args += (job_id, token)
    return [int(x) for x in _fcall(conn, "psq_renew", [keys.jobs, keys.active], args)]


def release_keys(keys: QueueKeys) -> list[str]:
    """The keys `psq_release` takes, in its header's order."""
    return [keys.jobs, keys.ready, keys.active, keys.seq, keys.wake, keys.config, keys.starts]


def release(conn: redis.Redis, keys: QueueKeys, held: Sequence[tuple[str, int]]) -> int:
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


COMPLETE_NUMKEYS = 12


def _completion_keys(keys: QueueKeys) -> list[Any]:
    """The fixed keys of `psq_complete_many`, in its header's order; `psq_complete` takes the
    same with the job's subtasks key before `config`."""
    return [
        keys.jobs,
        keys.payloads,
        keys.results,
        keys.errors,
        keys.active,
        keys.finished,
        keys.stats,
        keys.checkpoints,
        keys.notices,
        keys.config,
        keys.wake,
    ]


def complete_args(keys: QueueKeys, job_id: str, token: int, result: str) -> list[Any]:
    """The keys and arguments of one `psq_complete` call, for a client or a pipeline."""
    fixed = _completion_keys(keys)
    return [*fixed[:9], keys.subtasks(job_id), *fixed[9:], job_id, token, result]


def complete(conn: redis.Redis, keys: QueueKeys, job_id: str, token: int, result: str) -> int:
    """Store the result; returns the run time in ms. Raises LeaseLost on a stale token."""
    call = complete_args(keys, job_id, token, result)
    return int(_fcall(conn, "psq_complete", call[:COMPLETE_NUMKEYS], call[COMPLETE_NUMKEYS:]))


COMPLETE_MANY_FIXED_KEYS = 11


def complete_many_args(
    keys: QueueKeys, items: Sequence[tuple[str, int, str]]
) -> tuple[int, list[Any]]:
    """The number of keys and the keys and arguments of one `psq_complete_many` call, for a
    client or a pipeline: `pipe.fcall("psq_complete_many", numkeys, *flat)`."""
    flat = _completion_keys(keys)
    flat += (keys.subtasks(job_id) for job_id, _, _ in items)
    numkeys = len(flat)
    for job_id, token, result in items:
        flat += (job_id, token, result)
    return numkeys, flat


def parse_complete_many_reply(reply: Sequence[Any]) -> list[int | PySchedulerError]:
    """Per job, in order: its run time in ms, or the exception psq_complete would have raised
    (LeaseLost for a stale token, JobNotFound)."""
    outcomes: list[int | PySchedulerError] = []
    for entry in reply:
        if isinstance(entry, int):
            outcomes.append(entry)
            continue
        text = _text(entry)
        mapped = error_from_reply(text)
        if mapped is None:
            raise LibraryError(f"unexpected entry in the reply of psq_complete_many: {text!r}")
        outcomes.append(mapped)
    return outcomes


def complete_many(
    conn: redis.Redis, keys: QueueKeys, items: Sequence[tuple[str, int, str]]
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
    conn: redis.Redis,
    keys: QueueKeys,
    job_id: str,
    token: int,
    kind: FailKind,
    error: str,
    jitter: float,
) -> tuple[str, int]:
    """Record a failed run; returns (new status, retry delay ms). Raises LeaseLost."""
    reply = _fcall(
        conn,
        "psq_fail",
        [
            keys.jobs,
            keys.errors,
            keys.ready,
            keys.delayed,
            keys.active,
            keys.failed,
            keys.seq,
            keys.stats,
            keys.wake,
            keys.notices,
            keys.config,
        ],
        [job_id, token, kind.value, error, jitter],
    )
    return _text(reply[0]), int(reply[1])


@dataclass(frozen=True, slots=True)
class Cancelled:
    """What `psq_cancel` did to one job."""

    was: str  # the status it had, 'missing', or 'ended:<status>' (then nothing changed)
    record: str | None


def cancel(
    conn: redis.Redis, keys: QueueKeys, job_ids: Sequence[str], cascade: bool = False
) -> list[Cancelled]:
    """Cancel jobs; with `cascade`, their parent is being cancelled and is not told."""
    fixed = [
        keys.jobs,
        keys.ready,
        keys.delayed,
        keys.active,
        keys.waiting,
        keys.finished,
        keys.stats,
        keys.notices,
    ]
    reply = _fcall(
        conn,
        "psq_cancel",
        [*fixed, *(keys.subtasks(i) for i in job_ids)],
        ["1" if cascade else "0", *job_ids],
    )
    return [
        Cancelled(_text(reply[i]), None if reply[i + 1] is None else _text(reply[i + 1]))
        for i in range(0, len(reply), 2)
    ]


@dataclass(frozen=True, slots=True)
class FetchedJob:
    record: str
    payload: str | None
    result: str | None
    error: str | None
    checkpoint: str | None
    subtasks_done: int | None


def fetch(conn: redis.Redis, keys: QueueKeys, job_id: str) -> FetchedJob:
    """Read one job in full. Raises JobNotFound."""
    reply = _fcall_ro(
        conn,
        "psq_fetch",
        [
            keys.jobs,
            keys.payloads,
            keys.results,
            keys.errors,
            keys.checkpoints,
            keys.subtasks(job_id),
        ],
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


def counts(conn: redis.Redis, keys: QueueKeys) -> Counts:
    reply = _fcall_ro(
        conn,
        "psq_counts",
        [
            keys.ready,
            keys.delayed,
            keys.active,
            keys.failed,
            keys.finished,
            keys.stats,
            keys.waiting,
            keys.config,
            keys.jobs,
        ],
        [],
    )
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


def configure(conn: redis.Redis, keys: QueueKeys, changes: dict[str, str]) -> dict[str, str]:
    """Change queue settings ('' removes one); returns the settings after the change."""
    args: list[Any] = []
    for field, value in changes.items():
        args += (field, value)
    reply = _fcall(conn, "psq_configure", [keys.config, keys.wake, keys.ready], args)
    return {_text(reply[i]): _text(reply[i + 1]) for i in range(0, len(reply), 2)}


def retry(
    conn: redis.Redis, keys: QueueKeys, job_ids: Sequence[str] = (), count: int = 1000
) -> list[str]:
    """Failed jobs back to the queue: the ids given, else the oldest `count`; returns moved ids."""
    reply = _fcall(
        conn,
        "psq_retry",
        [keys.jobs, keys.ready, keys.failed, keys.seq, keys.stats, keys.wake, keys.config],
        [count, *job_ids],
    )
    return [_text(x) for x in reply]


def purge(
    conn: redis.Redis,
    keys: QueueKeys,
    status: str,
    job_ids: Sequence[str] = (),
    count: int = 1000,
    offset: int = 0,
) -> tuple[int, int]:
    """Delete ended jobs with `status`: the ids given, else a page of the state set from
    `offset`; returns (deleted, looked at)."""
    state = keys.state_set(status)
    reply = _fcall(
        conn,
        "psq_purge",
        [keys.jobs, keys.payloads, keys.results, keys.errors, keys.checkpoints, state],
        [status, count, offset, *job_ids],
    )
    return int(reply[0]), int(reply[1])


def list_jobs(
    conn: redis.Redis, keys: QueueKeys, state_set: str, offset: int, count: int
) -> list[tuple[str, str | None]]:
    reply = _fcall_ro(conn, "psq_list_jobs", [state_set, keys.jobs], [offset, count])
    return [
        (_text(reply[i]), None if reply[i + 1] is None else _text(reply[i + 1]))
        for i in range(0, len(reply), 2)
    ]


def checkpoint(
    conn: redis.Redis,
    keys: QueueKeys,
    job_id: str,
    token: int,
    saved: str,
    lease_ms: int,
    pause: bool,
) -> int:
    """Save a checkpoint and renew the lease; returns the new deadline, or 0 when paused."""
    return int(
        _fcall(
            conn,
            "psq_checkpoint",
            [
                keys.jobs,
                keys.checkpoints,
                keys.ready,
                keys.active,
                keys.seq,
                keys.stats,
                keys.wake,
                keys.config,
            ],
            [job_id, token, saved, lease_ms, "1" if pause else "0"],
        )
    )


def split_keys(keys: QueueKeys, job_id: str) -> list[str]:
    """The keys `psq_split` takes, in its header's order."""
    return [
        keys.jobs,
        keys.checkpoints,
        keys.ready,
        keys.active,
        keys.waiting,
        keys.failed,
        keys.errors,
        keys.seq,
        keys.stats,
        keys.wake,
        keys.subtasks(job_id),
        keys.notices,
        keys.config,
    ]


def split(
    conn: redis.Redis,
    keys: QueueKeys,
    job_id: str,
    token: int,
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
        keys.jobs,
        keys.subtasks(parent.id),
        keys.ready,
        keys.waiting,
        keys.failed,
        keys.errors,
        keys.seq,
        keys.stats,
        keys.wake,
        keys.notices,
        keys.config,
        parent.id,
        parent.split,
        parent.index,
        "1" if ok else "0",
        value,
    ]


SUBTASK_DONE_NUMKEYS = 11


def subtask_done(conn: redis.Redis, parent: ParentRef, ok: bool, value: str) -> str:
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
    conn: redis.Redis, keys: QueueKeys, parent_id: str, number: int, first: int, count: int
) -> list[str | None]:
    """A page of outcomes (JSON text) of split `number`, from index `first`."""
    reply = _fcall_ro(
        conn, "psq_subtask_outcomes", [keys.subtasks(parent_id)], [number, first, count]
    )
    return [None if x is None else _text(x) for x in reply]


@dataclass(frozen=True, slots=True)
class Notice:
    """A subtask's end that its parent's queue may not have recorded yet."""

    subtask_id: str
    parent: ParentRef | None
    ok: bool
    value: str


def stale_notices(conn: redis.Redis, keys: QueueKeys, count: int) -> list[Notice]:
    reply = _fcall_ro(
        conn,
        "psq_stale_notices",
        [keys.notices, keys.jobs, keys.results, keys.errors],
        [count],
    )
    notices = []
    for i in range(0, len(reply), 5):
        parent_json = _text(reply[i + 1])
        parent = ParentRef(**json.loads(parent_json)) if parent_json else None
        notices.append(
            Notice(_text(reply[i]), parent, _text(reply[i + 2]) == "1", _text(reply[i + 3]))
        )
    return notices


def forget_notices(conn: redis.Redis, keys: QueueKeys, subtask_ids: Sequence[str]) -> int:
    return int(_fcall(conn, "psq_forget_notices", [keys.notices], list(subtask_ids)))
