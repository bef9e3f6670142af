"""The web view over HTTP without a browser (Starlette's TestClient): JSON twins, the read-only
guard, the token, security headers, and diff inputs that must never reach the server's disk."""

from __future__ import annotations

import json
import threading
import time

import pytest
from starlette.testclient import TestClient

from registry import InvalidInput
from registry.web import create_app, pages, ui_listen
from tests.web.conftest import TOKEN

JSON_TWINS = {
    "/api/versions": pages.VersionsPage, "/api/versions?model=support-bot&page=1": pages.VersionsPage,
    "/api/v/support-bot/v1.1": pages.VersionPage, "/api/v/support-bot/v1.1/prompts/system": pages.PromptPage,
    "/api/diff?a=v1.0&b=v1.2": pages.DiffPage, "/api/diff?a=staging&b=v1.0": pages.DiffPage,
    "/api/envs": pages.EnvironmentsPage, "/api/envs/staging": pages.EnvironmentPage,
    "/api/audit?action=push": pages.AuditPage, "/envs/staging?format=json": pages.EnvironmentPage,
}


@pytest.fixture(scope="module")
def client(demo_registry):
    with TestClient(create_app(demo_registry.opener), base_url="http://127.0.0.1:8765") as c:
        yield c


@pytest.fixture(scope="module")
def guarded(demo_registry):
    with TestClient(create_app(demo_registry.opener, token=TOKEN), base_url="http://10.1.2.3:8765") as c:
        yield c


@pytest.mark.parametrize("path", JSON_TWINS)
def test_every_page_has_a_json_twin_that_parses_as_its_model(client, path):
    response = client.get(path)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    page = JSON_TWINS[path].model_validate_json(response.text)
    assert page is not None


def test_accept_json_selects_the_twin_and_errors_are_json_too(client):
    got = client.get("/envs", headers={"accept": "application/json"})
    assert [s["env"] for s in got.json()["status"]] == ["production", "staging"]
    missing = client.get("/api/v/support-bot/v9.9")
    assert missing.status_code == 404 and "registry list support-bot" in missing.json()["error"]


def test_the_json_twins_show_data_the_pages_show(client):
    page = client.get("/api/envs/staging").json()
    assert [r["revision"] for r in page["releases"]] == [1, 2, 3, 4]
    assert page["releases"][2]["status"] == "failed" and page["releases"][3]["operation"] == "auto-rollback"
    assert len(page["probe_runs"]) > 10 and page["health"]["versions"]
    assert "chart_svg" not in page
    versions = client.get("/api/versions").json()
    assert versions["total"] == 3 and [v["version"] for v in versions["versions"]] == ["v1.2", "v1.1", "v1.0"]
    audit = client.get("/api/audit").json()
    assert audit["verified"]["verification"]["ok"] is True


def test_secret_values_are_never_shown(client):
    for path in ("/v/support-bot/v1.1", "/api/v/support-bot/v1.1", "/envs/staging", "/api/envs/staging", "/audit",
                 "/diff?a=v1.0&b=v1.2"):
        body = client.get(path).text
        assert "canary-secret-value-never-shown" not in body
    assert "SUPPORT_API_TOKEN" in client.get("/v/support-bot/v1.1").text  # the name, as the manifest lists it


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
@pytest.mark.parametrize("path", ["/", "/envs/staging", "/login", "/static/style.css", "/nowhere"])
def test_nothing_but_get_and_head_is_answered(client, method, path):
    response = client.request(method, path)
    assert response.status_code == 405 and response.headers["allow"] == "GET, HEAD"


def test_every_response_carries_the_security_headers(client):
    for path in ("/", "/static/style.css", "/api/envs", "/nowhere"):
        headers = client.get(path).headers
        csp = headers["content-security-policy"]
        assert "default-src 'none'" in csp and "style-src 'self'" in csp and "script-src" not in csp
        assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY"


def test_without_a_token_only_loopback_hosts_are_answered(client):
    assert client.get("/envs", headers={"host": "evil.example:8765"}).status_code == 421
    assert client.get("/envs", headers={"host": "localhost:8765"}).status_code == 200
    assert client.get("/envs", headers={"host": "[::1]:8765"}).status_code == 200


def test_a_token_is_required_as_bearer_or_cookie(guarded):
    assert guarded.get("/envs").status_code == 401
    assert guarded.get("/envs", headers={"authorization": "Bearer wrong"}).status_code == 401
    assert guarded.get("/envs", headers={"authorization": f"Bearer {TOKEN}x"}).status_code == 401
    assert guarded.get("/envs", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert guarded.get("/login?token=nope").status_code == 401
    assert guarded.get("/static/style.css").status_code == 200  # the login form's stylesheet
    login = guarded.get(f"/login?token={TOKEN}", follow_redirects=False)
    assert login.status_code == 303 and login.headers["location"] == "/"
    cookie = login.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert guarded.get("/envs").status_code == 200  # the cookie
    guarded.cookies.clear()


@pytest.mark.parametrize("side", ["../../etc/passwd", "/etc/hostname", "cellar.yaml", "x y", "a@b@c", "<script>"])
def test_diff_inputs_are_versions_or_environments_never_paths(client, side, tmp_path, monkeypatch):
    (tmp_path / "cellar.yaml").write_text("model: x\nversion: v1\n")
    monkeypatch.chdir(tmp_path)  # a manifest in the server's working directory is still not read
    response = client.get("/api/diff", params={"a": side, "b": "v1.0"})
    assert response.status_code in (400, 404)
    assert "error" in response.json()


def test_listen_needs_a_token_off_the_loopback():
    assert ui_listen("127.0.0.1:8765", environ={}).token is None
    assert ui_listen("[::1]:9000", environ={}).loopback
    with pytest.raises(InvalidInput, match="REGISTRY_UI_TOKEN"):
        ui_listen("0.0.0.0:8765", environ={})
    with pytest.raises(InvalidInput, match="shorter"):
        ui_listen("0.0.0.0:8765", environ={"REGISTRY_UI_TOKEN": "short"})
    with pytest.raises(InvalidInput, match="HOST:PORT"):
        ui_listen("8765", environ={})
    wide = ui_listen("0.0.0.0:8765", environ={"REGISTRY_UI_TOKEN": TOKEN})
    assert wide.token == TOKEN and "token is required" in wide.notice
    assert TOKEN not in wide.notice and TOKEN not in json.dumps(wide.model_dump())


def test_audit_pages_follow_cursors_both_ways(client, monkeypatch):
    monkeypatch.setattr(pages, "EVENTS_PER_PAGE", 3)
    everything = [e["id"] for e in client.get("/api/audit?page=1").json()["events"]]
    assert len(everything) == 3
    seen, query, numbers = [], "", []
    while True:  # older, page by page, to the end: every event once, newest first
        page = client.get(f"/api/audit?{query}").json()
        seen += [e["id"] for e in page["events"]]
        numbers.append(page["page"])
        if not page["more"]:
            break
        query = f"before={page['events'][-1]['id']}&page={page['page'] + 1}"
    assert seen == sorted(seen, reverse=True) and len(seen) == len(set(seen)) > 3
    assert numbers == list(range(1, len(numbers) + 1))
    html = client.get(f"/audit?{query}").text
    assert "after=" in html and "older &rarr;" not in html
    back = client.get(f"/api/audit?after={seen[-1]}").json()  # newer than the oldest: the page above it
    assert [e["id"] for e in back["events"]] == seen[-4:-1] and back["newer"] and back["more"]


def test_audit_verification_runs_in_the_background(demo_registry):
    gate = threading.Event()

    def slow_opener():  # a long chain: the verification is still running when the page renders
        gate.wait(10)
        return demo_registry.opener()

    verifier = pages.AuditVerifier(slow_opener, wait_s=0)
    with demo_registry.opener() as reg:
        first = pages.audit_page(reg, verifier)
        assert first.verified is None and first.events_now > 0 and first.events
        gate.set()
        deadline = time.monotonic() + 10
        while verifier.result(reg) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        again = pages.audit_page(reg, verifier)
    assert again.verified.verification.ok and again.verified.verification.checked == again.events_now


def test_the_audit_page_says_when_verification_is_still_running(demo_registry, monkeypatch):
    monkeypatch.setattr(pages.AuditVerifier, "_start", lambda self: None)  # never finishes
    with TestClient(create_app(demo_registry.opener), base_url="http://127.0.0.1:8765") as c:
        html = c.get("/audit").text
        assert "is being checked; reload in a few seconds" in html and "chain intact" not in html
        monkeypatch.undo()
        assert "chain intact" in c.get("/audit?verify=now").text  # verify now starts one and waits for it


def test_verify_now_is_throttled_and_refused_to_other_sites(demo_registry, monkeypatch):
    started = []
    real = pages._verified
    monkeypatch.setattr(pages, "_verified", lambda reg: (started.append(1), real(reg))[1])
    with TestClient(create_app(demo_registry.opener), base_url="http://127.0.0.1:8765") as c:
        deadline = time.monotonic() + 30
        while "chain intact" not in c.get("/audit").text:  # the start-up verification, in the background
            assert time.monotonic() < deadline
            time.sleep(0.1)
        before = len(started)
        assert c.get("/audit?verify=now", headers={"sec-fetch-site": "cross-site"}).status_code == 200
        assert c.get("/audit?verify=now", headers={"origin": "http://evil.example"}).status_code == 200
        assert len(started) == before  # an <img> or link on another site starts nothing
        for _ in range(5):
            assert "chain intact" in c.get("/audit?verify=now", headers={"sec-fetch-site": "same-origin"}).text
        assert len(started) == before + 1  # one per 30 s, however often it is asked
