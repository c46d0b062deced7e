"""Periodic jobs: `queue.schedule(name, func, *args, cron=... | every=...)` and its companions.

A schedule lives in Redis (the queue's `schedules` hash and `ticks` zset, see lua/_schedules.lua);
there is no scheduler process. Each worker's `psq_pop` turns the queue's due ticks into
ordinary jobs inside the same atomic call, so a tick runs once however many workers pop, and
the pop's `wait_ms` counts the next tick, so an idle worker wakes for it as for a delayed job.

An `every` schedule steps in Lua. A cron expression is evaluated here, with `croniter`, in its
time zone (`zoneinfo`), and the next SCHEDULE_TICKS_AHEAD tick times are stored with the
definition; when fewer than SCHEDULE_REFILL_AT remain, the run the library makes says so in
its record and the worker that leases it computes more (`refill_queue`). Daylight-saving
changes follow the zone, as cron does: a time skipped when clocks go forward runs at the first
time after it, and a fixed time that occurs twice when clocks go back runs once (an expression
whose hour field starts with `*` runs in both hours, since each is an hour of its own).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..exceptions import InvalidOption, JobNotFound, ScheduleNotFound
from ..store import calls
from ..store.keys import QueueKeys
from ..store.protocol import (
    QUEUE_NAME_RE,
    SCHEDULE_CATCH_UP_MAX,
    SCHEDULE_EVERY_MS_MIN,
    SCHEDULE_REFILL_AT,
    SCHEDULE_SPEC_MAX_BYTES,
    SCHEDULE_TICKS_AHEAD,
    SCHEDULE_TICKS_MAX,
)
from ..store.serialization import decode_payload

if TYPE_CHECKING:
    from .queue import Queue

# The job options a schedule's runs take (the others, such as job_id, delay or depends_on,
# make no sense for a run that recurs).
RUN_OPTIONS = frozenset({"priority", "timeout", "retries", "backoff", "result_ttl", "time_slice"})
# Options of `enqueue` a recurring run does not take: given to `schedule`, they are refused
# rather than passed to the handler as keyword arguments (where they would go unnoticed).
NOT_RUN_OPTIONS = frozenset(
    {
        "job_id",
        "delay",
        "at",
        "depends_on",
        "on_dependency_failure",
        "unique_for",
        "unique_key",
        "expires",
        "on_success",
        "on_failure",
        "retry_on",
    }
)
# Ticks are listed from this long before the client's clock, so a client whose clock runs
# ahead of the server's still lists the next tick (the library drops the ones already past).
CLOCK_MARGIN_MS = 60_000


def validate_name(name: object) -> str:
    if not isinstance(name, str) or not QUEUE_NAME_RE.match(name):
        raise InvalidOption(
            f"invalid schedule name {name!r}: use 1-100 characters from letters, digits, '_', '.',"
            " '-' starting with a letter or digit"
        )
    return name


def zone(tz: str | None) -> ZoneInfo:
    """The zone named `tz` (None: UTC); InvalidOption for an unknown one."""
    if tz is None:
        return ZoneInfo("UTC")
    if not isinstance(tz, str) or not tz or len(tz.encode()) > SCHEDULE_SPEC_MAX_BYTES:
        raise InvalidOption(f"tz must be the name of a time zone, such as 'Europe/Paris': {tz!r}")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidOption(f"unknown time zone {tz!r}") from None


def _croniter(expression: str, start: datetime) -> Any:
    from croniter import croniter  # imported when a cron schedule is used

    return croniter(expression, start)


def validate_cron(expression: object) -> str:
    from croniter import croniter

    if (
        not isinstance(expression, str)
        or not expression.strip()
        or len(expression.encode()) > SCHEDULE_SPEC_MAX_BYTES
        or any(ord(c) < 32 for c in expression)
        or not croniter.is_valid(expression)
    ):
        raise InvalidOption(
            f"invalid cron expression {expression!r}: five fields (minute hour day month"
            " weekday), or six with seconds last, e.g. '*/5 * * * *'"
        )
    return expression


def _runs_in_both_hours(expression: str) -> bool:
    """An expression whose hour field is a wildcard runs in each of two hours that share their
    clock time when clocks go back; one with fixed hours runs once."""
    fields = expression.split()
    return len(fields) < 2 or fields[1].startswith("*")


def _second_occurrence(moment: datetime) -> bool:
    """True for the later of two moments that show the same clock time (clocks went back)."""
    naive = moment.replace(tzinfo=None)
    earlier = naive.replace(tzinfo=moment.tzinfo, fold=0)
    return (
        earlier.utcoffset() != moment.utcoffset()
        and moment.utcoffset() == naive.replace(tzinfo=moment.tzinfo, fold=1).utcoffset()
    )


def _ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def cron_ticks(
    expression: str, tz: str | None, after_ms: int, count: int, catch_up_from_ms: int | None = None
) -> list[int]:
    """Tick times (ms) of `expression` in zone `tz`: `count` of them after `after_ms`, ascending.

    With `catch_up_from_ms`, the list starts instead with the ticks in (catch_up_from_ms,
    after_ms] (found backwards from `after_ms`, at most SCHEDULE_CATCH_UP_MAX), so a schedule
    whose list ran dry during an outage can still catch up."""
    where = zone(tz)
    both = _runs_in_both_hours(expression)
    start = datetime.fromtimestamp(after_ms / 1000, UTC).astimezone(where)
    past: list[int] = []
    if catch_up_from_ms is not None and catch_up_from_ms < after_ms:
        back = _croniter(expression, start + timedelta(milliseconds=1))
        for _ in range(SCHEDULE_CATCH_UP_MAX):
            moment = back.get_prev(datetime)
            tick = _ms(moment)
            if tick <= catch_up_from_ms:
                break
            if both or not _second_occurrence(moment):
                past.append(tick)
        past.reverse()
    ahead: list[int] = []
    forward = _croniter(expression, start)
    # A fixed time skipped as a second occurrence costs one step more; bounded all the same.
    for _ in range(2 * count + 2):
        if len(ahead) >= count:
            break
        moment = forward.get_next(datetime)
        if both or not _second_occurrence(moment):
            ahead.append(_ms(moment))
    return (past + [t for t in ahead if t > after_ms])[:SCHEDULE_TICKS_MAX]


def every_ms(every: float | timedelta) -> int:
    seconds = every.total_seconds() if isinstance(every, timedelta) else every
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
    ):
        raise InvalidOption(f"every must be a number of seconds or a timedelta, not {every!r}")
    ms = round(seconds * 1000)
    if ms < SCHEDULE_EVERY_MS_MIN:
        raise InvalidOption(
            f"every must be at least {SCHEDULE_EVERY_MS_MIN / 1000} s, not {seconds!r} s"
        )
    return ms


@dataclass(frozen=True, slots=True)
class Schedule:
    """A periodic job as stored in Redis (`queue.schedules()`)."""

    name: str
    func: str
    args: list[Any]
    kwargs: dict[str, Any]
    cron: str | None  # the cron expression, or None for an `every` schedule
    tz: str | None  # the cron expression's zone
    every: timedelta | None
    catch_up: bool
    paused: bool
    next_run: datetime | None  # UTC; None when paused (or a cron schedule waiting for ticks)
    last_run: datetime | None  # the tick of the latest run it made
    options: dict[str, Any] = field(default_factory=dict)  # priority, timeout, retries, ...
    error: str | None = None  # the definition in Redis is corrupt: what is wrong


def _utc(ms: object) -> datetime | None:
    if isinstance(ms, int | float) and not isinstance(ms, bool) and math.isfinite(ms) and ms >= 0:
        return datetime.fromtimestamp(ms / 1000, UTC)
    return None


def _parse(stored: calls.StoredSchedule) -> Schedule:
    """A stored definition read back; one that is not what psq_schedule writes is shown with
    its error rather than raised on (another writer may have put anything there)."""
    try:
        data = json.loads(stored.definition)
        if not isinstance(data, dict) or not isinstance(data.get("func"), str):
            raise ValueError("not a JSON object with func")
        payload = data.get("payload")
        args, kwargs = decode_payload(payload) if isinstance(payload, str) else ([], {})
        every = data.get("every_ms")
        return Schedule(
            name=stored.name,
            func=data["func"],
            args=list(args),
            kwargs=dict(kwargs),
            cron=data.get("cron") if every is None else None,
            tz=data.get("tz") if every is None else None,
            every=None if every is None else timedelta(milliseconds=float(every)),
            catch_up=data.get("catch_up") is True,
            paused=data.get("paused") is True,
            next_run=None if stored.next_tick_ms is None else _utc(stored.next_tick_ms),
            last_run=_utc(data.get("last")),
            options={k: data[k] for k in sorted(RUN_OPTIONS) if k in data},
        )
    except (ValueError, TypeError) as exc:
        return Schedule(
            stored.name, "", [], {}, None, None, None, False, False, None, None, error=str(exc)
        )


def define(
    queue: Queue,
    name: str,
    func: Callable[..., Any] | str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any] | None,
    *,
    cron: str | None,
    tz: str | None,
    every: float | timedelta | None,
    catch_up: bool,
    options: Mapping[str, Any],
) -> Schedule:
    validate_name(name)
    unknown = set(options) - RUN_OPTIONS
    if unknown:
        raise InvalidOption(
            f"a schedule's runs take only the options {', '.join(sorted(RUN_OPTIONS))}, not"
            f" {', '.join(sorted(unknown))}"
        )
    refused = set(kwargs or {}) & NOT_RUN_OPTIONS
    if refused:
        raise InvalidOption(
            f"a schedule's runs do not take {', '.join(sorted(refused))} (each run is a new job"
            " with an id of its own, made at its tick)"
        )
    if not isinstance(catch_up, bool):
        raise InvalidOption(f"catch_up must be True or False, not {catch_up!r}")
    if (cron is None) == (every is None):
        raise InvalidOption("give a schedule either cron= or every=, not both or neither")
    job = queue.prepare(func, args, kwargs, **options)
    definition: dict[str, Any] = {
        "func": job.func,
        "priority": job.priority,
        "timeout": job.timeout,
        "retries": job.retries,
        "backoff": job.backoff,
        "result_ttl": job.result_ttl,
        "time_slice": job.time_slice,
        "catch_up": catch_up,
    }
    if job.payload:
        definition["payload"] = job.payload
    if every is not None:
        if tz is not None:
            raise InvalidOption("tz goes with cron=; an every= schedule counts real time")
        definition["every_ms"] = every_ms(every)
    else:
        expression = validate_cron(cron)
        zone_name = tz or "UTC"
        zone(zone_name)
        now_ms = round(datetime.now(UTC).timestamp() * 1000)
        definition |= {
            "cron": expression,
            "tz": zone_name,
            "ticks": cron_ticks(
                expression, zone_name, now_ms - CLOCK_MARGIN_MS, SCHEDULE_TICKS_AHEAD
            ),
        }
    calls.schedule(queue.connection, queue.keys, name, json.dumps(definition))
    return get(queue, name)


def list_all(queue: Queue) -> list[Schedule]:
    _, stored = calls.list_schedules(queue.connection, queue.keys)
    return [_parse(s) for s in stored]


def get(queue: Queue, name: str) -> Schedule:
    for found in list_all(queue):
        if found.name == name:
            return found
    raise ScheduleNotFound(f"queue {queue.name} has no schedule {name!r}")


def set_paused(queue: Queue, name: str, paused: bool) -> Schedule:
    validate_name(name)
    try:
        calls.pause_schedule(queue.connection, queue.keys, name, paused)
    except JobNotFound:
        raise ScheduleNotFound(f"queue {queue.name} has no schedule {name!r}") from None
    if not paused:
        refill_queue(queue.connection, queue.keys)
    return get(queue, name)


def refill_queue(connection: Any, keys: QueueKeys) -> int:
    """Give every cron schedule of the queue whose list of ticks runs low the next ones;
    returns how many were refilled. Safe to run from any number of workers at once."""
    server_ms, stored = calls.list_schedules(connection, keys)
    refilled = 0
    for entry in stored:
        try:
            data = json.loads(entry.definition)
        except ValueError:
            continue
        if not isinstance(data, dict) or "cron" not in data or data.get("paused") is True:
            continue
        listed = data.get("ticks")
        listed = [t for t in listed if isinstance(t, int)] if isinstance(listed, list) else []
        if sum(1 for t in listed if t > server_ms) >= SCHEDULE_REFILL_AT:
            continue
        expression, tz, last = data.get("cron"), data.get("tz"), data.get("last")
        if not isinstance(expression, str) or not isinstance(tz, str):
            continue
        try:
            validate_cron(expression)
            if listed and listed[-1] > server_ms:
                ticks = cron_ticks(expression, tz, listed[-1], SCHEDULE_TICKS_AHEAD)
            else:
                # Ran dry, or every listed tick passed while no worker popped (an outage):
                # from now, with the ticks missed since the last one known for psq_pop to
                # catch up on (one run of them, or all with catch_up).
                known = [int(last)] if isinstance(last, int | float) else []
                since = max([*known, *listed[-1:]], default=server_ms)
                ticks = cron_ticks(expression, tz, server_ms, SCHEDULE_TICKS_AHEAD, since)
        except (InvalidOption, ValueError, OverflowError):
            continue
        if calls.refill_schedule(connection, keys, entry.name, expression, tz, ticks) >= 0:
            refilled += 1
    return refilled


REFILL_MARK = b'"refill":true'


def wants_refill(record: bytes) -> bool:
    """True when a leased run's record asks for more ticks (cheap: a bytes search)."""
    return REFILL_MARK in record
