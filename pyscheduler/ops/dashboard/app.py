"""The dashboard's Starlette app: `create_app(connection, ...)`, and `serve` for the command.

Pages are rendered on the server with Jinja2 (`pages.py`; autoescape on: every value from
Redis is shown as text). Each page has one live region that `static/refresh.js` reloads as a
fragment (`?fragment=1`) every REFRESH_MS; with JavaScript off every page is whole as served,
and its "reload" link brings it up to date.
"""

from __future__ import annotations

import importlib.util
import logging
import signal
from typing import Any

import redis
from redis.exceptions import RedisClusterException
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ...exceptions import InvalidInput, JobNotFound, LibraryError, PySchedulerError
from ...store.connection import Client
from ..cli import REDIS_ERRORS, redis_problem
from . import views
from .pages import FRAGMENT_PARAM, HERE, REFRESH_MS, Dashboard, render
from .security import Guard

log = logging.getLogger("pyscheduler.dashboard")


async def _redis_down(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, REDIS_ERRORS)
    log.warning("Redis error on %s: %s", request.url.path, exc)
    return _problem(request, 503, redis_problem(exc, None))


async def _library_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, LibraryError):
        status = 503
    elif isinstance(exc, InvalidInput):
        status = 400
    else:  # a job that vanished between two reads, one in another state
        status = 404 if isinstance(exc, JobNotFound) else 409
    return _problem(request, status, str(exc))


async def _http_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    title = "Not found" if exc.status_code == 404 else "Refused"
    if request.query_params.get(FRAGMENT_PARAM):
        return PlainTextResponse(exc.detail, status_code=exc.status_code)
    return render(request, "problem.html", {"title": title, "message": exc.detail}, exc.status_code)


def _problem(request: Request, status: int, message: str) -> Response:
    if request.query_params.get(FRAGMENT_PARAM):
        return PlainTextResponse(message, status_code=status)
    return render(request, "problem.html", {"title": "Problem", "message": message}, status)


def _metrics_app(connection: Client) -> Any | None:
    """`pyscheduler.ops.metrics.metrics_app`, when that module (and its extra) is there."""
    if importlib.util.find_spec("pyscheduler.ops.metrics") is None:
        return None
    try:
        from .. import metrics
    except ImportError:  # prometheus_client missing
        return None
    return metrics.metrics_app(connection)


class _Endpoint:
    """An ASGI app as a route's endpoint (a plain function would be taken for a view)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


def create_app(
    connection: Client,
    *,
    token: str | None = None,
    read_only: bool = False,
    refresh_ms: int = REFRESH_MS,
    url_label: str = "",
) -> Any:
    """The dashboard as an ASGI app. With a `token`, every request must carry it."""
    if token is not None and not token.strip():
        raise ValueError("the dashboard token must not be empty")
    routes: list[Route | Mount] = [
        Route("/", views.overview),
        Route("/workers", views.workers),
        Route("/failed", views.failed),
        Route("/lookup", views.lookup),
        Route("/queues/{name}", views.queue_page),
        Route("/queues/{name}/jobs/{job_id:path}", views.job_page),
        Route("/queues/{name}/pause", views.pause, methods=["POST"]),
        Route("/queues/{name}/resume", views.resume, methods=["POST"]),
        Route("/queues/{name}/limits", views.set_limits, methods=["POST"]),
        Route("/queues/{name}/retry", views.retry, methods=["POST"]),
        Route("/queues/{name}/cancel", views.cancel, methods=["POST"]),
        Route("/queues/{name}/purge", views.purge, methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    metrics = _metrics_app(connection)
    if metrics is not None:
        routes.append(Route("/metrics", _Endpoint(metrics)))
    app = Starlette(
        routes=routes,
        exception_handlers={
            redis.RedisError: _redis_down,
            RedisClusterException: _redis_down,
            PySchedulerError: _library_error,
            HTTPException: _http_problem,
        },
    )
    app.state.dashboard = Dashboard(connection, read_only, refresh_ms, url_label)
    return Guard(app, token)


def serve(url: str | None, host: str, port: int, token: str | None, read_only: bool) -> None:
    """Run the dashboard until Ctrl-C (the `pyscheduler dashboard` command)."""
    import uvicorn

    from ...store.connection import connect, redacted, resolve_url
    from ...store.library import ensure_loaded

    connection = connect(url, socket_connect_timeout=10.0)
    ensure_loaded(connection)  # a Redis that cannot be reached, or no library: say so now
    app = create_app(
        connection, token=token, read_only=read_only, url_label=redacted(resolve_url(url))
    )
    shown = f"[{host}]" if ":" in host else host
    note = " (read-only)" if read_only else ""
    if token is not None:
        note += "; open it once with ?token=TOKEN, or send 'Authorization: Bearer TOKEN'"
    log.info("dashboard on http://%s:%d/%s", shown, port, note)
    # uvicorn stops gracefully on SIGTERM or Ctrl-C, then raises the signal again for the
    # handler that was there before it: with these, a clean stop exits 0, as a worker does.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, frame: None)
    uvicorn.run(app, host=host, port=port, server_header=False, log_level="info")
