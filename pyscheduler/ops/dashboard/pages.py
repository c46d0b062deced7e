"""Rendering a page: the Jinja2 environment (autoescape on), the common context, messages.

Each page has one live region (`{% block live %}`); `render` sends only that block when the
refresh script asks for it (`?fragment=1`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from ...store.connection import Client
from ..cli import age, error_summary, limits_text
from .security import CSRF_FIELD, cookie_header

HERE = Path(__file__).parent
REFRESH_MS = 1000  # the live region is at most this (plus one request) behind Redis
FLASH_COOKIE = "psq_flash"
FRAGMENT_PARAM = "fragment"


@dataclass(frozen=True)
class Dashboard:
    """What every view needs: the Redis client and the settings."""

    connection: Client
    read_only: bool = False
    refresh_ms: int = REFRESH_MS
    url_label: str = ""


def _stamp(ms: int | float | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str, sort_keys=False)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every template, whatever its name: values from Redis are text
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        age=age,
        stamp=_stamp,
        pretty=_pretty,
        summary=error_summary,
        limits=limits_text,
        q=lambda value: quote(str(value), safe=""),
    )
    return env


ENV = _environment()


def render(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> Response:
    """A page, or only its live region when the refresh script asks (`?fragment=1`)."""
    dashboard: Dashboard = request.app.state.dashboard
    flash = _flash(request)
    full = {
        **context,
        "request_path": request.url.path,
        "here": _here(request),
        "csrf": request.scope.get("state", {}).get("csrf", ""),
        "csrf_field": CSRF_FIELD,
        "read_only": dashboard.read_only,
        "refresh_ms": dashboard.refresh_ms,
        "url_label": dashboard.url_label,
        "flash": flash,
    }
    template = ENV.get_template(name)
    if request.query_params.get(FRAGMENT_PARAM):
        body = "".join(template.blocks["live"](template.new_context(full)))
    else:
        body = template.render(full)
    response = HTMLResponse(body, status_code=status_code)
    if flash is not None:  # shown once
        response.headers.append(
            "set-cookie",
            cookie_header(
                FLASH_COOKIE, "", secure=request.url.scheme == "https", max_age=0
            ).decode(),
        )
    return response


def _here(request: Request) -> str:
    """This page's path and query, without the refresh script's fragment parameter."""
    kept = [(k, v) for k, v in request.query_params.multi_items() if k != FRAGMENT_PARAM]
    query = urlencode(kept)
    return request.url.path + (f"?{query}" if query else "")


def _flash(request: Request) -> tuple[str, str] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw or request.query_params.get(FRAGMENT_PARAM):
        return None
    kind, _, text = unquote(raw).partition(":")
    return ("error" if kind == "error" else "ok", text[:500])


def set_flash(request: Request, response: Response, kind: str, text: str) -> None:
    """A message for the next page (the one the action redirects to), in a cookie."""
    value = quote(f"{kind}:{text[:500]}", safe="")
    secure = request.url.scheme == "https"
    response.headers.append(
        "set-cookie", cookie_header(FLASH_COOKIE, value, secure=secure).decode()
    )
