"""The digest tick on SQLite and PostgreSQL: who gets what, when, and never twice.

Time is injected (``run_tick(now=...)``): a real database and a mock clock do not mix, and the
tick itself takes ``now`` from the clock in production.
"""

from __future__ import annotations

import datetime as dt

import pytest
import trio

from roost.domain.digest import notify as notify_service
from roost.domain.digest.tick import run_tick
from roost.errors import AlreadyRunning
from roost.runtime import topics
from roost.storage import digests, notifications, outbox
from roost.storage.database import Database
from tests.support.digest import make_account, make_services, make_user, notify

UTC = dt.UTC
T0 = dt.datetime(2024, 5, 1, 6, 0, tzinfo=UTC)  # a Wednesday


def h(hours: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=hours)


async def digest_rows(db: Database, user_id: str) -> list[dict]:
    return await digests.list_for_user(db, user_id)


async def mails(db: Database, user_id: str) -> list[dict]:
    return await db.fetch("SELECT * FROM outbox WHERE recipient_user_id = $1 ORDER BY created_at, id", user_id)


async def test_a_due_user_gets_one_digest_with_only_eligible_notifications(db: Database) -> None:
    services = make_services(db)
    acc = await make_account(db, h(0))
    ann = await make_user(db, acc, now=h(0), email="ann@example.com")
    bob = await make_user(db, acc, now=h(0), email="bob@example.com", digest_cadence="off")
    keep1 = await notify(db, ann["id"], now=h(0.5), topic="rfc-7", kind="comment", actor=bob["id"],
                         payload={"summary": "looks good <b>"})
    keep2 = await notify(db, ann["id"], now=h(0.6), topic="rfc-7", kind="comment")
    keep3 = await notify(db, ann["id"], now=h(0.7), topic="rfc-9", kind="merged")
    read = await notify(db, ann["id"], now=h(0.8))
    async with db.transaction() as tx:
        await notifications.mark_read(tx, read, h(0.9))
    await notify(db, ann["id"], now=h(0.8), payload={"category": "personal-direct"})
    emailed = await notify_service.create(services, recipient_user_id=ann["id"], event_kind="mention", topic="rfc-7",
                                          actor_user_id=None, payload={"category": "personal-direct"}, email=True)
    assert emailed["email_sent_at"] is not None

    counters = await run_tick(services, now=h(2.5))  # 08:30, after the 08:00 slot

    assert counters["due"] == 1 and counters["digests"] == 1 and counters["notifications"] == 3
    [record] = await digest_rows(db, ann["id"])
    assert sorted(record["notification_ids"]) == sorted([keep1, keep2, keep3])
    assert record["period_start"] == h(2.5) - dt.timedelta(days=30)
    digest_mail = [m for m in await mails(db, ann["id"]) if m["kind"] == "digest"]
    assert len(digest_mail) == 1
    mail = digest_mail[0]
    assert mail["status"] == "queued" and mail["id"] == record["outbox_id"]
    assert mail["subject"] == "Your daily digest: 3 updates on 2 topics"
    text = mail["text_body"]
    assert text.index("rfc-7 (2 updates)") < text.index("rfc-9 (1 update)")  # most active topic first
    assert "2 x Comment\n" in text and "Bob: looks good <b>" in text
    assert "still unread" not in text  # every item of a digest is unread: saying so says nothing
    # Everything unread in the inbox: the three, the personal-direct one and the e-mailed mention.
    assert "You have 5 unread notifications in your inbox." in text
    assert "looks good &lt;b&gt;" in mail["html_body"]  # escaped in HTML
    assert mail["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mail["headers"]["List-Unsubscribe"].startswith("<https://roost.example/unsubscribe?token=")
    for nid in (keep1, keep2, keep3):
        assert (await notifications.get(db, nid))["digest_included_at"] == h(2.5)
    assert (await digests.schedule_of(db, ann["id"]))["next_at"] == h(26)  # tomorrow 08:00
    assert await digest_rows(db, bob["id"]) == []


async def test_a_second_tick_in_the_same_window_sends_nothing(db: Database) -> None:
    services = make_services(db)
    acc = await make_account(db, h(0))
    ann = await make_user(db, acc, now=h(0), email="ann@example.com")
    await notify(db, ann["id"], now=h(1))
    first = await run_tick(services, now=h(2))
    await notify(db, ann["id"], now=h(3))
    second = await run_tick(services, now=h(4))

    assert first["digests"] == 1 and second["due"] == 0 and second["digests"] == 0
    assert len(await mails(db, ann["id"])) == 1


async def test_nothing_to_report_sends_no_mail_but_records_the_period(db: Database) -> None:
    services = make_services(db)
    acc = await make_account(db, h(0))
    ann = await make_user(db, acc, now=h(0), email="ann@example.com")
    await notify(db, ann["id"], now=h(-1))  # inside the 30-day lookback of the first digest
    first = await run_tick(services, now=h(2))
    empty = await run_tick(services, now=h(26))
    await notify(db, ann["id"], now=h(27))
    third = await run_tick(services, now=h(50))

    assert (first["digests"], empty["digests"], empty["empty"], third["digests"]) == (1, 0, 1, 1)
    records = await digest_rows(db, ann["id"])
    assert [r["period_end"] for r in records] == [h(2), h(26), h(50)]
    assert records[2]["period_start"] == h(26)  # the next window starts where the empty one ended
    assert records[1]["outbox_id"] is None


async def test_first_digest_looks_back_at_most_thirty_days(db: Database) -> None:
    services = make_services(db)
    acc = await make_account(db, h(-24 * 40))
    ann = await make_user(db, acc, now=h(-24 * 40), email="ann@example.com")
    await db.execute("UPDATE digest_schedule SET next_at = $2 WHERE user_id = $1", ann["id"], h(2))
    old = await notify(db, ann["id"], now=h(-24 * 31))
    recent = await notify(db, ann["id"], now=h(-24 * 29))
    await run_tick(services, now=h(2))
    [record] = await digest_rows(db, ann["id"])
    assert record["notification_ids"] == [recent]
    assert (await notifications.get(db, old))["digest_included_at"] is None


async def test_a_process_down_over_two_slots_sends_one_digest(db: Database) -> None:
    services = make_services(db)
    acc = await make_account(db, h(0))
    ann = await make_user(db, acc, now=h(0), email="ann@example.com")
    await notify(db, ann["id"], now=h(1))
    await notify(db, ann["id"], now=h(30))
    counters = await run_tick(services, now=h(52))  # slots at h(2) and h(26) both missed; now day 3, 10:00
    again = await run_tick(services, now=h(53))

    assert counters["due"] == 1 and counters["digests"] == 1 and counters["notifications"] == 2
    assert again["due"] == 0
    assert len(await digest_rows(db, ann["id"])) == 1
    assert (await digests.schedule_of(db, ann["id"]))["next_at"] == h(74)


async def test_changing_cadence_time_or_zone_recomputes_the_next_slot(db: Database) -> None:
    from roost.storage import tenancy

    acc = await make_account(db, h(0))
    ann = await make_user(db, acc, now=h(0), email="ann@example.com", digest_cadence="off")
    assert (await digests.schedule_of(db, ann["id"]))["next_at"] is None
    await tenancy.update_user(db, ann["id"], {"digest_cadence": "weekly", "digest_weekday": "friday"},
                              now=h(0), actor="t")
    assert (await digests.schedule_of(db, ann["id"]))["next_at"] == dt.datetime(2024, 5, 3, 8, 0, tzinfo=UTC)
    await tenancy.update_user(db, ann["id"], {"timezone": "Asia/Kathmandu"}, now=h(0), actor="t")
    assert (await digests.schedule_of(db, ann["id"]))["next_at"] == dt.datetime(2024, 5, 3, 2, 15, tzinfo=UTC)
    await tenancy.update_user(db, ann["id"], {"display_name": "Ann B"}, now=h(100), actor="t")
    assert (await digests.schedule_of(db, ann["id"]))["next_at"] == dt.datetime(2024, 5, 3, 2, 15, tzinfo=UTC)


async def test_quiet_hours_hold_mail_until_the_window_ends(db: Database) -> None:
    services = make_services(db)
    acc = await make_account(db, h(0))
    ann = await make_user(db, acc, now=h(0), email="ann@example.com", digest_cadence="off",
                          quiet_hours={"start": "22:00", "end": "07:00"})
    async with db.transaction() as tx:
        held = await outbox.enqueue(tx, recipient_user_id=ann["id"], to=ann["email"], subject="s", text="t",
                                    now=h(17))  # 23:00
        loud = await outbox.enqueue(tx, recipient_user_id=ann["id"], to=ann["email"], subject="s", text="t",
                                    now=h(17), respect_quiet_hours=False)
    row = await outbox.get(db, held)
    assert row["status"] == "held" and row["hold_until"] == h(25)
    assert (await outbox.get(db, loud))["status"] == "queued"
    assert (await run_tick(services, now=h(24.9)))["released"] == 0
    assert (await run_tick(services, now=h(25)))["released"] == 1
    assert (await outbox.get(db, held))["status"] == "queued"


async def test_a_digest_in_quiet_hours_is_held_too(db: Database) -> None:
    services = make_services(db)
    acc = await make_account(db, h(0))
    ann = await make_user(db, acc, now=h(0), email="ann@example.com", quiet_hours={"start": "07:00", "end": "09:00"})
    await notify(db, ann["id"], now=h(1))
    await run_tick(services, now=h(2))
    [mail] = await mails(db, ann["id"])
    assert mail["status"] == "held" and mail["hold_until"] == h(3)


async def test_watches_decay_after_ninety_days_without_participation(db: Database) -> None:
    services = make_services(db)
    acc = await make_account(db, h(0))
    ann = await make_user(db, acc, now=h(0), email="ann@example.com", digest_cadence="off")
    bob = await make_user(db, acc, now=h(0), email="bob@example.com", digest_cadence="off")
    async with db.transaction() as tx:
        await notifications.watch(tx, user_id=ann["id"], topic="stale", now=h(-24 * 91))
        await notifications.watch(tx, user_id=ann["id"], topic="fresh", now=h(-24 * 89))
        await notifications.watch(tx, user_id=ann["id"], topic="active", now=h(-24 * 200))
    await notify(db, bob["id"], now=h(-1), topic="active", actor=ann["id"])  # Ann took part

    assert (await run_tick(services, now=h(0)))["decayed"] == 1
    left = await db.fetch("SELECT topic FROM watches WHERE user_id = $1 ORDER BY topic", ann["id"])
    assert [r["topic"] for r in left] == ["active", "fresh"]


async def test_inactive_users_get_no_digest_but_their_slot_moves_on(db: Database) -> None:
    services = make_services(db)
    acc = await make_account(db, h(0))
    ann = await make_user(db, acc, now=h(0), email="ann@example.com", active=False)
    await notify(db, ann["id"], now=h(1))
    counters = await run_tick(services, now=h(2))
    assert counters["due"] == 1 and counters["digests"] == 0
    assert await mails(db, ann["id"]) == []


async def test_a_tick_while_another_runs_is_refused(db: Database) -> None:
    services = make_services(db)
    async with services.locks.hold("digest"):
        with pytest.raises(AlreadyRunning):
            await run_tick(services, now=h(0))


async def test_batches_cover_every_due_user_with_a_fixed_number_of_statements(db: Database) -> None:
    services = make_services(db, digest_batch_size=3)
    acc = await make_account(db, h(0))
    users = [await make_user(db, acc, now=h(0), email=f"u{i}@example.com") for i in range(7)]
    for u in users:
        await notify(db, u["id"], now=h(1))
        await notify(db, u["id"], now=h(1.5), topic="other")
    counters = await run_tick(services, now=h(2))
    assert counters == {"released": 0, "decayed": 0, "due": 7, "digests": 7, "empty": 0, "batches": 3,
                        "notifications": 14}


async def test_each_committed_batch_wakes_the_mailer_before_the_tick_ends(db: Database) -> None:
    services = make_services(db, digest_batch_size=3)
    acc = await make_account(db, h(0))
    for i in range(7):
        user = await make_user(db, acc, now=h(0), email=f"u{i}@example.com")
        await notify(db, user["id"], now=h(1))
    with services.bus.subscribe(topics.MAIL_QUEUED) as wakeups:
        counters = await run_tick(services, now=h(2))
        woken = []
        with trio.fail_after(5):  # published before run_tick returned: already waiting in the subscription
            for _ in range(3):
                woken.extend((await wakeups.receive()).ids)
        with trio.move_on_after(0.05):
            woken.extend((await wakeups.receive()).ids)  # a fourth would be one too many
    assert counters["batches"] == 3
    queued = {m["id"] for m in await db.fetch("SELECT id FROM outbox")}
    assert len(woken) == 3 and set(woken) <= queued  # one wake-up per batch, each naming a row it queued


async def test_a_slot_is_claimed_only_while_the_schedule_still_stands_where_it_was_read(db: Database) -> None:
    # The tick reads a batch outside the transaction that writes it; claim_slots is what keeps a
    # user whose schedule moved in between (or who was served already) from a digest.
    acc = await make_account(db, h(0))
    ann = await make_user(db, acc, now=h(0), email="ann@example.com")
    slot = (await digests.schedule_of(db, ann["id"]))["next_at"]
    assert slot == h(2)

    async with db.transaction() as tx:
        stale = await digests.claim_slots(tx, slots=[(ann["id"], h(1), h(26))], now=h(2.5))
    async with db.transaction() as tx:
        fresh = await digests.claim_slots(tx, slots=[(ann["id"], slot, h(26))], now=h(2.5))
    async with db.transaction() as tx:
        again = await digests.claim_slots(tx, slots=[(ann["id"], slot, h(26))], now=h(2.6))

    assert (stale, fresh, again) == (set(), {ann["id"]}, set())
    assert await digests.schedule_of(db, ann["id"]) == {"next_at": h(26), "last_at": h(2.5)}
