"""Digest scheduling and records: who is due, what they get, and the writes that settle a batch.

Every statement here works on a *batch* of due users (one list parameter), so a tick costs a
fixed handful of statements per batch, however many users or notifications it covers. A list
travels as a PostgreSQL array or, on SQLite, as JSON read back with ``json_each``; the three
statements whose plans differ by backend sit side by side (``conn.dialect``).
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from typing import Any, Sequence

from roost.domain.digest.slots import next_slot
from roost.storage.database import Connection, Database, Row
from roost.storage.ids import new_id
from roost.storage.notifications import PERSONAL_DIRECT

DIGEST_FIELDS = frozenset({"digest_cadence", "digest_time", "digest_weekday", "timezone"})
_USER_COLUMNS = ("u.id, u.email, u.display_name, u.timezone, u.quiet_hours, u.active, u.digest_cadence,"
                 " u.digest_time, u.digest_weekday, s.next_at AS digest_next_at, s.last_at AS digest_last_at,"
                 " COALESCE((SELECT e.epoch FROM unsubscribe_epochs e WHERE e.user_id = u.id), 0)"
                 " AS unsubscribe_epoch")
EPOCH_OF = "COALESCE((SELECT epoch FROM unsubscribe_epochs WHERE user_id = $1), 0)"


async def reschedule(conn: Connection, user_id: str, now: dt.datetime) -> dt.datetime | None:
    """Recompute a user's next slot from ``now`` (after a change of cadence, time, weekday or zone)."""
    user = await conn.fetchrow(
        "SELECT digest_cadence, digest_time, digest_weekday, timezone FROM users WHERE id = $1", user_id
    )
    if user is None:
        return None
    upcoming = next_slot(now, cadence=user["digest_cadence"], digest_time=user["digest_time"],
                         weekday=user["digest_weekday"], timezone=user["timezone"])
    await conn.execute(
        "INSERT INTO digest_schedule (user_id, next_at) VALUES ($1, $2)"
        " ON CONFLICT (user_id) DO UPDATE SET next_at = excluded.next_at", user_id, upcoming,
    )
    return upcoming


async def due_users(conn: Connection, *, now: dt.datetime, limit: int,
                    after: tuple[dt.datetime, str] | None = None) -> list[Row]:
    """The next batch of users whose slot has come (one indexed range scan), in (next_at, user id)
    order; ``after`` (the last batch's final pair) pages on without waiting for that batch's commit."""
    if after is None:
        return await conn.fetch(
            f"SELECT {_USER_COLUMNS} FROM digest_schedule s JOIN users u ON u.id = s.user_id"
            " WHERE s.next_at <= $1 ORDER BY s.next_at, s.user_id LIMIT $2",
            now, limit,
        )
    return await conn.fetch(
        f"SELECT {_USER_COLUMNS} FROM digest_schedule s JOIN users u ON u.id = s.user_id"
        " WHERE s.next_at <= $1 AND (s.next_at, s.user_id) > ($3, $4)"
        " ORDER BY s.next_at, s.user_id LIMIT $2",
        now, limit, after[0], after[1],
    )


def _headline(conn: Connection) -> str:
    # What a digest shows for an item: the payload's summary, else its title (empty counts as
    # missing). Read in SQL so a million rows need no JSON parsing in Python.
    summary, title = conn.dialect.json_text("n.payload", "summary"), conn.dialect.json_text("n.payload", "title")
    return f"COALESCE(NULLIF({summary}, ''), NULLIF({title}, ''))"


async def eligible_notifications(conn: Connection, *, user_ids: Sequence[str], now: dt.datetime,
                                 lookback_start: dt.datetime) -> Sequence[Any]:
    """What the batch's digests contain: not read, not e-mailed, not in a digest, not personal-direct,
    created in the user's period (after their last digest, at most ``lookback_start`` back).

    Rows (read as ``row["column"]``): id, recipient_user_id, event_kind, topic, read_at, actor_name,
    headline, and payload_json, the payload as JSON text (parsed only if a template asks for it);
    each recipient's rows together, oldest first.
    """
    columns = ("n.id, n.recipient_user_id, n.event_kind, n.topic, n.read_at, a.display_name AS actor_name,"
               f" {_headline(conn)} AS headline, CAST(n.payload AS TEXT) AS payload_json")
    eligible = ("n.read_at IS NULL AND n.email_sent_at IS NULL AND n.digest_included_at IS NULL"
                " AND (n.category IS NULL OR n.category <> $4) AND n.created_at <= $2")
    query = conn.dialect.pick(
        sqlite=(
            f"SELECT {columns}"
            " FROM notifications n JOIN digest_schedule s ON s.user_id = n.recipient_user_id"
            " LEFT JOIN users a ON a.id = n.actor_user_id"
            f" WHERE n.recipient_user_id {conn.dialect.in_list('$1')} AND {eligible}"
            " AND n.created_at > $3 AND (s.last_at IS NULL OR n.created_at > s.last_at)"
            " ORDER BY n.recipient_user_id, n.created_at, n.id"
        ),
        # One index range per user (recipient, created_at), already in order: no sort of the
        # whole batch's rows (which spills to disk at 50,000 rows).
        postgresql=(
            f"SELECT {columns}"
            " FROM unnest($1::text[]) WITH ORDINALITY AS b(user_id, ord)"
            " JOIN digest_schedule s ON s.user_id = b.user_id"
            " CROSS JOIN LATERAL (SELECT * FROM notifications n WHERE n.recipient_user_id = b.user_id"
            f" AND {eligible} AND n.created_at > GREATEST($3, s.last_at)) AS n"
            " LEFT JOIN users a ON a.id = n.actor_user_id"
            " ORDER BY b.ord, n.created_at, n.id"
        ),
    )
    return await conn.fetch_records(query, list(user_ids), now, lookback_start, PERSONAL_DIRECT)


async def claim_slots(conn: Connection, *, slots: Sequence[tuple[str, dt.datetime, dt.datetime | None]],
                      now: dt.datetime) -> set[str]:
    """In the caller's transaction, the first write of a batch: move each user's next slot from
    the one being served to the next, and record ``last_at``. ``slots``: (user_id, slot_at,
    next_at). Returns the users whose schedule still stood at ``slot_at``; a user whose schedule
    changed since the batch was read (or who was served already) is left alone and gets no digest.
    On PostgreSQL the claimed rows stay locked until the commit."""
    if not slots:
        return set()
    if conn.dialect.postgresql:
        rows = await conn.fetch(
            "UPDATE digest_schedule AS s SET next_at = v.next_at, last_at = $4"
            " FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) AS v(id, slot_at, next_at)"
            " WHERE s.user_id = v.id AND s.next_at = v.slot_at RETURNING s.user_id",
            [s[0] for s in slots], [s[1] for s in slots], [s[2] for s in slots], now,
        )
    else:
        # One JSON array of [user_id, slot_at, next_at] triples: json_each is not indexed, so
        # joining three parallel arrays on their keys would cost n^2.
        rows = await conn.fetch(
            "UPDATE digest_schedule SET next_at = v.next_at, last_at = $2"
            " FROM (SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS slot_at,"
            " json_extract(value, '$[2]') AS next_at FROM json_each($1)) AS v"
            " WHERE digest_schedule.user_id = v.id AND digest_schedule.next_at = v.slot_at"
            " RETURNING digest_schedule.user_id",
            [[s[0], _iso(s[1]), _iso(s[2])] for s in slots], now,
        )
    return {r["user_id"] for r in rows}


async def record_batch(conn: Connection, *, records: Sequence[dict[str, Any]], now: dt.datetime) -> None:
    """In the caller's transaction, after ``claim_slots``: record each claimed user's digest period
    and mark what it included. ``records``: dicts of user_id, slot_at, period_start,
    notification_ids, outbox_id (or None)."""
    if not records:
        return
    if conn.dialect.postgresql:
        # One statement from arrays instead of one execution per row.
        await conn.execute(
            "INSERT INTO digests (id, recipient_user_id, slot_at, period_start, period_end, notification_ids,"
            " outbox_id, created_at)"
            " SELECT v.id, v.user_id, v.slot_at, v.period_start, $5, v.ids::jsonb, v.outbox_id, $5"
            " FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], $6::text[], $7::text[])"
            " AS v(id, user_id, slot_at, period_start, ids, outbox_id)",
            [new_id("dig") for _ in records], [r["user_id"] for r in records], [r["slot_at"] for r in records],
            [r["period_start"] for r in records], now,
            [json.dumps(list(r["notification_ids"]), separators=(",", ":")) for r in records],
            [r["outbox_id"] for r in records],
        )
    else:
        await conn.execute_many(
            "INSERT INTO digests (id, recipient_user_id, slot_at, period_start, period_end, notification_ids,"
            " outbox_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $5)",
            [(new_id("dig"), r["user_id"], r["slot_at"], r["period_start"], now, list(r["notification_ids"]),
              r["outbox_id"]) for r in records],
        )
    included = [nid for r in records for nid in r["notification_ids"]]
    if included:
        await conn.execute(
            f"UPDATE notifications SET digest_included_at = $1 WHERE id {conn.dialect.in_list('$2')}", now, included
        )


def _iso(value: dt.datetime | None) -> str | None:
    # The same text the SQLite adapter stores for a datetime, so comparisons stay lexical.
    return None if value is None else value.astimezone(dt.UTC).isoformat()


async def list_for_user(conn: Connection, user_id: str) -> list[Row]:
    return await conn.fetch(
        "SELECT * FROM digests WHERE recipient_user_id = $1 ORDER BY period_end, id", user_id
    )


async def unsubscribe(conn: Connection, user_id: str, now: dt.datetime, *, epoch: int | None = None) -> bool:
    """Turn the user's digest off (idempotent); False if there is no such user (or, with ``epoch``, if the
    user's unsubscribe epoch is another one: a link from before a re-subscribe)."""
    if epoch is None:
        changed = await conn.execute(
            "UPDATE users SET digest_cadence = 'off', updated_at = $2 WHERE id = $1", user_id, now,
        )
    else:
        changed = await conn.execute(
            f"UPDATE users SET digest_cadence = 'off', updated_at = $2 WHERE id = $1 AND {EPOCH_OF} = $3",
            user_id, now, epoch,
        )
    if not changed:
        return False
    await conn.execute("UPDATE digest_schedule SET next_at = NULL WHERE user_id = $1", user_id)
    return bool(changed)


async def unsubscribe_epoch(conn: Connection, user_id: str) -> int | None:
    """The user's unsubscribe epoch (0 until their digest is first turned back on); None: no such user."""
    return await conn.fetchval(f"SELECT {EPOCH_OF} FROM users WHERE id = $1", user_id)


async def bump_unsubscribe_epoch(conn: Connection, user_id: str) -> None:
    """Start a new epoch: unsubscribe links signed before it stop working."""
    await conn.execute(
        "INSERT INTO unsubscribe_epochs (user_id, epoch) VALUES ($1, 1)"
        " ON CONFLICT (user_id) DO UPDATE SET epoch = unsubscribe_epochs.epoch + 1", user_id,
    )


async def secret(db: Database, name: str, now: dt.datetime) -> str:
    """A generated secret kept in the database; the first process to ask makes it, all share it."""
    await db.execute(
        "INSERT INTO app_secrets (name, value, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
        name, secrets.token_urlsafe(32), now,
    )
    return await db.fetchval("SELECT value FROM app_secrets WHERE name = $1", name)


async def schedule_of(conn: Connection, user_id: str) -> Row | None:
    return await conn.fetchrow("SELECT next_at, last_at FROM digest_schedule WHERE user_id = $1", user_id)
