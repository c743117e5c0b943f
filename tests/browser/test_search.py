"""Search and bulk actions in a real browser (Debian's chromium through Playwright), as a person uses
them: search for a pushed item's ref and find it, follow its link to its scout; pause every sending
batch of an account after a confirmation that says how many. Each page is screenshotted and checked
with axe-core."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.browser.conftest import sign_in
from tests.support.server import SERVICE_TOKEN

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def world(roost_server: Any) -> dict[str, Any]:
    """An account, a user with a device, a push scout with three items, a batch being sent."""
    with httpx.Client(base_url=roost_server.url, headers={"Authorization": f"Bearer {SERVICE_TOKEN}"},
                      timeout=10) as api:
        account = api.post("/api/admin/accounts", json={"name": "Acme", "timezone": "UTC"}).json()
        user = api.post("/api/admin/users", json={"account_id": account["id"], "email": "ann@example.com",
                                                  "display_name": "Ann"}).json()
        device = api.post("/api/admin/devices", json={"user_id": user["id"], "name": "phone"}).json()
        scout = api.post("/api/admin/scouts", json={"user_id": user["id"], "provider": "push", "config": {},
                                                    "poll_interval_s": 3600}).json()
        pushed = api.post(f"/api/v1/scouts/{scout['id']}/items", json={"items": [
            {"source_msg_ref": f"INV-2026-{i:03d}", "subject": f"Invoice {i}", "body": "b",
             "sender": "billing@vendor.example"} for i in range(3)]})
        assert pushed.status_code == 202, pushed.text
        batch = api.post("/api/v1/outreach/batches", json={
            "account_id": account["id"], "created_by": user["id"],
            "items": [{"to_handle": "+15550001", "body": "hi", "device_id": device["id"]}]}).json()
        sent = api.post(f"/api/v1/outreach/batches/{batch['id']}/send")
        assert sent.status_code == 200, sent.text
    return {"account": account, "scout": scout, "batch": batch}


def test_search_for_a_ref_finds_it_and_links_to_its_scout(page, roost_server, world, shot, axe):
    from playwright.sync_api import expect

    sign_in(page, roost_server, path="/console/search")
    shot(page, "search-empty")
    axe(page)
    page.get_by_label("Id, ref, subject, sender or recipient").fill("INV-2026-001")
    page.get_by_role("button", name="Search").click()
    results = page.locator("#results")
    expect(results).to_contain_text("INV-2026-001")
    expect(results).not_to_contain_text("INV-2026-002")
    shot(page, "search-results")
    axe(page)
    page.set_viewport_size({"width": 375, "height": 800})  # a phone: the page does not scroll sideways
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    shot(page, "search-results-375")
    page.set_viewport_size({"width": 1280, "height": 800})
    results.get_by_role("link").first.click()
    page.wait_for_url(f"**/console/scouts/{world['scout']['id']}*")
    shot(page, "scout-of-result")


def test_a_bulk_action_says_how_many_then_acts(page, roost_server, world, shot, axe):
    from playwright.sync_api import expect

    sign_in(page, roost_server, path="/console/search")
    page.get_by_label("Action to take", exact=True).select_option(label="Pause batches")
    page.get_by_label("Status", exact=True).select_option("sending")
    page.get_by_label("Of (a scout, user, account or batch id; optional)").fill(world["account"]["id"])
    page.get_by_role("button", name="Count and confirm…").click()
    expect(page.locator("#bulk-count")).to_contain_text("This will affect 1 row")
    shot(page, "bulk-confirm")
    axe(page)
    asked: list[str] = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    page.get_by_role("button", name="Pause batches: 1").click()
    expect(page.get_by_role("status").first).to_contain_text("Pause batches: 1 done")
    assert asked and "Pause batches: 1 row." in asked[0]
    expect(page.locator("#bulk-count")).to_contain_text("Nothing matches this filter now")
    shot(page, "bulk-done")
    axe(page)
