# ruff: noqa: ASYNC110  (tests poll state other tasks own)
"""Mail that links into the app, on both backends: a watcher's digest, the escalation mail on a real
SMTP server, the assessment mail, and templates from ROOST_TEMPLATES_DIR."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import trio

from roost.domain import handoffs, watchers
from roost.domain.digest.tick import run_tick
from roost.plugins.assessors import Assessor
from roost.runtime.clock import utcnow
from roost.storage import handoffs as handoff_repo
from roost.storage import notifications
from roost.storage.database import Database
from tests.support.digest import make_account, make_services, make_user, notify
from tests.support.handoffs import handoff_body
from tests.support.handoffs import make_account as make_account_http
from tests.support.handoffs import make_user as make_user_http
from tests.support.server import admin_client, running_server

APP = "https://app.example.com"
NEW_YORK = ZoneInfo("America/New_York")


async def mails_to(db: Database, user_id: str, kind: str) -> list[dict[str, Any]]:
    return await db.fetch("SELECT * FROM outbox WHERE recipient_user_id = $1 AND kind = $2 ORDER BY created_at, id",
                          user_id, kind)


async def test_a_watchers_digest_groups_by_topic_and_links_the_watched_topic_into_the_app(db: Database) -> None:
    services = make_services(db, app_url=APP, event_labels='{"comment_added": "New comments"}')
    now = utcnow()
    acc = await make_account(db, now)
    ann = await make_user(db, acc, now=now, email="ann@example.com", timezone="America/New_York")
    bob = await make_user(db, acc, now=now, email="bob@example.com")
    carol = await make_user(db, acc, now=now, email="carol@example.com")
    topic = "rfc 7/α"
    async with db.transaction() as tx:
        for user in (ann, bob, carol):
            await notifications.watch(tx, user_id=user["id"], topic=topic, now=now)
    answer = await watchers.publish_event(services, topic=topic, event_kind="comment_added", actor_user_id=bob["id"],
                                          payload={"summary": "<script>alert(1)</script> looks good"}, email=False)
    assert answer == {"notified": 2}
    await notify(db, ann["id"], now=utcnow(), topic="ops", kind="deploy_failed", payload={"summary": "red build"})
    tick_at = utcnow() + dt.timedelta(days=1, hours=1)  # past each user's next 08:00

    await run_tick(services, now=tick_at)

    assert await mails_to(db, bob["id"], "digest") == []  # the actor is not told of their own event
    assert len(await mails_to(db, carol["id"], "digest")) == 1
    [mail] = await mails_to(db, ann["id"], "digest")
    text, html = mail["text_body"], mail["html_body"]
    topic_url = f"{APP}/topics/rfc%207%2F%CE%B1"
    assert f"{topic} (1 update): {topic_url}" in text
    assert f'href="{topic_url}"' in html
    assert text.index("ACTIVITY ON WHAT YOU WATCH") < text.index(topic) < text.index("MORE FOR YOU") \
        < text.index("ops (1 update)")
    assert "1 x New comments" in text and "1 x Deploy failed" in text  # the app's label, else words
    assert "comment_added" not in text + html and "deploy_failed" not in text + html
    since = (tick_at - dt.timedelta(days=30)).astimezone(NEW_YORK)
    assert f"since {since:%a} {since.day} {since:%b %Y}, {since:%H:%M} {since.tzname()}." in text
    assert "You have 2 unread notifications in your inbox." in text and "still unread" not in text
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; looks good" in html
    assert f'href="{APP}/inbox"' in html and f"Open your inbox: {APP}/inbox" in text
    assert mail["headers"]["List-Unsubscribe"].startswith("<https://roost.example/unsubscribe?token=")


async def test_the_digest_comes_from_the_apps_templates_directory(db: Database, tmp_path: Path) -> None:
    (tmp_path / "digest.html.j2").write_text(
        "<p>{% for g in groups %}<a href=\"{{ g.url }}\">{{ g.topic }}</a>{% endfor %} {{ unread_total }}</p>")
    services = make_services(db, app_url=APP, templates_dir=str(tmp_path))
    now = utcnow()
    ann = await make_user(db, await make_account(db, now), now=now, email="ann@example.com")
    await notify(db, ann["id"], now=now, topic="rfc-9", payload={"summary": "<i>x</i>"})
    await run_tick(services, now=now + dt.timedelta(days=1, hours=1))
    [mail] = await mails_to(db, ann["id"], "digest")
    assert mail["html_body"] == f'<p><a href="{APP}/topics/rfc-9">rfc-9</a> 1</p>'
    assert "rfc-9 (1 update)" in mail["text_body"]  # the package's text template still applies


async def test_the_escalation_mails_claim_link_is_the_one_roost_link_handoff_makes(database_url: str, smtp) -> None:
    recorder, port = smtp
    template = "https://app.example.com/escalations/{handoff_id}?account={account_id}"
    async with running_server(database_url, smtp_url=f"smtp://127.0.0.1:{port}",
                              link_templates={"handoff": template}) as server, admin_client(server.url) as client:
        a = await make_account_http(client, "A")
        creator = await make_user_http(client, a, "creator@example.com", role="engineer")
        await make_user_http(client, a, "owner@example.com", role="owner")
        r = await client.post("/api/v1/handoffs", json=handoff_body(a["id"], creator["id"], intent="escalate",
                                                                    priority="high"))
        assert r.status_code == 201, r.text
        handoff = r.json()
        with trio.fail_after(15):
            while not recorder.messages:
                await trio.sleep(0.05)
    [message] = recorder.messages
    link = f"https://app.example.com/escalations/{handoff['id']}?account={a['id']}"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert f"Claim it: {link}" in text
    assert f'href="{link}"' in html.replace("&amp;", "&") and "Claim it</a>" in html
    assert "/api/v1/handoffs" not in text + html  # a person gets 401 there
    assert message["Subject"].startswith("[high] Escalation: ")


class Assessing(Assessor):
    name = "assessing"

    async def assess(self, handoff: dict[str, Any]) -> dict[str, Any] | None:
        return {"summary": "Refunds fail on <EUR> invoices"}


async def _escalation(db: Database, *, assess: bool) -> tuple[str, list[dict[str, Any]]]:
    now = utcnow()
    account = await make_account(db, now)
    creator = await make_user(db, account, now=now, email="ann@example.com", role="engineer")
    told = [await make_user(db, account, now=now, email=f"{n}@example.com", role=role, timezone="Asia/Tokyo")
            for n, role in (("olga", "owner"), ("eve", "engineer"))]
    await make_user(db, account, now=now, email="mo@example.com", role="member")
    async with db.transaction() as tx:
        row = await handoff_repo.create(tx, account_id=account, subject_ref="Ticket 9", intent="escalate", notes="",
                                        priority="normal", snapshot={}, created_by=creator["id"], assess=assess,
                                        now=now)
    return row["id"], told


async def test_an_assessment_that_lands_after_the_escalation_mail_is_mailed_to_the_same_people_once(
    db: Database,
) -> None:
    services = make_services(db, app_url=APP)
    handoff_id, told = await _escalation(db, assess=True)
    assert await handoffs.queue_escalation_mail(services) == 2
    for user in told:
        [mail] = await mails_to(db, user["id"], "handoff_escalation")
        assert f"{APP}/handoffs/{handoff_id}" in mail["text_body"] and "Assessment" not in mail["text_body"]
    await handoffs.assess_pending(services, Assessing())
    await handoffs.assess_pending(services, Assessing())  # nothing left to assess: nothing mailed twice
    for user in told:
        [mail] = await mails_to(db, user["id"], "handoff_assessment")
        assert mail["subject"] == "Assessment: Ticket 9"
        assert "Refunds fail on <EUR> invoices" in mail["text_body"]
        assert "Refunds fail on &lt;EUR&gt; invoices" in mail["html_body"]
        assert f'href="{APP}/handoffs/{handoff_id}"' in mail["html_body"]
        assert " JST" in mail["text_body"]  # the escalation's time in the reader's zone
    channels = {(n["user_id"], n["channel"]) for n in await handoff_repo.notifications(db, handoff_id)}
    assert channels == {(u["id"], c) for u in told for c in ("email", "assessment_email")}


async def test_an_assessment_done_before_the_escalation_mail_rides_in_it(db: Database) -> None:
    services = make_services(db, app_url=APP)
    handoff_id, told = await _escalation(db, assess=True)
    await handoff_repo.claim_assessment(db, handoff_id, now=utcnow(), lease_s=60, max_attempts=3)
    await handoff_repo.store_assessment(db, handoff_id, {"summary": "Known bug"}, utcnow())
    assert await handoffs.queue_escalation_mail(services) == 2
    assert await handoffs.queue_escalation_mail(services) == 0  # queued once
    for user in told:
        [mail] = await mails_to(db, user["id"], "handoff_escalation")
        assert "Assessment: Known bug" in mail["text_body"]
        assert await mails_to(db, user["id"], "handoff_assessment") == []
