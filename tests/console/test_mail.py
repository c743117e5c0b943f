"""The digests and mail page: the outbox by state (reasons, held until), retry and cancel (a 409 as a
message), next digests in local time, the sandboxed preview; the read role may look but not act; unknown
and hostile ids are a 404, bad arguments a 400, never a 500."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from roost.storage import audit, outbox, tenancy
from tests.console.test_processors import flash_of
from tests.support.digest import notify

pytestmark = pytest.mark.timeout(30)


async def make_user(db, email: str = "ann@example.com", **fields: Any) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    account = await tenancy.create_account(db, name="Acme", timezone="UTC", now=now, actor="test")
    values = {"email": email, "display_name": "Ann <Admin>", "timezone": "Asia/Tokyo", "role": "member",
              "active": True, "digest_cadence": "daily", "digest_time": "08:00", "digest_weekday": "monday",
              "quiet_hours": None, **fields}
    return await tenancy.create_user(db, account_id=account["id"], fields=values, now=now, actor="test")


async def add_mail(db, user: dict[str, Any], status: str, *, subject: str = "Hello", error: str | None = None) -> str:
    """A message in ``status`` (not due for a day, so the running mailer leaves a queued one alone)."""
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    async with db.transaction() as tx:
        mid = await outbox.enqueue(tx, recipient_user_id=user["id"], to=user["email"], subject=subject, text="hi",
                                   respect_quiet_hours=False, now=later)
    await db.execute("UPDATE outbox SET status = $2, last_error = $3, hold_until = $4, sent_at = $5 WHERE id = $1",
                     mid, status, error, later if status == "held" else None, later if status == "sent" else None)
    return mid


async def test_the_outbox_shows_each_state_with_its_reason_and_counts(console, console_server):
    db = console_server.services.db
    ann = await make_user(db)
    failed = await add_mail(db, ann, "failed", subject="<script>alert(1)</script>", error="550 no such mailbox")
    await add_mail(db, ann, "held")
    await add_mail(db, ann, "queued")
    client = await console("read")

    r = await client.get("/console/mail")  # failed first: what needs an operator

    assert r.status_code == 200
    assert failed in r.text and "550 no such mailbox" in r.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text and "<script>alert" not in r.text
    assert "Retry" in r.text and "disabled" in r.text  # the read role sees the buttons greyed out
    held = await client.get("/console/mail", params={"state": "held"})
    assert held.status_code == 200 and " until " in held.text
    fragment = await client.get("/console/mail", params={"state": "queued", "fragment": "outbox"})
    assert fragment.status_code == 200 and "<html" not in fragment.text and "next attempt" in fragment.text
    for params in ({"state": "bogus"}, {"state": "x" * 5000}, {"cursor": "x" * 5000}, {"cursor": "a\x00"},
                   {"digests": "nope"}, {"digests": "A" * 5000}):
        bad = await client.get("/console/mail", params=params)
        assert bad.status_code == 400, (params, bad.status_code)


async def test_the_outbox_pages_newest_first(console, console_server):
    db = console_server.services.db
    ann = await make_user(db)
    ids = sorted([await add_mail(db, ann, "sent") for _ in range(55)], reverse=True)  # newest first: by id
    client = await console("read")
    first = await client.get("/console/mail", params={"state": "sent"})
    assert all(i in first.text for i in ids[:50]) and ids[50] not in first.text and 'rel="next"' in first.text
    link = first.text.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0].replace("&amp;", "&")
    second = await client.get(link)
    assert all(i in second.text for i in ids[50:]) and ids[0] not in second.text and "Newest" in second.text


async def test_retrying_a_failed_mail_queues_it_and_the_mailer_sends_it(console, console_server):
    db = console_server.services.db
    ann = await make_user(db)
    mid = await add_mail(db, ann, "failed", error="550 no such mailbox")
    client = await console()

    r = await client.act(f"/console/mail/{mid}/retry", back="/console/mail?state=failed")

    assert r.status_code == 303 and r.headers["location"] == "/console/mail?state=failed#outbox"
    assert flash_of(r) == "Message to ann@example.com queued again."
    other = await add_mail(db, ann, "failed", error="554 rejected")
    live = await client.act(f"/console/mail/{other}/retry", back="/console/mail?state=failed&fragment=outbox")
    assert live.headers["location"] == "/console/mail?state=failed#outbox"  # a form from a live-swapped part
    assert (await outbox.get(db, mid))["status"] in ("queued", "sending", "sent")
    [entry] = [e for e in await audit.list_entries(db, target_id=mid)]
    assert (entry["action"], entry["actor"], entry["target_type"]) == ("console.mail_retry", "console:ops", "outbox")
    again = await client.act(f"/console/mail/{mid}/retry", back="/console/mail")
    assert again.status_code == 303 and "only a failed message can be retried" in flash_of(again)


async def test_cancelling_a_queued_mail_and_what_cannot_be_cancelled(console, console_server):
    db = console_server.services.db
    ann = await make_user(db)
    queued = await add_mail(db, ann, "queued")
    sent = await add_mail(db, ann, "sent")
    client = await console()

    r = await client.act(f"/console/mail/{queued}/cancel", back="/console/mail?state=queued")

    assert r.status_code == 303 and flash_of(r) == "Message to ann@example.com cancelled."
    row = await outbox.get(db, queued)
    assert row["status"] == "failed" and row["cancelled_by"] == "console:ops"
    page = await client.get("/console/mail", params={"state": "cancelled"})
    assert queued in page.text and "by console:ops" in page.text
    for mid in (queued, sent):
        refused = await client.act(f"/console/mail/{mid}/cancel")
        assert refused.status_code == 303 and "cannot be cancelled" in flash_of(refused)


async def test_the_read_role_a_missing_csrf_and_unknown_ids_change_nothing(console, console_server):
    db = console_server.services.db
    ann = await make_user(db)
    mid = await add_mail(db, ann, "failed", error="boom")
    reader = await console("read")
    operator = await console()
    for verb in ("retry", "cancel"):
        assert (await reader.act(f"/console/mail/{mid}/{verb}")).status_code == 403
        assert (await operator.post(f"/console/mail/{mid}/{verb}", data={"back": "/console"})).status_code == 403
        for bad in ("msg_nope", ann["id"], "x" * 5000, "msg_%00", "%3Cscript%3E", "msg_" + "a" * 100):
            r = await operator.act(f"/console/mail/{bad}/{verb}")
            assert r.status_code == 404, (verb, bad, r.status_code)
    assert (await outbox.get(db, mid))["status"] == "failed"
    assert (await outbox.get(db, mid))["cancelled_at"] is None
    huge = await operator.act(f"/console/mail/{mid}/retry", back="/" * 100_000)
    assert huge.status_code in (303, 400, 413)


async def test_next_digests_show_local_time_and_a_sandboxed_preview(console, console_server):
    db = console_server.services.db
    ann = await make_user(db)
    await notify(db, ann["id"], now=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1),
                 payload={"title": "<img src=x onerror=alert(1)> launch review"})
    client = await console()

    page = await client.get("/console/mail")
    assert "Ann &lt;Admin&gt;" in page.text and " 08:00 Asia/Tokyo" in page.text
    shown = await client.get(f"/console/mail/digests/{ann['id']}")
    framed = await client.get(f"/console/mail/digests/{ann['id']}/preview.html", params={"show": "bodies"})

    assert shown.status_code == 200 and '<iframe class="preview" sandbox=""' in shown.text
    assert "allow-scripts" not in shown.text and "Notifications</dt><dd>1</dd>" in shown.text
    assert framed.status_code == 200 and "launch review" in framed.text
    assert "<img src=x onerror" not in framed.text  # the mail's own escaping holds
    csp = framed.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "sandbox" in csp and "script-src" not in csp
    assert await db.fetchval("SELECT COUNT(*) FROM outbox") == 0  # a preview queues nothing


async def test_the_read_role_sees_a_preview_only_when_it_asks(console, console_server):
    db = console_server.services.db
    ann = await make_user(db)
    await notify(db, ann["id"], now=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1), payload={"title": "secret"})
    reader = await console("read")
    hidden = await reader.get(f"/console/mail/digests/{ann['id']}")
    assert hidden.status_code == 200 and "<iframe" not in hidden.text and "show=bodies" in hidden.text
    assert (await reader.get(f"/console/mail/digests/{ann['id']}/preview.html")).status_code == 403
    asked = await reader.get(f"/console/mail/digests/{ann['id']}", params={"show": "bodies"})
    assert "<iframe" in asked.text
    off = await make_user(db, email="off@example.com", digest_cadence="off")
    for bad in (off["id"], "usr_nope", "x" * 5000, "%3Cscript%3E", "usr_%00"):
        for path in (f"/console/mail/digests/{bad}", f"/console/mail/digests/{bad}/preview.html?show=bodies"):
            r = await reader.get(path)
            assert r.status_code == 404, (path, r.status_code)
