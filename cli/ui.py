"""``registry ui``: the read-only web view (pages in registry.web, served by uvicorn)."""

from __future__ import annotations

import typer

from cli.app import app, open_registry


@app.command("ui")
def ui(
    listen: str = typer.Option("127.0.0.1:8765", "--listen",
                               help="HOST:PORT to serve on. Any address but the loopback needs REGISTRY_UI_TOKEN."),
    tls_cert: str = typer.Option(None, "--tls-cert", help="Serve HTTPS with this PEM certificate (with --tls-key)."),
    tls_key: str = typer.Option(None, "--tls-key", help="The certificate's PEM private key."),
    trust_proxy: list[str] = typer.Option(None, "--trust-proxy",
                                          help="A reverse proxy's address: believe its X-Forwarded-For/-Proto "
                                               "(repeat for more). Without it, those headers are ignored."),
) -> None:
    """Serve a read-only web view: versions, diffs, environments with their health chart, the audit trail.

    Every page is also JSON (`?format=json` or `/api/...`). Loopback needs no token; any other
    address requires REGISTRY_UI_TOKEN (send it as `Authorization: Bearer`, or log in at /login).

    Example:  registry ui --listen 127.0.0.1:8765
              registry ui --listen 0.0.0.0:8443 --tls-cert cert.pem --tls-key key.pem
    """
    from registry import serve_ui, ui_listen

    # refuses a non-loopback address without a token (or a weak one, or half a TLS pair) before opening anything
    where = ui_listen(listen, tls_cert=tls_cert, tls_key=tls_key, trust_proxy=trust_proxy)
    open_registry().close()  # a missing or out-of-date registry is reported now, not on the first request
    print(where.notice, flush=True)
    serve_ui(where, open_registry)
