"""The web view's Starlette app: ``create_app(registry_opener, token=None)``.

Why Starlette: the pages are server-rendered templates over an existing Python API whose
results are already pydantic models, so a request router, Jinja2 templates and static files
are all we need. FastAPI would add OpenAPI generation and a dependency-injection layer we
would not use (and its start-up cost); Starlette is what it is built on, small and typed.

Each page is one function in ``registry.web.pages``; the route renders its model as HTML, or
as JSON (the same model) for ``/api/...``, ``?format=json`` or ``Accept: application/json``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from pathlib import Path
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from registry import CellarError, NotFound, Registry
from registry.web import pages
from registry.web.security import COOKIE, Guard, token_matches
from registry.web.sidebyside import side_by_side

HERE = Path(__file__).parent
Opener = Callable[[], Registry]
_STATUS = {"NotFound": 404, "InvalidInput": 400, "DatabaseUnavailable": 503, "DatabaseLocked": 503}


class Session:
    """One open ``Registry`` for the app's lifetime, used by one request at a time: the registry
    (its engines, stat cache) is not made for threads, and opening one per request costs a schema
    check and a sweep of the blob store's temp folder."""

    def __init__(self, opener: Opener):
        self.opener = opener
        self._lock = threading.Lock()
        self._reg: Registry | None = None

    @contextmanager
    def registry(self) -> Iterator[Registry]:
        with self._lock:
            if self._reg is None:
                self._reg = self.opener()
            yield self._reg

    def close(self) -> None:
        with self._lock:
            if self._reg is not None:
                self._reg.close()
                self._reg = None


def create_app(registry_opener: Opener, token: str | None = None) -> Starlette:
    """The read-only web view over the registry ``registry_opener()`` opens (once, on first use).

    With ``token``, every page needs it (``Authorization: Bearer`` or the cookie ``/login`` sets);
    without, the app answers only requests addressed to the loopback (see ``registry.web.security``)."""
    session = Session(registry_opener)
    views = _Views(session, _templates(), token)

    @asynccontextmanager
    async def lifespan(_app):
        views.verifier.prime()  # the chain is being verified before anyone opens the audit page
        yield
        session.close()

    routes = [Route("/login", views.login, methods=["GET"]),
              Mount("/static", StaticFiles(directory=HERE / "static"), name="static")]
    for path, name in _PAGES:
        endpoint = views.page(name)
        routes.append(Route(path, endpoint, methods=["GET"]))
        if path != "/":
            routes.append(Route("/api" + path, endpoint, methods=["GET"]))
    app = Starlette(routes=routes, middleware=[Middleware(Guard, token=token)], lifespan=lifespan)
    app.state.session = session
    return app


_PAGES = [("/", "versions"), ("/versions", "versions"), ("/v/{model}/{version}", "version"),
          ("/v/{model}/{version}/prompts/{prompt}", "prompt"), ("/diff", "diff"), ("/envs", "environments"),
          ("/envs/{name}", "environment"), ("/audit", "audit")]


class _Views:
    def __init__(self, session: Session, templates: Jinja2Templates, token: str | None):
        self.session = session
        self.templates = templates
        self.token = token
        self.verifier = pages.AuditVerifier(session.opener)

    def page(self, name: str) -> Callable[[Request], Response]:
        build = getattr(self, f"_{name}")

        def endpoint(request: Request) -> Response:  # sync: Starlette runs it in a worker thread
            try:
                with self.session.registry() as reg:
                    page = build(reg, request)
            except CellarError as exc:
                return self._error(request, exc)
            return self._render(request, name, page)

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

    def _diff(self, reg: Registry, request: Request) -> BaseModel:
        return pages.diff_page(reg, request.query_params.get("a"), request.query_params.get("b"))

    def _environments(self, reg: Registry, request: Request) -> BaseModel:
        return pages.environments_page(reg)

    def _environment(self, reg: Registry, request: Request) -> BaseModel:
        return pages.environment_page(reg, request.path_params["name"], since=request.query_params.get("since"))

    def _audit(self, reg: Registry, request: Request) -> BaseModel:
        q = request.query_params
        if q.get("verify") == "now":
            self.verifier.result(reg, fresh=True)
        return pages.audit_page(reg, self.verifier, page=_int(q.get("page"), 1), before=_cursor(q.get("before")),
                                after=_cursor(q.get("after")), **{k: q.get(k) for k in pages.AUDIT_FILTERS})

    # --- rendering ---------------------------------------------------------------------------

    def _render(self, request: Request, name: str, page: BaseModel) -> Response:
        if _wants_json(request):
            return Response(page.model_dump_json(), media_type="application/json")
        extra = {"rows": side_by_side} if name == "diff" else {}
        return self.templates.TemplateResponse(request, f"{name}.html", {"page": page, "nav": name, **extra})

    def _error(self, request: Request, exc: CellarError) -> Response:
        status = _STATUS.get(type(exc).__name__, 404 if isinstance(exc, NotFound) else 500)
        if _wants_json(request):
            return Response(_ErrorBody(error=str(exc)).model_dump_json(), status_code=status,
                            media_type="application/json")
        return self.templates.TemplateResponse(request, "error.html", {"message": str(exc), "status": status,
                                                                       "nav": ""}, status_code=status)

    def login(self, request: Request) -> Response:
        """``/login?token=...`` (or the form there) sets the cookie, then sends the browser on
        to ``/`` so the token leaves the address bar."""
        given = request.query_params.get("token")
        if self.token is None:
            return RedirectResponse("/", status_code=303)
        if given is None:
            return self.templates.TemplateResponse(request, "login.html", {"nav": "", "wrong": False})
        if not token_matches(given, self.token):
            return self.templates.TemplateResponse(request, "login.html", {"nav": "", "wrong": True},
                                                   status_code=401)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, given, httponly=True, samesite="strict", path="/")
        return response


class _ErrorBody(BaseModel):
    error: str


def _wants_json(request: Request) -> bool:
    if request.url.path.startswith("/api/") or request.query_params.get("format") == "json":
        return True
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text else default
    except ValueError:
        return default


def _templates() -> Jinja2Templates:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(when=_when, short=_short, size=_size)
    env.globals["page_query"] = _page_query
    return Jinja2Templates(env=env)


def _page_query(filters: dict[str, str | None], page: int, **cursor: int) -> str:
    return urlencode({**{k: v for k, v in filters.items() if v}, **cursor, "page": page})


def _cursor(text: str | None) -> int | None:
    """An event id from the address, or None (a bad one reads as no cursor: the first page)."""
    value = _int(text, 0)
    return value if value > 0 else None


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
