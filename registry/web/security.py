"""The web view's guard: read-only methods, the access token, trusted hosts and security headers.

One ASGI middleware in front of every route (static files included):

- only GET and HEAD pass (and, with a token, POST to ``/login`` and ``/logout``, which change
  nothing stored);
  anything else is 405;
- with a token, a request needs ``Authorization: Bearer TOKEN`` or the session cookie ``/login``
  sets: a random session id (never the token), with an expiry, that ``/logout`` ends. The token
  is compared in constant time (``hmac.compare_digest``); without either, 401. A client that
  fails ``FAILURES_ALLOWED`` times in ``FAILURE_WINDOW_S`` gets 429 until the window has passed;
- without a token (loopback only), the Host header must name the loopback, so a page elsewhere
  cannot read this one through DNS rebinding;
- every response, errors and crashes included, carries a strict Content-Security-Policy (no
  script at all, styles and images from this server only), ``nosniff``, no framing, no
  referrer, and is not cached.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import math
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any

COOKIE = "cellar_ui_session"
TOKEN_VAR = "REGISTRY_UI_TOKEN"
MIN_TOKEN_LENGTH = 16
# zxcvbn's guess count, log2: "passwordpassword" ~3, "aaaaaaaaaaaaaaaa" ~8, 16 random hex digits 38-64
# (60,000 drawn: none below 38), secrets.token_urlsafe() above 130. A random token always passes.
MIN_TOKEN_BITS = 34
SESSION_TTL_S = 12 * 3600
SESSIONS_MAX = 10_000  # the oldest session ends first beyond this
FAILURES_ALLOWED = 10
FAILURE_WINDOW_S = 60.0
CLIENTS_TRACKED = 10_000
IN_FLIGHT_MAX = 200  # requests being answered at once; more get 503 (with these headers) at once
log = logging.getLogger(__name__)
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
OPEN_PATHS = ("/login", "/logout", "/static/")  # the login form and its stylesheet
POST_PATHS = ("/login", "/logout")

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


def token_problem(token: str) -> str | None:
    """Why ``token`` is too easy to guess (too short; a word, a repeat, a sequence, a keyboard walk, a
    date); None if fine.

    Estimated with zxcvbn (Dropbox's password-strength estimator, on its first 72 characters, its
    limit: more only make a token harder): it finds the patterns people type, where a count of
    characters cannot tell ``passwordpassword`` (44 bits by Shannon entropy) from a random 16-hex
    token (which that count put below 48 bits one time in seven)."""
    if len(token) < MIN_TOKEN_LENGTH:
        return f"is shorter than {MIN_TOKEN_LENGTH} characters"
    from zxcvbn import zxcvbn  # 30 ms of word lists, for `registry ui` only

    bits = math.log2(max(float(zxcvbn(token[:72])["guesses"]), 1.0))
    if bits < MIN_TOKEN_BITS:
        return f"is too easy to guess (about 2^{bits:.0f} guesses; 2^{MIN_TOKEN_BITS} needed)"
    return None


def presented(headers: dict[bytes, bytes]) -> tuple[str | None, str | None]:
    """What a request carries: (the token from ``Authorization: Bearer``, the session cookie)."""
    auth = headers.get(b"authorization", b"").decode("latin-1")
    bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
    cookie = SimpleCookie()
    try:
        cookie.load(headers.get(b"cookie", b"").decode("latin-1"))
    except Exception:  # a malformed cookie header is no session
        return bearer, None
    return bearer, cookie[COOKIE].value if COOKIE in cookie else None


class Sessions:
    """Session ids handed out by ``/login``: random, expiring, ended by ``/logout``; in memory
    (a restart logs everyone out), at most ``SESSIONS_MAX``."""

    def __init__(self, ttl_s: float = SESSION_TTL_S, clock: Callable[[], float] = time.monotonic):
        self.ttl_s, self.clock = ttl_s, clock
        self._ends: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def start(self) -> str:
        sid = secrets.token_urlsafe(32)
        with self._lock:
            self._ends[sid] = self.clock() + self.ttl_s
            while len(self._ends) > SESSIONS_MAX:
                self._ends.popitem(last=False)
        return sid

    def valid(self, sid: str | None) -> bool:
        if not sid:
            return False
        with self._lock:
            ends = self._ends.get(sid)
            if ends is not None and ends <= self.clock():
                del self._ends[sid]
                ends = None
        return ends is not None

    def end(self, sid: str | None) -> None:
        with self._lock:
            self._ends.pop(sid or "", None)


class Failures:
    """Failed authentications per client address in a sliding window (the 401 rate limit)."""

    def __init__(self, allowed: int = FAILURES_ALLOWED, window_s: float = FAILURE_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic):
        self.allowed, self.window_s, self.clock = allowed, window_s, clock
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def blocked_for(self, client: str) -> float:
        """Seconds until ``client`` may try again; 0 when it may now."""
        with self._lock:
            times = self._recent(client)
            return times[0] + self.window_s - self.clock() if len(times) >= self.allowed else 0.0

    def failed(self, client: str) -> None:
        with self._lock:
            self._recent(client).append(self.clock())
            self._seen.move_to_end(client)
            while len(self._seen) > CLIENTS_TRACKED:
                self._seen.popitem(last=False)

    def _recent(self, client: str) -> deque[float]:
        times = self._seen.setdefault(client, deque())
        while times and times[0] <= self.clock() - self.window_s:
            times.popleft()
        return times


def client_of(scope: Scope) -> str:
    client = scope.get("client")
    return client[0] if client else ""


class Guard:
    """The ASGI middleware described in the module docstring."""

    def __init__(self, app: ASGIApp, *, token: str | None, sessions: Sessions | None = None,
                 failures: Failures | None = None):
        self.app = app
        self.token = token
        self.sessions = sessions or Sessions()
        self.failures = failures or Failures()
        self.in_flight = 0  # only the event loop's thread changes it

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        started = [False]
        send = _with_headers(send, started)
        refusal = self._refusal(scope, headers)
        if refusal:
            return await _plain(send, *refusal)
        if self.in_flight >= IN_FLIGHT_MAX:
            return await _plain(send, 503, "503 busy: try again in a moment", [(b"retry-after", b"5")])
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        except Exception:
            log.exception("web view: %s %s failed", scope["method"], scope["path"])
            if not started[0]:
                await _plain(send, 500, "500 internal error: the server's log has the details", [])
        finally:
            self.in_flight -= 1

    def _refusal(self, scope: Scope, headers: dict[bytes, bytes]) -> tuple[int, str, list] | None:
        login_post = self.token is not None and scope["method"] == "POST" and scope["path"] in POST_PATHS
        if scope["method"] not in ("GET", "HEAD") and not login_post:
            return 405, "405 method not allowed: this web view is read-only", [(b"allow", b"GET, HEAD")]
        if self.token is None:
            host = headers.get(b"host", b"").decode("latin-1").rsplit(":", 1)[0] if b"host" in headers else ""
            if not is_loopback(host.lower()):
                return 421, "421 this web view answers on the loopback address only", []
            return None
        wait = self.failures.blocked_for(client_of(scope))
        if wait > 0:
            return 429, "429 too many failed logins: wait, then try again", [
                (b"retry-after", str(math.ceil(wait)).encode())]
        if scope["path"].startswith(OPEN_PATHS):
            return None
        bearer, sid = presented(headers)
        if self.sessions.valid(sid) or token_matches(bearer, self.token):
            return None
        if bearer is not None:  # a wrong guess counts (a stale session id is no guess: 256 random bits)
            self.failures.failed(client_of(scope))
        return 401, "401 unauthorized: log in at /login (the token is in REGISTRY_UI_TOKEN)", [
            (b"www-authenticate", b'Bearer realm="cellar"')]


def _with_headers(send: Callable, started: list[bool]) -> Callable:
    async def wrapped(message: dict) -> None:
        if message["type"] == "http.response.start":
            started[0] = True
            message["headers"] = [*message.get("headers", []), *HEADERS]
        await send(message)
    return wrapped


async def _plain(send: Callable, status: int, text: str, extra: list) -> None:
    body = (text + "\n").encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), *extra]})
    await send({"type": "http.response.body", "body": body})
