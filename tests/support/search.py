"""A small world for search tests: one of each thing the console searches, with known refs and names."""

from __future__ import annotations

import datetime as dt
from typing import Any

from roost.storage import dispatch, handoffs, outbox
from roost.storage import scouts as scout_repo
from roost.storage.database import Database
from roost.storage.scouts import NewItem
from tests.support.scouting import make_scouting_user

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


async def make_world(db: Database) -> dict[str, Any]:
    """A user with a push scout and items, mail, a handoff and a batch: one of each thing searched."""
    made = await make_scouting_user(db, now=T0, email="ann@example.com", display_name="Ann", account_name="Acme")
    acc, user, device, scout = made["account"], made["user"], made["device"], made["scout"]
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
