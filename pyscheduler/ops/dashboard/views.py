"""The dashboard's pages and actions, on the client API (`Queue`, `Job`, `list_workers`).

Pages read a bounded amount whatever a queue holds: the overview reads the list of queues,
then one pipeline of `psq_counts` (`Queue.stats_of`) and one of `psq_metrics`, three round
trips, and never a job; lists are pages of at most PAGE_SIZE jobs read with their records
in one call. Actions are POSTs (`_action`: the
read-only refusal and the CSRF check in one place), answered by a redirect back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ...client.job import FINAL_STATUSES, Job
from ...client.queue import Queue, QueueStats
from ...exceptions import InvalidInput, InvalidJobState, JobNotFound, PySchedulerError
from ...runtime.live_workers import list_workers
from ...store.connection import Client
from ...store.keys import QueueKeys
from ...store.protocol import ENQUEUE_BATCH_MAX, JOB_ID_RE, OFFSET_MAX, Status
from ..cli import job_status, server_ms
from . import throughput
from .charts import throughput_svg, timeline_svg
from .pages import Dashboard, render, set_flash
from .security import csrf_problem, local_path

PAGE_SIZE = 50
FORM_MAX_BYTES = 256 * 1024
IDS_MAX = 1000  # job ids one action takes
STATES = [s.value for s in Status]
ENDED = {s.value for s in FINAL_STATUSES}


def _dashboard(request: Request) -> Dashboard:
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard


def _render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    return render(request, name, context, status)


def _queue(request: Request, name: str | None = None) -> Queue:
    name = request.path_params["name"] if name is None else name
    try:
        QueueKeys(name)
    except InvalidInput:
        raise HTTPException(404, f"no queue can be named {name!r}") from None
    return Queue(name, connection=_dashboard(request).connection)


# -- the overview -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Totals:
    queued: int
    delayed: int
    active: int
    waiting: int
    failed: int
    finished: int
    paused: int


def overview_data(connection: Client) -> dict[str, Any]:
    """Every queue's stats and the throughput of all: three round trips, whatever the size."""
    names = Queue.known(connection)
    stats = Queue.stats_of(names, connection)
    activity = throughput.all_queues(connection, names)
    now = activity.server_ms or int(time.time() * 1000)
    return {
        "stats": stats,
        "workers": activity.workers,
        "totals": Totals(
            sum(s.queued for s in stats),
            sum(s.delayed for s in stats),
            sum(s.active for s in stats),
            sum(s.waiting for s in stats),
            sum(s.failed for s in stats),
            sum(s.finished for s in stats),
            sum(s.paused for s in stats),
        ),
        "chart": None if activity.problem else throughput_svg(activity.minutes, now),
        "chart_problem": activity.problem,
    }


def overview(request: Request) -> Response:
    data = overview_data(_dashboard(request).connection)
    return _render(request, "overview.html", {"title": "Queues", **data})


def failed(request: Request) -> Response:
    connection = _dashboard(request).connection
    stats = [s for s in Queue.stats_of(Queue.known(connection), connection) if s.failed]
    return _render(request, "failed.html", {"title": "Failed jobs", "stats": stats})


# -- one queue --------------------------------------------------------------------------------


def _state_count(stats: QueueStats, state: str) -> int:
    if state in (Status.COMPLETE, Status.CANCELLED, Status.EXPIRED):
        return stats.finished  # they share one set: an upper bound for each
    return int(getattr(stats, state))


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    try:
        return max(low, min(high, int(request.query_params.get(name, default))))
    except ValueError:
        return default


def queue_page(request: Request) -> Response:
    q = _queue(request)
    state = request.query_params.get("state", Status.QUEUED.value)
    if state not in STATES:
        raise HTTPException(404, f"no job state {state!r}: one of {', '.join(STATES)}")
    page = _int_param(request, "page", 1, 1, OFFSET_MAX // PAGE_SIZE)
    offset = (page - 1) * PAGE_SIZE
    stats = q.stats()
    listed = q.job_records(state, offset, PAGE_SIZE)
    errors: dict[str, str | None] = {}
    if state == Status.FAILED and listed:
        # One HMGET for the page: the last line of each error, never a read per job.
        texts: Any = q.connection.hmget(q.keys.errors, [job_id for job_id, _ in listed])
        errors = {
            job_id: None if text is None else text.decode(errors="replace")
            for (job_id, _), text in zip(listed, texts, strict=True)
        }
    now = server_ms(q.connection)
    rows = [
        {"id": job_id, "record": record, "error": errors.get(job_id)} for job_id, record in listed
    ]
    count = _state_count(stats, state)
    activity = throughput.one_queue(q)
    context = {
        "title": f"Queue {q.name}",
        "queue": q.name,
        "base": f"/queues/{q.name}",
        "stats": stats,
        "state": state,
        "states": [(s, _state_count(stats, s)) for s in STATES],
        "rows": rows,
        "page": page,
        "offset": offset,
        "has_next": offset + PAGE_SIZE < count and len(listed) > 0,
        "now": now,
        "ended": ENDED,
        "chart": None if activity.problem else throughput_svg(activity.minutes, now),
        "chart_problem": activity.problem,
        "workers": activity.workers.get(q.name, "-"),
    }
    return _render(request, "queue.html", context)


# -- one job ----------------------------------------------------------------------------------


def _timeline(record: dict[str, Any]) -> list[tuple[str, int]]:
    stamps = [
        ("created", record.get("created")),
        ("due", record.get("due")),
        ("queued", record.get("queued_at")),
        ("started", record.get("started")),
        ("ended", record.get("ended")),
    ]
    return [(label, int(ms)) for label, ms in stamps if isinstance(ms, int | float)]


def job_page(request: Request) -> Response:
    q = _queue(request)
    job_id = request.path_params["job_id"]
    if not JOB_ID_RE.match(job_id):
        raise HTTPException(404, f"no job can have the id {job_id!r}")
    try:
        info = q.fetch_info(job_id)
    except JobNotFound:
        raise HTTPException(404, f"queue {q.name} has no job {job_id!r}") from None
    now = server_ms(q.connection)
    events = _timeline(info.record)
    parent = info.record.get("parent")
    context = {
        "title": f"Job {job_id}",
        "queue": q.name,
        "base": f"/queues/{q.name}",
        "info": info,
        "status_text": job_status(info),
        "now": now,
        "events": events,
        "timeline": timeline_svg(events, now),
        "parent": parent if isinstance(parent, dict) else None,
        "ended": ENDED,
    }
    return _render(request, "job.html", context)


def lookup(request: Request) -> Response:
    """Find a job by id (in one queue, or in every known queue) and go to its page."""
    job_id = request.query_params.get("id", "").strip()
    name = request.query_params.get("queue") or None
    if not JOB_ID_RE.match(job_id):
        raise HTTPException(404, f"no job can have the id {job_id!r}")
    if name is not None:
        _queue(request, name)  # a valid name
    try:
        found = Job.fetch(job_id, connection=_dashboard(request).connection, queue=name)
    except JobNotFound:
        where = f"queue {name}" if name else "any known queue"
        raise HTTPException(404, f"no job {job_id!r} in {where}") from None
    return RedirectResponse(f"/queues/{found.queue.name}/jobs/{job_id}", status_code=303)


# -- workers ----------------------------------------------------------------------------------


def workers(request: Request) -> Response:
    connection = _dashboard(request).connection
    found = list_workers(connection)
    now = server_ms(connection)
    return _render(request, "workers.html", {"title": "Workers", "workers": found, "now": now})


# -- actions ----------------------------------------------------------------------------------


async def _form(request: Request) -> dict[str, list[str]]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_MAX_BYTES:
            raise HTTPException(413, "the form is too large")
    return parse_qs(body.decode(errors="replace"), keep_blank_values=True)


async def _action(
    request: Request, act: Callable[[Queue, dict[str, list[str]]], tuple[str, str]]
) -> Response:
    """Refuse in read-only mode or without a valid CSRF token; else run `act` (in a thread:
    it talks to Redis) and redirect back with its message."""
    if _dashboard(request).read_only:
        raise HTTPException(403, "this dashboard is read-only")
    form = await _form(request)
    problem = csrf_problem(request.scope, form)
    if problem is not None:
        raise HTTPException(403, problem)
    q = _queue(request)
    back = local_path(form.get("next", [""])[-1], f"/queues/{q.name}")
    try:
        kind, message = await run_in_threadpool(act, q, form)
    except PySchedulerError as exc:
        kind, message = "error", str(exc)
    response = RedirectResponse(back, status_code=303)
    set_flash(request, response, kind, message)
    return response


def _ids(form: dict[str, list[str]]) -> list[str]:
    ids = list(dict.fromkeys(i.strip() for i in form.get("id", []) if i.strip()))
    if len(ids) > IDS_MAX:
        raise InvalidInput(f"at most {IDS_MAX} job ids at once")
    for job_id in ids:
        if not JOB_ID_RE.match(job_id):
            raise InvalidInput(f"invalid job id {job_id!r}")
    return ids


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


async def pause(request: Request) -> Response:
    def act(q: Queue, form: dict[str, list[str]]) -> tuple[str, str]:
        q.pause()
        return "ok", f"queue {q.name} is paused: running jobs go on, no new ones start"

    return await _action(request, act)


async def resume(request: Request) -> Response:
    def act(q: Queue, form: dict[str, list[str]]) -> tuple[str, str]:
        q.resume()
        return "ok", f"queue {q.name} is running"

    return await _action(request, act)


def _optional_number(form: dict[str, list[str]], name: str, kind: type[Any]) -> Any:
    text = form.get(name, [""])[-1].strip()
    if not text or text.lower() == "none":
        return None
    try:
        return kind(text)
    except ValueError:
        raise InvalidInput(f"{name} must be a number, not {text!r}") from None


async def set_limits(request: Request) -> Response:
    def act(q: Queue, form: dict[str, list[str]]) -> tuple[str, str]:
        concurrency = _optional_number(form, "concurrency", int)
        rate = _optional_number(form, "rate", int)
        period = _optional_number(form, "period", float)
        if concurrency is not None and concurrency < 1:
            raise InvalidInput("concurrency must be at least 1 (or empty for none)")
        if rate is not None and rate < 1:
            raise InvalidInput("rate must be at least 1 (or empty for none)")
        if rate is None:
            period = None
        elif period is None:
            period = 1.0
        limits = q.set_limits(concurrency=concurrency, rate=rate, period=period)
        shown = ", ".join(
            part
            for part in (
                f"concurrency {limits.concurrency}" if limits.concurrency else "",
                f"rate {limits.rate}/{limits.period:g}s" if limits.rate and limits.period else "",
            )
            if part
        )
        return "ok", f"queue {q.name}: {shown or 'no limits'}"

    return await _action(request, act)


def _retry_all(q: Queue) -> int:
    """Every job failed now (ones that fail again meanwhile wait for the next click)."""
    total, moved = q.stats().failed, 0
    while moved < total:
        page = q.job_ids(Status.FAILED, 0, min(ENQUEUE_BATCH_MAX, total - moved))
        done = q.retry(page) if page else 0
        if done == 0:
            break
        moved += done
    return moved


async def retry(request: Request) -> Response:
    def act(q: Queue, form: dict[str, list[str]]) -> tuple[str, str]:
        ids = _ids(form)
        if form.get("all"):
            return "ok", f"retried {_plural(_retry_all(q), 'failed job')} of queue {q.name}"
        if not ids:
            return "error", "no job to retry"
        moved = q.retry(ids)
        kind = "ok" if moved == len(ids) else "error"
        return kind, f"retried {moved} of {_plural(len(ids), 'job')} (only failed jobs retry)"

    return await _action(request, act)


async def cancel(request: Request) -> Response:
    def act(q: Queue, form: dict[str, list[str]]) -> tuple[str, str]:
        ids = _ids(form)
        if not ids:
            return "error", "no job to cancel"
        problems: list[str] = []
        for job_id in ids:
            try:
                Job(job_id, q).cancel()
            except (JobNotFound, InvalidJobState) as exc:
                problems.append(str(exc))
        done = len(ids) - len(problems)
        text = f"cancelled {_plural(done, 'job')}"
        return ("error", f"{text}; {'; '.join(problems[:3])}") if problems else ("ok", text)

    return await _action(request, act)


async def purge(request: Request) -> Response:
    def act(q: Queue, form: dict[str, list[str]]) -> tuple[str, str]:
        status = form.get("status", [""])[-1]
        ids = _ids(form)
        if form.get("all"):
            if not form.get("confirm"):
                return "error", "tick the box to confirm deleting every such job"
            deleted = q.purge(status)
            return "ok", f"deleted {_plural(deleted, status + ' job')} of queue {q.name}"
        if not ids:
            return "error", "no job to delete"
        deleted = q.purge(status, ids)
        kind = "ok" if deleted == len(ids) else "error"
        return kind, f"deleted {deleted} of {_plural(len(ids), 'job')} ({status} jobs only)"

    return await _action(request, act)
