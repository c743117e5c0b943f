"""The mail a handoff sends: who gets it, and queueing the messages the domain rendered.

Reads and writes only; the messages are rendered by ``roost.domain.handoff_mail`` between the read
(``escalation_recipients``, ``assessment_recipients``) and the write (``queue_escalation``,
``queue_assessment``). Each write is one transaction and queues at most once:

* the escalation mail through the handoff's ``mail_state`` (a conditional UPDATE from ``pending``
  to ``queued`` decides which process does it; the mark stays while nothing is queued, so a crash
  between the read and the write is picked up by the next pass);
* the assessment mail through ``handoff_notifications`` (one row per handoff, user and channel
  ``assessment_email``: a second try inserts nothing and queues nothing), and the handoff's
  ``assessment_mail_state``: set ``pending`` with the assessment (``roost.storage.handoffs``),
  ``done`` in the transaction that queues the mail, or in the escalation's when that mail already
  carried the assessment. A crash in between leaves the mark for the next pass.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Sequence

from roost.storage import outbox
from roost.storage.database import Connection, Database, Row

_RECIPIENT = "u.id, u.email, u.display_name, u.timezone, u.quiet_hours"


async def escalation_recipients(conn: Connection, handoff_id: str) -> tuple[Row, str | None, list[Row]] | None:
    """(handoff, the creator's name, recipients) of an escalation whose mail is still pending, else None.

    Recipients: the account's active owners, admins and engineers, except the one who escalated.
    """
    row = await conn.fetchrow("SELECT * FROM handoffs WHERE id = $1 AND mail_state = 'pending'", handoff_id)
    if row is None:
        return None
    recipients = await conn.fetch(
        f"SELECT {_RECIPIENT} FROM users u WHERE u.account_id = $1 AND u.active AND u.id <> $2"
        " AND u.role IN ('owner', 'admin', 'engineer') ORDER BY u.id", row["account_id"], row["created_by"])
    creator = await conn.fetchval("SELECT display_name FROM users WHERE id = $1", row["created_by"])
    return row, creator, list(recipients)


async def queue_escalation(db: Database, handoff_id: str, messages: Sequence[dict[str, Any]],
                           now: dt.datetime, *, carries_assessment: bool = False) -> list[str]:
    """Queue the escalation's rendered ``messages`` (``outbox.enqueue_many`` dicts with ``recipient_user_id``),
    once: returns the outbox ids, or nothing when another process queued them first.
    ``carries_assessment``: they were rendered with the assessment, which then needs no mail of its own."""
    async with db.transaction() as tx:
        won = await tx.fetchval(
            "UPDATE handoffs SET mail_state = 'queued' WHERE id = $1 AND mail_state = 'pending' RETURNING id",
            handoff_id)
        if won is None:
            return []
        if carries_assessment:  # the assessment went with it: no separate mail
            await tx.execute("UPDATE handoffs SET assessment_mail_state = 'done' WHERE id = $1"
                             " AND assessment_mail_state = 'pending'", handoff_id)
        ids = await outbox.enqueue_many(tx, messages, now=now)
        for message, outbox_id in zip(messages, ids, strict=True):
            await tx.execute(
                "INSERT INTO handoff_notifications (handoff_id, user_id, channel, outbox_id, created_at)"
                " VALUES ($1, $2, 'email', $3, $4) ON CONFLICT DO NOTHING",
                handoff_id, message["recipient_user_id"], outbox_id, now)
        return ids


async def assessment_recipients(conn: Connection, handoff_id: str) -> tuple[Row, str | None, list[Row]] | None:
    """(handoff, the creator's name, recipients) for the mail of an escalation's assessment: the
    active users its escalation mail went to who have not had the assessment mail yet. None: no
    such handoff."""
    row = await conn.fetchrow("SELECT * FROM handoffs WHERE id = $1", handoff_id)
    if row is None:
        return None
    recipients = await conn.fetch(
        f"SELECT {_RECIPIENT} FROM handoff_notifications n JOIN users u ON u.id = n.user_id"
        " WHERE n.handoff_id = $1 AND n.channel = 'email' AND u.active AND NOT EXISTS ("
        "  SELECT 1 FROM handoff_notifications a WHERE a.handoff_id = n.handoff_id AND a.user_id = n.user_id"
        "  AND a.channel = 'assessment_email') ORDER BY u.id", handoff_id)
    creator = await conn.fetchval("SELECT display_name FROM users WHERE id = $1", row["created_by"])
    return row, creator, list(recipients)


async def queue_assessment(db: Database, handoff_id: str, messages: Sequence[dict[str, Any]],
                           now: dt.datetime) -> list[str]:
    """Queue each rendered assessment mail whose recipient has not had one, and clear the handoff's
    mark (one transaction)."""
    async with db.transaction() as tx:
        # Only once the escalation mail is queued: until then it may still carry the assessment
        # itself, and if it does not, the mark is what gets the assessment mailed afterwards.
        await tx.execute("UPDATE handoffs SET assessment_mail_state = 'done' WHERE id = $1"
                         " AND assessment_mail_state = 'pending' AND mail_state = 'queued'", handoff_id)
        fresh = []
        for message in messages:
            inserted = await tx.fetchval(
                "INSERT INTO handoff_notifications (handoff_id, user_id, channel, created_at)"
                " VALUES ($1, $2, 'assessment_email', $3) ON CONFLICT DO NOTHING RETURNING user_id",
                handoff_id, message["recipient_user_id"], now)
            if inserted is not None:
                fresh.append(message)
        ids = await outbox.enqueue_many(tx, fresh, now=now)
        for message, outbox_id in zip(fresh, ids, strict=True):
            await tx.execute(
                "UPDATE handoff_notifications SET outbox_id = $3 WHERE handoff_id = $1 AND user_id = $2"
                " AND channel = 'assessment_email'", handoff_id, message["recipient_user_id"], outbox_id)
        return ids
