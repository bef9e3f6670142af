"""The web view's guard: read-only methods, the access token, trusted hosts and security headers.

One ASGI middleware in front of every route (static files included):

- only GET and HEAD pass; anything else is 405, so no request can change anything;
- with a token, a request needs ``Authorization: Bearer TOKEN`` or the cookie ``/login`` sets,
  compared in constant time (``hmac.compare_digest``); without one, it gets 401;
- without a token (loopback only), the Host header must name the loopback, so a page elsewhere
  cannot read this one through DNS rebinding;
- every response carries a strict Content-Security-Policy (no script at all, styles and images
  from this server only), ``nosniff``, no framing, no referrer, and is not cached.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any

COOKIE = "cellar_ui_token"
TOKEN_VAR = "REGISTRY_UI_TOKEN"
MIN_TOKEN_LENGTH = 16
CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
OPEN_PATHS = ("/login", "/static/")  # the login form and its stylesheet

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable, Callable], Awaitable[None]]


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_matches(given: str | None, token: str) -> bool:
    """Constant-time comparison, so response times do not reveal how much of a guess was right."""
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def presented_token(headers: dict[bytes, bytes]) -> str | None:
    """The token a request carries: ``Authorization: Bearer ...``, else the login cookie."""
    auth = headers.get(b"authorization", b"").decode("latin-1")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    cookie = SimpleCookie()
    try:
        cookie.load(headers.get(b"cookie", b"").decode("latin-1"))
    except Exception:  # a malformed cookie header is no token
        return None
    return cookie[COOKIE].value if COOKIE in cookie else None


class Guard:
    """The ASGI middleware described in the module docstring."""

    def __init__(self, app: ASGIApp, *, token: str | None):
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        refusal = self._refusal(scope, headers)
        send = _with_headers(send)
        if refusal:
            return await _plain(send, *refusal)
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope, headers: dict[bytes, bytes]) -> tuple[int, str, list] | None:
        if scope["method"] not in ("GET", "HEAD"):
            return 405, "405 method not allowed: this web view is read-only", [(b"allow", b"GET, HEAD")]
        if self.token is None:
            host = headers.get(b"host", b"").decode("latin-1").rsplit(":", 1)[0] if b"host" in headers else ""
            if not is_loopback(host.lower()):
                return 421, "421 this web view answers on the loopback address only", []
            return None
        if scope["path"].startswith(OPEN_PATHS) or token_matches(presented_token(headers), self.token):
            return None
        return 401, "401 unauthorized: log in at /login (the token is in REGISTRY_UI_TOKEN)", [
            (b"www-authenticate", b'Bearer realm="cellar"')]


def _with_headers(send: Callable) -> Callable:
    async def wrapped(message: dict) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), *HEADERS]
        await send(message)
    return wrapped


async def _plain(send: Callable, status: int, text: str, extra: list) -> None:
    body = (text + "\n").encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), *extra]})
    await send({"type": "http.response.body", "body": body})
