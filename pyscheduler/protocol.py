"""Constants shared by the Python layer and the Lua library: the one source of truth.

The Lua sources are Jinja2 templates; `pyscheduler.library` renders them with the values
defined here, so a status name, an error code or a limit is spelled in exactly one place.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Final

LIBRARY_NAME: Final = "pyscheduler"
FUNCTION_PREFIX: Final = "psq_"
KEY_PREFIX: Final = "psq"


class Status(StrEnum):
    """Where a job is in its life. See docs/architecture.md for the state diagram."""

    QUEUED = "queued"
    DELAYED = "delayed"
    ACTIVE = "active"
    WAITING = "waiting"  # split into subtasks; resumes when the last one ends
    COMPLETE = "complete"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ErrorCode(StrEnum):
    """Prefixes of the error replies the library raises; see `pyscheduler.exceptions`."""

    NOT_FOUND = "PSQ_NOT_FOUND"
    STALE_TOKEN = "PSQ_STALE_TOKEN"
    BAD_ARGUMENT = "PSQ_BAD_ARGUMENT"
    BAD_STATE = "PSQ_BAD_STATE"


class FailKind(StrEnum):
    """Why a run failed; decides whether a retry is allowed."""

    ERROR = "error"  # the handler raised: retried while attempts remain
    TIMEOUT = "timeout"  # the hard limit stopped the run: retried while attempts remain
    REFUSED = "refused"  # the job can never run (unknown or refused handler, bad payload): no retry
    LOST = "lost"  # the lease expired (worker killed or stuck): retried while attempts remain


# Stats counters kept per queue by the library (HASH field names).
STAT_FIELDS: Final = (
    "enqueued",
    "completed",
    "failed",
    "retried",
    "reclaimed",
    "cancelled",
    "paused",
)

PRIORITY_MIN: Final = -1000
PRIORITY_MAX: Final = 1000
# Ready-set score = (PRIORITY_MAX - priority) * SEQUENCE_SPAN + sequence: higher priority pops
# first, FIFO within a priority, and every score stays an exact integer in a double.
SEQUENCE_SPAN: Final = 2**42

# Bounded batches: no call loops over an unbounded set.
PROMOTE_BATCH: Final = 100
RECLAIM_BATCH: Final = 100
SWEEP_BATCH: Final = 100
ENQUEUE_BATCH_MAX: Final = 1000
# Most (id, token) pairs one psq_release call takes (a worker hands back its prefetched jobs).
RELEASE_BATCH_MAX: Final = 1000
# Most (id, token, result) triples one psq_complete_many call takes (a worker's batch of results).
COMPLETE_BATCH_MAX: Final = 1000
# Wake-up tokens kept for idle workers; bounded so a burst of enqueues cannot grow the list.
WAKE_TOKENS_MAX: Final = 64
# A job whose lease expired this many times (its worker died each time) fails for good:
# a job that kills its worker must not kill every worker in turn.
MAX_LOST_LEASES: Final = 3
MAX_BACKOFF_MS: Final = 3_600_000
# Subtask outcomes not yet delivered to their parent's queue after this long are re-driven.
NOTICE_REDRIVE_MS: Final = 10_000
# An absolute due time this far in the past is refused as "in the past" (clock skew allowance).
PAST_TOLERANCE_MS: Final = 1000

DEFAULT_TIMEOUT_S: Final = 180.0
DEFAULT_RESULT_TTL_S: Final = 500
DEFAULT_RETRIES: Final = 0
DEFAULT_BACKOFF_S: Final = 1.0
DEFAULT_MAX_PAYLOAD_BYTES: Final = 512 * 1024

QUEUE_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
JOB_ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,255}$")


def template_context() -> dict[str, object]:
    """The names the Lua templates may use."""
    return {
        "S": {s.name: s.value for s in Status},
        "E": {e.name: e.value for e in ErrorCode},
        "K": {k.name: k.value for k in FailKind},
        "STAT_FIELDS": STAT_FIELDS,
        "PRIORITY_MIN": PRIORITY_MIN,
        "PRIORITY_MAX": PRIORITY_MAX,
        "SEQUENCE_SPAN": SEQUENCE_SPAN,
        "PROMOTE_BATCH": PROMOTE_BATCH,
        "RECLAIM_BATCH": RECLAIM_BATCH,
        "SWEEP_BATCH": SWEEP_BATCH,
        "ENQUEUE_BATCH_MAX": ENQUEUE_BATCH_MAX,
        "RELEASE_BATCH_MAX": RELEASE_BATCH_MAX,
        "COMPLETE_BATCH_MAX": COMPLETE_BATCH_MAX,
        "WAKE_TOKENS_MAX": WAKE_TOKENS_MAX,
        "PAST_TOLERANCE_MS": PAST_TOLERANCE_MS,
        "MAX_LOST_LEASES": MAX_LOST_LEASES,
        "MAX_BACKOFF_MS": MAX_BACKOFF_MS,
        "NOTICE_REDRIVE_MS": NOTICE_REDRIVE_MS,
    }
