"""The operator's mail operations (roost.domain.mail), on SQLite and PostgreSQL: the outbox by state,
retry and cancel of a message with its notification kept in step, next digests, the digest preview."""

from __future__ import annotations

import datetime as dt
from typing import Any, NamedTuple

import pytest

from roost.domain import mail
from roost.domain.digest import notify
from roost.domain.digest.tick import run_tick
from roost.errors import Conflict, InvalidInput, NotFound
from roost.runtime import topics
from roost.runtime.services import Services
from roost.storage import notifications, outbox
from roost.storage.database import Database
from tests.support.digest import make_account, make_services, make_user
from tests.support.digest import notify as add_notification

PERSONAL = {"category": "personal-direct", "text": "you were mentioned"}


class AnnWorld(NamedTuple):
    """Services over the test database, the time they read, and Ann (ann@example.com), a user of an account."""

    services: Services
    now: dt.datetime
    ann: dict[str, Any]


@pytest.fixture
async def ann_world(db: Database) -> AnnWorld:
    """The set-up most tests here start from: one user whose mail the operator retries or cancels."""
    services = make_services(db)
    now = services.clock.now()
    return AnnWorld(services, now, await make_user(db, await make_account(db, now), now=now, email="ann@example.com"))


async def fail(db: Database, outbox_id: str, now: dt.datetime, error: str = "550 no such mailbox") -> None:
    """Claim every due message and fail ``outbox_id`` for good, as the mailer would."""
    claimed = await outbox.claim(db, now=now + dt.timedelta(minutes=1), limit=100, claimed_by="test")
    assert outbox_id in {r["id"] for r in claimed}
    assert await outbox.mark_failed(db, outbox_id, error=error, claimed_by="test")


async def mailed_notification(services, user_id: str) -> tuple[str, str]:
    """A personal-direct notification e-mailed to ``user_id``: (notification id, outbox id)."""
    made = await notify.create(services, recipient_user_id=user_id, event_kind="mention", topic="rfc-7",
                               actor_user_id=None, payload=PERSONAL, email=True)
    outbox_id = await services.db.fetchval(
        "SELECT outbox_id FROM notification_mails WHERE notification_id = $1", made["id"])
    return made["id"], outbox_id


async def test_retrying_a_failed_mail_queues_it_again_and_keeps_its_notification_out_of_the_digest(
        db: Database, ann_world: AnnWorld) -> None:
    services, now, ann = ann_world
    nid, mid = await mailed_notification(services, ann["id"])
    await fail(db, mid, now)
    assert (await notifications.get(db, nid))["email_sent_at"] is None  # carried over, as a failure does

    row = await mail.retry(services, mid)

    assert row["status"] == "queued" and row["attempts"] == 0
    assert row["last_error"] == "550 no such mailbox"  # the reason stays visible until the next attempt
    after = await notifications.get(db, nid)
    assert after["email_sent_at"] is not None
    counters = await run_tick(services, now=now + dt.timedelta(days=1, minutes=1))
    assert counters["notifications"] == 0  # not mailed and digested both
    assert (await db.fetchval("SELECT category FROM notifications WHERE id = $1", nid)) == "personal-direct"


async def test_retrying_inside_the_recipients_quiet_hours_holds_the_mail_until_they_end(
        db: Database, ann_world: AnnWorld) -> None:
    services, now, ann = ann_world
    _, mid = await mailed_notification(services, ann["id"])
    await fail(db, mid, now)
    start = (now - dt.timedelta(hours=1)).strftime("%H:%M")
    end = (now + dt.timedelta(hours=2)).strftime("%H:%M")
    await db.execute("UPDATE users SET quiet_hours = $2 WHERE id = $1", ann["id"], {"start": start, "end": end})

    row = await mail.retry(services, mid)

    assert row["status"] == "held" and row["hold_until"] > now


async def test_only_a_failed_mail_can_be_retried_and_an_unknown_one_is_not_found(
        db: Database, ann_world: AnnWorld) -> None:
    services, now, ann = ann_world
    _, mid = await mailed_notification(services, ann["id"])
    with pytest.raises(Conflict, match="queued"):
        await mail.retry(services, mid)
    for bad in ("msg_nope", "", "x" * 10_000, "usr_" + ann["id"], "\x00"):
        with pytest.raises(NotFound):
            await mail.retry(services, bad)
        with pytest.raises(NotFound):
            await mail.cancel(services, bad, by="console:op")


async def test_cancelling_a_queued_mail_sends_its_notification_to_the_digest_and_it_is_never_claimed(
        db: Database, ann_world: AnnWorld) -> None:
    services, now, ann = ann_world
    nid, mid = await mailed_notification(services, ann["id"])

    row = await mail.cancel(services, mid, by="console:op")

    assert row["status"] == "failed" and row["cancelled_at"] is not None and row["cancelled_by"] == "console:op"
    assert await outbox.claim(db, now=now + dt.timedelta(days=1), limit=10, claimed_by="m") == []
    assert (await notifications.get(db, nid))["email_sent_at"] is None
    with pytest.raises(Conflict, match="cancelled"):
        await mail.cancel(services, mid, by="console:op")
    page = await mail.outbox_page(services, "cancelled")
    assert [r["id"] for r in page["items"]] == [mid] and page["counts"]["cancelled"] == 1
    assert page["counts"]["failed"] == 0
    # A cancelled message may still be retried (an operator's mistake is undone so).
    assert (await mail.retry(services, mid))["status"] == "queued"


async def test_a_mail_being_sent_or_sent_cannot_be_cancelled(db: Database, ann_world: AnnWorld) -> None:
    services, now, ann = ann_world
    _, mid = await mailed_notification(services, ann["id"])
    await outbox.claim(db, now=now + dt.timedelta(minutes=1), limit=10, claimed_by="m")
    with pytest.raises(Conflict, match="sending"):
        await mail.cancel(services, mid, by="console:op")
    await outbox.mark_sent(db, mid, now=now, claimed_by="m")
    with pytest.raises(Conflict, match="sent"):
        await mail.cancel(services, mid, by="console:op")


async def test_the_outbox_lists_each_state_newest_first_in_pages_and_refuses_bad_arguments(
        db: Database, ann_world: AnnWorld) -> None:
    services, now, ann = ann_world
    ids = [(await mailed_notification(services, ann["id"]))[1]]
    await fail(db, ids[0], now)
    ids += [(await mailed_notification(services, ann["id"]))[1] for _ in range(4)]

    first = await mail.outbox_page(services, "queued", limit=2)
    second = await mail.outbox_page(services, "queued", limit=2, cursor=first["next_cursor"])

    listed = [r["id"] for p in (first, second) for r in p["items"]]
    assert listed == sorted(ids[1:], reverse=True) and second["next_cursor"] is None
    assert "text_body" not in first["items"][0]  # bodies are not listed
    failed = await mail.outbox_page(services, "failed")
    assert failed["items"][0]["last_error"] == "550 no such mailbox"
    assert failed["counts"] == {"queued": 4, "held": 0, "sending": 0, "sent": 0, "failed": 1, "cancelled": 0}
    for state, kwargs in (("bogus", {}), ("queued", {"limit": 0}), ("queued", {"limit": 1001}),
                          ("queued", {"cursor": "x" * 500}), ("queued", {"cursor": "a\x00b"})):
        with pytest.raises(InvalidInput):
            await mail.outbox_page(services, state, **kwargs)


async def test_next_digests_come_soonest_first_in_each_users_local_time(db: Database) -> None:
    services = make_services(db)
    now = services.clock.now()
    acc = await make_account(db, now)
    tokyo = await make_user(db, acc, now=now, email="t@example.com", timezone="Asia/Tokyo", digest_time="08:00")
    paris = await make_user(db, acc, now=now, email="p@example.com", timezone="Europe/Paris", digest_time="08:00")
    await make_user(db, acc, now=now, email="off@example.com", digest_cadence="off")

    first = await mail.next_digests(services, limit=1)
    second = await mail.next_digests(services, limit=1, cursor=first["next_cursor"])

    rows = first["items"] + second["items"]
    assert {r["id"] for r in rows} == {tokyo["id"], paris["id"]} and second["next_cursor"] is None
    assert rows[0]["next_at"] <= rows[1]["next_at"]
    for row in rows:
        assert " 08:00 " in row["local_next"] and row["local_next"].endswith(row["timezone"])
    for bad in ("nope", "x" * 1000, "WyJhIiwiYiJd"):  # the last: ["a", "b"], not a time
        with pytest.raises(InvalidInput):
            await mail.next_digests(services, cursor=bad)


async def test_a_preview_renders_the_next_digest_and_changes_nothing(db: Database) -> None:
    services = make_services(db)
    now = services.clock.now()
    acc = await make_account(db, now)
    ann = await make_user(db, acc, now=now, email="ann@example.com")
    bob = await make_user(db, acc, now=now, email="bob@example.com")
    await add_notification(db, ann["id"], now=now - dt.timedelta(minutes=5), payload={"title": "<b>Spec</b> review"})
    schedule = await db.fetchrow("SELECT * FROM digest_schedule WHERE user_id = $1", ann["id"])

    shown = await mail.preview(services, ann["id"])
    empty = await mail.preview(services, bob["id"])

    assert shown["notifications"] == 1 and "&lt;b&gt;Spec&lt;/b&gt; review" in shown["html"]
    assert shown["subject"] and "Spec" in shown["text"]
    assert empty["notifications"] == 0 and empty["html"] is None
    assert await db.fetchval("SELECT COUNT(*) FROM outbox") == 0
    assert await db.fetchrow("SELECT * FROM digest_schedule WHERE user_id = $1", ann["id"]) == schedule
    off = await make_user(db, acc, now=now, email="off@example.com", digest_cadence="off")
    for bad in (off["id"], "usr_nope", "", "y" * 5000):
        with pytest.raises(NotFound):
            await mail.preview(services, bad)


async def test_retry_and_cancel_tell_open_consoles_on_every_process(db: Database, ann_world: AnnWorld) -> None:
    services, now, ann = ann_world
    _, mid = await mailed_notification(services, ann["id"])
    await fail(db, mid, now)
    with services.bus.subscribe(topics.MAIL_CHANGED) as changes:
        await mail.retry(services, mid)
        await mail.cancel(services, mid, by="console:op")
        assert [m.ids for m in changes.take()[0]] == [(mid,), (mid,)]
    assert topics.MAIL_CHANGED in topics.CLUSTER and topics.PROCESSOR_RAN in topics.CLUSTER
