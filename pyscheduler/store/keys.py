"""Every Redis key name pyscheduler uses, built in one place.

All keys of a queue share the hash tag ``{queue}`` so that, on a Redis Cluster, one queue
lives in one slot and every library call touches a single slot.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..exceptions import InvalidQueueName
from .protocol import KEY_PREFIX, QUEUE_NAME_RE

# A set of known queue names, for listing queues and finding a job by id alone.
QUEUES_KEY = f"{KEY_PREFIX}:queues"


def validate_queue_name(name: object) -> str:
    if not isinstance(name, str) or not QUEUE_NAME_RE.match(name):
        raise InvalidQueueName(
            f"invalid queue name {name!r}: use 1-100 characters from letters, digits, '_', '.', '-'"
            " starting with a letter or digit"
        )
    return name


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """The keys of one queue. The comments name each key's Redis type and content."""

    queue: str
    prefix: str = field(init=False)
    jobs: str = field(init=False)  # HASH job id -> job record (JSON)
    payloads: str = field(init=False)  # HASH job id -> call payload (JSON: args, kwargs)
    results: str = field(init=False)  # HASH job id -> result (JSON)
    errors: str = field(init=False)  # HASH job id -> error text with traceback
    ready: str = field(init=False)  # ZSET job id -> priority/FIFO score
    delayed: str = field(init=False)  # ZSET job id -> due time (ms, server clock)
    active: str = field(init=False)  # ZSET job id -> lease deadline (ms, server clock)
    waiting: str = field(init=False)  # ZSET job id -> time it split and began to wait (ms)
    failed: str = field(init=False)  # ZSET job id -> time it failed for good (ms)
    finished: str = field(init=False)  # ZSET job id -> time its record expires (ms)
    seq: str = field(init=False)  # STRING counter: FIFO sequence and fencing tokens
    stats: str = field(init=False)  # HASH counter name -> integer
    wake: str = field(init=False)  # LIST of wake-up tokens that idle workers block on
    checkpoints: str = field(init=False)  # HASH job id -> last saved checkpoint (JSON)
    notices: str = field(init=False)  # ZSET subtask id -> time it ended, until its parent knows
    config: str = field(init=False)  # HASH settings: pause, limits, aging, sizes, lost leases
    starts: str = field(init=False)  # ZSET token -> start time (ms), for the rate limit window
    workers: str = field(init=False)  # ZSET worker name -> heartbeat expiry (ms, server clock)
    worker_info: str = field(init=False)  # HASH worker name -> worker record (JSON)
    # HASH of the queue's histograms and throughput (psq_metrics): "wait:<le ms>", "run:<le ms>"
    # -> runs in that bucket (not cumulative, "inf" last), "wait:sum_ms", "wait:count",
    # "run:sum_ms", "run:count"; "minute:<minute mod THROUGHPUT_MINUTES>" ->
    # "<minute>:<completed>:<failed>" (the stamp tells a stale slot from this day's)
    metrics: str = field(init=False)
    # STREAM of job events: fields "event" (one of EVENT_KINDS) and "ids" (job ids, one space
    # between), trimmed to about EVENTS_MAXLEN entries
    events: str = field(init=False)
    # ZSET dedup key -> time its window closes (ms), and HASH dedup key -> the job id it
    # names (enqueue's unique_for / unique_key); swept in bounded batches by psq_enqueue
    unique: str = field(init=False)
    unique_ids: str = field(init=False)
    # HASH schedule name -> definition (JSON: the job to run, every_ms or cron/tz with the next
    # tick times, catch_up, paused, last tick run), and ZSET schedule name -> next tick (ms,
    # server clock) of each schedule that is not paused: psq_pop runs the due ticks
    schedules: str = field(init=False)
    ticks: str = field(init=False)

    def __post_init__(self) -> None:
        validate_queue_name(self.queue)
        prefix = f"{KEY_PREFIX}:{{{self.queue}}}:"
        object.__setattr__(self, "prefix", prefix)
        for name in (
            "jobs",
            "payloads",
            "results",
            "errors",
            "ready",
            "delayed",
            "active",
            "waiting",
            "failed",
            "finished",
            "seq",
            "stats",
            "wake",
            "checkpoints",
            "notices",
            "config",
            "starts",
            "workers",
            "worker_info",
            "metrics",
            "events",
            "unique",
            "unique_ids",
            "schedules",
            "ticks",
        ):
            object.__setattr__(self, name, prefix + name)

    def subtasks(self, parent_id: str) -> str:
        """HASH of one parent's subtask outcomes: "<split>:<index>" -> outcome, "<split>:done"."""
        return f"{self.prefix}subtasks:{parent_id}"

    def state_set(self, status: str) -> str:
        """The sorted set that lists jobs in `status` (complete and cancelled share `finished`)."""
        return {
            "queued": self.ready,
            "delayed": self.delayed,
            "active": self.active,
            "waiting": self.waiting,
            "failed": self.failed,
            "complete": self.finished,
            "cancelled": self.finished,
            "expired": self.finished,
        }[status]
