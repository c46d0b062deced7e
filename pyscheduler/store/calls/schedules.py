"""Wrappers of periodic schedules (lua/schedule.lua and friends) and progress."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from ..connection import Client
from ..keys import QueueKeys
from ..operations import keys_for
from .fcall import fcall, fcall_ro, text_of


@dataclass(frozen=True, slots=True)
class StoredSchedule:
    """A schedule as `psq_list_schedules` read it: its definition is the JSON text stored
    (untrusted: client/schedules.py checks it); `next_tick_ms` None when paused or unknown."""

    name: str
    definition: str
    next_tick_ms: int | None


def schedule(conn: Client, keys: QueueKeys, name: str, definition: str) -> tuple[bool, int | None]:
    """Define or replace schedule `name`; returns (created, next tick in ms or None)."""
    reply = fcall(conn, "psq_schedule", keys_for("psq_schedule", keys), [name, definition])
    tick = int(reply[1])
    return bool(int(reply[0])), None if tick < 0 else tick


def unschedule(conn: Client, keys: QueueKeys, name: str) -> bool:
    """Remove schedule `name`; False when there was none."""
    return bool(fcall(conn, "psq_unschedule", keys_for("psq_unschedule", keys), [name]))


def pause_schedule(conn: Client, keys: QueueKeys, name: str, paused: bool) -> int | None:
    """Pause or resume schedule `name`; returns its next tick (ms) or None. Raises JobNotFound
    (the error code NOT_FOUND) when there is no such schedule."""
    args = [name, "1" if paused else "0"]
    tick = int(fcall(conn, "psq_pause_schedule", keys_for("psq_pause_schedule", keys), args))
    return None if tick < 0 else tick


def refill_schedule(
    conn: Client, keys: QueueKeys, name: str, cron: str, tz: str, ticks: Sequence[int]
) -> int:
    """Add tick times to cron schedule `name`; returns how many it lists now, -1 when it is
    gone or was redefined with other timing."""
    args = [name, cron, tz, json.dumps(list(ticks))]
    return int(fcall(conn, "psq_refill_schedule", keys_for("psq_refill_schedule", keys), args))


def list_schedules(conn: Client, keys: QueueKeys) -> tuple[int, list[StoredSchedule]]:
    """The server's time (ms) and the queue's schedules, sorted by name."""
    reply = fcall_ro(conn, "psq_list_schedules", keys_for("psq_list_schedules", keys), [])
    found = [
        StoredSchedule(
            text_of(reply[i]),
            text_of(reply[i + 1]),
            None if int(reply[i + 2]) < 0 else int(reply[i + 2]),
        )
        for i in range(1, len(reply), 3)
    ]
    return int(reply[0]), found


def set_progress(conn: Client, keys: QueueKeys, job_id: str, token: str, progress: str) -> None:
    """Store a running job's progress (JSON text). Raises LeaseLost, JobNotFound,
    PayloadTooLarge."""
    fcall(conn, "psq_set_progress", keys_for("psq_set_progress", keys), [job_id, token, progress])
