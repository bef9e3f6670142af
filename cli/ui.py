"""``registry ui``: the read-only web view (pages in registry.web, served by uvicorn)."""

from __future__ import annotations

import typer

from cli.app import app, open_registry


@app.command("ui")
def ui(
    listen: str = typer.Option("127.0.0.1:8765", "--listen",
                               help="HOST:PORT to serve on. Any address but the loopback needs REGISTRY_UI_TOKEN."),
) -> None:
    """Serve a read-only web view: versions, diffs, environments with their health chart, the audit trail.

    Every page is also JSON (`?format=json` or `/api/...`). Loopback needs no token; any other
    address requires REGISTRY_UI_TOKEN (send it as `Authorization: Bearer`, or log in at /login).

    Example:  registry ui --listen 127.0.0.1:8765
    """
    from registry import serve_ui, ui_listen

    where = ui_listen(listen)  # refuses a non-loopback address without a token, before opening anything
    open_registry().close()  # a missing or out-of-date registry is reported now, not on the first request
    print(where.notice, flush=True)
    serve_ui(where, open_registry)
