"""``registry ui``: where to listen, whether a token is required, and serving with uvicorn.

Loopback is the default and needs no token; any other address is reachable by others, so it
requires one (from ``REGISTRY_UI_TOKEN``, at least 16 characters) and says so on start.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping

from pydantic import BaseModel, Field

from registry import InvalidInput, Registry
from registry.web.app import create_app
from registry.web.security import MIN_TOKEN_LENGTH, TOKEN_VAR, is_loopback

DEFAULT_LISTEN = "127.0.0.1:8765"
_LISTEN = re.compile(r"(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(?P<port>\d{1,5})")


class UiListen(BaseModel):
    """Where the web view listens and the token it requires (None on loopback without one)."""

    host: str
    port: int
    loopback: bool
    token: str | None = Field(default=None, exclude=True, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    @property
    def notice(self) -> str:
        """What ``registry ui`` prints on start."""
        if self.token is None:
            return f"Cellar web view (read-only) on {self.url} (loopback only; no token needed). Ctrl-C stops it."
        where = "loopback" if self.loopback else "reachable from other machines"
        return (f"Cellar web view (read-only) on {self.url} ({where}): a token is required. Send "
                f"`Authorization: Bearer $REGISTRY_UI_TOKEN`, or open {self.url}login in a browser. "
                "Ctrl-C stops it.")


def ui_listen(listen: str = DEFAULT_LISTEN, *, environ: Mapping[str, str] = os.environ) -> UiListen:
    """Parse ``HOST:PORT`` and decide the token; InvalidInput when a non-loopback address has none."""
    match = _LISTEN.fullmatch(listen.strip())
    if not match or not 0 < int(match["port"]) < 65536:
        raise InvalidInput(f"--listen {listen!r}: write HOST:PORT, e.g. 127.0.0.1:8765 or [::1]:8765")
    host, port = match["host"], int(match["port"])
    token = environ.get(TOKEN_VAR) or None
    loopback = is_loopback(host)
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise InvalidInput(f"{TOKEN_VAR} is shorter than {MIN_TOKEN_LENGTH} characters: "
                           "use a long random one, e.g. `python -c 'import secrets; print(secrets.token_urlsafe())'`")
    if not loopback and token is None:
        raise InvalidInput(f"--listen {host}:{port} is reachable from other machines: set {TOKEN_VAR} to a long "
                           "random token first (or listen on 127.0.0.1)")
    return UiListen(host=host, port=port, loopback=loopback, token=token)


def serve_ui(listen: UiListen, opener: Callable[[], Registry]) -> None:
    """Serve the web view until interrupted (uvicorn, one process)."""
    import uvicorn  # here: the rest of the CLI never pays for importing it

    logging.getLogger("uvicorn.access").addFilter(_HideTokens())
    uvicorn.run(create_app(opener, token=listen.token), host=listen.host.strip("[]"), port=listen.port,
                log_level="info", server_header=False, date_header=False)


class _HideTokens(logging.Filter):
    """The access log shows paths with their query: ``/login?token=...`` must not land in it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(re.sub(r"token=[^&\s]*", "token=***", a) if isinstance(a, str) else a
                                for a in record.args)
        return True
