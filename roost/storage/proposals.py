"""Proposals on their way to devices: the delivery half of a scout item's life.

``roost.storage.scouts`` writes items and their verdicts; this module reads what is queued for a
user's sockets, marks pages delivered and applies acks (``queued -> delivered -> acked``), and
expires what was never acked (see the life drawn in ``roost.storage.scouts``). Each write is one
statement or one transaction per batch: the deliverer calls these once per page or ack batch.
"""

from __future__ import annotations

import datetime as dt
from typing import Awaitable, Callable, Sequence

from roost.storage.database import Connection, Database, Row
from roost.storage.scouts import PROPOSAL_COLUMNS


async def backlog_page(conn: Connection, user_id: str, *, now: dt.datetime, after: str,
                       limit: int) -> list[Row]:
    """The user's queued or delivered-but-unacked proposals after ``after``, oldest first."""
    return await conn.fetch(
        f"SELECT {PROPOSAL_COLUMNS}, status FROM scout_items WHERE user_id = $1 AND status IN ('queued', 'delivered')"
        " AND id > $2 AND expires_at > $3 ORDER BY id LIMIT $4",
        user_id, after, now, limit,
    )


async def queued_for_user(conn: Connection, user_id: str, *, now: dt.datetime, limit: int) -> list[Row]:
    return await conn.fetch(
        f"SELECT {PROPOSAL_COLUMNS} FROM scout_items WHERE user_id = $1 AND status = 'queued'"
        " AND expires_at > $2 ORDER BY id LIMIT $3",
        user_id, now, limit,
    )


async def users_with_queued(db: Database, user_ids: Sequence[str], *, now: dt.datetime) -> set[str]:
    """Which of ``user_ids`` have a queued, unexpired proposal (one query for a catch-up read)."""
    if not user_ids:
        return set()
    rows = await db.fetch(
        f"SELECT DISTINCT user_id FROM scout_items WHERE user_id {db.dialect.in_list('$1')}"
        " AND status = 'queued' AND expires_at > $2",
        list(user_ids), now,
    )
    return {r["user_id"] for r in rows}


async def mark_delivered(db: Database, ids: Sequence[str], *, now: dt.datetime) -> None:
    """Mark the queued ones of ``ids`` delivered (one statement for the page)."""
    if ids:
        await db.execute(
            f"UPDATE scout_items SET status = 'delivered', delivered_at = $2 WHERE id {db.dialect.in_list('$1')}"
            f" AND {db.dialect.unindexed('status')} = 'queued'",
            list(ids), now,
        )


async def ack(db: Database, acks: Sequence[tuple[str, str]], *, now: dt.datetime,
              acked: Callable[[Connection, list[Row]], Awaitable[object]] | None = None) -> set[tuple[str, str]]:
    """Apply ``(user_id, proposal_id)`` acks; returns the pairs that name no proposal of that user
    (those change nothing). Acking an acked proposal is a no-op.

    One transaction: per user of the batch, one update of that user's named proposals still
    queued or delivered (the status guard covers a row that changed meanwhile: expired, acked by
    another socket); only the pairs it did not change are looked up, to tell an ack of an acked
    proposal from one naming no proposal of that user. ``acked(tx, rows)`` gets the rows it
    changed, in it (user_id, acked_at, PROPOSAL_COLUMNS)."""
    if not acks:
        return set()
    by_user: dict[str, dict[str, None]] = {}
    for user_id, pid in acks:
        by_user.setdefault(user_id, {})[pid] = None
    unknown: set[tuple[str, str]] = set()
    async with db.transaction() as tx:
        d = tx.dialect
        rows: list[Row] = []
        for user_id, pids in by_user.items():
            rows += await tx.fetch(
                f"UPDATE scout_items SET status = 'acked', acked_at = $2 WHERE id {d.in_list('$1')}"
                f" AND {d.unindexed('user_id')} = $3 AND {d.unindexed('status')} IN ('queued', 'delivered')"
                f" RETURNING user_id, acked_at, {PROPOSAL_COLUMNS}", list(pids), now, user_id)
        changed = {(r["user_id"], r["id"]) for r in rows}
        rest = [(user_id, pid) for user_id, pids in by_user.items() for pid in pids if (user_id, pid) not in changed]
        if rest:
            owner = {r["id"]: r["user_id"] for r in await tx.fetch(
                f"SELECT id, user_id FROM scout_items WHERE id {d.in_list('$1')}", [pid for _, pid in rest])}
            unknown = {(user_id, pid) for user_id, pid in rest if owner.get(pid) != user_id}
        if acked is not None and rows:
            await acked(tx, rows)
    return unknown


async def expire(db: Database, *, now: dt.datetime) -> int:
    """Mark undelivered and unacked proposals past their ``expires_at`` as expired."""
    return await db.execute(
        "UPDATE scout_items SET status = 'expired' WHERE status IN ('queued', 'delivered') AND expires_at <= $1",
        now,
    )


async def queue_depth(conn: Connection) -> int:
    return int(await conn.fetchval("SELECT COUNT(*) FROM scout_items WHERE status IN ('pending', 'queued')") or 0)
