"""Notifications and watches.

``category`` is copied out of the payload into its own column, so digest exclusions are plain
column predicates on both backends (no JSON operators in the hot query).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Sequence

from roost.errors import NotFound
from roost.storage.database import Connection, Row
from roost.storage.ids import new_id
from roost.storage.pagination import page

PERSONAL_DIRECT = "personal-direct"
_COLUMNS = ("id, recipient_user_id, event_kind, topic, actor_user_id, payload, email, created_at, read_at,"
            " email_sent_at, digest_included_at")


async def insert(conn: Connection, *, recipient_user_id: str, event_kind: str, topic: str,
                 actor_user_id: str | None, payload: dict[str, Any], email: bool, now: dt.datetime) -> str:
    """Store a notification; the actor's watch on the topic counts as participation."""
    notification_id = new_id("ntf")
    category = payload.get("category")
    await conn.execute(
        "INSERT INTO notifications (id, recipient_user_id, event_kind, topic, actor_user_id, payload, category,"
        " email, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        notification_id, recipient_user_id, event_kind, topic, actor_user_id, payload,
        category if isinstance(category, str) else None, email, now,
    )
    if actor_user_id:
        await conn.execute(
            "UPDATE watches SET last_participation_at = $3 WHERE user_id = $1 AND topic = $2",
            actor_user_id, topic, now,
        )
    return notification_id


async def mark_emailed(conn: Connection, mails: Sequence[tuple[str, str]], now: dt.datetime) -> None:
    """Mark notifications e-mailed by the outbox messages just queued for them, in the caller's
    transaction: ``mails`` is (outbox id, notification id) pairs. The link is kept so a message that
    fails for good un-marks its notification (``mail_failed``)."""
    if not mails:
        return
    outbox_ids, notification_ids = [m[0] for m in mails], [m[1] for m in mails]
    await conn.execute(f"UPDATE notifications SET email_sent_at = $1 WHERE id {conn.dialect.in_list('$2')}",
                       now, notification_ids)
    if conn.dialect.postgresql:
        await conn.execute("INSERT INTO notification_mails (outbox_id, notification_id)"
                           " SELECT * FROM unnest($1::text[], $2::text[])", outbox_ids, notification_ids)
    else:
        await conn.execute_many("INSERT INTO notification_mails (outbox_id, notification_id) VALUES ($1, $2)",
                                list(mails))


async def mail_failed(conn: Connection, outbox_id: str) -> int:
    """In the transaction that marks outbox row ``outbox_id`` failed for good: its notification (if it
    e-mails one) is no longer e-mailed, no longer kept out of digests as personal-direct (the
    ``category`` column is what digests exclude by; the payload keeps its category), and carried
    over (``carry_over``: the next digest takes it even if its period has passed, a digest having
    gone out between its creation and the failure). Returns how many notifications changed (0 or 1)."""
    return await conn.execute(
        "UPDATE notifications SET email_sent_at = NULL, category = NULL, carry_over = TRUE"
        " WHERE id = (SELECT notification_id FROM notification_mails WHERE outbox_id = $1)", outbox_id)


async def get(conn: Connection, notification_id: str) -> Row:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM notifications WHERE id = $1", notification_id)
    if row is None:
        raise NotFound(f"no notification {notification_id!r}")
    return row


async def list_for_user(conn: Connection, user_id: str, *, unread: bool, limit: int,
                        cursor: str | None) -> dict[str, Any]:
    unread_clause = " AND read_at IS NULL" if unread else ""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM notifications WHERE recipient_user_id = $1 AND id > $2{unread_clause}"
        " ORDER BY id LIMIT $3",
        user_id, cursor or "", limit + 1,
    )
    return page(rows, limit)


async def mark_read(conn: Connection, notification_id: str, now: dt.datetime) -> Row:
    """Mark read (idempotent: the first read time stays)."""
    await get(conn, notification_id)
    await conn.execute("UPDATE notifications SET read_at = $2 WHERE id = $1 AND read_at IS NULL",
                       notification_id, now)
    return await get(conn, notification_id)


async def watch(conn: Connection, *, user_id: str, topic: str, now: dt.datetime) -> Row:
    """Watch a topic (or renew the watch: watching again counts as participation)."""
    await conn.execute(
        "INSERT INTO watches (user_id, topic, created_at, last_participation_at) VALUES ($1, $2, $3, $3)"
        " ON CONFLICT (user_id, topic) DO UPDATE SET last_participation_at = excluded.last_participation_at",
        user_id, topic, now,
    )
    row = await conn.fetchrow("SELECT * FROM watches WHERE user_id = $1 AND topic = $2", user_id, topic)
    assert row is not None
    return row


async def decay_watches(conn: Connection, *, older_than: dt.datetime) -> int:
    """Drop watches nobody has taken part in since ``older_than``; returns how many."""
    return await conn.execute("DELETE FROM watches WHERE last_participation_at < $1", older_than)


async def with_recipients(conn: Connection, notification_ids: Sequence[str]) -> list[tuple[Row, Row]]:
    """(recipient user row, notification row) for each of ``notification_ids``, in id order."""
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM notifications WHERE id {conn.dialect.in_list('$1')} ORDER BY id",
                            list(notification_ids))
    users = await conn.fetch(
        "SELECT * FROM users WHERE id IN (SELECT recipient_user_id FROM notifications"
        f" WHERE id {conn.dialect.in_list('$1')})", list(notification_ids))
    by_id = {u["id"]: u for u in users}
    return [(by_id[r["recipient_user_id"]], r) for r in rows]


async def mail_retried(conn: Connection, outbox_id: str, now: dt.datetime) -> int:
    """In the transaction that queues failed outbox row ``outbox_id`` again: its notification, unless a
    digest has taken it meanwhile, is e-mailed again (``mail_failed`` undone: e-mailed, its category
    column back from the payload, not carried over). Returns how many notifications changed (0 or 1)."""
    # The column holds the payload's category only when it is a string (as ``insert`` does).
    category = conn.dialect.pick(
        sqlite="CASE WHEN json_type(payload, '$.category') = 'text' THEN json_extract(payload, '$.category') END",
        postgresql="CASE WHEN jsonb_typeof(payload -> 'category') = 'string' THEN payload ->> 'category' END")
    return await conn.execute(
        f"UPDATE notifications SET email_sent_at = $2, carry_over = FALSE, category = {category}"
        " WHERE id = (SELECT notification_id FROM notification_mails WHERE outbox_id = $1)"
        " AND digest_included_at IS NULL", outbox_id, now)
