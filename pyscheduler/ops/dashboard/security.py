"""What keeps the dashboard safe: an access token, CSRF checks on actions, strict headers.

The token: when one is set, every request carries it, either as `Authorization: Bearer T`
(scripts, Prometheus) or as a session cookie the dashboard sets after the browser opened a URL
with `?token=T` once. The cookie holds a digest of the token, never the token itself.

CSRF: actions are POSTs whose form carries the value of a per-browser cookie (double submit;
a page of another site can neither read that cookie nor set it), and a POST whose `Origin`
names another site is refused even so.

Without a token, only requests naming a loopback host are answered (a DNS rebinding page
cannot reach a dashboard on 127.0.0.1).

Headers: a Content-Security-Policy that runs only the dashboard's own script file (no inline
script can run, whatever a job's arguments hold), no framing, no sniffing, no caching.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

TOKEN_ENV = "PYSCHEDULER_DASHBOARD_TOKEN"
SESSION_COOKIE = "psq_session"
CSRF_COOKIE = "psq_csrf"
CSRF_FIELD = "csrf"
TOKEN_PARAM = "token"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]


def is_loopback(host: str) -> bool:
    """Whether binding to `host` keeps the dashboard on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def session_value(token: str) -> str:
    """The cookie value that stands for `token` (a digest: the cookie never holds the token)."""
    return hmac.new(token.encode(), b"pyscheduler dashboard session", hashlib.sha256).hexdigest()


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}


def cookies(scope: Scope) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(_headers(scope).get("cookie", ""))
    except Exception:  # a malformed cookie header reads as no cookies
        return {}
    return {name: morsel.value for name, morsel in jar.items()}


def cookie_header(name: str, value: str, *, secure: bool, max_age: int | None = None) -> bytes:
    parts = [f"{name}={value}", "Path=/", "HttpOnly", "SameSite=Lax"]
    if secure:
        parts.append("Secure")
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    return "; ".join(parts).encode()


def _hostname(host: str) -> str:
    try:
        return urlsplit(f"//{host}").hostname or ""
    except ValueError:
        return ""


def _bearer(headers: dict[str, str]) -> str | None:
    scheme, _, value = headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


async def _plain(send: Send, status: int, text: str, extra: list[tuple[bytes, bytes]]) -> None:
    body = text.encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        *SECURITY_HEADERS,
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware: the token check (when a token is set), the CSRF cookie, the headers.

    The CSRF value of the request (from its cookie, or a new one) is put in
    `scope["state"]["csrf"]` for the forms; a new one is sent back as a cookie.
    """

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token
        self.session = None if token is None else session_value(token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        secure = scope.get("scheme") == "https"
        jar = cookies(scope)
        headers = _headers(scope)
        if self.token is None and not is_loopback(_hostname(headers.get("host", ""))):
            # Without a token only loopback names are answered: a page of another site that
            # points its own name at 127.0.0.1 (DNS rebinding) gets nothing.
            await _plain(
                send, 403, "without a token this dashboard answers to localhost only\n", []
            )
            return
        if self.token is not None and self.session is not None:
            bearer = _bearer(headers)
            if not (
                (bearer is not None and _same(bearer, self.token))
                or _same(jar.get(SESSION_COOKIE, ""), self.session)
            ):
                await self._refuse_or_admit(scope, send, secure)
                return
        csrf = jar.get(CSRF_COOKIE, "")
        new_csrf = len(csrf) != 43 or not csrf.replace("-", "").replace("_", "").isalnum()
        if new_csrf:
            csrf = secrets.token_urlsafe(32)
        scope.setdefault("state", {})["csrf"] = csrf

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(n, v) for n, v in SECURITY_HEADERS if n not in present]
                # The time the page took to make, for the browser's tools and the benchmark.
                spent_ms = (time.perf_counter() - began) * 1000
                headers.append((b"server-timing", f"app;dur={spent_ms:.1f}".encode()))
                if new_csrf:
                    headers.append((b"set-cookie", cookie_header(CSRF_COOKIE, csrf, secure=secure)))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _refuse_or_admit(self, scope: Scope, send: Send, secure: bool) -> None:
        """`?token=T` once: set the session cookie and send the browser to the same URL
        without the token (so it stays out of the history); anything else: 401."""
        assert self.token is not None and self.session is not None
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = [value for name, value in query if name == TOKEN_PARAM]
        if scope["method"] in ("GET", "HEAD") and given and _same(given[-1], self.token):
            rest = urlencode([(n, v) for n, v in query if n != TOKEN_PARAM])
            location = scope.get("path", "/") + (f"?{rest}" if rest else "")
            cookie = cookie_header(SESSION_COOKIE, self.session, secure=secure)
            extra = [(b"location", location.encode()), (b"set-cookie", cookie)]
            await _plain(send, 303, "signed in\n", extra)
            return
        await _plain(
            send,
            401,
            "this dashboard needs its token: open it once with ?token=TOKEN, or send"
            " 'Authorization: Bearer TOKEN'\n",
            [(b"www-authenticate", b'Bearer realm="pyscheduler"')],
        )


def csrf_problem(scope: Scope, form: dict[str, list[str]]) -> str | None:
    """Why a POST must be refused (None: it may go on): another site's Origin, or a form
    that does not carry this browser's CSRF value."""
    headers = _headers(scope)
    origin = headers.get("origin")
    if origin is not None and origin != "null":
        if urlsplit(origin).netloc.lower() != headers.get("host", "").lower():
            return "the request came from another site"
    elif origin == "null":
        return "the request came from an opaque origin"
    if headers.get("sec-fetch-site") == "cross-site":
        return "the request came from another site"
    expected = scope.get("state", {}).get("csrf", "")
    sent = form.get(CSRF_FIELD, [""])[-1]
    # The value in the state is the cookie's; a request without the cookie got a fresh one,
    # which no form can have carried yet.
    if not sent or not expected or not _same(sent, expected) or not cookies(scope).get(CSRF_COOKIE):
        return "the form's CSRF token is missing or stale: reload the page and try again"
    return None


def local_path(target: str | None, default: str = "/") -> str:
    """A redirect target that stays on this dashboard (no scheme, no host, no `//`)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target
