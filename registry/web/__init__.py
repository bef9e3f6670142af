"""The read-only web view (``registry ui``): pages over the public ``Registry`` API.

    app = create_app(Registry.open)                 # a Starlette app; uvicorn serves it
    serve_ui(ui_listen("127.0.0.1:8765"), Registry.open)

This package imports only the public ``registry`` API and its own modules (no SQL, no store):
``tests/web/test_web_imports.py`` checks it. Names load lazily, so importing a pure module
(``registry.web.chart``) does not import Starlette.
"""

from __future__ import annotations

from importlib import import_module

_WHERE = {"create_app": "registry.web.app", "serve_ui": "registry.web.serving", "ui_listen": "registry.web.serving",
          "UiListen": "registry.web.serving"}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'registry.web' has no attribute {name!r}")
