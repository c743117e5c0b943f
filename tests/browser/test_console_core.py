"""The console in a real browser: sign in as a person would, the overview live, the audit log, axe."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.browser.conftest import sign_in, wait_js
from tests.support.server import SERVICE_TOKEN

pytestmark = pytest.mark.timeout(60)


def test_sign_in_page_is_accessible_and_a_wrong_token_says_so(page, roost_server, shot, axe):
    page.goto(roost_server.url + "/console")
    assert "/console/login" in page.url
    axe(page)
    shot(page, "login")
    page.get_by_label("Console token").fill("not-the-token")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text().startswith("That is not a console token")
    shot(page, "login-wrong")


def test_overview_counts_a_pushed_item_without_a_reload(page, roost_server, shot, axe):
    admin = httpx.Client(base_url=roost_server.url, headers={"Authorization": f"Bearer {SERVICE_TOKEN}"}, timeout=10)
    with admin:
        account = admin.post("/api/admin/accounts", json={"name": "Acme", "timezone": "UTC"}).json()
        user = admin.post("/api/admin/users", json={"account_id": account["id"], "email": "ann@example.com",
                                                     "display_name": "Ann"}).json()
        scout = admin.post("/api/admin/scouts", json={"user_id": user["id"], "provider": "push"}).json()
        sign_in(page, roost_server, "read")
        figure = page.locator('[data-figure="scout_items_pending_or_queued"]')
        before = int(figure.inner_text())
        wait_js(page, "document.documentElement.dataset.liveState === 'open'")
        page.evaluate("window.__marker = 'same page'")
        r = admin.post(f"/api/v1/scouts/{scout['id']}/items", json={"items": [{"source_msg_ref": "m1",
                                                                               "subject": "hello"}]})
        assert r.status_code == 202, r.text
        count = "n => Number(document.querySelector('[data-figure=scout_items_pending_or_queued]').textContent) === n"
        wait_js(page, count, arg=before + 1, timeout=10_000)
        assert page.evaluate("window.__marker") == "same page"  # no reload: the part was swapped in

        # A hidden tab stops listening; shown again, it catches up at once.
        page.evaluate("""() => { Object.defineProperty(document, 'hidden', {value: true, configurable: true});
                                 document.dispatchEvent(new Event('visibilitychange')); }""")
        assert page.evaluate("document.documentElement.dataset.liveState") == "paused"
        page.wait_for_timeout(150)  # a refresh the stream asked for just before: let it land first
        wait_js(page, "!document.querySelector('[aria-busy]')")
        r = admin.post(f"/api/v1/scouts/{scout['id']}/items", json={"items": [{"source_msg_ref": "m2"}]})
        assert r.status_code == 202, r.text
        page.wait_for_timeout(400)
        assert int(figure.inner_text()) == before + 1  # nothing fetched while hidden
        page.evaluate("""() => { Object.defineProperty(document, 'hidden', {value: false, configurable: true});
                                 document.dispatchEvent(new Event('visibilitychange')); }""")
        wait_js(page, count, arg=before + 2, timeout=10_000)
    assert page.evaluate("window.__marker") == "same page"
    times = page.locator("time[data-local]")
    if times.count():
        assert times.first.get_attribute("title").endswith("UTC")
    axe(page)
    shot(page, "overview")


def test_operator_finds_their_sign_in_in_the_audit_log(page, roost_server, shot, axe):
    sign_in(page, roost_server, "operate")
    page.get_by_role("link", name="Audit log").click()
    page.get_by_label("Who").fill("console:ops")
    page.get_by_role("button", name="Filter").click()
    row = page.get_by_role("row").filter(has_text="console.sign_in").first
    assert "console:ops" in row.inner_text()
    axe(page)
    shot(page, "audit")
    page.get_by_role("button", name="Sign out").click()
    assert re.search(r"/console/login$", page.url)
    page.goto(roost_server.url + "/console/audit")
    assert "/console/login" in page.url


def test_overview_fits_a_phone_in_dark_mode(browser, roost_server, shot, axe):
    context = browser.new_context(viewport={"width": 375, "height": 740}, color_scheme="dark", is_mobile=True)
    try:
        page = context.new_page()
        sign_in(page, roost_server, "read")
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"the page is {overflow}px wider than a 375px screen"
        axe(page)
        shot(page, "overview-phone-dark")
    finally:
        context.close()
