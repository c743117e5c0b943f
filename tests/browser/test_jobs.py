"""The processors and mail pages in a real browser: each page screenshotted and checked with axe, and a
failed mail retried as a person would (find its row, press Retry, confirm, read the message)."""

from __future__ import annotations

import datetime as dt
import sqlite3
from typing import Any

import httpx
import pytest

from roost.storage.ids import new_id
from tests.browser.conftest import sign_in
from tests.support.server import SERVICE_TOKEN

pytestmark = pytest.mark.timeout(60)


def database(server: Any) -> sqlite3.Connection:
    """The server's SQLite file (the browser fixture keeps it beside the server's log)."""
    return sqlite3.connect(server.log_path.parent / "roost.db", timeout=10)


def iso(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat()  # as roost stores a time on SQLite


@pytest.fixture(scope="module")
def seeded(roost_server: Any) -> dict[str, Any]:
    """A user with a notification (a digest to preview), a failed mail, and two weeks of token usage."""
    with httpx.Client(base_url=roost_server.url, headers={"Authorization": f"Bearer {SERVICE_TOKEN}"},
                      timeout=10) as admin:
        account = admin.post("/api/admin/accounts", json={"name": "Acme", "timezone": "UTC"}).json()
        user = admin.post("/api/admin/users", json={
            "account_id": account["id"], "email": "ann@example.com", "display_name": "Ann Example",
            "timezone": "Asia/Tokyo", "digest_cadence": "daily", "digest_time": "08:00"}).json()
        r = admin.post("/api/v1/notifications", json={
            "recipient_user_id": user["id"], "event_kind": "comment", "topic": "rfc-7", "actor_user_id": None,
            "payload": {"title": "Launch review"}, "email": False})
        assert r.status_code in (200, 201), r.text
    now = dt.datetime.now(dt.UTC)
    mail_id = new_id("msg")
    with database(roost_server) as db:
        db.execute(
            "INSERT INTO outbox (id, kind, recipient_user_id, to_addr, subject, text_body, html_body, headers,"
            " message_id, status, next_attempt_at, attempts, last_error, created_at)"
            " VALUES (?, 'mail', ?, 'ann@example.com', 'Your weekly report', 'hi', NULL, '{}', ?, 'failed', ?, 5,"
            " '550 5.1.1 mailbox unavailable', ?)",
            (mail_id, user["id"], f"<{mail_id}@roost.mail>", iso(now), iso(now)))
        for i in range(14):
            day = (now - dt.timedelta(days=i)).date().isoformat()
            for model, n in (("claude-opus", 1000 + 150 * i), ("claude-haiku", 400)):
                db.execute("INSERT INTO usage_messages VALUES (?, ?, 'r', ?, ?, ?, ?, ?, 0, ?)",
                           ("ann", f"{model}-{i}", day, model, iso(now), n, n // 10, n * 2))
    return {"user": user, "mail_id": mail_id}


def test_processors_page_shows_runs_and_the_usage_chart(page, roost_server, seeded, shot, axe):
    sign_in(page, roost_server, "read", path="/console/processors")
    assert page.get_by_role("heading", name="Session processors").is_visible()
    assert page.get_by_role("img", name="Tokens per day").first.is_visible()
    assert page.get_by_role("button", name="Run usage now").is_disabled()  # the read role may not run it
    assert "claude-opus" in page.get_by_role("table", name="Totals").inner_text()
    axe(page)
    shot(page, "processors")
    page.set_viewport_size({"width": 375, "height": 800})
    shot(page, "processors-375")


def test_an_operator_retries_a_failed_mail_and_previews_a_digest(page, roost_server, seeded, shot, axe):
    sign_in(page, roost_server, "operate", path="/console/mail")
    row = page.get_by_role("row").filter(has_text="Your weekly report")
    assert "550 5.1.1 mailbox unavailable" in row.inner_text()
    assert "Asia/Tokyo" in page.get_by_role("table", name="next digest").inner_text()
    axe(page)
    shot(page, "mail-failed")

    page.once("dialog", lambda dialog: dialog.accept())  # "Send this message to ann@example.com again?"
    row.get_by_role("button", name="Retry").click()

    status = page.get_by_role("status")
    status.wait_for()
    assert status.inner_text() == "Message to ann@example.com queued again."
    assert page.get_by_role("row").filter(has_text="Your weekly report").count() == 0  # no longer failed
    shot(page, "mail-retried")
    with database(roost_server) as db:
        state = db.execute("SELECT status FROM outbox WHERE id = ?", (seeded["mail_id"],)).fetchone()[0]
        actor = db.execute("SELECT actor FROM audit_log WHERE action = 'console.mail_retry'").fetchone()[0]
    assert state in ("queued", "sending", "sent") and actor == "console:ops"

    page.get_by_role("link", name="Preview the digest of Ann Example").click()
    frame = page.frame_locator("iframe.preview")
    frame.get_by_text("Launch review").wait_for()
    assert page.locator("iframe.preview").get_attribute("sandbox") == ""
    axe(page)
    shot(page, "digest-preview")
