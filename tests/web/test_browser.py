"""The web view in a real browser (headless chromium): pages load without a console error,
hostile prompt text stays text, a wrong token gets 401, and the health chart marks each release."""

from __future__ import annotations

import pytest

from tests.web import demo
from tests.web.conftest import TOKEN

PAGES = ["/", "/versions?model=support-bot", "/v/support-bot/v1.1", "/v/support-bot/v1.1/prompts/system",
         "/diff?a=v1.0&b=v1.1", "/diff?a=production&b=v1.2", "/diff", "/envs", "/envs/staging",
         "/envs/production", "/audit", "/audit?action=promote&actor=carol", "/audit?verify=now", "/login"]


@pytest.mark.parametrize("path", PAGES)
def test_each_page_loads_without_a_console_error(tab, served, path):
    response = tab.page.goto(served.url + path)
    assert response.status == 200
    assert tab.page.locator("header.top").is_visible()
    assert tab.page.title().endswith("· Cellar")
    assert tab.errors == [] and tab.dialogs == []


def test_an_unknown_version_is_a_404_page_that_says_what_to_do(tab, served):
    response = tab.page.goto(served.url + "/v/support-bot/v9.9")
    assert response.status == 404
    assert "registry list support-bot" in tab.page.locator("p.error").inner_text()
    assert [e for e in tab.errors if "404" not in e] == []  # chromium logs the document's own 404


@pytest.mark.parametrize("path", ["/v/support-bot/v1.1/prompts/system", "/diff?a=v1.0&b=v1.1",
                                  "/envs/staging", "/audit"])
def test_hostile_text_renders_inert_and_visible(tab, served, path):
    tab.page.goto(served.url + path)
    assert tab.page.locator("script").count() == 0
    assert tab.page.locator("img").count() == 0
    assert tab.page.locator("main b").count() == 0  # a reason holding <b>persona</b> stays text
    text = tab.page.locator("main").inner_text()
    if "envs" in path or "audit" in path:
        assert "friendlier <b>persona</b>" in text
    else:
        assert demo.XSS in text
    assert tab.errors == [] and tab.dialogs == []


def test_a_wrong_token_gets_401_and_the_right_one_opens_the_pages(tab, served_with_token):
    url = served_with_token.url
    assert tab.page.goto(url + "/envs").status == 401
    assert tab.page.goto(url + "/login?token=wrong-token-of-some-length").status == 401
    assert tab.page.goto(url + "/envs").status == 401
    tab.page.goto(url + "/login")
    tab.page.fill("input[name=token]", TOKEN)
    tab.page.click("button[type=submit]")
    tab.page.wait_for_url(url + "/")
    assert TOKEN not in tab.page.url  # sent on to / so the token leaves the address bar
    assert tab.page.goto(url + "/envs").status == 200
    assert tab.page.locator("a[href='/envs/staging']").count() == 1
    cookies = tab.page.context.cookies()
    assert cookies and all(TOKEN not in c["value"] for c in cookies)  # a session id, never the token
    assert all(c["httpOnly"] and c["sameSite"] == "Strict" and c["expires"] > 0 for c in cookies)
    tab.page.click("form.logout button")
    tab.page.wait_for_url(url + "/login")
    assert tab.page.goto(url + "/envs").status == 401  # logged out
    assert tab.errors == [e for e in tab.errors if "401" in e]  # only the refused loads above


def test_the_health_chart_has_one_marker_per_release(tab, served, demo_registry):
    with demo_registry.opener() as reg:
        releases = reg.history("staging")
    tab.page.goto(served.url + "/envs/staging")
    markers = tab.page.locator("svg.chart .release-marker")
    assert markers.count() == len(releases) >= 4
    assert [markers.nth(i).get_attribute("data-revision") for i in range(markers.count())] == [
        str(r.revision) for r in releases]
    labels = tab.page.locator("svg.chart .release-marker text").all_text_contents()
    assert any("v1.1" in label and "carol" in label for label in labels)
    first_link = tab.page.locator("svg.chart a.release-marker").first
    first_link.locator("text").click()  # a marker links to the diff from the release before
    tab.page.wait_for_url("**/diff?*")
    assert tab.page.locator("h1").inner_text() == "Diff"
    assert tab.errors == []


def test_no_probe_data_is_said_when_no_run_was_recorded(tab, demo_registry):
    from registry.web import create_app
    from tests.web.conftest import _serve

    plain = create_app(demo.opener(demo_registry.home, demo_registry.fake))
    for served in _serve(plain):
        tab.page.goto(served.url + "/envs/staging?since=2099-01-01")  # a window with no run in it
        assert tab.page.locator("#no-probe-data").is_visible()
        assert tab.page.locator("svg.chart").count() == 0
    assert tab.errors == []
