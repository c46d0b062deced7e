"""Jobs that wait for other jobs (`Queue.enqueue(..., depends_on=[...])`).

A dependent is enqueued waiting, its dependencies listed in its record (`deps`); then it is
registered with each dependency, in the dependency's own queue (`psq_add_dependent`: the
dependency's record lists its `dependents`). No library call takes keys of two queues, so
this works across queues and Cluster shards, the way subtasks do (splitting.py):

- the call that ends a dependency (complete, fail for good, cancel, expire) adds a notice in
  the dependency's queue, atomically with the end;
- the worker (or the client that cancelled) then tells each dependent, in the dependent's
  queue (`psq_dependency_done`, idempotent per dependency), and only then forgets the notice;
- a process that dies in between leaves the notice, and any worker re-drives it after
  NOTICE_REDRIVE_MS (`redrive_notices`).

A dependency that ended before the registration is reported by `psq_add_dependent`, and the
client records its outcome at once. A producer that dies between the enqueue and the
registration leaves the dependent waiting: enqueueing it again with the same `job_id`
registers it again (a no-op for what was registered).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import redis

from ..store import calls
from ..store.connection import Client, pipeline
from ..store.keys import QueueKeys
from ..store.protocol import Status


def register(
    connection: Client, queue: str, jobs: Sequence[tuple[str, Sequence[tuple[str, str]]]]
) -> None:
    """Register each waiting job (id, its dependencies) of `queue` with its dependencies, in
    one round trip; a dependency that has ended already is recorded for it now (which may
    release or cancel it)."""
    keys = QueueKeys(queue)
    asked = [(job_id, dep) for job_id, deps in jobs for dep in deps]
    if not asked:
        return
    pipe = pipeline(connection)
    for job_id, (dep_queue, dep_id) in asked:
        call = calls.add_dependent_args(QueueKeys(dep_queue), dep_id, queue, job_id)
        pipe.fcall("psq_add_dependent", calls.ADD_DEPENDENT_NUMKEYS, *call)
    replies = pipe.execute(raise_on_error=False)
    cancelled: set[str] = set()
    for (job_id, (dep_queue, dep_id)), reply in zip(asked, replies, strict=True):
        if isinstance(reply, redis.ResponseError):
            calls.raise_mapped(reply)
        state, _ = calls.parse_add_dependent_reply(reply)
        if state == "pending" or job_id in cancelled:
            continue
        done = calls.dependency_done(
            connection, keys, job_id, dep_queue, dep_id, state == Status.COMPLETE, state
        )
        if done == "cancelled":
            cancelled.add(job_id)
            deliver_end(connection, keys, job_id)


def tell_dependents(
    connection: Client,
    keys: QueueKeys,
    job_id: str,
    dependents: Iterable[Sequence[str]],
    ok: bool,
    status: str,
) -> None:
    """Record the end of job `job_id` of `keys` in each dependent's queue; a dependent this
    cancels tells its own parent and dependents in turn. The caller forgets the notice after."""
    for dep_queue, dependent in dependents:
        dep_keys = QueueKeys(dep_queue)
        done = calls.dependency_done(
            connection, dep_keys, dependent, keys.queue, job_id, ok, status
        )
        if done == "cancelled":
            deliver_end(connection, dep_keys, dependent)


def forget(connection: Client, keys: QueueKeys, job_id: str) -> None:
    calls.forget_notices(connection, keys, [job_id])


def deliver_end(connection: Client, keys: QueueKeys, job_id: str) -> None:
    """Deliver the notice of ended job `job_id` now: to its dependents, then its parent (which
    forgets the notice), as a re-drive would."""
    from . import splitting  # splitting re-drives through this module

    fetched = calls.fetch(connection, keys, job_id)
    record: dict[str, Any] = json.loads(fetched.record)
    status = str(record.get("status", ""))
    ok = status == Status.COMPLETE
    dependents = calls.dependent_refs(record.get("dependents"))
    if dependents:
        tell_dependents(connection, keys, job_id, dependents, ok, status or "missing")
    parent = record.get("parent")
    if isinstance(parent, dict):
        value = (fetched.result or "null") if ok else (fetched.error or status)
        splitting.deliver_notice(connection, keys, job_id, calls.ParentRef(**parent), ok, value)
    else:
        forget(connection, keys, job_id)
