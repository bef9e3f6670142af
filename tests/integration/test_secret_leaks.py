"""A secret a failing server echoes back, in any form or cut anywhere, never reaches an output,
an event, a release row or the database file; a password in DOCKER_HOST is never printed."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy import text

from registry.api import Registry
from registry.errors import HealthGateFailed
from tests.conftest import IMAGE, on_fake, push_versions

SECRET = 'Zq9"w\\x/é<' + os.urandom(11).hex()  # 32 characters, some that JSON and URLs escape
REGISTRY = str(Path(sys.executable).with_name("registry"))


def forms(secret: str) -> dict[str, str]:
    return {"raw": secret, "json": json.dumps(secret)[1:-1], "json-ascii": json.dumps(secret, ensure_ascii=False)[1:-1],
            "url": quote(secret, safe=""), "base64": base64.b64encode(secret.encode()).decode()}


def fragments(secret: str, least: int = 8) -> list[str]:
    return [secret[i:i + least] for i in range(len(secret) - least + 1)]


@pytest.fixture
def fake(fake, monkeypatch):
    """The shared fake engine, with SECRET as SUPPORT_API_TOKEN."""
    monkeypatch.setenv("SUPPORT_API_TOKEN", SECRET)
    return fake


@pytest.fixture
def deployed(home, fake, model_dir):
    with on_fake(home, fake) as reg:
        push_versions(reg, model_dir, "v1.0", "v1.1", image=IMAGE, runtime={"secrets": ["SUPPORT_API_TOKEN"]})
        reg.add_env("staging", port=18080, default=True)
        reg.promote("v1.0")
        yield reg


def everything_recorded(reg: Registry) -> str:
    """Every release and event as JSON, and every row of both tables as the database returns it."""
    out = [json.dumps([r.model_dump(mode="json") for r in reg.history()]),
           json.dumps([e.model_dump(mode="json") for e in reg.audit()], ensure_ascii=False)]
    with reg.store.read() as conn:
        for table in ("releases", "events"):
            out += [repr(tuple(row)) for row in conn.execute(text(f"SELECT * FROM {table}"))]
    return "\n".join(out)


def assert_nowhere(secret: str, *texts: str) -> None:
    for body in texts:
        for form in forms(secret).values():
            assert form not in body
        assert not [f for f in fragments(secret) if f in body]


@pytest.mark.parametrize("form", ["raw", "json", "json-ascii", "url", "base64"])
def test_every_cut_of_an_echoed_secret_is_scrubbed(deployed, fake, form):
    reg, echoed, seen = deployed, forms(SECRET)[form], []
    # the health body quotes the secret with the 200-character excerpt ending at every position in it
    for keep in range(0, len(echoed) + 1, 3):
        fake.unhealthy["v1.1"] = "x" * (200 - keep) + echoed + " trailing words"
        with pytest.raises(HealthGateFailed) as err:
            reg.promote("v1.1")
        seen.append(str(err.value))
        seen.append(err.value.result.model_dump_json())
    assert_nowhere(SECRET, *seen, everything_recorded(reg))


def test_the_database_file_holds_no_fragment(deployed, fake, home, db_url):
    fake.unhealthy["v1.1"] = f'{{"error": "bad token {json.dumps(SECRET)[1:-1]}", "echo": "{SECRET[:15]}'
    with pytest.raises(HealthGateFailed):
        deployed.promote("v1.1")
    if db_url.startswith("sqlite"):
        raw = b"".join(p.read_bytes() for p in home.glob("registry.db*"))
        assert not [f for f in fragments(SECRET) if f.encode() in raw]
    assert_nowhere(SECRET, everything_recorded(deployed))


def test_a_docker_host_password_is_never_printed(sqlite_home, model_dir, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "tcp://admin:Hunter2-pw-9931@127.0.0.1:9")
    model_dir.write_manifest(image="cellar-nowhere:1")
    pushed = subprocess.run([REGISTRY, "push", str(model_dir.manifest)], capture_output=True, text=True)
    assert pushed.returncode == 0 and "recorded unresolved" in pushed.stderr
    subprocess.run([REGISTRY, "env", "add", "qa", "--port", "18123", "--default"], check=True, capture_output=True)
    promoted = subprocess.run([REGISTRY, "promote", "v1.0"], capture_output=True, text=True)
    assert promoted.returncode == 1 and "127.0.0.1" in promoted.stderr
    for out in (pushed.stdout, pushed.stderr, promoted.stdout, promoted.stderr):
        assert "Hunter2-pw-9931" not in out


@pytest.mark.parametrize("keep", range(0, len(SECRET) + 1, 4))
def test_a_real_health_answer_is_scrubbed_before_it_is_cut(keep):
    """Over real HTTP: the body's excerpt ends inside the secret; the fragment left must not survive."""
    import http.server
    import threading

    from registry.engines.http import HttpChecks
    from registry.errors import StepFailed
    from registry.trust.secrets import Scrubber

    body = ("x" * (200 - keep) + SECRET + " and more").encode()

    class Echo(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(503)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(StepFailed) as err:
            HttpChecks().wait_healthy(f"http://127.0.0.1:{server.server_port}/health", timeout=0.3,
                                      exited=lambda: None, untrusted=lambda t: Scrubber([SECRET]).untrusted(t, 200))
    finally:
        server.shutdown()
    assert "HTTP 503" in str(err.value)
    assert_nowhere(SECRET, str(err.value))
    assert not [SECRET[:n] for n in range(3, len(SECRET)) if str(err.value).endswith(SECRET[:n] + ")")]
