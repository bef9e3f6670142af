"""Fixtures for the web view: a demo-like registry, the app served by uvicorn on a free port,
and a real browser (Debian's chromium driven by Playwright; required under CI=true)."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from registry.api import Registry
from registry.web import create_app
from tests.conftest import free_port, need
from tests.web import demo

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TOKEN = "a-long-test-token-0123456789"


class _Clock:
    """Events an hour apart: a chart of a demo built in one second would have nothing to show."""

    def __init__(self):
        self.at = datetime.now(UTC) - timedelta(days=2)

    def now(self):
        return self.at

    def tick(self, seconds: float = 1):
        self.at += timedelta(seconds=seconds)


@dataclass
class Demo:
    home: Path
    fake: object
    opener: object = field(default=None)


@pytest.fixture(scope="module")
def demo_registry(tmp_path_factory) -> Iterator[Demo]:
    """The demo registry (see tests/web/demo.py), built once per test module on SQLite."""
    root = tmp_path_factory.mktemp("web")
    with pytest.MonkeyPatch.context() as mp:
        for var in ("REGISTRY_HOME", "REGISTRY_DB_URL"):
            mp.delenv(var, raising=False)
        mp.setenv("SUPPORT_API_TOKEN", "canary-secret-value-never-shown")
        mp.setenv("GIT_CONFIG_GLOBAL", str(root / "gitconfig"))
        clock = _Clock()
        mp.setattr("registry.clock.now", clock.now)
        reg, _ = Registry.init(root / "home", actor="bob")
        reg.close()
        fake = demo.fake_engine()
        demo.build(root / "home", root / "work", fake, clock=clock)
        yield Demo(root / "home", fake, demo.opener(root / "home", fake))


@dataclass
class Served:
    url: str
    app: object


@pytest.fixture(scope="module")
def served(demo_registry) -> Iterator[Served]:
    """The web view of the demo registry, served by uvicorn in a thread (loopback, no token)."""
    yield from _serve(create_app(demo_registry.opener))


@pytest.fixture(scope="module")
def served_with_token(demo_registry) -> Iterator[Served]:
    """The same, started with a token (what a non-loopback ``--listen`` requires)."""
    yield from _serve(create_app(demo_registry.opener, token=TOKEN))


def _serve(app) -> Iterator[Served]:
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the web view did not start within 20 s")
        time.sleep(0.05)
    yield Served(f"http://127.0.0.1:{port}", app)
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="session")
def browser():
    """Headless chromium (Debian's package; Playwright downloads no browser here)."""
    if not Path(CHROMIUM).exists() or not shutil.which("chromium"):
        need("chromium", f"{CHROMIUM} is missing (run scripts/setup-browser.sh)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need("playwright", "pip install playwright (it is in the test extra)")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class Watched:
    """A page, and what it said: console errors, uncaught exceptions, dialogs (alert: an XSS)."""

    page: object
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)


@pytest.fixture
def tab(browser) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    watched = Watched(page)
    page.on("console", lambda m: m.type == "error" and watched.errors.append(m.text))
    page.on("pageerror", lambda exc: watched.errors.append(str(exc)))

    def on_dialog(dialog):
        watched.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    yield watched
    context.close()
