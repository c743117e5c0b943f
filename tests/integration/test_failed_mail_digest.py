"""A personal-direct notification whose mail fails for good goes to the next digest instead (a real
SMTP server, aiosmtpd, refusing the message; SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from roost.actors.mailer import Mailer
from roost.domain import watchers
from roost.domain.digest import notify
from roost.domain.digest.tick import run_tick
from roost.plugins.transports.smtp import SmtpTransport
from roost.runtime.services import Services
from roost.storage import digests, notifications, outbox
from roost.storage.database import Database
from tests.support.digest import make_account, make_services, make_user

PERSONAL = {"category": "personal-direct", "text": "you were mentioned"}


async def _ann_mentioned(db: Database, **settings: Any) -> tuple[Services, dt.datetime, dict[str, Any],
                                                                dict[str, Any]]:
    """Ann's personal-direct notification with its mail queued: (services, now, ann, the notification).
    ``settings`` go to ``make_services`` beside the mail's sender."""
    services = make_services(db, mail_from="roost <noreply@example.com>", **settings)
    now = services.clock.now()
    ann = await make_user(db, await make_account(db, now), now=now, email="ann@example.com")
    mailed = await notify.create(services, recipient_user_id=ann["id"], event_kind="mention", topic="rfc-7",
                                 actor_user_id=None, payload=PERSONAL, email=True)
    return services, now, ann, mailed


async def test_a_personal_direct_mail_refused_for_good_is_in_the_next_digest(db: Database, smtp) -> None:
    server, port = smtp
    services, now, ann, mailed = await _ann_mentioned(db)
    assert mailed["email_sent_at"] is not None
    server.fail_next.append("550 no such mailbox")

    done = await Mailer().drain(services, SmtpTransport("127.0.0.1", port))

    assert done["failed"] == 1
    [mail] = await db.fetch("SELECT * FROM outbox WHERE recipient_user_id = $1", ann["id"])
    assert mail["status"] == "failed"
    after = await notifications.get(db, mailed["id"])
    assert after["email_sent_at"] is None and after["payload"] == PERSONAL
    counters = await run_tick(services, now=now + dt.timedelta(days=1, minutes=1))
    assert counters["digests"] == 1 and counters["notifications"] == 1
    [record] = await digests.list_for_user(db, ann["id"])
    assert record["notification_ids"] == [mailed["id"]]


async def test_a_mail_sent_after_a_retry_stays_e_mailed_and_out_of_the_digest(db: Database, smtp) -> None:
    server, port = smtp
    services, now, ann, mailed = await _ann_mentioned(db, mail_retry_initial_s=0.0)
    server.fail_next.append("451 try again later")

    done = await Mailer().drain(services, SmtpTransport("127.0.0.1", port))  # the retry is due at once

    assert done == {"sent": 1, "queued": 1, "failed": 0} and len(server.messages) == 1
    assert (await notifications.get(db, mailed["id"]))["email_sent_at"] is not None
    counters = await run_tick(services, now=now + dt.timedelta(days=1, minutes=1))
    assert counters["notifications"] == 0


async def test_a_failed_mail_of_a_topic_event_unmarks_only_its_own_notification(db: Database, smtp) -> None:
    server, port = smtp
    services = make_services(db, mail_from="roost <noreply@example.com>")
    now = services.clock.now()
    acc = await make_account(db, now)
    ann, bob, cid = [await make_user(db, acc, now=now, email=f"{n}@example.com") for n in ("ann", "bob", "cid")]
    async with db.transaction() as tx:
        for user in (bob, cid):
            await notifications.watch(tx, user_id=user["id"], topic="rfc-7", now=now)
    result = await watchers.publish_event(services, topic="rfc-7", event_kind="mention", actor_user_id=ann["id"],
                                        payload=PERSONAL, email=True)
    assert result == {"notified": 2}
    bob_mail = await db.fetchval("SELECT id FROM outbox WHERE recipient_user_id = $1", bob["id"])
    await db.execute("UPDATE outbox SET next_attempt_at = $1 WHERE id <> $2",
                     now + dt.timedelta(hours=1), bob_mail)  # bob's goes first, alone
    server.fail_next.append("554 rejected")

    assert (await Mailer().drain(services, SmtpTransport("127.0.0.1", port)))["failed"] == 1

    [bob_n] = (await notifications.list_for_user(db, bob["id"], unread=False, limit=10, cursor=None))["items"]
    [cid_n] = (await notifications.list_for_user(db, cid["id"], unread=False, limit=10, cursor=None))["items"]
    assert bob_n["email_sent_at"] is None and cid_n["email_sent_at"] is not None
    assert (await outbox.get(db, bob_mail))["status"] == "failed"


async def test_a_mail_that_fails_for_good_after_a_digest_went_out_is_in_the_digest_after(
        db: Database, smtp) -> None:
    # The notification's period has passed by the time its mail fails (a digest went out while the
    # mail was waiting for its retry): it is carried over into the next digest all the same, once.
    server, port = smtp
    services, now, ann, mailed = await _ann_mentioned(db)
    other = await notify.create(services, recipient_user_id=ann["id"], event_kind="comment", topic="rfc-7",
                                actor_user_id=None, payload={"text": "a comment"}, email=False)
    server.fail_next.append("451 try again later")
    assert (await Mailer().drain(services, SmtpTransport("127.0.0.1", port)))["queued"] == 1

    first = await run_tick(services, now=now + dt.timedelta(days=1, minutes=1))  # the mail still waits
    assert first["digests"] == 1 and first["notifications"] == 1
    await db.execute("UPDATE outbox SET status = 'sent' WHERE kind = 'digest'")  # (not the SMTP server's)
    await db.execute("UPDATE outbox SET next_attempt_at = $1 WHERE recipient_user_id = $2 AND status = 'queued'",
                     now, ann["id"])  # the personal mail's retry is due now
    server.fail_next.append("550 no such mailbox")
    assert (await Mailer().drain(services, SmtpTransport("127.0.0.1", port)))["failed"] == 1

    second = await run_tick(services, now=now + dt.timedelta(days=2, minutes=1))
    assert second["digests"] == 1 and second["notifications"] == 1, (first, second)
    records = await digests.list_for_user(db, ann["id"])
    assert sorted(r["notification_ids"] for r in records) == sorted([[other["id"]], [mailed["id"]]])
    third = await run_tick(services, now=now + dt.timedelta(days=3, minutes=1))
    assert third["notifications"] == 0  # carried once
