"""Topics and their watchers: the fan-out of a topic event, its idempotency keys, and watch lists.

A topic event becomes one notification per active watcher in one ``INSERT .. SELECT`` (the
statements are named in ``sql/watchers.sql``), so 10,000 watchers cost one statement, not 10,000.
Ids are made in that statement: the time part of a new id (``roost.storage.ids``) and 64 random
bits per row, so they sort by time like every other notification id and cannot be guessed from a
sibling's.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from typing import Any

from roost.errors import InvalidInput
from roost.storage.database import Connection, Row
from roost.storage.ids import new_id
from roost.storage.queries import load

_SQL = load("watchers")  # roost/storage/sql/watchers.sql
_TIME_PART = 4 + 10  # "ntf_" and the ten characters of a new id that hold its 48 bits of milliseconds


async def fan_out(conn: Connection, *, account_id: str, topic: str, event_kind: str, actor_user_id: str,
                  payload: dict[str, Any], category: str | None, email: bool, now: dt.datetime,
                  active_since: dt.datetime, returning: bool = False) -> int | list[Row]:
    """Notify every active watcher of ``topic`` in ``account_id`` but the actor, in one statement.

    A watcher is active when the user is active and took part in the topic since ``active_since``
    (an older watch is one the next digest tick decays). Returns how many notifications were made,
    or with ``returning`` the made rows' ``id`` and ``recipient_user_id``.
    """
    sql = _SQL.get(conn, "fan_out")
    args = (new_id("ntf")[:_TIME_PART], event_kind, topic, actor_user_id, payload, category, email, now,
            active_since, account_id)
    if returning:
        return await conn.fetch(sql + " RETURNING id, recipient_user_id", *args)
    return await conn.execute(sql, *args)


async def claim_key(conn: Connection, *, account_id: str, key: str, topic: str, fingerprint: str,
                    now: dt.datetime) -> tuple[str | None, Row | None]:
    """Take ``key`` for a new event in the caller's transaction: (the key row's id, None), or, when
    the account used the key before, (None, the first use: topic, fingerprint, notified).

    Uniqueness is the table's constraint: of two requests racing with one key, the second waits
    for the first's commit (PostgreSQL) or its write lock (SQLite) and then finds its row.
    """
    key_id = await conn.fetchval(_SQL.get(conn, "claim_key"), new_id("tek"), account_id, key, topic, fingerprint,
                                 now)
    if key_id is not None:
        return key_id, None
    return None, await conn.fetchrow(_SQL.get(conn, "get_key"), account_id, key)


async def settle_key(conn: Connection, key_id: str, notified: int) -> None:
    """Record the answer of the event that took the key (same transaction as its fan-out)."""
    await conn.execute(_SQL.get(conn, "settle_key"), key_id, notified)


async def prune_keys(conn: Connection, *, older_than: dt.datetime) -> int:
    """Forget idempotency keys used before ``older_than``; returns how many."""
    return await conn.execute(_SQL.get(conn, "prune_keys"), older_than)


def _encode_cursor(topic: str) -> str:
    return base64.urlsafe_b64encode(topic.encode("utf-8", "surrogatepass")).decode("ascii").rstrip("=")


def decode_cursor(cursor: str | None) -> str:
    """The topic a watch-list cursor stands for ('' for none).

    Raises:
        InvalidInput: ``bad_cursor``, a cursor this list did not hand out.
    """
    if not cursor:
        return ""
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput("cursor is not one this endpoint handed out", code="bad_cursor") from exc


async def list_watches(conn: Connection, user_id: str, *, limit: int, cursor: str | None) -> dict[str, Any]:
    """A user's watches in topic order, as a page: ``{"items", "next_cursor"}`` (the cursor encodes
    the page's last topic, since a watch has no id of its own)."""
    rows = await conn.fetch(_SQL.get(conn, "list_watches"), user_id, decode_cursor(cursor), limit + 1)
    items = rows[:limit]
    more = len(rows) > limit and items
    return {"items": items, "next_cursor": _encode_cursor(items[-1]["topic"]) if more else None}


async def get_watch(conn: Connection, user_id: str, topic: str) -> Row | None:
    return await conn.fetchrow(_SQL.get(conn, "get_watch"), user_id, topic)


async def delete_watch(conn: Connection, user_id: str, topic: str) -> Row | None:
    """Stop ``user_id`` watching ``topic``; returns the watch as it was, or None if there was none."""
    row = await get_watch(conn, user_id, topic)
    if row is not None:
        await conn.execute(_SQL.get(conn, "delete_watch"), user_id, topic)
    return row
