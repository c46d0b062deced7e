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
    EXPIRED = "expired"  # not started before its `expires` time: never run


#: The states a job ends in for good, whose jobs `purge` deletes (failed ones can also be retried).
ENDED_STATES: Final = (Status.FAILED, Status.COMPLETE, Status.CANCELLED, Status.EXPIRED)


class ErrorCode(StrEnum):
    """Prefixes of the error replies the library raises; see `pyscheduler.exceptions`."""

    NOT_FOUND = "PSQ_NOT_FOUND"
    STALE_TOKEN = "PSQ_STALE_TOKEN"
    BAD_ARGUMENT = "PSQ_BAD_ARGUMENT"
    BAD_STATE = "PSQ_BAD_STATE"
    BAD_KEYS = "PSQ_BAD_KEYS"  # wrong number of keys, keys of two queues, or out of order
    TOO_LARGE = "PSQ_TOO_LARGE"  # a payload, result or checkpoint over the queue's limit


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
    "started",  # runs whose handler started (psq_pop; psq_start_run under a rate limit)
    "lost_leases",  # leases that expired and were reclaimed by psq_pop
    "expired",  # jobs not started before their `expires` time (psq_pop)
)

# Metrics the library keeps per queue (psq_metrics reads them): wait time (queued or due to
# start) and run time in fixed histogram buckets, upper bounds in ms (a last +Inf bucket
# follows); completed and failed jobs per minute in a ring of THROUGHPUT_MINUTES slots.
HISTOGRAM_BOUNDS_MS: Final = (
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    30_000,
    60_000,
    300_000,
    900_000,
    3_600_000,
)
THROUGHPUT_MINUTES: Final = 1440
# Job events, in each queue's `events` stream: one entry per kind of event per call, naming up
# to EVENT_IDS_MAX job ids (a call with more writes more entries); the stream is trimmed to
# about EVENTS_MAXLEN entries (XADD MAXLEN ~), so it stays bounded in memory.
EVENT_KINDS: Final = (
    "enqueued",
    "started",
    "completed",
    "failed",
    "retried",
    "paused",
    "cancelled",
    "expired",
)
EVENT_IDS_MAX: Final = 100
EVENTS_MAXLEN: Final = 1000
# Stream entries one XREAD of `Job.wait` or `pyscheduler events` takes.
EVENTS_READ_MAX: Final = 1000

PRIORITY_MIN: Final = -1000
PRIORITY_MAX: Final = 1000
# Ready-set score = (PRIORITY_MAX - priority) * SEQUENCE_SPAN + sequence: higher priority pops
# first, FIFO within a priority, and every score stays an exact integer in a double.
SEQUENCE_SPAN: Final = 2**42

# Bounded batches: no call loops over an unbounded set.
PROMOTE_BATCH: Final = 100
RECLAIM_BATCH: Final = 100
SWEEP_BATCH: Final = 100
# Subtask outcomes a worker re-sends per queue at start (the rest on later starts).
REDRIVE_BATCH: Final = 100
ENQUEUE_BATCH_MAX: Final = 1000
# Most (id, token) pairs one psq_release call takes (a worker hands back its prefetched jobs).
RELEASE_BATCH_MAX: Final = 1000
# Most (id, token, result) triples one psq_complete_many call takes (a worker's batch of results).
COMPLETE_BATCH_MAX: Final = 1000
# Most jobs one psq_pop call leases (max_jobs + extra).
POP_BATCH_MAX: Final = 10_000
# Most (id, token) pairs one psq_renew call takes.
RENEW_BATCH_MAX: Final = 1000
# Most ids one psq_cancel, psq_retry, psq_purge or psq_forget_notices call takes, and the most
# jobs psq_retry and psq_purge look at without ids.
CANCEL_BATCH_MAX: Final = 1000
RETRY_BATCH_MAX: Final = 1000
PURGE_BATCH_MAX: Final = 1000
FORGET_BATCH_MAX: Final = 1000
# Page sizes of the read-only listings (psq_list_jobs, psq_subtask_outcomes, psq_stale_notices).
LIST_PAGE_MAX: Final = 1000
OUTCOMES_PAGE_MAX: Final = 1000
NOTICES_PAGE_MAX: Final = 1000
# Most field/value pairs one psq_configure call takes.
CONFIGURE_PAIRS_MAX: Final = 32
# Most subtasks one split creates.
SPLIT_TOTAL_MAX: Final = 10_000_000
# A lease is 1 ms .. 1 day: an unbounded one would make a job unreclaimable.
LEASE_MS_MAX: Final = 86_400_000
# Bounds of a job's times: the library keeps them exact and finite.
DELAY_MS_MAX: Final = 10 * 366 * 86_400_000  # ten years
TIME_S_MAX: Final = 10 * 366 * 86_400  # timeout, backoff, result_ttl, time_slice: ten years
RETRIES_MAX: Final = 1_000_000
# A handler reference "module:qualname" and a worker's name, in bytes.
FUNC_MAX_BYTES: Final = 1024
WORKER_NAME_MAX_BYTES: Final = 256
# Live workers (psq_heartbeat, psq_list_workers): a worker's host name in bytes, the queues
# and the running jobs one heartbeat lists, its concurrency, the longest a heartbeat keeps it
# listed, and the records one psq_list_workers page looks at.
WORKER_HOST_MAX_BYTES: Final = 255
WORKER_QUEUES_MAX: Final = 1000
WORKER_JOBS_MAX: Final = 1000
WORKER_CONCURRENCY_MAX: Final = 10_000
WORKER_TTL_MS_MAX: Final = 86_400_000
WORKERS_PAGE_MAX: Final = 1000
# Offsets into a state set (psq_list_jobs, psq_purge).
OFFSET_MAX: Final = 2**40
# Wake-up tokens kept for idle workers; bounded so a burst of enqueues cannot grow the list.
WAKE_TOKENS_MAX: Final = 64
# A job whose lease expired more than this many times (its worker died each time) fails for
# good: a job that kills its worker must not kill every worker in turn. The default of the
# queue setting `max_lost_leases` (psq_configure: an integer 1..MAX_LOST_LEASES_LIMIT).
MAX_LOST_LEASES: Final = 3
MAX_LOST_LEASES_LIMIT: Final = 1000
MAX_BACKOFF_MS: Final = 3_600_000
# Rarely used enqueue options (the `extra` JSON field of psq_enqueue): the most jobs one job
# depends on (depends_on), the most dependents one job keeps in its record, the most exception
# names of a retry_on list, the longest exception name and dedup key (unique_key), in bytes.
DEPENDS_MAX: Final = 100
DEPENDENTS_MAX: Final = 1000
RETRY_ON_MAX: Final = 32
EXCEPTION_NAME_MAX_BYTES: Final = 256
UNIQUE_KEY_MAX_BYTES: Final = 256
# Periodic jobs (queue.schedule): the most schedules a queue holds (each has a name like a
# queue's); the most runs one psq_pop creates from due ticks; the most missed ticks a schedule
# with catch_up=True runs after an outage (the most recent ones); for cron schedules, the tick
# times computed ahead in Python (croniter) and stored with the definition, the count below
# which a run's record asks the worker for more, and the most a definition keeps; the shortest
# `every` interval; the longest cron expression and zone name, in bytes.
SCHEDULES_MAX: Final = 1000
SCHEDULE_FIRE_BATCH: Final = 100
SCHEDULE_CATCH_UP_MAX: Final = 100
SCHEDULE_TICKS_AHEAD: Final = 100
SCHEDULE_REFILL_AT: Final = 50
SCHEDULE_TICKS_MAX: Final = 200
SCHEDULE_EVERY_MS_MIN: Final = 10
SCHEDULE_SPEC_MAX_BYTES: Final = 256
# The largest progress value (current_job().set_progress), JSON text in bytes, and how deep it
# may nest; a running job writes it to Redis at most once per PROGRESS_INTERVAL_S.
PROGRESS_MAX_BYTES: Final = 4096
PROGRESS_DEPTH_MAX: Final = 6
PROGRESS_INTERVAL_S: Final = 0.25
# Subtask outcomes not yet delivered to their parent's queue after this long are re-driven.
NOTICE_REDRIVE_MS: Final = 10_000
# An absolute due time this far in the past is refused as "in the past" (clock skew allowance).
PAST_TOLERANCE_MS: Final = 1000

# A fencing token (and the nonce a worker sends with each pop): lowercase hex characters of
# sha1(nonce:sequence), 128 bits, so a token cannot be guessed from tokens seen before.
TOKEN_LENGTH: Final = 32

DEFAULT_TIMEOUT_S: Final = 180.0
DEFAULT_RESULT_TTL_S: Final = 500
DEFAULT_RETRIES: Final = 0
DEFAULT_BACKOFF_S: Final = 1.0
DEFAULT_MAX_PAYLOAD_BYTES: Final = 512 * 1024
# The job options a stored record leaves out when they have these values (the library fills
# them in when it reads the record): a queued job costs fewer bytes of Redis memory.
RECORD_DEFAULTS: Final = {
    "status": Status.QUEUED.value,
    "priority": 0,
    "timeout": DEFAULT_TIMEOUT_S,
    "retries": DEFAULT_RETRIES,
    "backoff": DEFAULT_BACKOFF_S,
    "result_ttl": DEFAULT_RESULT_TTL_S,
}

# Size limits, fields of the queue's `config` hash (set with psq_configure, i.e.
# Queue.configure); the library enforces them, with these defaults when a field is not set.
# A payload over its limit is refused at enqueue, a checkpoint when saved (PSQ_TOO_LARGE); a
# result over its limit fails its job for good; an error text over its limit is cut in the
# middle (head and tail kept, the last line matters).
SIZE_LIMIT_DEFAULTS: Final = {
    "max_payload_bytes": DEFAULT_MAX_PAYLOAD_BYTES,
    "max_result_bytes": 16 * 1024 * 1024,
    "max_checkpoint_bytes": 16 * 1024 * 1024,
    "max_error_bytes": 64 * 1024,
}
# Highest value a size limit may be set to (Redis's own limit on one string is 512 MiB).
SIZE_LIMIT_MAX: Final = 512 * 1024 * 1024

# Queue names and job ids: a letter or digit, then letters, digits and a few punctuation
# characters. The Lua library checks the same rule (the patterns below are rendered into it).
QUEUE_NAME_MAX: Final = 100
JOB_ID_MAX: Final = 256
_FIRST = "A-Za-z0-9"
_QUEUE_NAME_MORE = "_."  # and '-'
_JOB_ID_MORE = "_.:"  # and '-'
QUEUE_NAME_RE: Final = re.compile(
    rf"^[{_FIRST}][{_FIRST}{_QUEUE_NAME_MORE}-]{{0,{QUEUE_NAME_MAX - 1}}}\Z"
)
JOB_ID_RE: Final = re.compile(rf"^[{_FIRST}][{_FIRST}{_JOB_ID_MORE}-]{{0,{JOB_ID_MAX - 1}}}\Z")
# Lua patterns of the same rules, without the length bound (checked apart).
QUEUE_NAME_LUA: Final = f"^[{_FIRST}][{_FIRST}{_QUEUE_NAME_MORE}%-]*$"
JOB_ID_LUA: Final = f"^[{_FIRST}][{_FIRST}{_JOB_ID_MORE}%-]*$"


def template_context() -> dict[str, object]:
    """The names the Lua templates may use."""
    return {
        "S": {s.name: s.value for s in Status},
        "E": {e.name: e.value for e in ErrorCode},
        "K": {k.name: k.value for k in FailKind},
        "STAT_FIELDS": STAT_FIELDS,
        "HISTOGRAM_BOUNDS_MS": HISTOGRAM_BOUNDS_MS,
        "THROUGHPUT_MINUTES": THROUGHPUT_MINUTES,
        "EVENT_KINDS": EVENT_KINDS,
        "EVENT_IDS_MAX": EVENT_IDS_MAX,
        "EVENTS_MAXLEN": EVENTS_MAXLEN,
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
        "MAX_LOST_LEASES_LIMIT": MAX_LOST_LEASES_LIMIT,
        "MAX_BACKOFF_MS": MAX_BACKOFF_MS,
        "NOTICE_REDRIVE_MS": NOTICE_REDRIVE_MS,
        "SCHEDULES_MAX": SCHEDULES_MAX,
        "SCHEDULE_FIRE_BATCH": SCHEDULE_FIRE_BATCH,
        "SCHEDULE_CATCH_UP_MAX": SCHEDULE_CATCH_UP_MAX,
        "SCHEDULE_TICKS_AHEAD": SCHEDULE_TICKS_AHEAD,
        "SCHEDULE_REFILL_AT": SCHEDULE_REFILL_AT,
        "SCHEDULE_TICKS_MAX": SCHEDULE_TICKS_MAX,
        "SCHEDULE_EVERY_MS_MIN": SCHEDULE_EVERY_MS_MIN,
        "SCHEDULE_SPEC_MAX_BYTES": SCHEDULE_SPEC_MAX_BYTES,
        "PROGRESS_MAX_BYTES": PROGRESS_MAX_BYTES,
        "PROGRESS_DEPTH_MAX": PROGRESS_DEPTH_MAX,
        "DEPENDS_MAX": DEPENDS_MAX,
        "DEPENDENTS_MAX": DEPENDENTS_MAX,
        "RETRY_ON_MAX": RETRY_ON_MAX,
        "EXCEPTION_NAME_MAX_BYTES": EXCEPTION_NAME_MAX_BYTES,
        "UNIQUE_KEY_MAX_BYTES": UNIQUE_KEY_MAX_BYTES,
        "TOKEN_LENGTH": TOKEN_LENGTH,
        "KEY_PREFIX": KEY_PREFIX,
        "POP_BATCH_MAX": POP_BATCH_MAX,
        "RENEW_BATCH_MAX": RENEW_BATCH_MAX,
        "CANCEL_BATCH_MAX": CANCEL_BATCH_MAX,
        "RETRY_BATCH_MAX": RETRY_BATCH_MAX,
        "PURGE_BATCH_MAX": PURGE_BATCH_MAX,
        "FORGET_BATCH_MAX": FORGET_BATCH_MAX,
        "LIST_PAGE_MAX": LIST_PAGE_MAX,
        "OUTCOMES_PAGE_MAX": OUTCOMES_PAGE_MAX,
        "NOTICES_PAGE_MAX": NOTICES_PAGE_MAX,
        "CONFIGURE_PAIRS_MAX": CONFIGURE_PAIRS_MAX,
        "SPLIT_TOTAL_MAX": SPLIT_TOTAL_MAX,
        "LEASE_MS_MAX": LEASE_MS_MAX,
        "DELAY_MS_MAX": DELAY_MS_MAX,
        "TIME_S_MAX": TIME_S_MAX,
        "RETRIES_MAX": RETRIES_MAX,
        "FUNC_MAX_BYTES": FUNC_MAX_BYTES,
        "WORKER_NAME_MAX_BYTES": WORKER_NAME_MAX_BYTES,
        "WORKER_HOST_MAX_BYTES": WORKER_HOST_MAX_BYTES,
        "WORKER_QUEUES_MAX": WORKER_QUEUES_MAX,
        "WORKER_JOBS_MAX": WORKER_JOBS_MAX,
        "WORKER_CONCURRENCY_MAX": WORKER_CONCURRENCY_MAX,
        "WORKER_TTL_MS_MAX": WORKER_TTL_MS_MAX,
        "WORKERS_PAGE_MAX": WORKERS_PAGE_MAX,
        "OFFSET_MAX": OFFSET_MAX,
        "SIZE_LIMIT_DEFAULTS": SIZE_LIMIT_DEFAULTS,
        "RECORD_DEFAULTS": RECORD_DEFAULTS,
        "SIZE_LIMIT_MAX": SIZE_LIMIT_MAX,
        "QUEUE_NAME_MAX": QUEUE_NAME_MAX,
        "JOB_ID_MAX": JOB_ID_MAX,
        "QUEUE_NAME_LUA": QUEUE_NAME_LUA,
        "JOB_ID_LUA": JOB_ID_LUA,
    }
