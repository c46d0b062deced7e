"""Turning an enqueue call into `psq_enqueue` commands, and their replies into job ids.

Everything here is checking and building, never I/O, so the sync client (`client/queue.py`)
and the asyncio one (`pyscheduler.aio`) validate the same way, raise the same exceptions with
the same words, and send the same commands; each does only its own sending.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NoReturn, Protocol, cast, runtime_checkable

import redis

from ..exceptions import (
    HandlerRefused,
    InvalidJobId,
    InvalidOption,
    NotDurable,
    PayloadTooLarge,
    PySchedulerError,
)
from ..store import calls
from ..store.keys import QueueKeys
from ..store.pipelining import Merge
from ..store.protocol import (
    DEPENDS_MAX,
    ENQUEUE_BATCH_MAX,
    JOB_ID_RE,
    PAST_TOLERANCE_MS,
    PRIORITY_MAX,
    PRIORITY_MIN,
    UNIQUE_KEY_MAX_BYTES,
)
from ..store.serialization import encode_payload
from .tasks import (
    MAIN_MODULE,
    exception_names,
    never_a_handler,
    reference_of,
    registered_task,
    task_options,
)

Command = Sequence[Any]


class _Named(Protocol):
    @property
    def name(self) -> str: ...


@runtime_checkable
class JobHandle(Protocol):
    """A job of either client, as `depends_on` takes it."""

    @property
    def id(self) -> str: ...

    @property
    def queue(self) -> _Named: ...


# A dependency as `depends_on` takes it: a Job (of any queue, of either client), (queue name,
# id), or an id of this queue.
Dependency = JobHandle | tuple[str, str] | str


class QueueDefaults(Protocol):
    """What a queue of either client gives the options a call leaves out (after the
    handler's `@task`), and its name."""

    name: str
    default_timeout: float
    default_retries: int
    default_backoff: float
    result_ttl: float


def seconds_of(value: float | timedelta | None, what: str) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise InvalidOption(f"{what} must be a number of seconds or a timedelta, not {value!r}")
    if not math.isfinite(seconds):
        raise InvalidOption(f"{what} must be a finite number of seconds, not {value!r}")
    return float(seconds)


def at_ms_of(at: datetime | float | None) -> int | None:
    if at is None:
        return None
    if isinstance(at, datetime):
        at_ms = int(at.timestamp() * 1000)
    elif isinstance(at, int | float) and not isinstance(at, bool):
        if not math.isfinite(at):
            raise InvalidOption(f"at must be a finite time, not {at!r}")
        at_ms = int(at * 1000)
    else:
        raise InvalidOption(f"at must be a datetime or epoch seconds, not {at!r}")
    # The library checks again against the server's clock; this catches the usual mistake
    # before anything is sent.
    if at_ms < time.time() * 1000 - PAST_TOLERANCE_MS:
        raise InvalidOption(f"at is in the past: {at!r}")
    return at_ms


def handler_reference(func: Callable[..., Any] | str) -> str:
    """The "module:qualname" (or registered task name) a job names its handler by."""
    if not isinstance(func, str):
        ref = reference_of(func)
        module = ref.partition(":")[0]
        # A registered task is named as registered; only `__main__` is never reachable by name.
        why = (
            never_a_handler(module)
            if module == MAIN_MODULE or registered_task(ref) is None
            else None
        )
        if why:
            raise HandlerRefused(f"handler {ref!r} is refused: {why}")
        return ref
    ref = func
    if not ref:
        raise HandlerRefused("the handler reference must not be empty")
    if ref.partition(":")[0] == MAIN_MODULE:
        raise HandlerRefused(f"handler {ref!r} is refused: {never_a_handler(MAIN_MODULE)}")
    # "package.module.function" is accepted for "package.module:function"; a name without a
    # dot or a registered task name (which may contain dots) is kept as it is.
    if ":" not in ref and "." in ref and registered_task(ref) is None:
        module, _, qualname = ref.rpartition(".")
        ref = f"{module}:{qualname}"
    return ref


def dependency_ref(dep: Dependency, queue: str) -> tuple[str, str]:
    if isinstance(dep, str):
        ref = (queue, dep)
    elif isinstance(dep, tuple) and len(dep) == 2 and all(isinstance(x, str) for x in dep):
        ref = (dep[0], dep[1])
    elif isinstance(dep, JobHandle):
        return dep.queue.name, dep.id
    else:
        raise InvalidOption(
            f"depends_on takes Jobs, (queue, id) pairs or ids of this queue, not {dep!r}"
        )
    QueueKeys(ref[0])  # validates the name
    if not JOB_ID_RE.match(ref[1]):
        raise InvalidJobId(f"invalid job id in depends_on: {ref[1]!r}")
    return ref


def expires_ms(expires: float | timedelta | datetime) -> int:
    if isinstance(expires, datetime):
        return int(expires.timestamp() * 1000)
    seconds = seconds_of(expires, "expires")
    if seconds is None or seconds <= 0:
        raise InvalidOption(
            f"expires must be a positive number of seconds or a datetime, not {expires!r}"
        )
    return int((time.time() + seconds) * 1000)


def extra_field(
    job_id: str,
    queue: str,
    due_ms: int | None,
    *,
    depends_on: Sequence[Dependency] | Dependency | None,
    on_dependency_failure: str,
    unique_for: float | timedelta | None,
    unique_key: str | None,
    expires: float | timedelta | datetime | None,
    on_success: Callable[..., Any] | str | None,
    on_failure: Callable[..., Any] | str | None,
    retry_on: Sequence[type[BaseException] | str] | None,
) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The `extra` field of the rarely used options (lua/enqueue.lua), '' when none is set,
    and the dependencies to register after the enqueue."""
    extra: dict[str, Any] = {}
    deps: tuple[tuple[str, str], ...] = ()
    if depends_on is not None:
        if isinstance(depends_on, str | tuple | JobHandle):
            depends_on = [cast(Dependency, depends_on)]
        deps = tuple(dict.fromkeys(dependency_ref(d, queue) for d in depends_on))
        if not deps:
            raise InvalidOption("depends_on needs at least one job (or leave it out)")
        if len(deps) > DEPENDS_MAX:
            raise InvalidOption(f"depends_on takes at most {DEPENDS_MAX} jobs, not {len(deps)}")
        if (queue, job_id) in deps:
            raise InvalidOption(f"job {job_id} cannot depend on itself")
        if due_ms is not None:
            raise InvalidOption("depends_on cannot be combined with delay or at")
        extra["depends_on"] = [list(d) for d in deps]
    if on_dependency_failure not in ("cancel", "run"):
        raise InvalidOption(
            f"on_dependency_failure must be 'cancel' or 'run', not {on_dependency_failure!r}"
        )
    if on_dependency_failure == "run":
        extra["on_dependency_failure"] = "run"
    if unique_for is not None:
        window = seconds_of(unique_for, "unique_for")
        if window is None or window <= 0:
            raise InvalidOption(
                f"unique_for must be a positive number of seconds, not {unique_for!r}"
            )
        extra["unique_for"] = max(1, round(window * 1000))
        if unique_key is not None:
            if (
                not isinstance(unique_key, str)
                or not 1 <= len(unique_key.encode()) <= UNIQUE_KEY_MAX_BYTES
            ):
                raise InvalidOption(
                    f"unique_key must be a string of 1..{UNIQUE_KEY_MAX_BYTES} bytes,"
                    f" not {unique_key!r}"
                )
            extra["unique_key"] = unique_key
    elif unique_key is not None:
        raise InvalidOption("unique_key needs unique_for (the dedup window)")
    if expires is not None:
        at_ms = expires_ms(expires)
        if at_ms <= (due_ms if due_ms is not None else time.time() * 1000):
            raise InvalidOption("expires must be after now and after the job's due time")
        extra["expires"] = at_ms
    for which, handler in (("on_success", on_success), ("on_failure", on_failure)):
        if handler is not None:
            extra[which] = handler_reference(handler)
    if retry_on is not None:
        extra["retry_on"] = exception_names(retry_on)
    if not extra:
        return "", deps
    return json.dumps(extra, separators=(",", ":")), deps


def prepare_job(
    queue: QueueDefaults,
    payload_limit: Callable[[], int],
    func: Callable[..., Any] | str,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    priority: int = 0,
    delay: float | timedelta | None = None,
    at: datetime | float | None = None,
    timeout: float | timedelta | None = None,
    retries: int | None = None,
    backoff: float | timedelta | None = None,
    job_id: str | None = None,
    result_ttl: float | timedelta | None = None,
    time_slice: float | timedelta | None = None,
    parent: calls.ParentRef | None = None,
    split: calls.SplitPlan | None = None,
    depends_on: Sequence[Dependency] | Dependency | None = None,
    on_dependency_failure: str = "cancel",
    unique_for: float | timedelta | None = None,
    unique_key: str | None = None,
    expires: float | timedelta | datetime | None = None,
    on_success: Callable[..., Any] | str | None = None,
    on_failure: Callable[..., Any] | str | None = None,
    retry_on: Sequence[type[BaseException] | str] | None = None,
) -> calls.NewJob:
    """Validate one call for `queue` and build its job (`Queue.prepare` of either client);
    raises InvalidInput subclasses. `payload_limit` is asked only for a call with arguments."""
    ref = handler_reference(func)
    task_defaults = task_options(func)
    if task_defaults:
        timeout = task_defaults.get("timeout") if timeout is None else timeout
        retries = task_defaults.get("retries") if retries is None else retries
        time_slice = task_defaults.get("time_slice") if time_slice is None else time_slice
        retry_on = task_defaults.get("retry_on") if retry_on is None else retry_on
    if job_id is None:
        job_id = calls.new_job_id()
    elif not isinstance(job_id, str) or not JOB_ID_RE.match(job_id):
        raise InvalidJobId(
            f"invalid job id {job_id!r}: use 1-256 characters from letters, digits and _.:-"
        )
    if type(priority) is not int and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise InvalidOption(f"priority must be an integer, not {priority!r}")
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise InvalidOption(f"priority must be in {PRIORITY_MIN}..{PRIORITY_MAX}")
    delay_ms = 0
    if delay is not None:
        delay_s = seconds_of(delay, "delay") or 0.0
        if delay_s < 0:
            raise InvalidOption(f"delay must not be negative (got {delay_s} s)")
        if at is not None:
            raise InvalidOption("give either delay or at, not both")
        delay_ms = int(delay_s * 1000)
    timeout_s = queue.default_timeout if timeout is None else seconds_of(timeout, "timeout")
    if timeout_s is None or timeout_s <= 0:
        raise InvalidOption(f"timeout must be positive (got {timeout_s} s)")
    retries = queue.default_retries if retries is None else retries
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise InvalidOption(f"retries must be a non-negative integer, not {retries!r}")
    backoff_s = queue.default_backoff if backoff is None else seconds_of(backoff, "backoff")
    ttl_s = queue.result_ttl if result_ttl is None else seconds_of(result_ttl, "result_ttl")
    if backoff_s is None or ttl_s is None or backoff_s < 0 or ttl_s < 0:
        raise InvalidOption("backoff and result_ttl must not be negative")
    slice_s = 0.0 if time_slice is None else (seconds_of(time_slice, "time_slice") or 0.0)
    if slice_s < 0 or not math.isfinite(slice_s):
        raise InvalidOption(f"time_slice must be a positive number of seconds, not {slice_s}")
    # A call without arguments stores no payload at all (the library reads it as empty).
    payload = encode_payload(args, kwargs or {}, payload_limit()) if len(args) or kwargs else ""
    at_ms = None if at is None else at_ms_of(at)
    extra, deps = "", cast(tuple[tuple[str, str], ...], ())
    if (
        depends_on is not None
        or unique_for is not None
        or unique_key is not None
        or expires is not None
        or on_success is not None
        or on_failure is not None
        or retry_on is not None
        or on_dependency_failure != "cancel"
    ):
        if depends_on is not None and split is not None:
            raise InvalidOption("depends_on cannot be combined with a group's subtasks")
        due_ms = int(time.time() * 1000) + delay_ms if delay_ms else at_ms
        extra, deps = extra_field(
            job_id,
            queue.name,
            due_ms,
            depends_on=depends_on,
            on_dependency_failure=on_dependency_failure,
            unique_for=unique_for,
            unique_key=unique_key,
            expires=expires,
            on_success=on_success,
            on_failure=on_failure,
            retry_on=retry_on,
        )
    return calls.NewJob(
        id=job_id,
        func=ref,
        payload=payload,
        priority=priority,
        delay_ms=delay_ms,
        at_ms=at_ms,
        timeout=timeout_s,
        retries=retries,
        backoff=backoff_s,
        result_ttl=ttl_s,
        time_slice=slice_s,
        parent=parent,
        split=split,
        extra=extra,
        depends_on=deps,
    )


def check_before_writing(batch: Sequence[calls.NewJob], limit: int) -> None:
    """What may have changed since the jobs were prepared: a due time now in the past, a
    payload over `limit` (the library enforces its own limit again)."""
    quarter = limit // 4
    oldest_ms = None
    for job in batch:
        if job.at_ms is not None:
            if oldest_ms is None:
                oldest_ms = time.time() * 1000 - PAST_TOLERANCE_MS
            if job.at_ms < oldest_ms:
                raise InvalidOption(f"job {job.id}: its due time is in the past; nothing enqueued")
        if len(job.payload) > quarter:  # else it fits for sure (4 bytes per character)
            size = len(job.payload.encode())
            if size > limit:
                raise PayloadTooLarge(
                    f"job {job.id}: payload is {size} bytes, over the limit of"
                    f" {limit} bytes; nothing enqueued"
                )


def enqueue_commands(keys: QueueKeys, batch: Sequence[calls.NewJob]) -> list[Command]:
    """The `psq_enqueue` commands of a batch: one per ENQUEUE_BATCH_MAX jobs."""
    return [
        calls.enqueue_command(keys, batch[start : start + ENQUEUE_BATCH_MAX])
        for start in range(0, len(batch), ENQUEUE_BATCH_MAX)
    ]


def enqueue_merge(queue: str) -> Merge:
    """How concurrent single-command enqueues of `queue` on one client go out as one call."""
    return Merge(
        ("psq_enqueue", queue),
        calls.enqueue_size,
        ENQUEUE_BATCH_MAX,
        calls.join_enqueue_commands,
        calls.split_enqueue_reply,
    )


def after_registry_write(replies: list[Any]) -> list[Any]:
    """The replies that follow the registry's SADD sent first in the same round trip; a
    refused SADD raises (before any job is taken as enqueued)."""
    if isinstance(replies[0], redis.ResponseError):
        calls.raise_mapped(replies[0])
    return replies[1:]


def enqueued_ids(replies: Sequence[Any]) -> list[str]:
    """The ids the replies of `enqueue_commands` name, in order. A refused command raises its
    error (mapped to `pyscheduler.exceptions`), carrying in `enqueued` the ids of the jobs the
    other commands wrote; another exception in a reply (a lost connection: the outcome is
    unknown) is raised as it is."""
    ids: list[str] = []
    refused: redis.ResponseError | None = None
    for reply in replies:
        if isinstance(reply, redis.ResponseError):
            refused = refused or reply
            continue
        if isinstance(reply, Exception):
            raise reply
        ids += calls.enqueued_ids(reply)
    if refused is not None:
        raise_partly_enqueued(refused, ids)
    return ids


def raise_partly_enqueued(reply: redis.ResponseError, enqueued: Sequence[str]) -> NoReturn:
    try:
        calls.raise_mapped(reply)
    except PySchedulerError as exc:
        exc.enqueued = tuple(enqueued)
        if enqueued:
            exc.args = (
                f"{exc}; that batch was not written, but the {len(enqueued)} jobs of the other"
                f" batches were (ids in .enqueued, first {enqueued[0]}, last {enqueued[-1]})",
            )
        raise


def not_durable(shortfall: str, enqueued: Sequence[str]) -> NotDurable:
    ids = tuple(enqueued)
    which = f"job {ids[0]}" if len(ids) == 1 else f"{len(ids)} jobs ({ids[0]} .. {ids[-1]})"
    exc = NotDurable(
        f"{which} enqueued on the primary, but {shortfall}: stored on the primary only, it may"
        " be lost if the primary fails before a replica has it",
        shortfall,
    )
    exc.enqueued = ids
    return exc


def waiting_dependents(
    batch: Sequence[calls.NewJob], ids: Sequence[str]
) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    """The jobs of `batch` to register with their dependencies: (id, dependencies). Again for a
    job that existed (a producer that died before registering it): registering is idempotent."""
    return [
        (job.id, job.depends_on)
        for job, made in zip(batch, ids, strict=True)
        if job.depends_on and made == job.id
    ]
