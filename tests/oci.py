"""A real OCI registry for the tests: Debian's ``docker-registry`` (Distribution 2.8), on a free
loopback port, its storage and access log in a temp folder (scripts/setup-oci-registry.sh
installs it). Optionally with TLS (a CA and a server certificate made here with openssl) and
basic auth (an htpasswd file made with ``htpasswd -B``).

Also a TCP relay that cuts the first connection after N bytes: a dropped connection mid-upload,
for real, between the real client and the real registry.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import requests

USER, PASSWORD = "cellar-ci", "s3cret-registry-pass"
START_S = 15


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OciRegistry:
    def __init__(self, root: Path, *, tls: bool = False, auth: bool = False, token_realm: TokenServer | None = None):
        self.root, self.tls, self.auth, self.token = root, tls, auth, token_realm
        self.port = free_port()
        self.storage = root / "storage"
        self.log = root / "registry.log"
        self.ca_file: Path | None = None
        self.proc: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def start(self) -> OciRegistry:
        binary = shutil.which("docker-registry")
        if binary is None:
            raise FileNotFoundError("docker-registry (run scripts/setup-oci-registry.sh)")
        self.root.mkdir(parents=True, exist_ok=True)
        config = self._config()
        (self.root / "config.yml").write_text(config)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([binary, "serve", str(self.root / "config.yml")], stdout=log, stderr=log)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def garbage_collect(self) -> str:
        """The registry's own gc (stopped meanwhile, as Distribution asks), then started again."""
        self.stop()
        out = subprocess.run(["docker-registry", "garbage-collect", str(self.root / "config.yml")],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        self.start()
        return out

    def requests_seen(self, method: str, pattern: str = "") -> int:
        """How many ``method`` requests on paths matching ``pattern`` the access log shows."""
        rx = re.compile(rf'"{method} (/v2/\S*)')
        return sum(1 for m in rx.finditer(self.log.read_text(errors="replace")) if re.search(pattern, m.group(1)))

    def blob_file(self, digest: str) -> Path:
        hexd = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"

    def session(self) -> requests.Session:
        s = requests.Session()
        s.trust_env = False  # else $REQUESTS_CA_BUNDLE overrides verify
        s.verify = str(self.ca_file) if self.ca_file else True
        if self.auth:
            s.auth = (USER, PASSWORD)
        return s

    def _config(self) -> str:
        lines = ["version: 0.1", "log:", "  level: info", "  formatter: text", "  accesslog:", "    disabled: false",
                 "storage:", "  filesystem:", f"    rootdirectory: {self.storage}", "  delete:", "    enabled: true",
                 "  maintenance:", "    uploadpurging:", "      enabled: false",
                 "http:", f"  addr: 127.0.0.1:{self.port}", "  secret: cellar-test-secret"]
        if self.tls:
            cert, key = self._certificates()
            lines += ["  tls:", f"    certificate: {cert}", f"    key: {key}"]
        if self.auth:
            htpasswd = self.root / "htpasswd"
            subprocess.run(["htpasswd", "-Bbc", str(htpasswd), USER, PASSWORD], check=True, capture_output=True,
                           timeout=30)
            lines += ["auth:", "  htpasswd:", "    realm: cellar-test", f"    path: {htpasswd}"]
        if self.token:
            lines += ["auth:", "  token:", f"    realm: {self.token.realm}", f"    service: {TokenServer.SERVICE}",
                      f"    issuer: {TokenServer.ISSUER}", f"    rootcertbundle: {self.token.cert}"]
        return "\n".join(lines) + "\n"

    def _certificates(self) -> tuple[Path, Path]:
        d = self.root / "tls"
        d.mkdir(exist_ok=True)

        def openssl(*args: str) -> None:
            subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=cellar test CA",
                "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", str(d / "server.key"),
                "-out", str(d / "server.csr"))
        (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        openssl("x509", "-req", "-in", str(d / "server.csr"), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
                "-CAcreateserial", "-days", "2", "-extfile", str(d / "san.ext"), "-out", str(d / "server.pem"))
        self.ca_file = d / "ca.pem"
        return d / "server.pem", d / "server.key"

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(requests.RequestException):
                self.session().get(f"{self.base_url}/v2/", timeout=2)
                return
            time.sleep(0.05)
        raise TimeoutError(f"docker-registry did not answer within {START_S} s")


class CuttingRelay:
    """127.0.0.1:port -> target; the first connection that carries more than ``cut_after``
    bytes upstream (``down``: downstream, a response) is closed there (both ways), every later
    one relays in full."""

    def __init__(self, target_port: int, cut_after: int, *, down: bool = False):
        self.target_port, self.cut_after, self.down = target_port, cut_after, down
        self.cuts = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> CuttingRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._server.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=30)
            cut = self.cuts == 0
            threading.Thread(target=self._pipe, args=(client, upstream, cut and not self.down), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, cut and self.down), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, cut: bool) -> None:
        sent = 0
        try:
            while not self._stop.is_set():
                data = src.recv(1 << 16)
                if not data:
                    break
                if cut and sent + len(data) > self.cut_after:
                    self.cuts += 1
                    break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()


class TokenServer:
    """A bearer-token realm as Harbor or a Docker Hub-like registry runs one: checks basic auth,
    answers a JWT (RS256, signed with openssl, its certificate in ``x5c``) granting the scopes
    asked for. Distribution verifies it against ``cert``."""

    SERVICE, ISSUER = "cellar-test-registry", "cellar-test-issuer"

    def __init__(self, root: Path):
        import http.server

        root.mkdir(parents=True, exist_ok=True)
        self.key, self.cert = root / "token.key", root / "token.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                        "/CN=cellar test token issuer", "-keyout", str(self.key), "-out", str(self.cert)],
                       check=True, capture_output=True, timeout=60)
        self.issued = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                server.answer(self)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def answer(self, handler) -> None:
        import base64
        import json
        from urllib.parse import parse_qs, urlsplit

        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if handler.headers.get("Authorization") != expected:
            handler.send_response(401)
            handler.end_headers()
            return
        query = parse_qs(urlsplit(handler.path).query)
        access = []
        for scope in " ".join(query.get("scope", [])).split():
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        body = json.dumps({"token": self._jwt(access)}).encode()
        self.issued += 1
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _jwt(self, access: list) -> str:
        import base64
        import json
        import secrets

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        der = subprocess.run(["openssl", "x509", "-in", str(self.cert), "-outform", "DER"], check=True,
                             capture_output=True, timeout=30).stdout
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
        claims = {"iss": self.ISSUER, "sub": USER, "aud": self.SERVICE, "exp": now + 300, "nbf": now - 10,
                  "iat": now, "jti": secrets.token_hex(8), "access": access}
        signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)], input=signing_input.encode(),
                                   check=True, capture_output=True, timeout=30).stdout
        return f"{signing_input}.{b64(signature)}"
