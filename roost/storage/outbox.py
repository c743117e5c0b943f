"""The e-mail outbox: every message roost sends is a row here first.

Life of a row::

    held ──(quiet hours end; the digest tick releases it)──► queued
    queued ──(a mailer claims it)──► sending ──► sent
                                        │
                                        ├─ transient error ──► queued again, later (backoff)
                                        └─ permanent error, or out of attempts ──► failed
                                           (a notification it e-mailed is no longer marked e-mailed)

Callers queue mail with ``enqueue`` inside their own transaction, then, after the commit,
``wake(bus, id)`` so a mailer picks it up at once. The Message-ID is fixed when the row is
made, so the one resend this design allows (the process died after the server accepted the
message and before ``sending`` became ``sent``; the row is reclaimed and sent again) carries
the same Message-ID and the receiving side can recognise it. Nothing else sends twice: a row
is sent only by the mailer that moved it to ``sending`` in a committed claim.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Sequence

from roost.domain.digest.slots import quiet_until
from roost.errors import NotFound
from roost.runtime.bus import Bus
from roost.runtime.clock import utcnow
from roost.runtime.topics import MAIL_QUEUED
from roost.storage import notifications, webhook_events
from roost.storage.database import Connection, Database, Row
from roost.storage.ids import new_id

MESSAGE_ID_DOMAIN = "roost.mail"
STATUSES = ("held", "queued", "sending", "sent", "failed")

_INSERT = (
    "INSERT INTO outbox (id, kind, recipient_user_id, to_addr, subject, text_body, html_body, headers, message_id,"
    " status, hold_until, next_attempt_at, created_at)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
)


def message_id_for(outbox_id: str, domain: str = MESSAGE_ID_DOMAIN) -> str:
    return f"<{outbox_id}@{domain}>"


def hold_until(user: Row | None, now: dt.datetime) -> dt.datetime | None:
    """When mail for ``user`` (a row with quiet_hours and timezone) may go, if it must wait."""
    if not user:
        return None
    return quiet_until(now, user.get("quiet_hours"), user["timezone"])


def _row(*, outbox_id: str, kind: str, recipient_user_id: str | None, to: str, subject: str, text: str,
         html: str | None, headers: dict[str, str] | None, held: dt.datetime | None,
         now: dt.datetime) -> tuple[Any, ...]:
    return (
        outbox_id, kind, recipient_user_id, to, subject, text, html, dict(headers or {}),
        message_id_for(outbox_id), "held" if held else "queued", held, held or now, now,
    )


async def enqueue(
    conn: Connection,
    *,
    recipient_user_id: str | None,
    to: str,
    subject: str,
    text: str,
    html: str | None = None,
    headers: dict[str, str] | None = None,
    respect_quiet_hours: bool = True,
    kind: str = "mail",
    now: dt.datetime | None = None,
) -> str:
    """Queue one message in the caller's transaction; returns the outbox id.

    With ``respect_quiet_hours`` and a recipient whose quiet hours contain ``now``, the row is
    ``held`` until the window ends. After the caller commits, ``wake(bus, id)``.
    """
    now = now or utcnow()
    held = None
    if respect_quiet_hours and recipient_user_id:
        user = await conn.fetchrow("SELECT quiet_hours, timezone FROM users WHERE id = $1", recipient_user_id)
        held = hold_until(user, now)
    outbox_id = new_id("msg")
    await conn.execute(_INSERT, *_row(outbox_id=outbox_id, kind=kind, recipient_user_id=recipient_user_id, to=to,
                                      subject=subject, text=text, html=html, headers=headers, held=held, now=now))
    return outbox_id


async def enqueue_many(conn: Connection, messages: Sequence[dict[str, Any]], *, now: dt.datetime) -> list[str]:
    """Queue many messages in one statement; each dict has enqueue's keywords plus ``user``
    (the recipient's row with quiet_hours and timezone, already read by the caller).

    On PostgreSQL the rows go in as one ``INSERT .. SELECT FROM unnest(arrays)`` (one execution
    instead of one per row); on SQLite as ``execute_many``."""
    rows, ids = [], []
    for m in messages:
        outbox_id = new_id("msg")
        held = hold_until(m.get("user"), now) if m.get("respect_quiet_hours", True) else None
        rows.append(_row(outbox_id=outbox_id, kind=m.get("kind", "mail"), recipient_user_id=m.get("recipient_user_id"),
                         to=m["to"], subject=m["subject"], text=m["text"], html=m.get("html"),
                         headers=m.get("headers"), held=held, now=now))
        ids.append(outbox_id)
    if not rows:
        return ids
    if conn.dialect.postgresql:
        columns = list(zip(*rows, strict=True))
        headers = [json.dumps(h, separators=(",", ":")) for h in columns[7]]
        await conn.execute(
            "INSERT INTO outbox (id, kind, recipient_user_id, to_addr, subject, text_body, html_body, headers,"
            " message_id, status, hold_until, next_attempt_at, created_at)"
            " SELECT c1, c2, c3, c4, c5, c6, c7, c8::jsonb, c9, c10, c11, c12, c13 FROM unnest($1::text[], $2::text[],"
            " $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],"
            " $11::timestamptz[], $12::timestamptz[], $13::timestamptz[])"
            " AS v(c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13)",
            *columns[:7], headers, *columns[8:],
        )
    else:
        await conn.execute_many(_INSERT, rows)
    return ids


def wake(bus: Bus, *ids: str) -> None:
    """Tell mailers (in this process; PostgreSQL NOTIFY carries it further) that rows are ready."""
    bus.publish(MAIL_QUEUED, *ids)


async def release_held(conn: Connection, now: dt.datetime) -> int:
    """Queue every held message whose quiet hours are over; returns how many."""
    return await conn.execute(
        "UPDATE outbox SET status = 'queued', next_attempt_at = $1 WHERE status = 'held' AND hold_until <= $1", now
    )


async def claim(db: Database, *, now: dt.datetime, limit: int, claimed_by: str) -> list[Row]:
    """Move up to ``limit`` due queued rows to ``sending`` for this mailer (committed before any send)."""
    lock = db.dialect.for_update(skip_locked=True)
    return await db.fetch(
        "UPDATE outbox SET status = 'sending', claimed_by = $3, claimed_at = $1, attempts = attempts + 1"
        " WHERE id IN (SELECT id FROM outbox WHERE status = 'queued' AND next_attempt_at <= $1"
        f" ORDER BY next_attempt_at, id LIMIT $2{lock}) RETURNING *",
        now, limit, claimed_by,
    )


async def mark_sent(db: Database, outbox_id: str, *, now: dt.datetime, claimed_by: str) -> bool:
    return await mark_sent_many(db, [outbox_id], now=now, claimed_by=claimed_by) == 1


async def mark_sent_many(db: Database, outbox_ids: Sequence[str], *, now: dt.datetime, claimed_by: str) -> int:
    """Record that these rows, claimed by ``claimed_by``, were sent (one statement); returns how many.

    A digest's mail queues its ``digest.sent`` webhook in the same transaction (``_digests_sent``).
    """
    async with db.transaction() as tx:
        rows = await tx.fetch(
            "UPDATE outbox SET status = 'sent', sent_at = $2, last_error = NULL"
            f" WHERE id {db.dialect.in_list('$1')} AND status = 'sending' AND claimed_by = $3"
            " RETURNING id, kind, recipient_user_id, subject",
            list(outbox_ids), now, claimed_by,
        )
        await _digests_sent(tx, [r for r in rows if r["kind"] == "digest" and r["recipient_user_id"]], now)
    return len(rows)


async def _digests_sent(tx: Connection, rows: list[Row], now: dt.datetime) -> None:
    """``digest.sent`` for these digest mails, to the endpoints of the recipient's account that want it."""
    wanted = await webhook_events.subscribed_users(tx, "digest.sent", (r["recipient_user_id"] for r in rows))
    rows = [r for r in rows if r["recipient_user_id"] in wanted]
    if not rows:  # the usual case: that one indexed query (none when the batch has no digest)
        return
    digests = {d["outbox_id"]: d for d in await tx.fetch(
        f"SELECT id, outbox_id, notification_ids FROM digests WHERE recipient_user_id {tx.dialect.in_list('$1')}"
        f" AND outbox_id {tx.dialect.in_list('$2')}",
        list({r["recipient_user_id"] for r in rows}), [r["id"] for r in rows])}

    def payload(row: Row) -> dict[str, Any]:
        digest = digests.get(row["id"])
        return {"user_id": row["user_id"], "digest_id": digest and digest["id"], "outbox_id": row["id"],
                "notifications": len(digest["notification_ids"] or []) if digest else 0,
                "subject": row["subject"], "sent_at": now}

    await webhook_events.enqueue_for_users(tx, "digest.sent", [{**r, "user_id": r["recipient_user_id"]} for r in rows],
                                           payload, now=now)


async def mark_retry(db: Database, outbox_id: str, *, retry_at: dt.datetime, error: str, claimed_by: str) -> bool:
    return bool(await db.execute(
        "UPDATE outbox SET status = 'queued', next_attempt_at = $2, last_error = $3, claimed_by = NULL"
        " WHERE id = $1 AND status = 'sending' AND claimed_by = $4", outbox_id, retry_at, error[:2000], claimed_by,
    ))


async def mark_failed(db: Database, outbox_id: str, *, error: str, claimed_by: str) -> bool:
    """Record that the row failed for good; in the same transaction, a notification it e-mailed is no
    longer marked e-mailed (``notifications.mail_failed``), so the next digest carries it."""
    async with db.transaction() as tx:
        failed = bool(await tx.execute(
            "UPDATE outbox SET status = 'failed', last_error = $2 WHERE id = $1 AND status = 'sending'"
            " AND claimed_by = $3", outbox_id, error[:2000], claimed_by,
        ))
        if failed:
            await notifications.mail_failed(tx, outbox_id)
    return failed


async def reclaim_stale(db: Database, *, claimed_before: dt.datetime, now: dt.datetime) -> int:
    """Requeue rows left in ``sending`` by a mailer that died (claimed before ``claimed_before``).

    Such a row may have reached the server already; it is sent again with the same Message-ID.
    """
    return await db.execute(
        "UPDATE outbox SET status = 'queued', next_attempt_at = $2, claimed_by = NULL,"
        " last_error = 'reclaimed after an interrupted send'"
        " WHERE status = 'sending' AND claimed_at < $1", claimed_before, now,
    )


async def get(conn: Connection, outbox_id: str) -> Row:
    row = await conn.fetchrow("SELECT * FROM outbox WHERE id = $1", outbox_id)
    if row is None:
        raise NotFound(f"no outbox message {outbox_id!r}")
    return row


async def counts(conn: Connection) -> dict[str, int]:
    rows = await conn.fetch("SELECT status, COUNT(*) AS n FROM outbox GROUP BY status")
    out = dict.fromkeys(STATUSES, 0)
    out.update({r["status"]: int(r["n"]) for r in rows})
    return out


async def pending_count(conn: Connection) -> int:
    return int(await conn.fetchval("SELECT COUNT(*) FROM outbox WHERE status IN ('held', 'queued', 'sending')"))


# -- the console's view and an operator's retry or cancel (roost.domain.mail) ---------------------

STATES = ("queued", "held", "sending", "sent", "failed", "cancelled")  # cancelled: failed with cancelled_at
COUNT_CAP = 1000  # a state's count stops here ("1000+"): counting millions of sent mail is not worth a page
_LIST_COLUMNS = ("id, kind, recipient_user_id, to_addr, subject, status, hold_until, next_attempt_at, attempts,"
                 " last_error, created_at, sent_at, cancelled_at, cancelled_by")


def _state_clause(state: str) -> str:
    if state == "cancelled":
        return "status = 'failed' AND cancelled_at IS NOT NULL"
    if state == "failed":
        return "status = 'failed' AND cancelled_at IS NULL"
    if state not in STATES:
        raise ValueError(f"not an outbox state: {state!r}")
    return f"status = '{state}'"


async def list_by_state(conn: Connection, state: str, *, limit: int, cursor: str | None = None) -> dict[str, Any]:
    """One page of the messages in ``state`` (one of ``STATES``), newest first; bodies left out."""
    args: list[Any] = [limit + 1]
    where = _state_clause(state)
    if cursor is not None:
        args.append(cursor)
        where += " AND id < $2"
    rows = await conn.fetch(f"SELECT {_LIST_COLUMNS} FROM outbox WHERE {where} ORDER BY id DESC LIMIT $1", *args)
    items = rows[:limit]
    return {"items": items, "next_cursor": items[-1]["id"] if len(rows) > limit and items else None}


async def state_counts(conn: Connection) -> dict[str, int]:
    """How many messages are in each of ``STATES``, each counted up to ``COUNT_CAP + 1`` (an index range
    each, all in one statement)."""
    parts = ", ".join(f"(SELECT COUNT(*) FROM (SELECT 1 FROM outbox WHERE {_state_clause(state)} LIMIT $1) AS c)"
                      f" AS {state}" for state in STATES)
    row = await conn.fetchrow(f"SELECT {parts}", COUNT_CAP + 1)
    return {state: int(row[state]) for state in STATES} if row else dict.fromkeys(STATES, 0)


async def retry(conn: Connection, outbox_id: str, *, now: dt.datetime) -> Row | None:
    """In the caller's transaction: queue a failed (or cancelled) message again, attempts from zero,
    held instead while its recipient's quiet hours last. A notification it e-mails that no digest has
    taken yet is marked e-mailed again (undoing ``notifications.mail_failed``), so it is not also in
    the next digest. Returns the row as it is now, or None if the message is not failed (any more)."""
    user = await conn.fetchrow(
        "SELECT u.quiet_hours, u.timezone FROM outbox o JOIN users u ON u.id = o.recipient_user_id WHERE o.id = $1",
        outbox_id)
    held = hold_until(user, now)
    row = await conn.fetchrow(
        "UPDATE outbox SET status = $2, hold_until = $3, next_attempt_at = $4, attempts = 0, claimed_by = NULL,"
        " claimed_at = NULL, cancelled_at = NULL, cancelled_by = NULL"
        f" WHERE id = $1 AND status = 'failed' RETURNING {_LIST_COLUMNS}",
        outbox_id, "held" if held else "queued", held, held or now)
    if row is not None:
        await notifications.mail_retried(conn, outbox_id, now)
    return row


async def cancel(conn: Connection, outbox_id: str, *, now: dt.datetime, by: str) -> Row | None:
    """In the caller's transaction: cancel a message that is failed, queued or held (not one being
    sent or sent). It becomes ``failed`` with ``cancelled_at``; a notification it e-mails goes to the
    next digest as if the mail had failed. Returns the row, or None if it is in no state to cancel."""
    row = await conn.fetchrow(
        "UPDATE outbox SET cancelled_at = $2, cancelled_by = $3,"
        " last_error = CASE WHEN status = 'failed' THEN last_error ELSE 'cancelled before sending' END,"
        " status = 'failed'"
        f" WHERE id = $1 AND cancelled_at IS NULL AND status IN ('failed', 'queued', 'held') RETURNING {_LIST_COLUMNS}",
        outbox_id, now, by[:200])
    if row is not None:
        await notifications.mail_failed(conn, outbox_id)
    return row
