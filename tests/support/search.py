"""A small world for search tests: one of each thing the console searches, with known refs and names."""

from __future__ import annotations

import datetime as dt
from typing import Any

from roost.storage import dispatch, handoffs, outbox, tenancy
from roost.storage import scouts as scout_repo
from roost.storage.database import Database
from roost.storage.scouts import NewItem

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


async def make_world(db: Database) -> dict[str, Any]:
    """A user with a push scout and items, mail, a handoff and a batch: one of each thing searched."""
    acc = await tenancy.create_account(db, name="Acme", timezone="UTC", now=T0, actor="t")
    user = await tenancy.create_user(db, account_id=acc["id"], fields={
        "email": "ann@example.com", "display_name": "Ann", "timezone": "UTC", "role": "member", "active": True,
        "digest_cadence": "off", "digest_time": "08:00", "digest_weekday": "monday", "quiet_hours": None},
        now=T0, actor="t")
    device, _ = await tenancy.create_device(db, user_id=user["id"], name="phone", now=T0, actor="t")
    fields = {"provider": "push", "config": {}, "classifier": "rules", "classifier_config": {},
              "poll_interval_s": 60.0, "enabled": True, "auto_trash_spam": False,
              "device_inactivity_pause_days": None, "ttl_days": 30, "max_failures": 3}
    scout = await scout_repo.create_scout(db, user_id=user["id"], fields=fields, now=T0, actor="t")
    await scout_repo.push_items(db, scout, [
        NewItem("ref-100%_x", "Invoice 7 overdue", None, "Billing@Vendor.example", "b"),
        NewItem("ref-101", "invoice 8", None, "bob@example.com", "b"),
        NewItem("other-1", "Été à Paris", None, "zoe@example.com", "b"),
    ], now=T0)
    items = {i["source_msg_ref"]: i for i in
             (await scout_repo.list_items(db, scout["id"], status=None, limit=100, cursor=None))["items"]}
    async with db.transaction() as tx:
        mail_id = await outbox.enqueue(tx, recipient_user_id=user["id"], to="Ann@Example.com",
                                       subject="Your invoice digest", text="t", now=T0)
        handoff = await handoffs.create(tx, account_id=acc["id"], subject_ref="ticket-42", intent="park", notes="",
                                        priority="normal", snapshot={}, created_by=user["id"], assess=False, now=T0)
    batch, _ = await dispatch.create_batch(db, account_id=acc["id"], created_by=user["id"], idempotency_key=None,
                                           items=[{"to_handle": "+15550001", "body": "hi", "device_id": device["id"]}],
                                           now=T0)
    dispatch_item = await db.fetchrow("SELECT id FROM outreach_items WHERE batch_id = $1", batch["id"])
    return {"account": acc, "user": user, "scout": scout, "items": items, "mail_id": mail_id,
            "handoff": handoff, "batch": batch, "dispatch_item": dispatch_item["id"]}
