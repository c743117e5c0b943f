"""The handoffs and dispatch pages in a real browser, as a person uses them: pause a batch and see
it paused; claim a handoff in one tab and watch a second tab show it claimed, and a new one appear,
without a reload.
Every page visited is checked with axe and saved as a screenshot."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.browser.conftest import sign_in, wait_js
from tests.support.server import SERVICE_TOKEN

pytestmark = pytest.mark.timeout(60)


def admin(server: Any) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {SERVICE_TOKEN}"}, timeout=10)


def made(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code in (200, 201, 202), r.text
    return r.json()


def account_with_users(client: httpx.Client, name: str, *people: str) -> tuple[dict, list[dict]]:
    account = made(client.post("/api/admin/accounts", json={"name": name, "timezone": "UTC"}))
    users = [made(client.post("/api/admin/users", json={"account_id": account["id"], "display_name": person,
                                                         "email": f"{person.lower()}@{name.lower()}.example"}))
             for person in people]
    return account, users


def fits_a_phone(page: Any, shot: Any, name: str) -> None:
    """At 375 px wide the page scrolls only down (wide tables scroll inside themselves)."""
    page.set_viewport_size({"width": 375, "height": 740})
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"{page.url} is {overflow}px wider than a 375px screen"
    shot(page, name)
    page.set_viewport_size({"width": 1280, "height": 800})


def test_operator_pauses_a_batch_and_sees_it_paused(page, roost_server, shot, axe):
    with admin(roost_server) as client:
        account, (ann,) = account_with_users(client, "Pausing", "Ann")
        device = made(client.post("/api/admin/devices", json={"user_id": ann["id"], "name": "ann-phone"}))
        made(client.put(f"/api/admin/accounts/{account['id']}/outreach-settings", json={"max_per_minute": 30}))
        batch = made(client.post("/api/v1/outreach/batches", json={
            "account_id": account["id"], "created_by": ann["id"],
            "items": [{"to_handle": f"+1555000{i:04d}", "body": f"hello {i}", "device_id": device["id"]}
                      for i in range(4)]}))
        made(client.post(f"/api/v1/outreach/batches/{batch['id']}/send"))

        sign_in(page, roost_server, "operate", path=f"/console/dispatch?account={account['id']}")
        row = page.locator(f"#batch-{batch['id']}")
        assert "sending" in row.inner_text() and "4 pending" in row.inner_text()
        assert "A message may go now (up to 30)" in page.locator("#next-send").inner_text()
        axe(page)
        shot(page, "dispatch")
        row.get_by_role("button", name="Pause").click()
        page.wait_for_url(f"**/console/dispatch?account={account['id']}*")
        assert "paused" in page.get_by_role("status").inner_text()
        row = page.locator(f"#batch-{batch['id']}")
        assert row.get_attribute("data-status") == "paused"
        assert row.get_by_role("button", name="Resume").is_visible()
        assert made(client.get(f"/api/v1/outreach/batches/{batch['id']}"))["status"] == "paused"
        shot(page, "dispatch-paused")
        fits_a_phone(page, shot, "dispatch-phone")

        row.get_by_role("link", name=batch["id"]).click()
        assert "batch paused" in page.locator("dl").inner_text()
        axe(page)
        shot(page, "batch")
        page.get_by_role("link", name=device["id"]).first.click()
        assert page.get_by_role("heading", level=1).inner_text() == f"Send queue of {device['id']}"
        assert page.get_by_role("row").filter(has_text="+15550000003").count() == 1
        axe(page)
        shot(page, "device-queue")


def test_a_claim_in_one_tab_shows_as_claimed_in_a_second_tab_without_a_reload(page, roost_server, shot, axe):
    with admin(roost_server) as client:
        account, (ann, bob) = account_with_users(client, "Claiming", "Ann", "Bob")
        handoff = made(client.post("/api/v1/handoffs", json={
            "account_id": account["id"], "subject_ref": "ticket-4711", "intent": "escalate", "priority": "urgent",
            "notes": "the customer waits", "created_by": ann["id"]}))
        path = f"/console/handoffs?account={account['id']}"
        sign_in(page, roost_server, "operate", path=path)

        watcher = page.context.new_page()  # a second tab of the same browser
        watcher.goto(roost_server.url + path)
        wait_js(watcher, "document.documentElement.dataset.liveState === 'open'")
        watcher.evaluate("window.__marker = 'same page'")
        assert watcher.locator(f"#handoff-{handoff['id']}").is_visible()
        axe(watcher)
        shot(watcher, "handoffs-second-tab-before")

        page.get_by_label("Act for").select_option(label=f"Bob <{bob['email']}>")
        page.get_by_role("button", name="Choose").click()
        page.locator(f"#handoff-{handoff['id']}").get_by_role("button", name="Claim for Bob").click()
        assert "ticket-4711 claimed for" in page.get_by_role("status").inner_text()
        axe(page)
        shot(page, "handoffs-claimed")
        fits_a_phone(page, shot, "handoffs-phone")

        watcher.locator(f"#handoff-{handoff['id']}").wait_for(state="detached", timeout=10_000)
        recent = watcher.locator("#recent tr", has_text="ticket-4711")
        recent.filter(has_text="claimed").wait_for(timeout=10_000)
        assert "by Bob" in recent.inner_text()
        watcher.locator("#events tr", has_text="claimed").first.wait_for(timeout=10_000)
        assert watcher.evaluate("window.__marker") == "same page"  # swapped in, never reloaded
        axe(watcher)
        shot(watcher, "handoffs-second-tab-after")
        assert made(client.get(f"/api/v1/handoffs/{handoff['id']}"))["claimed_by"] == bob["id"]
        # A new handoff appears in the open tab by itself.
        fresh = made(client.post("/api/v1/handoffs", json={
            "account_id": account["id"], "subject_ref": "ticket-4712", "intent": "park", "created_by": ann["id"]}))
        watcher.locator(f"#handoff-{fresh['id']}").wait_for(timeout=10_000)
        assert watcher.evaluate("window.__marker") == "same page"

        watcher.locator("#recent").get_by_role("link", name="ticket-4711").click()
        assert "Claimed" in watcher.locator("dl").inner_text()
        axe(watcher)
        shot(watcher, "handoff")
