"""Job events: what the library's calls write to each queue's `events` stream, read back.

Each call that moves jobs adds one stream entry per kind of event it caused (enqueued, started,
completed, failed, retried, paused, cancelled, expired), naming the jobs (up to EVENT_IDS_MAX per
entry); the stream is trimmed to about EVENTS_MAXLEN entries, so it stays bounded in memory.
Readers block inside Redis (XREAD BLOCK on the queue's one stream key, which lives in the
queue's slot on a Redis Cluster): `Job.wait` waits for its job's end this way, and
`pyscheduler events` tails the stream.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from ..store.calls import text_of
from ..store.connection import Client, is_cluster_client, pipeline
from ..store.keys import QueueKeys
from ..store.protocol import EVENTS_READ_MAX

# The events after which a job does not run again.
END_EVENTS = frozenset({"completed", "failed", "cancelled", "expired"})
# The longest one blocking read lasts. A reader that fell so far behind that the stream was
# trimmed past it could miss its event; it looks at the job again after at most this long.
BLOCK_SLICE_S = 5.0
# How often events of several queues on a Redis Cluster are polled (see `_read_each`).
CLUSTER_POLL_S = 0.1


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One job's event: `time_ms` is the server's clock when the call wrote it."""

    queue: str
    event: str
    job_id: str
    time_ms: int
    stream_id: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "event": self.event,
            "id": self.job_id,
            "time_ms": self.time_ms,
            "stream_id": self.stream_id,
        }


def last_event_id(connection: Client, keys: QueueKeys) -> str:
    """The id of the queue's latest event ("0-0" when there is none): read events after it."""
    return latest_id(connection.xrevrange(keys.events, count=1))


def latest_id(reply: Any) -> str:
    """`last_event_id` from the reply of its XREVRANGE (the events key, COUNT 1)."""
    return text_of(reply[0][0]) if reply else "0-0"


def _events(queue: str, stream_id: str, fields: dict[Any, Any]) -> Iterator[JobEvent]:
    values = {text_of(k): text_of(v) for k, v in fields.items()}
    kind = values.get("event", "")
    millis = int(stream_id.split("-", 1)[0])
    for job_id in values.get("ids", "").split():
        yield JobEvent(queue, kind, job_id, millis, stream_id)


def block_ms(connection: object, seconds: float) -> int:
    """`seconds` as the BLOCK of a read on `connection` (either client's kind), short enough
    for its socket timeout: a client with one would give up on a read that blocks longer."""
    kwargs = getattr(getattr(connection, "connection_pool", None), "connection_kwargs", {})
    socket_timeout = kwargs.get("socket_timeout")
    if socket_timeout:
        seconds = min(seconds, float(socket_timeout) * 0.8)
    return max(1, int(seconds * 1000))


def read(
    connection: Client,
    cursors: dict[str, str],
    block_s: float | None,
) -> list[JobEvent]:
    """The events after `cursors` (queue name -> stream id, advanced in place), waiting up to
    `block_s` seconds (None: not at all) for one. Several queues are one XREAD of several keys,
    but on a Redis Cluster (where one call names keys of one slot only) one XREAD each."""
    if is_cluster_client(connection) and len(cursors) > 1:
        return _read_each(connection, cursors, block_s)
    streams: dict[Any, Any] = {QueueKeys(name).events: after for name, after in cursors.items()}
    if block_s is None:
        reply: Any = connection.xread(streams, count=EVENTS_READ_MAX)
        return taken(reply, cursors)
    try:
        reply = connection.xread(
            streams, count=EVENTS_READ_MAX, block=block_ms(connection, block_s)
        )
    except redis.TimeoutError:
        # A server busy (or a machine loaded) past the socket timeout's margin answers a
        # blocking read late; nothing was read, so the caller's loop just looks again.
        return []
    return taken(reply, cursors)


def _read_each(
    connection: Client, cursors: dict[str, str], block_s: float | None
) -> list[JobEvent]:
    """`read` on a cluster: one XREAD per queue (pipelined: each goes to its queue's node),
    none blocking, polled every CLUSTER_POLL_S while no queue has news (a blocking read
    would wait on one node only)."""
    stop = time.monotonic() + (block_s or 0.0)
    while True:
        pipe = pipeline(connection)
        for name, after in cursors.items():
            pipe.xread({QueueKeys(name).events: after}, count=EVENTS_READ_MAX)
        out: list[JobEvent] = []
        for reply in pipe.execute():
            out += taken(reply, cursors)
        left = stop - time.monotonic()
        if out or block_s is None or left <= 0:
            return out
        time.sleep(min(CLUSTER_POLL_S, left))


def taken(reply: Any, cursors: dict[str, str]) -> list[JobEvent]:
    """The events of an XREAD reply, advancing `cursors`."""
    queue_of = {QueueKeys(name).events: name for name in cursors}
    out: list[JobEvent] = []
    for key, entries in reply or []:
        name = queue_of[text_of(key)]
        for stream_id, fields in entries:
            cursors[name] = text_of(stream_id)
            out.extend(_events(name, cursors[name], fields))
    return out


def wait_for_end(
    connection: Client, keys: QueueKeys, job_id: str, after: str, seconds: float
) -> str:
    """Block until an event ends `job_id` (or `seconds` pass); returns the stream id read up to,
    to pass as `after` next time."""
    cursors = {keys.queue: after}
    stop = time.monotonic() + seconds
    while True:
        left = stop - time.monotonic()
        if left <= 0:
            return cursors[keys.queue]
        events = read(connection, cursors, min(left, BLOCK_SLICE_S))
        if not events:
            return cursors[keys.queue]
        if any(e.job_id == job_id and e.event in END_EVENTS for e in events):
            return cursors[keys.queue]


def tail(connection: Client, queues: Sequence[str], from_start: bool = False) -> Iterator[JobEvent]:
    """The events of `queues` as they happen (with the ones still kept first, `from_start`)."""
    cursors = {
        name: "0-0" if from_start else last_event_id(connection, QueueKeys(name)) for name in queues
    }
    while True:
        yield from read(connection, cursors, BLOCK_SLICE_S)
