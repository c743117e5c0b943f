"""Scouts and their items (the proposals delivered to devices).

An item row is written the first time its source ref is seen, by insert-or-ignore on the
unique (scout_id, source_msg_ref), so each ref is handled once however often it is listed or
pushed. Its life::

    pending ──triage──▶ queued ──frame written──▶ delivered ──ack──▶ acked
       │                   └───────────┬──────────────┘
       ├──spam──▶ discarded            └──expires_at passed (pruner)──▶ expired
       └──failures ≥ max_failures──▶ failed

Only ``pending`` rows of a pushed scout hold a body; the transaction that records the verdict
erases it. Status changes of delivery and acks are written in batches.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import time
from dataclasses import dataclass
from typing import Any, Sequence

from roost.errors import Conflict, NotFound
from roost.storage import audit
from roost.storage import webhook_events as webhooks
from roost.storage.database import Connection, Database, Row
from roost.storage.ids import new_id
from roost.storage.pagination import page

STATUSES = ("pending", "queued", "delivered", "acked", "discarded", "failed", "expired")
SCOUT_FIELDS = (
    "provider", "config", "classifier", "classifier_config", "poll_interval_s", "enabled",
    "auto_trash_spam", "device_inactivity_pause_days", "ttl_days", "max_failures",
)
ITEM_COLUMNS = (
    "id, scout_id, user_id, source_type, source_msg_ref, status, sender, raw_subject, raw_snippet, verdict,"
    " reason, category, payload, attempts, next_attempt_at, last_error, archived_at, archive_attempts,"
    " archive_failed_at, created_at, triaged_at, delivered_at, acked_at, expires_at"
)
PROPOSAL_COLUMNS = "id, scout_id, source_type, source_msg_ref, raw_subject, raw_snippet, category, payload"


# -- scouts -----------------------------------------------------------------------------------


async def create_scout(db: Database, *, user_id: str, fields: dict[str, Any], now: dt.datetime, actor: str) -> Row:
    from roost.storage import tenancy

    scout_id = new_id("sct")
    values = [fields[k] for k in SCOUT_FIELDS]
    async with db.transaction() as tx:
        await tenancy.get_user(tx, user_id)
        await tx.execute(
            f"INSERT INTO scouts (id, user_id, {', '.join(SCOUT_FIELDS)}, next_run_at, created_at, updated_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13, $13)",
            scout_id, user_id, *values, now,
        )
        await audit.record(tx, at=now, actor=actor, action="scout.create", target_type="scout",
                           target_id=scout_id, details={"user_id": user_id, "provider": fields["provider"]})
        return await get_scout(tx, scout_id)


async def get_scout(conn: Connection, scout_id: str) -> Row:
    row = await conn.fetchrow("SELECT * FROM scouts WHERE id = $1", scout_id)
    if row is None:
        raise NotFound(f"no scout {scout_id!r}")
    return row


async def update_scout(db: Database, scout_id: str, changes: dict[str, Any], *, now: dt.datetime,
                       actor: str) -> Row:
    unknown = set(changes) - set(SCOUT_FIELDS)
    if unknown:
        raise ValueError(f"cannot change {sorted(unknown)}")
    async with db.transaction() as tx:
        await get_scout(tx, scout_id)
        if changes:
            # Column names come from SCOUT_FIELDS, never from the request.
            sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(changes, start=3))
            await tx.execute(f"UPDATE scouts SET updated_at = $2, next_run_at = $2, {sets} WHERE id = $1",
                             scout_id, now, *changes.values())
            await audit.record(tx, at=now, actor=actor, action="scout.update", target_type="scout",
                               target_id=scout_id, details={"fields": sorted(changes)})
        return await get_scout(tx, scout_id)


async def delete_scout(db: Database, scout_id: str, *, now: dt.datetime, actor: str) -> Row:
    """Delete a scout and its items."""
    async with db.transaction() as tx:
        row = await get_scout(tx, scout_id)
        await tx.execute("DELETE FROM scout_items WHERE scout_id = $1", scout_id)
        await tx.execute("DELETE FROM scouts WHERE id = $1", scout_id)
        await audit.record(tx, at=now, actor=actor, action="scout.delete", target_type="scout", target_id=scout_id)
        return row


async def item_counts(conn: Connection, scout_id: str) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT status, COUNT(*) AS n FROM scout_items WHERE scout_id = $1 GROUP BY status", scout_id
    )
    counts = dict.fromkeys(STATUSES, 0)
    counts.update({r["status"]: int(r["n"]) for r in rows})
    return counts


async def list_items(conn: Connection, scout_id: str, *, status: str | None, limit: int,
                     cursor: str | None) -> dict[str, Any]:
    if status is None:
        rows = await conn.fetch(
            f"SELECT {ITEM_COLUMNS} FROM scout_items WHERE scout_id = $1 AND id > $2 ORDER BY id LIMIT $3",
            scout_id, cursor or "", limit + 1,
        )
    else:
        rows = await conn.fetch(
            f"SELECT {ITEM_COLUMNS} FROM scout_items WHERE scout_id = $1 AND status = $2 AND id > $3"
            " ORDER BY id LIMIT $4", scout_id, status, cursor or "", limit + 1,
        )
    return page(rows, limit)


async def list_items_newest(conn: Connection, scout_id: str, *, status: str | None, limit: int,
                            cursor: str | None) -> dict[str, Any]:
    """A page of a scout's items (of one status, or all), newest first: ids before ``cursor``.

    By the (scout_id, status, id) and (scout_id, id) indexes, read backwards: a page costs the
    same with a million items as with fifty.
    """
    where, args = ["scout_id = $1"], [scout_id]
    if status is not None:
        args.append(status)
        where.append(f"status = ${len(args)}")
    if cursor is not None:  # no sentinel for "after everything": text order follows the collation
        args.append(cursor)
        where.append(f"id < ${len(args)}")
    args.append(limit + 1)
    rows = await conn.fetch(
        f"SELECT {ITEM_COLUMNS} FROM scout_items WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ${len(args)}",
        *args,
    )
    return page(rows, limit)


async def item_counts_capped(conn: Connection, scout_id: str, *, cap: int) -> dict[str, int]:
    """A scout's number of items in each status, each counted up to ``cap`` + 1 at most.

    A count over ``cap`` means "more than cap"; each status reads at most ``cap`` + 1 entries of
    the (scout_id, status, id) index, so a scout with a million items costs what one with
    ``7 * cap`` does (the console shows these; the API's exact ``counts`` read them all).
    """
    parts = " UNION ALL ".join(
        f"SELECT '{status}' AS status, (SELECT COUNT(*) FROM (SELECT 1 FROM scout_items"
        f" WHERE scout_id = $1 AND status = '{status}' LIMIT $2) AS s{i}) AS n"
        for i, status in enumerate(STATUSES)  # the literals come from STATUSES, never from a request
    )
    rows = await conn.fetch(parts, scout_id, cap + 1)
    counts = dict.fromkeys(STATUSES, 0)
    counts.update({r["status"]: int(r["n"]) for r in rows})
    return counts


async def get_item(conn: Connection, scout_id: str, item_id: str) -> Row:
    """One item of one scout (an item of another scout is not found either).

    Raises:
        NotFound: no item ``item_id`` in scout ``scout_id``.
    """
    row = await conn.fetchrow(f"SELECT {ITEM_COLUMNS} FROM scout_items WHERE id = $1 AND scout_id = $2",
                              item_id, scout_id)
    if row is None:
        raise NotFound(f"no item {item_id!r} in scout {scout_id!r}")
    return row


async def retry_item(db: Database, scout_id: str, item_id: str, *, now: dt.datetime, actor: str) -> Row:
    """Put a failed item back to ``pending``, due now, its attempts reset, audited as ``scout.item_retry``.

    The next run of the scout triages it again. A pushed item's body was erased when it failed,
    so it is triaged from its subject, snippet and sender; a pulled one is fetched again.

    Raises:
        NotFound: no such item in that scout.
        Conflict: the item is not failed (``item_not_failed``).
    """
    async with db.transaction() as tx:
        row = await tx.fetchrow(
            "UPDATE scout_items SET status = 'pending', attempts = 0, next_attempt_at = $3, last_error = NULL,"
            f" reason = NULL, triaged_at = NULL WHERE id = $1 AND scout_id = $2 AND status = 'failed'"
            f" RETURNING {ITEM_COLUMNS}", item_id, scout_id, now)
        if row is None:
            found = await get_item(tx, scout_id, item_id)
            raise Conflict(f"item {item_id} is {found['status']}, not failed; only a failed item is retried",
                           code="item_not_failed")
        await audit.record(tx, at=now, actor=actor, action="scout.item_retry", target_type="scout_item",
                           target_id=item_id, details={"scout_id": scout_id})
        return row


async def enabled_scouts(conn: Connection) -> list[Row]:
    return await conn.fetch("SELECT id, user_id, next_run_at FROM scouts WHERE enabled ORDER BY id")


async def scouts_of_user(conn: Connection, user_id: str) -> list[str]:
    return [r["id"] for r in await conn.fetch("SELECT id FROM scouts WHERE user_id = $1 AND enabled", user_id)]


async def last_device_activity(conn: Connection, user_id: str) -> dt.datetime | None:
    """When a live device of the user was last seen (a never-connected device counts from its creation)."""
    rows = await conn.fetch(
        "SELECT last_seen_at, created_at FROM devices WHERE user_id = $1 AND revoked_at IS NULL", user_id
    )
    seen = [r["last_seen_at"] or r["created_at"] for r in rows]
    return max(seen) if seen else None


async def finish_run(conn: Connection, scout_id: str, *, now: dt.datetime, next_run_at: dt.datetime,
                     paused: bool, error: str | None) -> None:
    await conn.execute(
        "UPDATE scouts SET last_run_at = $2, next_run_at = $3, paused = $4, last_error = $5 WHERE id = $1",
        scout_id, now, next_run_at, paused, error,
    )


# -- items: intake ------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewItem:
    source_msg_ref: str
    subject: str | None = None
    snippet: str | None = None
    sender: str | None = None
    body: str | None = None


_INSERT_ITEM = (
    "INSERT INTO scout_items (id, scout_id, user_id, source_type, source_msg_ref, status, sender, raw_subject,"
    " raw_snippet, body, next_attempt_at, created_at)"
    " VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $8, $9, $10, $10)"
    " ON CONFLICT (scout_id, source_msg_ref) DO NOTHING"
)


_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
# base64's base-32 alphabet to this one: an id's 26 characters come from one b32encode.
_FROM_B32 = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _ALPHABET.encode())
_last_item_key = 0


def item_ids(n: int) -> list[str]:
    """``n`` proposal ids, each sorting after every one this process made before, even within one
    millisecond.

    Delivery is oldest first by id; ``new_id`` orders by millisecond only, so a batch pushed in
    one request would come out shuffled. Same shape as ``new_id`` (48 bits of ms, 80 random); the
    random bits of a batch come from one ``os.urandom`` call, not a system call per id.
    """
    global _last_item_key
    ms = int(time.time() * 1000) << 80
    noise = os.urandom(10 * n)
    out = []
    for i in range(n):
        key = ms | int.from_bytes(noise[10 * i:10 * i + 10])
        if key <= _last_item_key:
            key = _last_item_key + 1
        _last_item_key = key
        # 26 characters of 5 bits are the key's 130 low bits (the top 2 are 0): the first 26 of
        # the 32 that base 32 makes of the key shifted up to fill 160 bits.
        text = base64.b32encode((key << 30).to_bytes(20)).translate(_FROM_B32)
        out.append("prp_" + text[:26].decode())
    return out


def _item_rows(scout: Row, items: Sequence[NewItem], now: dt.datetime) -> list[tuple[Any, ...]]:
    scout_id, user_id, provider = scout["id"], scout["user_id"], scout["provider"]
    return [
        (pid, scout_id, user_id, provider, it.source_msg_ref, it.sender, it.subject, it.snippet, it.body, now)
        for pid, it in zip(item_ids(len(items)), items, strict=True)
    ]


async def record_refs(db: Database, scout: Row, items: Sequence[NewItem], *, cursor: str | None,
                      now: dt.datetime) -> None:
    """Record listed refs as pending and advance the scout's cursor, in one transaction.

    The cursor can therefore never pass a ref that has no row: a crash before the commit
    leaves both where they were, and the next poll lists the same refs again.
    """
    async with db.transaction() as tx:
        if items:
            await tx.execute_many(_INSERT_ITEM, _item_rows(scout, items, now))
        await tx.execute("UPDATE scouts SET cursor = $2 WHERE id = $1", scout["id"], cursor)


async def push_items(db: Database, scout: Row, items: Sequence[NewItem], *, now: dt.datetime) -> None:
    """Store pushed items (with their bodies) as pending; refs seen before are ignored."""
    async with db.transaction() as tx:
        await tx.execute_many(_INSERT_ITEM, _item_rows(scout, items, now))


async def due_pending(conn: Connection, scout_id: str, *, now: dt.datetime, limit: int) -> list[Row]:
    return await conn.fetch(
        "SELECT id, source_msg_ref, sender, raw_subject, raw_snippet, body, attempts FROM scout_items"
        " WHERE scout_id = $1 AND status = 'pending' AND next_attempt_at <= $2 ORDER BY id LIMIT $3",
        scout_id, now, limit,
    )


async def next_pending_at(conn: Connection, scout_id: str) -> dt.datetime | None:
    # ORDER BY, not MIN(): SQLite drops the column type (and its converter) on an aggregate.
    return await conn.fetchval(
        "SELECT next_attempt_at FROM scout_items WHERE scout_id = $1 AND status = 'pending'"
        " ORDER BY next_attempt_at LIMIT 1", scout_id
    )


# -- items: verdicts ----------------------------------------------------------------------------


@dataclass
class Outcomes:
    """What one triage pass decided, written in one transaction by ``record_outcomes``."""

    # (id, status queued|discarded, subject, snippet, sender, verdict, reason, category, payload, expires_at)
    verdicts: list[tuple[Any, ...]]
    # (id, attempts, next_attempt_at, error)
    retries: list[tuple[Any, ...]]
    # (id, attempts, error)
    failures: list[tuple[Any, ...]]

    @classmethod
    def empty(cls) -> Outcomes:
        return cls([], [], [])

    def __len__(self) -> int:
        return len(self.verdicts) + len(self.retries) + len(self.failures)


async def record_outcomes(db: Database, outcomes: Outcomes, *, now: dt.datetime) -> None:
    """Write verdicts (erasing bodies), retries and failures (and their webhooks) of rows still pending."""
    async with db.transaction() as tx:
        if outcomes.verdicts:
            await tx.execute_many(
                "UPDATE scout_items SET status = $2, raw_subject = $3, raw_snippet = $4, sender = $5, verdict = $6,"
                " reason = $7, category = $8, payload = $9, expires_at = $10, triaged_at = $11, body = NULL,"
                " last_error = NULL WHERE id = $1 AND status = 'pending'",
                [(*v, now) for v in outcomes.verdicts],
            )
        if outcomes.retries:
            await tx.execute_many(
                "UPDATE scout_items SET attempts = $2, next_attempt_at = $3, last_error = $4"
                " WHERE id = $1 AND status = 'pending'",
                outcomes.retries,
            )
        failed = [row for f in outcomes.failures for row in await tx.fetch(
            "UPDATE scout_items SET status = 'failed', attempts = $2, last_error = $3, reason = $3, body = NULL,"
            f" triaged_at = $4 WHERE id = $1 AND status = 'pending' RETURNING {ITEM_COLUMNS}", *f, now)]
        await webhooks.enqueue_for_users(tx, "scout.failed_item", failed, now=now,
                                         payload=lambda r: {"scout_id": r["scout_id"], "item": r})


async def unarchived_spam(conn: Connection, scout_id: str, *, now: dt.datetime, limit: int) -> list[Row]:
    """Discarded spam not archived yet whose (next) archive attempt is due."""
    return await conn.fetch(
        "SELECT id, source_msg_ref, archive_attempts FROM scout_items WHERE scout_id = $1 AND status = 'discarded'"
        " AND verdict = 'spam' AND archived_at IS NULL AND archive_failed_at IS NULL"
        " AND (archive_next_at IS NULL OR archive_next_at <= $2) ORDER BY id LIMIT $3",
        scout_id, now, limit,
    )


async def next_archive_at(conn: Connection, scout_id: str) -> dt.datetime | None:
    """When the scout's earliest archive retry is due (None: none waits)."""
    return await conn.fetchval(
        "SELECT archive_next_at FROM scout_items WHERE scout_id = $1 AND status = 'discarded' AND verdict = 'spam'"
        " AND archived_at IS NULL AND archive_failed_at IS NULL AND archive_next_at IS NOT NULL"
        " ORDER BY archive_next_at LIMIT 1", scout_id
    )


async def mark_archived(conn: Connection, item_id: str, now: dt.datetime) -> None:
    await conn.execute("UPDATE scout_items SET archived_at = $2, archive_next_at = NULL WHERE id = $1", item_id, now)


async def mark_archive_retry(conn: Connection, item_id: str, error: str, *, attempts: int, due: dt.datetime) -> None:
    await conn.execute(
        "UPDATE scout_items SET archive_attempts = $2, archive_next_at = $3, last_error = $4 WHERE id = $1",
        item_id, attempts, due, f"archive failed: {error}")


async def mark_archive_failed(conn: Connection, item_id: str, error: str, *, attempts: int, now: dt.datetime) -> None:
    """Give up archiving the item: recorded with ``archive_failed_at`` and the last error."""
    await conn.execute(
        "UPDATE scout_items SET archive_attempts = $2, archive_next_at = NULL, archive_failed_at = $3,"
        " last_error = $4 WHERE id = $1",
        item_id, attempts, now, f"archive failed after {attempts} attempts: {error}")
