"""Digest scheduling and records: who is due, what they get, and the writes that settle a batch.

Every statement here works on a *batch* of due users (one list parameter), so a tick costs a
fixed handful of statements per batch, however many users or notifications it covers. A list
travels as a PostgreSQL array or, on SQLite, as JSON read back with ``json_each``. The statements
are named in ``sql/digests.sql`` (``roost.storage.queries``), the ones that differ by backend side
by side; this module binds their parameters.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
from typing import Any, Sequence

from roost.domain.digest.slots import next_slot
from roost.errors import InvalidInput
from roost.storage.database import Connection, Database, Row
from roost.storage.ids import new_id
from roost.storage.notifications import PERSONAL_DIRECT
from roost.storage.queries import load

UNREAD_COUNT_CAP = 1000  # a digest says "1000+ unread" past this: counting a huge inbox is not worth a tick
DIGEST_FIELDS = frozenset({"digest_cadence", "digest_time", "digest_weekday", "timezone"})
_SQL = load("digests")  # roost/storage/sql/digests.sql


async def reschedule(conn: Connection, user_id: str, now: dt.datetime) -> dt.datetime | None:
    """Recompute a user's next slot from ``now`` (after a change of cadence, time, weekday or zone)."""
    user = await conn.fetchrow(_SQL.get(conn, "digest_settings"), user_id)
    if user is None:
        return None
    upcoming = next_slot(now, cadence=user["digest_cadence"], digest_time=user["digest_time"],
                         weekday=user["digest_weekday"], timezone=user["timezone"])
    await conn.execute(_SQL.get(conn, "reschedule"), user_id, upcoming)
    return upcoming


async def due_users(conn: Connection, *, now: dt.datetime, limit: int,
                    after: tuple[dt.datetime, str] | None = None) -> list[Row]:
    """The next batch of users whose slot has come (one indexed range scan), in (next_at, user id)
    order; ``after`` (the last batch's final pair) pages on without waiting for that batch's commit.
    Each row carries ``unread_total``: the user's unread notifications, counted up to ``UNREAD_COUNT_CAP``."""
    if after is None:
        return await conn.fetch(_SQL.get(conn, "due_users"), UNREAD_COUNT_CAP, now, limit)
    return await conn.fetch(_SQL.get(conn, "due_users_after"), UNREAD_COUNT_CAP, now, limit, after[0], after[1])


async def watched_topics(conn: Connection, user_ids: Sequence[str]) -> dict[str, set[str]]:
    """The topics each of ``user_ids`` watches (users who watch none are left out)."""
    found: dict[str, set[str]] = {}
    for row in await conn.fetch(_SQL.get(conn, "watched_topics"), list(user_ids)):
        found.setdefault(row["user_id"], set()).add(row["topic"])
    return found


async def eligible_notifications(conn: Connection, *, user_ids: Sequence[str], now: dt.datetime,
                                 lookback_start: dt.datetime) -> Sequence[Any]:
    """What the batch's digests contain: not read, not e-mailed, not in a digest, not personal-direct,
    created in the user's period (after their last digest, at most ``lookback_start`` back).

    Rows (read as ``row["column"]``): id, recipient_user_id, event_kind, topic, read_at, actor_name,
    headline (the payload's summary, else its title, read in SQL so a million rows need no JSON
    parsing in Python), and payload_json, the payload as JSON text (parsed only if a template asks
    for it); each recipient's rows together, oldest first.
    """
    return await conn.fetch_records(_SQL.get(conn, "eligible_notifications"),
                                    list(user_ids), now, lookback_start, PERSONAL_DIRECT)


async def claim_slots(conn: Connection, *, slots: Sequence[tuple[str, dt.datetime, dt.datetime | None]],
                      now: dt.datetime) -> set[str]:
    """In the caller's transaction, the first write of a batch: move each user's next slot from
    the one being served to the next, and record ``last_at``. ``slots``: (user_id, slot_at,
    next_at). Returns the users whose schedule still stood at ``slot_at``; a user whose schedule
    changed since the batch was read (or who was served already) is left alone and gets no digest.
    On PostgreSQL the claimed rows stay locked until the commit."""
    if not slots:
        return set()
    sql = _SQL.get(conn, "claim_slots")
    if conn.dialect.postgresql:
        rows = await conn.fetch(sql, [s[0] for s in slots], [s[1] for s in slots], [s[2] for s in slots], now)
    else:
        rows = await conn.fetch(sql, [[s[0], _iso(s[1]), _iso(s[2])] for s in slots], now)
    return {r["user_id"] for r in rows}


async def record_batch(conn: Connection, *, records: Sequence[dict[str, Any]], now: dt.datetime) -> None:
    """In the caller's transaction, after ``claim_slots``: record each claimed user's digest period
    and mark what it included. ``records``: dicts of user_id, slot_at, period_start,
    notification_ids, outbox_id (or None)."""
    if not records:
        return
    sql = _SQL.get(conn, "record_digest")
    if conn.dialect.postgresql:
        await conn.execute(
            sql, [new_id("dig") for _ in records], [r["user_id"] for r in records], [r["slot_at"] for r in records],
            [r["period_start"] for r in records], now,
            [json.dumps(list(r["notification_ids"]), separators=(",", ":")) for r in records],
            [r["outbox_id"] for r in records],
        )
    else:
        await conn.execute_many(sql, [(new_id("dig"), r["user_id"], r["slot_at"], r["period_start"], now,
                                       list(r["notification_ids"]), r["outbox_id"]) for r in records])
    included = [nid for r in records for nid in r["notification_ids"]]
    if included:
        await conn.execute(_SQL.get(conn, "mark_included"), now, included)


def _iso(value: dt.datetime | None) -> str | None:
    # The same text the SQLite adapter stores for a datetime, so comparisons stay lexical.
    return None if value is None else value.astimezone(dt.UTC).isoformat()


async def list_for_user(conn: Connection, user_id: str) -> list[Row]:
    return await conn.fetch(_SQL.get(conn, "list_for_user"), user_id)


async def unsubscribe(conn: Connection, user_id: str, now: dt.datetime, *, epoch: int | None = None) -> bool:
    """Turn the user's digest off (idempotent); False if there is no such user (or, with ``epoch``, if the
    user's unsubscribe epoch is another one: a link from before a re-subscribe)."""
    if epoch is None:
        changed = await conn.execute(_SQL.get(conn, "unsubscribe"), user_id, now)
    else:
        changed = await conn.execute(_SQL.get(conn, "unsubscribe_in_epoch"), user_id, now, epoch)
    if not changed:
        return False
    await conn.execute(_SQL.get(conn, "unschedule"), user_id)
    return bool(changed)


async def unsubscribe_epoch(conn: Connection, user_id: str) -> int | None:
    """The user's unsubscribe epoch (0 until their digest is first turned back on); None: no such user."""
    return await conn.fetchval(_SQL.get(conn, "unsubscribe_epoch"), user_id)


async def bump_unsubscribe_epoch(conn: Connection, user_id: str) -> None:
    """Start a new epoch: unsubscribe links signed before it stop working."""
    await conn.execute(_SQL.get(conn, "bump_unsubscribe_epoch"), user_id)


async def secret(db: Database, name: str, now: dt.datetime) -> str:
    """A generated secret kept in the database; the first process to ask makes it, all share it."""
    await db.execute(_SQL.get(db, "make_secret"), name, secrets.token_urlsafe(32), now)
    return await db.fetchval(_SQL.get(db, "secret"), name)


async def schedule_of(conn: Connection, user_id: str) -> Row | None:
    return await conn.fetchrow(_SQL.get(conn, "schedule_of"), user_id)


def _upcoming_cursor(row: Row) -> str:
    raw = json.dumps([_iso(row["next_at"]), row["id"]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_upcoming_cursor(cursor: str) -> tuple[dt.datetime, str]:
    """Raises: InvalidInput: a cursor ``upcoming`` did not hand out."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, user_id = json.loads(raw)
        if not isinstance(at, str) or not isinstance(user_id, str):
            raise ValueError("not strings")
        when = dt.datetime.fromisoformat(at)
        if when.tzinfo is None:
            raise ValueError("no zone")
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInput("cursor: not a cursor from a previous page of this list") from exc
    return when, user_id


async def upcoming(conn: Connection, *, limit: int, cursor: str | None = None) -> dict[str, Any]:
    """One page of scheduled digests, soonest first: each user's next slot (``next_at``, UTC) with
    their zone, cadence and last digest. Raises InvalidInput for a bad cursor."""
    if cursor is None:
        rows = await conn.fetch(_SQL.get(conn, "upcoming"), limit + 1)
    else:
        at, user_id = decode_upcoming_cursor(cursor)
        rows = await conn.fetch(_SQL.get(conn, "upcoming_after"), limit + 1, at, user_id)
    items = rows[:limit]
    return {"items": items, "next_cursor": _upcoming_cursor(items[-1]) if len(rows) > limit and items else None}


async def scheduled_user(conn: Connection, user_id: str) -> Row | None:
    """The user as a tick reads a due user (``due_users``' columns), if they have a next digest."""
    return await conn.fetchrow(_SQL.get(conn, "scheduled_user"), UNREAD_COUNT_CAP, user_id)
