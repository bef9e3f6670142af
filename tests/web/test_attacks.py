"""The web view under load and attack (issue 28): the attacks, as tests.

A registry of hostile content: two 1 MiB prompts with nothing in common, a small edit of one,
a version recorded before the text rules (bidi overrides and escapes in its prompt, command and
probe fields), and more models than the versions page lists. No test asserts a timing: the
bound on diff and blame is checked by what difflib is asked to compare (``test_diffing``) and
by the answers being summaries; bench/web_attack.py prints the times.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import threading
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from registry import InvalidInput
from registry.api import Registry
from registry.web import create_app, pages, ui_listen
from registry.web.security import COOKIE, FAILURES_ALLOWED, Failures, Sessions
from registry.web.serving import _HideQueries, slow_client_protocol
from tests.conftest import cli, free_port
from tests.helpers import ModelDir
from tests.web.conftest import TOKEN

BIDI = "\u202e"
LINES = 24_000  # about 1 MiB of prompt (the default limit)


def big_prompt(seed: int) -> str:
    """About 1 MiB of lines from a vocabulary of 300: difflib's quadratic case (each line too rare
    for its autojunk, yet on both sides), and every line repeated, so no line is an anchor either."""
    shared = random.Random(0)  # both versions draw from the same lines, in another order
    vocab = [f"{{{{slot_{i:03d}}}}} {shared.getrandbits(96):024x}\n" for i in range(300)]
    rng = random.Random(seed)
    return "".join(rng.choice(vocab) for _ in range(LINES))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """The registry described in the module docstring; yields (home, opener)."""
    root = tmp_path_factory.mktemp("hostile")
    with pytest.MonkeyPatch.context() as mp:
        for var in ("REGISTRY_DB_URL",):
            mp.delenv(var, raising=False)
        mp.setenv("REGISTRY_HOME", str(root / "home"))
        mp.setenv("REGISTRY_ACTOR", "mallory")
        reg, _ = Registry.init(root / "home")
        with reg:
            for n, (version, text) in enumerate([("v1.0", big_prompt(1)), ("v1.1", big_prompt(2))]):
                reg.push(ModelDir.create(root / f"big{n}", model="big", version=version, prompt=text).manifest)
            edited = big_prompt(2).splitlines(keepends=True)
            edited[12_000] = "an edited line\n"
            reg.push(ModelDir.create(root / "big2", model="big", version="v1.2", prompt="".join(edited)).manifest)
            for n in range(5):
                reg.push(ModelDir.create(root / f"m{n}", model=f"many-{n}", version="v1.0").manifest)
            with pytest.MonkeyPatch.context() as rules_off:  # as if recorded before the rules existed
                rules_off.setattr("registry.inputs.text_error", lambda *a, **k: None)
                rules_off.setattr("registry.inputs.check_prompt_text", lambda *a, **k: None)
                tricky = ModelDir.create(
                    root / "tricky", model="tricky", version="v1.0", prompt=f"be kind{BIDI} \x1b[2Jok\n",
                    message=f"fine{BIDI}enil",
                    runtime={"port": 8080, "command": ["serve", f"--x{BIDI}"], "env": {"A": "1"}},
                    probes=[{"name": "hi", "path": "/chat",
                             "expect": {"regex": f"ok{BIDI}", "not_contains": "\x1b[31mred"}}])
                reg.push(tricky.manifest)
                tricky.set_prompt(f"be kinder{BIDI}\n")
                tricky.write_manifest(version="v1.1")
                reg.push(tricky.manifest)
        yield root / "home", lambda: Registry.open(root / "home")


@pytest.fixture(scope="module")
def client(hostile):
    with TestClient(create_app(hostile[1]), base_url="http://127.0.0.1:8765") as c:
        yield c


# --- 1. diff and blame: bounded, summaries for what is too large --------------------------------


def test_two_unrelated_1mib_prompts_diff_to_a_summary_with_the_full_texts_a_link_away(client):
    page = client.get("/diff?a=big@v1.0&b=big@v1.1")
    assert page.status_code == 200 and "Too large to show line by line" in page.text
    assert len(page.text) < 100_000  # a summary, not two megabytes of rows
    assert 'href="/v/big/v1.0/prompts/system/raw"' in page.text and 'href="/v/big/v1.1/prompts/system/raw"' in page.text
    raw = client.get("/v/big/v1.0/prompts/system/raw")
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("text/plain")
    assert raw.text == big_prompt(1) and "content-security-policy" in raw.headers
    prompt = client.get("/api/diff?a=big@v1.0&b=big@v1.1").json()["diff"]["prompts"][0]
    assert prompt["too_large"] and prompt["unified"] == "" and prompt["lines_added"] > 0
    assert prompt["old_lines"] == prompt["new_lines"] == len(big_prompt(1).splitlines())


def test_a_small_edit_of_a_1mib_prompt_is_shown_line_by_line(client):
    prompt = client.get("/api/diff?a=big@v1.1&b=big@v1.2").json()["diff"]["prompts"][0]
    assert not prompt["too_large"] and (prompt["lines_added"], prompt["lines_removed"]) == (1, 1)
    assert "+an edited line" in prompt["unified"]
    assert "an edited line" in client.get("/diff?a=big@v1.1&b=big@v1.2").text


def test_the_blame_page_of_a_1mib_prompt_is_a_summary(client):
    page = client.get("/v/big/v1.2/prompts/system")
    assert page.status_code == 200 and "Too large to show line by line" in page.text and len(page.text) < 100_000
    data = client.get("/api/v/big/v1.2/prompts/system").json()
    assert data["too_large"] and data["lines"] == [] and data["total_lines"] == len(big_prompt(2).splitlines())
    by_version = {s["version"]: s["lines"] for s in data["summary"]}
    assert by_version["v1.2"] == 1 and sum(by_version.values()) == data["total_lines"]


def test_the_cli_diff_and_blame_are_bounded_too(hostile, monkeypatch):
    monkeypatch.setenv("REGISTRY_HOME", str(hostile[0]))
    monkeypatch.delenv("REGISTRY_DB_URL", raising=False)
    out = cli("diff", "big@v1.0", "big@v1.1").stdout
    assert "too large to show line by line" in out and "--text" in out and len(out) < 10_000
    assert cli("blame", "system", "--at", "big@v1.0", "--text").stdout == big_prompt(1)
    lines = json.loads(cli("blame", "system", "--at", "big@v1.2", "--json").stdout)
    assert [x["version"] for x in lines].count("v1.2") == 1 and lines[12_000]["text"] == "an edited line"
    out = cli("blame", "system", "--at", "tricky@v1.0").stdout  # plain text (not a terminal), escaped
    assert BIDI not in out and "\x1b" not in out and "be kind\\u202e \\x1b[2Jok" in out


# --- 4. errors carry the security headers; bad numbers and dates are 400 ----------------------


@pytest.mark.parametrize("path", ["/audit?before=9223372036854775808", "/audit?after=-1", "/audit?before=1e3",
                                  "/audit?since=9999-12-31T23:59:59-23:59", "/envs/x?since=9999-12-31T23:59:59-23:59",
                                  "/versions?page=99999999999999999999999", "/api/audit?before=%F0%9F%98%80"])
def test_out_of_range_numbers_and_dates_are_400_with_the_headers(client, path):
    got = client.get(path)
    assert got.status_code in (400, 404) and "content-security-policy" in got.headers, (path, got.status_code)
    if "/envs/x" not in path:
        assert got.status_code == 400


def test_a_crash_is_a_500_with_the_headers_and_no_traceback(hostile, monkeypatch, caplog):
    monkeypatch.setattr(pages, "environments_page", lambda reg: 1 / 0)
    with TestClient(create_app(hostile[1]), base_url="http://127.0.0.1:8765", raise_server_exceptions=False) as c:
        got = c.get("/envs")
    assert got.status_code == 500 and "ZeroDivisionError" not in got.text
    assert got.headers["x-frame-options"] == "DENY" and "content-security-policy" in got.headers


# --- 5. invisible characters are shown visibly ----------------------------------------------


@pytest.mark.parametrize("path", ["/v/tricky/v1.0", "/v/tricky/v1.0/prompts/system",
                                  "/diff?a=tricky@v1.0&b=tricky@v1.1", "/versions?model=tricky", "/audit"])
def test_bidi_overrides_and_escapes_are_shown_visibly_never_raw(client, path):
    html = client.get(path).text
    assert BIDI not in html and "\x1b" not in html, path
    assert "\\u202e" in html, path


def test_the_version_page_shows_command_and_probe_fields_escaped(client):
    html = client.get("/v/tricky/v1.0").text
    assert "--x\\u202e" in html or "--x\\\\u202e" in html


# --- 2. no app-wide lock; bounded pages ------------------------------------------------------


def test_a_slow_page_does_not_hold_up_the_others(hostile, monkeypatch):
    inside, release = threading.Event(), threading.Event()
    real = pages.diff_page

    def slow_diff(reg, a, b):
        inside.set()
        release.wait(30)
        return real(reg, a, b)

    monkeypatch.setattr(pages, "diff_page", slow_diff)
    with TestClient(create_app(hostile[1]), base_url="http://127.0.0.1:8765") as c:
        slow = threading.Thread(target=c.get, args=("/diff?a=big@v1.1&b=big@v1.2",))
        slow.start()
        try:
            assert inside.wait(30)
            assert c.get("/api/envs").status_code == 200  # with one lock for all it would wait for the diff
            assert c.get("/api/versions").status_code == 200
        finally:
            release.set()
            slow.join(30)


def test_the_versions_page_lists_a_bounded_number_of_models_from_one_query(client, monkeypatch):
    monkeypatch.setattr(pages, "MODELS_SHOWN", 3)
    monkeypatch.setattr(Registry, "count_versions", lambda *a, **k: pytest.fail("a count query per model"))
    page = client.get("/api/versions").json()
    assert len(page["models"]) == 3 and page["models_total"] == 7 and page["total"] == 10
    html = client.get("/versions").text
    assert "and 4 more" in html and html.count('href="/versions?model=') == 3
    chosen = client.get("/api/versions?model=many-4").json()
    assert "many-4" in [m["name"] for m in chosen["models"]] and chosen["total"] == 1


def test_requests_beyond_the_cap_get_503_with_the_headers(hostile, monkeypatch):
    from registry.web import security

    monkeypatch.setattr(security, "IN_FLIGHT_MAX", 0)
    with TestClient(create_app(hostile[1]), base_url="http://127.0.0.1:8765") as c:
        got = c.get("/api/envs")
    assert got.status_code == 503 and got.headers["retry-after"] and "content-security-policy" in got.headers


def test_a_trailing_slash_is_not_redirected_to_the_host_a_client_named(client):
    got = client.get("/envs/", headers={"host": "127.0.0.1:8765"}, follow_redirects=False)
    assert got.status_code == 404 and "location" not in got.headers


# --- 6. tokens ------------------------------------------------------------------------------


@pytest.fixture
def guarded(hostile):
    with TestClient(create_app(hostile[1], token=TOKEN), base_url="https://10.1.2.3:8765") as c:
        yield c


def test_the_session_cookie_is_not_the_token_is_secure_expires_and_logs_out(guarded):
    login = guarded.post("/login", data={"token": TOKEN}, follow_redirects=False,
                         headers={"origin": "https://10.1.2.3:8765"})
    assert login.status_code == 303
    cookie = login.headers["set-cookie"]
    assert TOKEN not in cookie and f"{COOKIE}=" in cookie
    lowered = cookie.lower()
    assert "secure" in lowered and "httponly" in lowered and "samesite=strict" in lowered and "max-age=" in lowered
    assert guarded.get("/api/envs").status_code == 200
    sid = guarded.cookies.get(COOKIE)
    assert guarded.post("/logout", follow_redirects=False).status_code == 303
    guarded.cookies.set(COOKIE, sid)  # the old cookie, kept by a thief: no longer a session
    assert guarded.get("/api/envs").status_code == 401


def test_a_login_form_posted_from_another_site_is_refused(guarded):
    got = guarded.post("/login", data={"token": TOKEN}, headers={"sec-fetch-site": "cross-site"},
                       follow_redirects=False)
    assert got.status_code == 403 and "set-cookie" not in got.headers


def test_sessions_expire():
    now = [0.0]
    sessions = Sessions(ttl_s=60, clock=lambda: now[0])
    sid = sessions.start()
    assert sessions.valid(sid) and not sessions.valid("guess") and not sessions.valid(None)
    now[0] = 61
    assert not sessions.valid(sid)


def test_repeated_401s_are_slowed_to_429(hostile):
    with TestClient(create_app(hostile[1], token=TOKEN), base_url="http://10.1.2.3:8765") as c:
        for _ in range(FAILURES_ALLOWED):
            assert c.get("/api/envs", headers={"authorization": "Bearer wrong-guess"}).status_code == 401
        blocked = c.get("/api/envs", headers={"authorization": f"Bearer {TOKEN}"})
        assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0
        assert "content-security-policy" in blocked.headers
        assert c.get(f"/login?token={TOKEN}", follow_redirects=False).status_code == 429


def test_failures_are_forgotten_after_their_window():
    now = [0.0]
    failures = Failures(allowed=2, window_s=10, clock=lambda: now[0])
    failures.failed("1.2.3.4")
    failures.failed("1.2.3.4")
    assert failures.blocked_for("1.2.3.4") == 10 and failures.blocked_for("5.6.7.8") == 0
    now[0] = 10.5
    assert failures.blocked_for("1.2.3.4") == 0


@pytest.mark.parametrize("token", ["aaaaaaaaaaaaaaaa", "abababababababababababab", "passwordpassword",
                                   "qwertyuiopasdfgh", "1234567890123456", "Password2026!!!!", "2026-12-04admin!"])
def test_tokens_with_too_little_entropy_are_refused(token):
    with pytest.raises(InvalidInput, match="too easy to guess"):
        ui_listen("0.0.0.0:8765", environ={"REGISTRY_UI_TOKEN": token})


def test_a_random_token_passes_and_tls_needs_both_files(tmp_path):
    import secrets

    good = {"REGISTRY_UI_TOKEN": secrets.token_urlsafe()}
    assert ui_listen("0.0.0.0:8765", environ=good).token == good["REGISTRY_UI_TOKEN"]
    # 16 random hex digits always pass (a count of their characters refused one in seven, this one too)
    for token in ["5711c828bda78871", *(secrets.token_hex(8) for _ in range(100))]:
        assert ui_listen("0.0.0.0:8765", environ={"REGISTRY_UI_TOKEN": token}).token == token
    with pytest.raises(InvalidInput, match="go together"):
        ui_listen("0.0.0.0:8765", environ=good, tls_cert=str(tmp_path / "c.pem"))
    with pytest.raises(InvalidInput, match="no readable file"):
        ui_listen("0.0.0.0:8765", environ=good, tls_cert=str(tmp_path / "c.pem"), tls_key=str(tmp_path / "k.pem"))
    with pytest.raises(InvalidInput, match="trust-proxy"):
        ui_listen("127.0.0.1:8765", trust_proxy=["evil host"])
    (tmp_path / "c.pem").write_text("x")
    (tmp_path / "k.pem").write_text("x")
    tls = ui_listen("0.0.0.0:8765", environ=good, tls_cert=str(tmp_path / "c.pem"), tls_key=str(tmp_path / "k.pem"))
    assert tls.url.startswith("https://")


@pytest.mark.parametrize("path", [f"/login?token={TOKEN}", f"/login?%74oken={TOKEN}", f"/login?%74%6Fken={TOKEN}",
                                  f"/x?a=1&token={TOKEN}", f"/login?t%6Fken={TOKEN.encode().hex()}"])
def test_the_access_log_never_shows_a_query(path):
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5000", "GET", path, "1.1", 303), None)
    _HideQueries().filter(record)
    line = record.getMessage()
    assert TOKEN not in line and TOKEN.encode().hex() not in line and "?..." in line


# --- 7. slow clients ------------------------------------------------------------------------


def test_a_client_that_never_finishes_its_headers_is_let_go(hostile):
    import uvicorn

    port = free_port()
    config = uvicorn.Config(create_app(hostile[1]), host="127.0.0.1", port=port, log_level="warning",
                            http=slow_client_protocol(0.5), timeout_keep_alive=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.05)
        socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(10)]
        for s in socks:
            s.sendall(b"GET /api/envs HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the blank line
        started = time.monotonic()
        for s in socks:
            while True:  # a header now and then: each read is quick, the request never ends
                try:
                    s.sendall(b"X-Slow: 1\r\n")
                    if s.recv(1, socket.MSG_DONTWAIT) == b"":
                        break
                except BlockingIOError:
                    pass
                except OSError:
                    break
                assert time.monotonic() - started < 8, "a slow client was kept past the header deadline"
                time.sleep(0.1)
            s.close()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:  # others are still served
            s.sendall(b"GET /api/envs HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 200")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:  # not HTTP: a 400, with the headers
            s.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 400") and b"content-security-policy" in answer.lower()
    finally:
        server.should_exit = True
        thread.join(10)


# --- the whole server: SIGTERM, forwarded headers, the log -----------------------------------


def test_registry_ui_stops_on_sigterm_during_a_large_diff_and_logs_no_token(hostile, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import urllib.request

    port = free_port()
    env = {**os.environ, "REGISTRY_HOME": str(hostile[0]), "REGISTRY_UI_TOKEN": TOKEN + "-Xq7"}
    log = tmp_path / "ui.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", "ui", "--listen", f"127.0.0.1:{port}"],
                                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[2])
    try:
        deadline = time.monotonic() + 30
        while b"Uvicorn running" not in log.read_bytes():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        base = f"http://127.0.0.1:{port}"
        for path in (f"/login?%74oken={env['REGISTRY_UI_TOKEN']}", f"/login?token={env['REGISTRY_UI_TOKEN']}"):
            try:
                urllib.request.urlopen(urllib.request.Request(base + path, headers={"X-Forwarded-For": "6.6.6.6"}),
                                       timeout=30)
            except urllib.error.HTTPError:
                pass
        bearer = {"Authorization": f"Bearer {env['REGISTRY_UI_TOKEN']}"}
        threading.Thread(target=lambda: _quietly(urllib.request.urlopen, urllib.request.Request(
            base + "/diff?a=big@v1.0&b=big@v1.1", headers=bearer), timeout=60), daemon=True).start()
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) is not None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = log.read_text()
    assert env["REGISTRY_UI_TOKEN"] not in text and "6.6.6.6" not in text and "GET /login?..." in text


def _quietly(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except Exception:
        pass


def test_model_counts_is_one_query_on_every_database(reg, model_dir, tmp_path):
    reg.push(model_dir.manifest)
    model_dir.write_manifest(version="v1.1")
    reg.push(model_dir.manifest)
    reg.push(ModelDir.create(tmp_path / "other", model="other-bot", version="v1.0").manifest)
    assert reg.model_counts() == [("other-bot", 1), ("support-bot", 2)]
    page = pages.versions_page(reg)
    assert [(m.name, m.versions) for m in page.models] == [("other-bot", 1), ("support-bot", 2)] and page.total == 3


def test_registry_ui_serves_https_with_secure_session_cookies(hostile, tmp_path):
    import http.client
    import os
    import shutil
    import ssl
    import subprocess
    import sys
    import urllib.parse

    if not shutil.which("openssl"):
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    port, token = free_port(), TOKEN + "-Xq7"
    env = {**os.environ, "REGISTRY_HOME": str(hostile[0]), "REGISTRY_UI_TOKEN": token}
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "ui", "--listen", f"127.0.0.1:{port}",
                             "--tls-cert", str(cert), "--tls-key", str(key)], env=env, cwd=Path(__file__).parents[2],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
                conn.request("POST", "/login", body=urllib.parse.urlencode({"token": token}),
                             headers={"content-type": "application/x-www-form-urlencoded",
                                      "origin": f"https://127.0.0.1:{port}"})
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        answer = conn.getresponse()
        cookie = answer.getheader("set-cookie")
        assert answer.status == 303 and "secure" in cookie.lower() and token not in cookie
    finally:
        proc.terminate()
        proc.wait(15)


def test_forwarded_headers_are_believed_from_a_named_proxy_only(hostile, tmp_path):
    import os
    import subprocess
    import sys
    import urllib.request

    port = free_port()
    env = {**os.environ, "REGISTRY_HOME": str(hostile[0])}
    log = tmp_path / "ui.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", "ui", "--listen", f"127.0.0.1:{port}",
                                 "--trust-proxy", "127.0.0.1"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                cwd=Path(__file__).parents[2])
    try:
        deadline = time.monotonic() + 30
        while b"Uvicorn running" not in log.read_bytes():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/envs", headers={"X-Forwarded-For": "6.6.6.6"})
        assert urllib.request.urlopen(request, timeout=30).status == 200
        deadline = time.monotonic() + 10
        while b"/api/envs" not in log.read_bytes():
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(15)
    assert "6.6.6.6" in log.read_text()  # the proxy on 127.0.0.1 is named: its header names the client
