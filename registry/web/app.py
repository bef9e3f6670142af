"""The web view's Starlette app: ``create_app(registry_opener, token=None)``.

Why Starlette: the pages are server-rendered templates over an existing Python API whose
results are already pydantic models, so a request router, Jinja2 templates and static files
are all we need. FastAPI would add OpenAPI generation and a dependency-injection layer we
would not use (and its start-up cost); Starlette is what it is built on, small and typed.

Each page is one function in ``registry.web.pages``; the route renders its model as HTML, or
as JSON (the same model) for ``/api/...``, ``?format=json`` or ``Accept: application/json``.

Requests run concurrently: each takes an open ``Registry`` from a small pool (no app-wide
lock), and the pages whose cost grows with what they show (diff, blame, a prompt's text, a
fresh audit check) run at most ``HEAVY_AT_ONCE`` at a time, so they queue among themselves and
never in front of the small ones. Every user text a template shows passes ``visible_text``:
bidi overrides and control characters appear as ``\\u202e``, never raw.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from registry import CellarError, InvalidInput, NotFound, Registry, visible_text
from registry.web import pages
from registry.web.security import COOKIE, SESSION_TTL_S, Failures, Guard, Sessions, client_of, presented, token_matches
from registry.web.sidebyside import side_by_side

HERE = Path(__file__).parent
Opener = Callable[[], Registry]
_STATUS = {"NotFound": 404, "InvalidInput": 400, "DatabaseUnavailable": 503, "DatabaseLocked": 503}
POOL_SIZE = 8  # open registries at most: requests beyond wait for one (up to WAIT_S)
HEAVY_AT_ONCE = 1
HEAVY = {"diff", "prompt", "raw"}
WAIT_S = 30.0  # a request that gets no registry, or no heavy slot, in this long is a 503
LOGIN_BODY_MAX = 4096
ID_MAX = 2**63 - 1


class Busy(Exception):
    """Every registry of the pool (or every heavy slot) stayed busy for ``WAIT_S``."""


class Session:
    """Open ``Registry`` objects, each used by one request at a time (a registry, its engines
    and stat cache, is not made for threads), at most ``size`` of them: opening one per request
    would cost a schema check and a sweep of the blob store's temp folder."""

    def __init__(self, opener: Opener, size: int = POOL_SIZE):
        self.opener, self.size = opener, size
        self._cond = threading.Condition()
        self._free: list[Registry] = []
        self._open = 0

    @contextmanager
    def registry(self, wait_s: float = WAIT_S) -> Iterator[Registry]:
        with self._cond:
            if not self._cond.wait_for(lambda: self._free or self._open < self.size, timeout=wait_s):
                raise Busy()
            reg = self._free.pop() if self._free else None
            if reg is None:
                self._open += 1
        if reg is None:
            try:
                reg = self.opener()
            except BaseException:
                with self._cond:
                    self._open -= 1
                    self._cond.notify()
                raise
        try:
            yield reg
        finally:
            with self._cond:
                self._free.append(reg)
                self._cond.notify()

    def close(self) -> None:
        with self._cond:
            free, self._free = self._free, []
            self._open -= len(free)
        for reg in free:
            reg.close()


def create_app(registry_opener: Opener, token: str | None = None) -> Starlette:
    """The read-only web view over the registry ``registry_opener()`` opens (once, on first use).

    With ``token``, every page needs it (``Authorization: Bearer`` or the cookie ``/login`` sets);
    without, the app answers only requests addressed to the loopback (see ``registry.web.security``)."""
    session = Session(registry_opener)
    sessions, failures = Sessions(), Failures()
    templates = _templates()
    templates.env.globals["logout"] = COOKIE if token is not None else ""  # "Log out" for a session
    views = _Views(session, templates, token, sessions, failures)

    @asynccontextmanager
    async def lifespan(_app):
        views.heavy = asyncio.Semaphore(HEAVY_AT_ONCE)  # made on the loop that serves
        views.verifier.prime()  # the chain is being verified before anyone opens the audit page
        yield
        session.close()

    routes = [Route("/login", views.login, methods=["GET", "POST"]),
              Route("/logout", views.logout, methods=["GET", "POST"]),
              Mount("/static", StaticFiles(directory=HERE / "static"), name="static")]
    for path, name in _PAGES:
        endpoint = views.page(name)
        routes.append(Route(path, endpoint, methods=["GET"]))
        if path != "/":
            routes.append(Route("/api" + path, endpoint, methods=["GET"]))
    app = Starlette(routes=routes, lifespan=lifespan,
                    middleware=[Middleware(Guard, token=token, sessions=sessions, failures=failures)])
    app.router.redirect_slashes = False  # its redirect is built from the Host header a client sent
    app.state.session = session
    return app


_PAGES = [("/", "versions"), ("/versions", "versions"), ("/v/{model}/{version}", "version"),
          ("/v/{model}/{version}/prompts/{prompt}", "prompt"), ("/diff", "diff"), ("/envs", "environments"),
          ("/envs/{name}", "environment"), ("/audit", "audit"),
          ("/v/{model}/{version}/prompts/{prompt}/raw", "raw")]


class _Views:
    def __init__(self, session: Session, templates: Jinja2Templates, token: str | None,
                 sessions: Sessions, failures: Failures):
        self.session = session
        self.templates = templates
        self.token = token
        self.sessions, self.failures = sessions, failures
        self.verifier = pages.AuditVerifier(session.opener)
        self.heavy: asyncio.Semaphore | None = None

    def page(self, name: str) -> Callable[[Request], Any]:
        build = getattr(self, f"_{name}")

        def serve(request: Request) -> Response:  # in a worker thread
            try:
                with self.session.registry() as reg:
                    page = build(reg, request)
                    if isinstance(page, str):
                        return PlainTextResponse(page)
                    return self._render(request, name, page)
            except CellarError as exc:
                return self._error(request, exc)
            except Busy:
                return self._busy(request)

        async def endpoint(request: Request) -> Response:
            heavy = name in HEAVY or (name == "audit" and request.query_params.get("verify") == "now")
            if not heavy:
                return await run_in_threadpool(serve, request)
            if self.heavy is None:  # an app run without its lifespan
                self.heavy = asyncio.Semaphore(HEAVY_AT_ONCE)
            heavy_slots = self.heavy
            try:
                await asyncio.wait_for(heavy_slots.acquire(), WAIT_S)
            except TimeoutError:
                return self._busy(request)
            try:
                return await run_in_threadpool(serve, request)
            finally:
                heavy_slots.release()

        return endpoint

    # --- one builder per page: query parameters in, page model out ---------------------------

    def _versions(self, reg: Registry, request: Request) -> BaseModel:
        q = request.query_params
        return pages.versions_page(reg, model=q.get("model"), page=_int(q.get("page"), 1))

    def _version(self, reg: Registry, request: Request) -> BaseModel:
        p = request.path_params
        return pages.version_page(reg, p["model"], p["version"])

    def _prompt(self, reg: Registry, request: Request) -> BaseModel:
        p = request.path_params
        return pages.prompt_page(reg, p["model"], p["version"], p["prompt"])

    def _raw(self, reg: Registry, request: Request) -> str:
        p = request.path_params
        return pages.prompt_raw(reg, p["model"], p["version"], p["prompt"])

    def _diff(self, reg: Registry, request: Request) -> BaseModel:
        return pages.diff_page(reg, request.query_params.get("a"), request.query_params.get("b"))

    def _environments(self, reg: Registry, request: Request) -> BaseModel:
        return pages.environments_page(reg)

    def _environment(self, reg: Registry, request: Request) -> BaseModel:
        return pages.environment_page(reg, request.path_params["name"], since=request.query_params.get("since"),
                                      at=request.query_params.get("at"))

    def _audit(self, reg: Registry, request: Request) -> BaseModel:
        q = request.query_params
        if q.get("verify") == "now" and _same_origin(request):  # an <img> on another site cannot start one
            self.verifier.verify_now()
        return pages.audit_page(reg, self.verifier, page=_int(q.get("page"), 1), before=_cursor(q.get("before")),
                                after=_cursor(q.get("after")), **{k: q.get(k) for k in pages.AUDIT_FILTERS})

    # --- rendering ---------------------------------------------------------------------------

    def _render(self, request: Request, name: str, page: BaseModel) -> Response:
        if _wants_json(request):
            return Response(page.model_dump_json(), media_type="application/json")
        extra = {"rows": side_by_side} if name == "diff" else {}
        return self.templates.TemplateResponse(request, f"{name}.html", {"page": page, "nav": name, **extra})

    def _error(self, request: Request, exc: CellarError, status: int | None = None) -> Response:
        status = status or _STATUS.get(type(exc).__name__, 404 if isinstance(exc, NotFound) else 500)
        if _wants_json(request):
            return Response(_ErrorBody(error=str(exc)).model_dump_json(), status_code=status,
                            media_type="application/json")
        return self.templates.TemplateResponse(request, "error.html", {"message": str(exc), "status": status,
                                                                       "nav": ""}, status_code=status)

    def _busy(self, request: Request) -> Response:
        exc = CellarError("the web view is busy: try again in a moment")
        response = self._error(request, exc, status=503)
        response.headers["retry-after"] = "5"
        return response

    async def login(self, request: Request) -> Response:
        """The login form; the token (posted by the form, or ``/login?token=...``) starts a
        session: a random id in a cookie (never the token itself), ``Secure`` over HTTPS, ending
        after ``SESSION_TTL_S`` or at ``/logout``. Then on to ``/``, out of the address bar."""
        if self.token is None:
            return RedirectResponse("/", status_code=303)
        given = request.query_params.get("token")
        if request.method == "POST":
            if not _same_origin(request):
                return PlainTextResponse("403 a login form of another site is refused", status_code=403)
            body = await request.body() if int(request.headers.get("content-length") or 0) <= LOGIN_BODY_MAX else b""
            given = (parse_qs(body.decode("utf-8", "replace")).get("token") or [""])[0]
        if given is None:
            return self.templates.TemplateResponse(request, "login.html", {"nav": "", "wrong": False})
        if not token_matches(given, self.token):
            self.failures.failed(client_of(request.scope))
            return self.templates.TemplateResponse(request, "login.html", {"nav": "", "wrong": True},
                                                   status_code=401)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, self.sessions.start(), max_age=int(SESSION_TTL_S), httponly=True,
                            samesite="strict", path="/", secure=request.url.scheme == "https")
        return response

    def logout(self, request: Request) -> Response:
        """Ends this browser's session (the id is forgotten here, the cookie deleted)."""
        self.sessions.end(presented(dict(request.scope["headers"]))[1])
        response = RedirectResponse("/login" if self.token else "/", status_code=303)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict",
                               secure=request.url.scheme == "https")
        return response


class _ErrorBody(BaseModel):
    error: str


def _wants_json(request: Request) -> bool:
    if request.url.path.startswith("/api/") or request.query_params.get("format") == "json":
        return True
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def _same_origin(request: Request) -> bool:
    """False for a request a page of another site made (``Sec-Fetch-Site``, or ``Origin``)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    return origin is None or origin.split("://", 1)[-1] == request.headers.get("host")


def _int(text: str | None, default: int, *, name: str = "page") -> int:
    """A positive number from the address (``default`` when absent); InvalidInput (400) otherwise."""
    if not text:
        return default
    if not text.isascii() or not text.isdigit() or len(text) > 19 or not 0 < int(text) <= ID_MAX:
        raise InvalidInput(f"{name}={text[:40]!r} is not a number from 1 to {ID_MAX}")
    return int(text)


def _templates() -> Jinja2Templates:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(when=_when, short=_short, size=_size)
    env.finalize = _shown
    env.globals["page_query"] = _page_query
    return Jinja2Templates(env=env)


def _shown(value: Any) -> Any:
    """Every ``{{ ... }}`` of a template: user text with its invisible characters made visible
    (markup the app built itself, such as the chart, is left alone)."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return visible_text(value)
    return value


def _page_query(filters: dict[str, str | None], page: int, **cursor: int) -> str:
    return urlencode({**{k: v for k, v in filters.items() if v}, **cursor, "page": page})


def _cursor(text: str | None) -> int | None:
    """An event id from the address, or None; a bad one is InvalidInput (400)."""
    return _int(text, 0, name="event id") or None


def _when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S") if at else ""


def _short(digest: str | None, length: int = 12) -> str:
    """``sha256:abcdef...`` -> ``abcdef123456``: enough to tell digests apart on a page."""
    if not digest:
        return ""
    return digest.split(":", 1)[-1][:length]


def _size(n: float | None) -> str:
    if n is None:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""
