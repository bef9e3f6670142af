"""Screenshots of the web view's main pages for the README (docs/screenshots/), taken with
Debian's chromium against scripts/demo.sh's story on the fake engine (no Docker needed).

    python -m tests.web.screenshots [docs/screenshots]
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

PAGES = {
    "versions.png": "/versions",
    "version.png": "/v/support-bot/v1.1",
    "diff.png": "/diff?a=v1.0&b=v1.2",
    "environment.png": "/envs/staging",
    "environments.png": "/envs",
    "audit.png": "/audit",
}


def main(out: Path) -> None:
    from playwright.sync_api import sync_playwright

    from registry.api import Registry
    from registry.web import create_app
    from tests.web import demo
    from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS, _Clock, _serve

    root = Path(tempfile.mkdtemp(prefix="cellar-shots-"))
    os.environ.update(SUPPORT_API_TOKEN="demo-secret-never-shown", GIT_CONFIG_GLOBAL=str(root / "gitconfig"))
    clock = _Clock()
    import registry.clock

    registry.clock.now = clock.now  # events hours apart, as a real week would space them
    reg, _ = Registry.init(root / "home", actor="ops <ops@example.org>")
    reg.close()
    fake = demo.fake_engine()
    demo.build_examples(root / "home", root / "work", fake, clock=clock)
    out.mkdir(parents=True, exist_ok=True)
    for served in _serve(create_app(demo.opener(root / "home", fake))):
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1200, "height": 820})
            for name, path in PAGES.items():
                page.goto(served.url + path)
                page.screenshot(path=str(out / name))
                print(f"{out / name}: {(out / name).stat().st_size // 1024} KiB")
            browser.close()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots"))
