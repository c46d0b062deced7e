"""Fuzz the Lua library: call every function with generated good and bad calls.

    python tools/fuzz_library.py --calls 10000 [--url URL] [--seed N] [--engine redis|valkey]

Without --url it starts a private engine (pyscheduler.engine.Engine). Each call is a good call
of a random library function on a queue holding jobs in every state, often mutated: wrong
types, NaN/inf/fractions/huge numbers, missing or extra arguments, wrong key counts, another
queue's keys, keys out of order, unknown ids, stale tokens. After each call it checks that
the reply is a success or a `PSQ_*` error (never another error), that an error left Redis
byte for byte unchanged (DUMP of every key), that a read-only function changed nothing, and
that after a success the state invariants hold: every job in exactly one state set, its record
status matching that set, each active job with a finite lease deadline and a well-formed token.

The generators here are also what tests/test_library_fuzz.py runs (with Hypothesis choosing).
Prints: calls, successes, clear PSQ errors, raw errors, calls that wrote on error, invariant
violations; exits 1 when any of the last three is not 0.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyscheduler.store import calls, library
from pyscheduler.store.keys import QueueKeys
from pyscheduler.store.operations import BY_NAME, OPERATIONS, STATE_SETS, keys_for
from pyscheduler.store.protocol import LEASE_MS_MAX, RECORD_DEFAULTS, FailKind

QUEUE = "fz"
OTHER = "other"

# Values that are wrong for most arguments, or right for a few.
WEIRD = [
    "",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "Infinity",
    "1e3",
    "1.5",
    "-1",
    "0",
    "1",
    "-0",
    "0x10",
    " 1",
    "1 ",
    "+1",
    "99999999999999999999999",
    "1e400",
    "abc",
    "null",
    "true",
    "{}",
    "[]",
    "[[",
    '{"a": NaN}',
    "[1, Infinity]",
    '"text"',
    "\xff\xfe",
    "a\nb",
    "ready",
    "failed",
    "complete",
    "error",
    "refused",
    "bogus",
    "0" * 32,
    "A" * 32,
    "g" * 32,
    "x" * 300,
    "bad id",
    "x" * 20_000,
]


@dataclass
class State:
    """The jobs of the fuzzed queue, by status, and the tokens of its leases."""

    keys: QueueKeys = field(default_factory=lambda: QueueKeys(QUEUE))
    other: QueueKeys = field(default_factory=lambda: QueueKeys(OTHER))
    ids: dict[str, list[str]] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)  # active job id -> token
    stale: dict[str, str] = field(default_factory=dict)  # job id -> a token it no longer holds
    corrupt: set[str] = field(default_factory=set)  # ids whose record a hostile writer spoiled
    broken: bool = False  # a key was given the wrong type or content: invariants are moot
    started_ms: int = 0

    def all_ids(self) -> list[str]:
        return [i for ids in self.ids.values() for i in ids]


def _job(
    job_id: str, delay_ms: int = 0, parent: str = "", split: str = "", ttl: str = "60"
) -> list[Any]:
    payload = json.dumps({"args": [job_id], "kwargs": {}})
    return [job_id, "app:run", payload, 0, delay_ms, "", 10, 1, 0.5, ttl, 0, parent, split, ""]


def _fcall(conn: redis.Redis, name: str, keys: list[str], args: list[Any]) -> Any:
    return conn.fcall(name, len(keys), *keys, *args)


def _enqueue(conn: redis.Redis, keys: QueueKeys, jobs: list[list[Any]]) -> None:
    _fcall(
        conn,
        "psq_enqueue",
        keys_for("psq_enqueue", keys),
        [len(jobs), *(field for job in jobs for field in job)],
    )


def _pop(conn: redis.Redis, keys: QueueKeys, n: int, lease_ms: int = 60_000) -> list[Any]:
    call = calls.pop_args(keys, n, lease_ms, "setup")
    n_keys = calls.POP_NUMKEYS
    return calls.parse_pop_reply(keys, _fcall(conn, "psq_pop", call[:n_keys], call[n_keys:])).leases


def set_up(conn: redis.Redis) -> State:
    """An empty database, then a queue with jobs in every state (and one in another queue)."""
    conn.flushall()
    state = State()
    keys = state.keys
    now = int(conn.time()[0]) * 1000
    state.started_ms = now
    split_plan = json.dumps(
        {"total": 2, "groups": [[QUEUE, 2]], "collect": False, "results_arg": True}
    )
    _enqueue(
        conn,
        keys,
        [_job(f"j{i}") for i in range(8)]
        + [_job("d1", delay_ms=600_000), _job("p1", split=split_plan)],
    )
    _enqueue(conn, state.other, [_job("o1")])
    leases = _pop(conn, keys, 6)
    # j0: complete, j1: failed, j2: cancelled (active, then cancelled), j3..j5 active.
    done, failed, cancelled, *active = leases
    calls.complete(conn, keys, done.id, done.token, '"ok"')
    kept = calls.fail(conn, keys, failed.id, failed.token, FailKind.REFUSED, "boom", 0.5)
    assert kept[0] == "failed"
    calls.cancel(conn, keys, [cancelled.id])
    parent = json.dumps({"queue": QUEUE, "id": "p1", "split": 1, "index": 1})
    _enqueue(conn, keys, [_job("s1", parent=parent)])
    state.ids = {
        "queued": ["j6", "j7", "s1"],
        "delayed": ["d1"],
        "active": [lease.id for lease in active],
        "waiting": ["p1"],
        "failed": [failed.id],
        "complete": [done.id],
        "cancelled": [cancelled.id],
    }
    state.tokens = {lease.id: lease.token for lease in active}
    state.stale = {lease.id: lease.token for lease in (done, failed, cancelled)}
    return state


# -- good calls ---------------------------------------------------------------------------------


def _hex(rnd: random.Random, n: int = 32) -> str:
    return "".join(rnd.choice("0123456789abcdef") for _ in range(n))


def _some_id(rnd: random.Random, state: State) -> str:
    pool = [*state.all_ids(), "ghost", "o1"]
    return rnd.choice(pool)


def _active(rnd: random.Random, state: State) -> tuple[str, str]:
    """An id and a token: mostly a live lease, else a stale or made-up one."""
    roll = rnd.random()
    if state.tokens and roll < 0.7:
        job_id = rnd.choice(sorted(state.tokens))
        return job_id, state.tokens[job_id]
    if state.stale and roll < 0.85:
        job_id = rnd.choice(sorted(state.stale))
        return job_id, state.stale[job_id]
    return _some_id(rnd, state), _hex(rnd)


def _items(rnd: random.Random, name: str, args: list[Any]) -> list[str]:
    """The job ids a per-item function's subtasks keys follow, from its arguments."""
    texts = [str(a) for a in args]
    if name == "psq_complete_many":
        return texts[0::3]
    if name == "psq_cancel":
        return texts[1:]
    return texts[:1]


def good_call(rnd: random.Random, state: State, name: str) -> tuple[list[str], list[Any]]:
    """A well-formed call of `name` on the fuzzed queue: (keys, args)."""
    keys = state.keys
    args: list[Any]
    kind = rnd.choice(["ready", "delayed", "active", "waiting", "failed", "finished"])
    if name == "psq_enqueue":
        jobs = []
        for _ in range(rnd.randint(1, 3)):
            job_id = rnd.choice([f"n{rnd.randint(0, 99)}", _some_id(rnd, state)])
            parent = ""
            if rnd.random() < 0.2:
                parent = json.dumps(
                    {"queue": QUEUE, "id": "p1", "split": 1, "index": rnd.randint(1, 2)}
                )
            jobs.append(_job(job_id, delay_ms=rnd.choice([0, 0, 5000]), parent=parent))
        args = [len(jobs), *(field for job in jobs for field in job)]
    elif name == "psq_pop":
        lease = rnd.choice([1, 50, 60_000, LEASE_MS_MAX])
        args = [rnd.randint(0, 3), lease, "w", rnd.randint(0, 2), _hex(rnd)]
        if args[0] + args[3] == 0:
            args[0] = 1
    elif name == "psq_renew":
        args = [rnd.choice([1, 60_000])]
        for _ in range(rnd.randint(0, 3)):
            args += _active(rnd, state)
    elif name == "psq_release":
        args = []
        for _ in range(rnd.randint(0, 3)):
            args += _active(rnd, state)
    elif name == "psq_start_run":
        args = [*_active(rnd, state)]
    elif name == "psq_complete_many":
        args = []
        for _ in range(rnd.randint(1, 3)):
            args += [*_active(rnd, state), rnd.choice(['"r"', "1", "{}", "null", "[1, 2]"])]
    elif name == "psq_fail":
        kinds = [k.value for k in FailKind]
        args = [*_active(rnd, state), rnd.choice(kinds), "Error\nValueError: x", rnd.random()]
    elif name == "psq_cancel":
        args = [rnd.choice(["0", "1"])] + [_some_id(rnd, state) for _ in range(rnd.randint(1, 3))]
    elif name == "psq_fetch":
        args = [_some_id(rnd, state)]
    elif name == "psq_counts":
        args = []
    elif name == "psq_list_jobs":
        return keys_for(name, keys, state=kind), [rnd.randint(0, 5), rnd.randint(1, 20)]
    elif name == "psq_checkpoint":
        args = [*_active(rnd, state), '{"n": 1}', rnd.choice([1, 60_000]), rnd.choice("01")]
    elif name == "psq_split":
        job_id, token = _active(rnd, state)
        total = rnd.randint(1, 3)
        groups = json.dumps([[QUEUE, total]])
        args = [job_id, token, 1, total, groups, rnd.choice("01"), rnd.choice(["", '"cp"'])]
    elif name == "psq_subtask_done":
        ok = rnd.choice("01")
        args = [rnd.choice(["p1", _some_id(rnd, state)]), 1, rnd.randint(1, 2), ok, '"v"']
    elif name == "psq_subtask_outcomes":
        args = [rnd.choice(["p1", _some_id(rnd, state)]), 1, 1, rnd.randint(1, 5)]
    elif name == "psq_stale_notices":
        args = [rnd.randint(1, 10)]
    elif name == "psq_forget_notices":
        args = [_some_id(rnd, state) for _ in range(rnd.randint(1, 3))]
    elif name == "psq_configure":
        settings = [
            ("paused", rnd.choice(["", "1"])),
            ("concurrency", rnd.choice(["", "1", "5"])),
            ("aging", rnd.choice(["", "0.5"])),
            ("max_result_bytes", rnd.choice(["", "3", "100000"])),
            ("max_payload_bytes", rnd.choice(["", "20", "100000"])),
            ("max_checkpoint_bytes", rnd.choice(["", "5"])),
            ("max_error_bytes", rnd.choice(["", "10"])),
            ("max_lost_leases", rnd.choice(["", "1", "1000"])),
        ]
        args = []
        for setting, value in rnd.sample(settings, rnd.randint(0, 2)):
            args += (setting, value)
        if rnd.random() < 0.3:
            args += ["rate", "5", "period_ms", "1000"]
    elif name == "psq_retry":
        args = [rnd.randint(1, 5)] + [_some_id(rnd, state) for _ in range(rnd.randint(0, 2))]
    elif name == "psq_purge":
        status = rnd.choice(["failed", "complete", "cancelled"])
        state_set = "failed" if status == "failed" else "finished"
        ids = [_some_id(rnd, state) for _ in range(rnd.randint(0, 2))]
        return keys_for(name, keys, state=state_set), [status, rnd.randint(1, 5), 0, *ids]
    elif name == "psq_version":
        args = []
    elif name == "psq_heartbeat":
        if rnd.random() < 0.2:
            args = [rnd.choice(["w1", "w2"]), 0]
        else:
            running = []
            for job_id in rnd.sample(sorted(state.tokens), min(len(state.tokens), 2)):
                running += [job_id, QUEUE, rnd.randint(0, 5000)]
            args = [rnd.choice(["w1", "w2"]), rnd.choice([1, 15_000]), "host", 4242, 2, 1000]
            args += [rnd.randint(0, 9), 0, 2, QUEUE, OTHER, *running]
    elif name == "psq_list_workers":
        args = [rnd.choice(["0", "1", "2"]), rnd.randint(1, 10)]
    else:
        # A function with no generator of its own yet still gets arbitrary arguments: it must
        # answer them with a success or a clear error too.
        args = [_weird(rnd, state) for _ in range(rnd.randint(0, 4))]
    items = _items(rnd, name, args) if BY_NAME[name].per_item else []
    return keys_for(name, keys, items), args


# Records another writer may have left: the library must fail such a job or refuse the call,
# never raise a raw error or write half a change.
HOSTILE_RECORDS = [
    "{not json",
    "[]",
    '{"status": "queued", "func": "a:b", "priority": 0, "attempts": "x"}',
    '{"status": "active", "func": "a:b", "priority": 0, "attempts": 1e308, "backoff": 0}',
    '{"status": "active", "func": "a:b", "priority": 0, "token": 5}',
    '{"status": "waiting", "func": "a:b", "priority": 0, "split": 1}',
    '{"status": "queued", "func": "a:b", "priority": 5000}',
    '{"status": "queued", "func": "a:b", "priority": 0, "backoff": NaN}',
    '{"status": "complete", "func": "a:b", "priority": 0, "result_ttl": 1e308}',
    '{"status": "delayed", "func": "a:b", "priority": 0, "parent": {"queue": 1, "id": [1]}}',
    '{"status": "active", "func": "a:b", "priority": 0, "rank": "nan", "rank_base": 5}',
    '{"status": "active", "func": "a:b", "priority": 0, "started": "soon", "retries": -5}',
]


def spoil_a_record(conn: redis.Redis, rnd: random.Random, state: State) -> None:
    """Overwrite one job's record with one a hostile or buggy writer could leave."""
    job_id = rnd.choice(state.all_ids() or ["ghost"])
    raw = rnd.choice(HOSTILE_RECORDS)
    if rnd.random() < 0.5 and job_id in state.tokens:  # keep the token, so calls reach it
        raw = raw.replace('"func"', f'"token": "{state.tokens[job_id]}", "func"', 1)
    conn.hset(state.keys.jobs, job_id, raw)
    state.corrupt.add(job_id)


def spoil_a_key(conn: redis.Redis, rnd: random.Random, state: State) -> None:
    """Give one key of the queue the wrong type, or content Redis cannot count with."""
    keys = state.keys
    choice = rnd.randrange(5)
    if choice == 0:
        name = rnd.choice(["jobs", "ready", "active", "delayed", "config", "wake", "stats"])
        conn.delete(getattr(keys, name))
        conn.set(getattr(keys, name), "oops")
    elif choice == 1:
        conn.set(keys.seq, rnd.choice(["abc", "1.5", "-", "9" * 30]))
    elif choice == 2:
        conn.hset(keys.stats, rnd.choice(["failed", "enqueued", "completed"]), "abc")
    elif choice == 3:
        conn.hset(keys.subtasks("p1"), "1:done", "x")
    else:
        conn.delete(keys.seq)
        conn.rpush(keys.seq, "1")
    state.broken = True


# -- mutations ----------------------------------------------------------------------------------


def _weird(rnd: random.Random, state: State) -> Any:
    roll = rnd.random()
    if roll < 0.1:
        return rnd.choice(list(state.stale.values()) or ["0" * 32])
    if roll < 0.2:
        return _hex(rnd)
    if roll < 0.3:
        return rnd.choice([math.nan, math.inf, -math.inf, 0.5, -(2**63), 2**64, 1e300])
    return rnd.choice(WEIRD)


def mutate(
    rnd: random.Random, state: State, keys: list[str], args: list[Any]
) -> tuple[list[str], list[Any], str]:
    """One change making the call (usually) bad; returns it and what was done."""
    keys, args = list(keys), list(args)
    choice = rnd.randrange(10)
    if choice <= 3 and args:
        at = rnd.randrange(len(args))
        args[at] = _weird(rnd, state)
        return keys, args, f"argv[{at + 1}] weird"
    if choice == 4 and args:
        del args[rnd.randrange(len(args))]
        return keys, args, "argv dropped"
    if choice == 5:
        args.insert(rnd.randint(0, len(args)), _weird(rnd, state))
        return keys, args, "argv added"
    if choice == 6 and keys:
        del keys[rnd.randrange(len(keys))]
        return keys, args, "key dropped"
    if choice == 7:
        keys.insert(rnd.randint(0, len(keys)), rnd.choice([state.keys.jobs, "psq:{fz}:nope"]))
        return keys, args, "key added"
    if choice == 8 and len(keys) >= 2:
        a, b = rnd.sample(range(len(keys)), 2)
        keys[a], keys[b] = keys[b], keys[a]
        return keys, args, "keys swapped"
    if keys:
        at = rnd.randrange(len(keys))
        keys[at] = rnd.choice(
            [
                keys[at].replace("{fz}", "{other}"),
                "psq:{bad name}:jobs",
                "jobs",
                keys[at] + "x",
                state.keys.subtasks("ghost"),
            ]
        )
        return keys, args, "key replaced"
    return keys, [*args, "extra"], "argv added"


def random_call(
    rnd: random.Random, state: State, name: str | None = None
) -> tuple[str, list[str], list[Any], str]:
    """A call of `name` (default: a random function): good, or mutated once or twice."""
    name = name or rnd.choice(OPERATIONS).name
    keys, args = good_call(rnd, state, name)
    what = "good"
    if rnd.random() < 0.6:
        for _ in range(rnd.choice([1, 1, 2])):
            keys, args, what = mutate(rnd, state, keys, args)
    return name, keys, args, what


# -- checks -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """Every key's DUMP, and which keys have a time to live (they may vanish on their own)."""

    dumps: dict[bytes, bytes]
    volatile: frozenset[bytes]


def snapshot(conn: redis.Redis) -> Snapshot:
    names = conn.keys("*")
    pipe = conn.pipeline(transaction=False)
    for key in names:
        pipe.dump(key)
        pipe.pttl(key)
    replies = pipe.execute()
    dumps, volatile = {}, set()
    for i, key in enumerate(names):
        dump, ttl = replies[2 * i], replies[2 * i + 1]
        if dump is not None:  # None: it expired between KEYS and DUMP
            dumps[key] = dump
        # -2: it existed for DUMP and was gone for PTTL, expired by its TTL in between (a
        # heartbeat's key with a TTL of a few ms): as volatile as one with a TTL left.
        if ttl is not None and (ttl >= 0 or ttl == -2):
            volatile.add(key)
    return Snapshot(dumps, frozenset(volatile))


SCRATCH_KEY = "fuzz:scratch"


def _value(conn: redis.Redis, key: str | bytes) -> Any:
    kind = conn.type(key)
    if kind == b"hash":
        return conn.hgetall(key)
    if kind == b"zset":
        return conn.zrange(key, 0, -1, withscores=True)
    if kind == b"list":
        return conn.lrange(key, 0, -1)
    if kind == b"set":
        return conn.smembers(key)
    return conn.get(key)


def _same_value(conn: redis.Redis, key: bytes, old_dump: bytes) -> bool:
    """Whether `key` holds what `old_dump` held: a DUMP's bytes can differ for the same value
    (a hash table being rehashed step by step on reads serialises its fields in another order)."""
    conn.restore(SCRATCH_KEY, 0, old_dump, replace=True)
    try:
        return bool(_value(conn, SCRATCH_KEY) == _value(conn, key))
    finally:
        conn.delete(SCRATCH_KEY)


def changed_keys(conn: redis.Redis, before: Snapshot, after: Snapshot) -> list[bytes]:
    """Keys whose value differs, leaving out keys that expired by their own TTL meanwhile."""
    changed = []
    for key in before.dumps.keys() | after.dumps.keys():
        old, new = before.dumps.get(key), after.dumps.get(key)
        if old == new or (key in before.volatile and new is None):
            continue
        if old is not None and new is not None and _same_value(conn, key, old):
            continue
        changed.append(key)
    return sorted(changed)


SET_STATUS = {
    "ready": {"queued"},
    "delayed": {"delayed"},
    "active": {"active"},
    "waiting": {"waiting"},
    "failed": {"failed"},
    "finished": {"complete", "cancelled"},
}


def invariant_violations(conn: redis.Redis, state: State) -> list[str]:
    """What is wrong with the fuzzed queues' state (empty when all holds)."""
    problems: list[str] = []
    now = int(conn.time()[0]) * 1000
    for keys in (state.keys, state.other):
        members: dict[str, list[str]] = {}
        scores: dict[str, float] = {}
        for set_name in STATE_SETS:
            for member, score in conn.zrange(getattr(keys, set_name), 0, -1, withscores=True):
                job_id = member.decode()
                members.setdefault(job_id, []).append(set_name)
                if set_name == "active":
                    scores[job_id] = score
        records = {k.decode(): v for k, v in conn.hgetall(keys.jobs).items()}
        for job_id in records.keys() | members.keys():
            if keys is state.keys and job_id in state.corrupt:
                continue  # spoiled on purpose: only "no raw error, no half write" applies
            sets = members.get(job_id, [])
            if len(sets) != 1:
                problems.append(f"{keys.queue}/{job_id}: in {len(sets)} state sets {sets}")
                continue
            raw = records.get(job_id)
            if raw is None:
                problems.append(f"{keys.queue}/{job_id}: in {sets[0]} without a record")
                continue
            record = whole(json.loads(raw))
            if not isinstance(record, dict) or record.get("status") not in SET_STATUS[sets[0]]:
                problems.append(
                    f"{keys.queue}/{job_id}: status {record.get('status')} in {sets[0]}"
                )
            if sets[0] == "active":
                score = scores[job_id]
                token = record.get("token")
                if not math.isfinite(score) or score > now + LEASE_MS_MAX + 1000:
                    problems.append(f"{keys.queue}/{job_id}: lease deadline {score}")
                if score < state.started_ms - 1000:
                    problems.append(f"{keys.queue}/{job_id}: lease deadline {score} before start")
                if not (isinstance(token, str) and len(token) == 32):
                    problems.append(f"{keys.queue}/{job_id}: active without a token: {token!r}")
    return problems


def whole(record: Any) -> Any:
    """A record with the fields psq_enqueue leaves out at their default filled in, as the
    library reads it (a queued job's record has no status)."""
    return {**RECORD_DEFAULTS, **record} if isinstance(record, dict) else record


def refresh(conn: redis.Redis, state: State) -> None:
    """Bring the known ids and tokens up to date with the records (after any success)."""
    ids: dict[str, list[str]] = {}
    tokens: dict[str, str] = {}
    for job_id, raw in conn.hgetall(state.keys.jobs).items():
        try:
            record = whole(json.loads(raw))
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        ids.setdefault(str(record.get("status")), []).append(job_id.decode())
        if record.get("status") == "active" and isinstance(record.get("token"), str):
            tokens[job_id.decode()] = record["token"]
    for job_id, token in state.tokens.items():
        if tokens.get(job_id) != token:
            state.stale[job_id] = token
    state.ids, state.tokens = ids, tokens


@dataclass
class Tally:
    calls: int = 0
    successes: int = 0
    clear_errors: int = 0
    raw_errors: int = 0
    wrote_on_error: int = 0
    violations: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if len(self.examples) < 20:
            self.examples.append(text[:500])


def run_call(
    conn: redis.Redis, state: State, tally: Tally, name: str, keys: list[str], args: list[Any]
) -> None:
    """Make one call and check what it did; counts go to `tally`."""
    before = snapshot(conn)
    tally.calls += 1
    try:
        _fcall(conn, name, keys, args)
    except redis.ResponseError as exc:
        message = str(exc)
        if message.startswith("PSQ_"):
            tally.clear_errors += 1
            tally.codes[message.split(" ", 1)[0]] += 1
        else:
            tally.raw_errors += 1
            tally.note(f"raw error from {name} {args[:6]!r}: {message}")
        changed = changed_keys(conn, before, snapshot(conn))
        if changed:
            tally.wrote_on_error += 1
            tally.note(f"{name} wrote {changed[:5]} and failed: {message} (args {args[:6]!r})")
        return
    tally.successes += 1
    if state.broken:
        return  # only "success or a clear error, and no half write" is asked of such calls
    if BY_NAME[name].read_only and changed_keys(conn, before, snapshot(conn)):
        tally.violations += 1
        tally.note(f"read-only {name} changed Redis")
    problems = invariant_violations(conn, state)
    if problems:
        tally.violations += 1
        tally.note(f"after {name} {args[:6]!r}: {problems[:3]}")
    refresh(conn, state)


def fuzz(
    conn: redis.Redis, rnd: random.Random, count: int, per_setup: int = 25, hostile: float = 0.03
) -> Tally:
    """`count` calls, a fresh set-up every `per_setup`; before a call, with chance `hostile`,
    one record is spoiled as another writer could."""
    tally = Tally()
    state = set_up(conn)
    for n in range(count):
        if n and n % per_setup == 0:
            state = set_up(conn)
        if rnd.random() < hostile and not state.broken:
            spoil_a_record(conn, rnd, state)
        if rnd.random() < hostile / 3:
            spoil_a_key(conn, rnd, state)
        name, keys, args, _ = random_call(rnd, state)
        run_call(conn, state, tally, name, keys, args)
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--url", help="a Redis to fuzz (it is FLUSHALLed); default: a private one")
    parser.add_argument("--engine", choices=["redis", "valkey"], help="kind of private engine")
    parser.add_argument("--seed", type=int, default=None)
    options = parser.parse_args(argv)
    seed = options.seed if options.seed is not None else random.randrange(2**32)
    engine = None
    url = options.url
    if url is None:
        from pyscheduler.dev.engine import Engine

        engine = Engine(kind=options.engine).start()
        url = engine.url
    try:
        conn = redis.Redis.from_url(url)
        library.load(conn)
        info = conn.info("server")
        server = f"{info.get('server_name', 'redis')} {info.get('redis_version')}"
        if "valkey_version" in info:
            server = f"valkey {info['valkey_version']}"
        started = time.monotonic()
        tally = fuzz(conn, random.Random(seed), options.calls)
        elapsed = time.monotonic() - started
    finally:
        if engine is not None:
            engine.stop()
    print(f"server: {server}, seed {seed}, {elapsed:.1f} s")
    print(f"calls: {tally.calls}")
    print(f"successes: {tally.successes}")
    print(f"clear PSQ errors: {tally.clear_errors} ({dict(tally.codes.most_common())})")
    print(f"raw errors: {tally.raw_errors}")
    print(f"calls that wrote on error: {tally.wrote_on_error}")
    print(f"invariant violations after success: {tally.violations}")
    for example in tally.examples:
        print(f"  {example}")
    return 1 if tally.raw_errors or tally.wrote_on_error or tally.violations else 0


if __name__ == "__main__":
    sys.exit(main())
