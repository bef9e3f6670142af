"""``registry ui``: where to listen, whether a token is required, and serving with uvicorn.

Loopback is the default and needs no token; any other address is reachable by others, so it
requires one (from ``REGISTRY_UI_TOKEN``: at least 16 characters and 48 bits by a Shannon
estimate) and says so on start. TLS with ``--tls-cert/--tls-key``; behind a reverse proxy,
``X-Forwarded-For`` and ``-Proto`` are believed only from the addresses ``--trust-proxy`` names.

Slow clients: a connection has ``HEADER_TIMEOUT_S`` to send a request's headers (and body),
``IDLE_TIMEOUT_S`` between requests; ``security.IN_FLIGHT_MAX`` requests are served at once (a
503 beyond), on at most ``MAX_CONNECTIONS`` connections. The
access log shows paths without their query (a token in any spelling stays out of it). SIGTERM
and Ctrl-C stop the server within ``SHUTDOWN_S``.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from registry import InvalidInput, Registry
from registry.web.app import create_app
from registry.web.security import HEADERS, TOKEN_VAR, is_loopback, token_problem

DEFAULT_LISTEN = "127.0.0.1:8765"
HEADER_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 5.0
MAX_CONNECTIONS = 1000  # a backstop: uvicorn answers 503 beyond (requests are capped lower, in Guard)
SHUTDOWN_S = 3.0
# A thread computing a large page hands the interpreter over every SWITCH_S, not every 5 ms: a
# small page needs it a few dozen times (each database read gives it up), so this is its latency
SWITCH_S = 0.001
_ADDRESS = re.compile(r"[0-9a-fA-F:.]+(?:/\d{1,3})?")
_LISTEN = re.compile(r"(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(?P<port>\d{1,5})")


class UiListen(BaseModel):
    """Where the web view listens and the token it requires (None on loopback without one)."""

    host: str
    port: int
    loopback: bool
    token: str | None = Field(default=None, exclude=True, repr=False)
    tls_cert: str | None = None
    tls_key: str | None = None
    trust_proxy: list[str] = Field(default_factory=list)  # addresses whose X-Forwarded-* headers are believed

    @property
    def url(self) -> str:
        return f"{'https' if self.tls_cert else 'http'}://{self.host}:{self.port}/"

    @property
    def notice(self) -> str:
        """What ``registry ui`` prints on start."""
        if self.token is None:
            return f"Cellar web view (read-only) on {self.url} (loopback only; no token needed). Ctrl-C stops it."
        where = "loopback" if self.loopback else "reachable from other machines"
        return (f"Cellar web view (read-only) on {self.url} ({where}): a token is required. Send "
                f"`Authorization: Bearer $REGISTRY_UI_TOKEN`, or open {self.url}login in a browser. "
                "Ctrl-C stops it.")


def ui_listen(listen: str = DEFAULT_LISTEN, *, environ: Mapping[str, str] = os.environ,
              tls_cert: str | None = None, tls_key: str | None = None,
              trust_proxy: list[str] | None = None) -> UiListen:
    """Parse ``HOST:PORT`` and decide the token; InvalidInput when a non-loopback address has none,
    the token is weak, or the TLS files are not a readable pair."""
    match = _LISTEN.fullmatch(listen.strip())
    if not match or not 0 < int(match["port"]) < 65536:
        raise InvalidInput(f"--listen {listen!r}: write HOST:PORT, e.g. 127.0.0.1:8765 or [::1]:8765")
    host, port = match["host"], int(match["port"])
    token = environ.get(TOKEN_VAR) or None
    loopback = is_loopback(host)
    if token is not None and (problem := token_problem(token)):
        raise InvalidInput(f"{TOKEN_VAR} {problem}: use a long random one, "
                           "e.g. `python -c 'import secrets; print(secrets.token_urlsafe())'`")
    if not loopback and token is None:
        raise InvalidInput(f"--listen {host}:{port} is reachable from other machines: set {TOKEN_VAR} to a long "
                           "random token first (or listen on 127.0.0.1)")
    if bool(tls_cert) != bool(tls_key):
        raise InvalidInput("--tls-cert and --tls-key go together: give both (a PEM certificate and its key)")
    for flag, path in (("--tls-cert", tls_cert), ("--tls-key", tls_key)):
        if path and not (Path(path).is_file() and os.access(path, os.R_OK)):
            raise InvalidInput(f"{flag} {path}: no readable file there")
    proxies = [p.strip() for p in trust_proxy or [] if p.strip()]
    for p in proxies:
        if not _ADDRESS.fullmatch(p):
            raise InvalidInput(f"--trust-proxy {p!r}: give the proxy's IP address or network "
                               "(e.g. 127.0.0.1, 10.0.0.0/8)")
    return UiListen(host=host, port=port, loopback=loopback, token=token, tls_cert=tls_cert, tls_key=tls_key,
                    trust_proxy=proxies)


def serve_ui(listen: UiListen, opener: Callable[[], Registry]) -> None:
    """Serve the web view until SIGTERM or Ctrl-C (uvicorn, one process)."""
    import uvicorn  # here: the rest of the CLI never pays for importing it

    logging.getLogger("uvicorn.access").addFilter(_HideQueries())
    sys.setswitchinterval(SWITCH_S)
    tls: dict[str, Any] = {"ssl_certfile": listen.tls_cert, "ssl_keyfile": listen.tls_key} if listen.tls_cert else {}
    uvicorn.run(create_app(opener, token=listen.token), host=listen.host.strip("[]"), port=listen.port,
                log_level="info", server_header=False, date_header=False, http=slow_client_protocol(),
                proxy_headers=bool(listen.trust_proxy), forwarded_allow_ips=listen.trust_proxy or None,
                timeout_keep_alive=int(IDLE_TIMEOUT_S), limit_concurrency=MAX_CONNECTIONS,
                timeout_graceful_shutdown=int(SHUTDOWN_S), **tls)


def slow_client_protocol(header_timeout_s: float = HEADER_TIMEOUT_S) -> type:
    """uvicorn's h11 protocol, closing a connection whose request (headers, then body) is not in
    within ``header_timeout_s`` of the connection, or of the previous response: uvicorn bounds
    the idle time between requests but not a request sent a byte at a time."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class SlowClientProtocol(H11Protocol):
        _deadline: Any = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = self.loop.call_later(header_timeout_s, self._late)

        def send_400_response(self, msg: str) -> None:
            """uvicorn's answer to a request that is not HTTP, with the security headers too."""
            body = msg.encode("ascii", "replace")
            headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
                       (b"connection", b"close"), *HEADERS]
            for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"), h11.Data(data=body),
                          h11.EndOfMessage()):
                self.transport.write(self.conn.send(event) or b"")
            self.transport.close()

        def _late(self) -> None:
            self._deadline = None
            if self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
                self.transport.close()  # headers or body still coming: a slow client holds no slot

    return SlowClientProtocol


class _HideQueries(logging.Filter):
    """The access log shows paths without their query: ``/login?token=...`` (``%74oken=``, any
    spelling) must not land in it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(a.split("?", 1)[0] + "?..." if isinstance(a, str) and "?" in a and a.startswith("/")
                                else a for a in record.args)
        return True
