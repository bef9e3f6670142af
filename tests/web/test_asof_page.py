"""The environment page "as of" a time (issue 26): ``/envs/NAME?at=TIME`` shows what served
then, from the sealed ledger; a bad time is a 400 that still carries the security headers."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from registry import Registry
from registry.web import create_app


@pytest.fixture(scope="module")
def client(demo_registry):
    with TestClient(create_app(demo_registry.opener), base_url="http://127.0.0.1:8765") as c:
        yield c


def test_the_environment_page_as_of_a_time(client, demo_registry):
    with Registry.open(demo_registry.home) as reg:
        rows = reg.history("staging")
    first, second = rows[0], next(r for r in rows if r.healthy and r.version != rows[0].version)
    then = first.finished_at + (second.finished_at - first.finished_at) / 2
    moment = then.isoformat()
    page = client.get("/api/envs/staging", params={"at": moment}).json()
    assert page["as_of"]["release"]["revision"] == first.revision
    assert [r["revision"] for r in page["releases"]] == [r.revision for r in rows if r.started_at <= then]
    html = client.get("/envs/staging", params={"at": moment})
    assert html.status_code == 200 and 'id="as-of"' in html.text and first.ref in html.text
    assert "UTC" in html.text


@pytest.mark.parametrize("at", ["yesterday", "2026-13-40", "2999-01-01T00:00"])
def test_a_bad_time_is_a_400_with_the_security_headers(client, at):
    answer = client.get("/envs/staging", params={"at": at})
    assert answer.status_code == 400 and "--at" in answer.text
    assert answer.headers.get("content-security-policy") and answer.headers.get("x-content-type-options") == "nosniff"
    assert client.get("/api/envs/staging", params={"at": at}).status_code == 400


def test_a_tampered_ledger_refuses_the_page_as_of(client, demo_registry):
    """Last in this module: it edits this module's own demo registry."""
    from sqlalchemy import update

    from registry.store.sql import schema as t

    with Registry.open(demo_registry.home) as reg:
        moment = reg.history("staging")[0].finished_at.isoformat()
        with reg.store.write() as conn:
            conn.execute(update(t.releases).where(t.releases.c.env == "staging", t.releases.c.revision == 1)
                         .values(actor="mallory"))
    answer = client.get("/envs/staging", params={"at": moment})
    assert answer.status_code >= 400 and "release:staging#1 was edited outside Cellar" in answer.text
    assert "refusing" in answer.text and "mallory" not in answer.text
