"""Deleting users and accounts: one transaction each, leaving a tombstone.

The account or user row stays (with ``deleted_at``), because handoffs, batches, notifications
of others and the audit log refer to it; every read in ``roost/storage/tenancy.py`` leaves it
out, so it answers 404. What the deletion does to the rows that hang off it (docs/tenancy.md):

* the user: personal data erased (``email`` becomes ``deleted-<id>@invalid``, so the address can
  be used again, ``display_name`` empty, digest off, no quiet hours), ``active`` false;
* its devices revoked (their sockets are closed by the caller, after the commit);
* its scouts and their items (the pending proposals) deleted;
* its watches, its notifications and its digest schedule deleted; its mail not yet sent
  (``held`` or ``queued``) ends ``failed`` ("recipient deleted");
* kept: handoffs it created or claimed, batches it created, its past digests, the audit log.

Deleting an account does the above for each of its users and also cancels its open batches (their
pending items ``cancelled``; items already on a device end when the caller releases the revoked
devices) and its open handoffs (``handoff_cancelled`` events, ``cancelled_by`` null), and deletes its
webhook endpoints with their deliveries (sent or not: their secrets go with them).
"""

from __future__ import annotations

import datetime as dt

from roost.storage import audit, send_queue
from roost.storage.database import Connection, Database, Row
from roost.storage.handoffs import add_event
from roost.storage.tenancy import get_account, get_user

RECIPIENT_DELETED = "recipient deleted"


async def _erase_user(tx: Connection, user_id: str, now: dt.datetime) -> None:
    await tx.execute(
        "UPDATE users SET deleted_at = $2, updated_at = $2, active = FALSE, email = 'deleted-' || id || '@invalid',"
        " display_name = '', digest_cadence = 'off', quiet_hours = NULL WHERE id = $1", user_id, now,
    )
    await tx.execute("UPDATE devices SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL", user_id, now)
    await tx.execute("DELETE FROM scout_items WHERE user_id = $1", user_id)
    await tx.execute("DELETE FROM scouts WHERE user_id = $1", user_id)
    await tx.execute("DELETE FROM watches WHERE user_id = $1", user_id)
    await tx.execute("DELETE FROM notification_mails WHERE notification_id IN"
                     " (SELECT id FROM notifications WHERE recipient_user_id = $1)", user_id)
    await tx.execute("DELETE FROM notifications WHERE recipient_user_id = $1", user_id)
    await tx.execute("DELETE FROM digest_schedule WHERE user_id = $1", user_id)
    await tx.execute(
        "UPDATE outbox SET status = 'failed', last_error = $2, hold_until = NULL"
        " WHERE recipient_user_id = $1 AND status IN ('held', 'queued')", user_id, RECIPIENT_DELETED,
    )


async def delete_user(db: Database, user_id: str, *, now: dt.datetime, actor: str) -> Row:
    """Delete a user (see the module docstring); answers the user as it was.

    Raises:
        NotFound: no such (live) user.
    """
    async with db.transaction() as tx:
        row = await get_user(tx, user_id)
        await _erase_user(tx, user_id, now)
        await audit.record(tx, at=now, actor=actor, action="user.delete", target_type="user", target_id=user_id,
                           details={"account_id": row["account_id"]})
        return row


async def delete_account(db: Database, account_id: str, *, now: dt.datetime,
                         actor: str) -> tuple[Row, list[str]]:
    """Delete an account and all its users (see the module docstring); answers the account as it was
    and the ids of the users deleted with it.

    Raises:
        NotFound: no such (live) account.
    """
    async with db.transaction() as tx:
        row = await get_account(tx, account_id)
        user_ids = [r["id"] for r in await tx.fetch(
            "SELECT id FROM users WHERE account_id = $1 AND deleted_at IS NULL ORDER BY id", account_id)]
        for user_id in user_ids:
            await _erase_user(tx, user_id, now)
        await tx.execute("UPDATE accounts SET deleted_at = $2 WHERE id = $1", account_id, now)
        # Open batches: cancelled; their pending items cancelled and counted off (a batch left with
        # items on a device finishes when the revoked devices are released).
        await tx.execute(
            "UPDATE outreach_batches SET status = 'cancelled', updated_at = $2,"
            " finished_at = CASE WHEN open_items = 0 THEN $2 ELSE finished_at END"
            " WHERE account_id = $1 AND status IN ('draft', 'sending', 'paused')", account_id, now,
        )
        ended = await tx.fetch(
            "UPDATE outreach_items SET status = 'cancelled', result_at = $2, reason = 'account deleted'"
            " WHERE account_id = $1 AND status = 'pending' RETURNING batch_id", account_id, now,
        )
        await send_queue.close_ended(tx, [r["batch_id"] for r in ended], now=now)
        cancelled = await tx.fetch(
            "UPDATE handoffs SET status = 'cancelled', cancelled_at = $2"
            " WHERE account_id = $1 AND status = 'open' RETURNING *", account_id, now,
        )
        for handoff in sorted(cancelled, key=lambda h: h["id"]):
            await add_event(tx, "handoff_cancelled", handoff, now)
        await tx.execute("DELETE FROM webhook_deliveries WHERE endpoint_id IN"
                         " (SELECT id FROM webhook_endpoints WHERE account_id = $1)", account_id)
        webhooks = await tx.execute("DELETE FROM webhook_endpoints WHERE account_id = $1", account_id)
        await audit.record(tx, at=now, actor=actor, action="account.delete", target_type="account",
                           target_id=account_id, details={"users": len(user_ids), "handoffs_cancelled": len(cancelled),
                                                          "webhooks_deleted": webhooks})
        return row, user_ids
