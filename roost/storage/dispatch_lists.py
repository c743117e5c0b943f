"""Dispatch lists, for apps and operators: batches (by account and status), a batch's items, a
device's send queue, and the devices a batch's pending items wait for.

Keyset pages in the list shape of DESIGN.md: batches on ``id`` (time-ordered), a batch's items on
``seq``, a device's queue on ``(batch_id, seq)`` (the order the claim takes them in). Each has its
index (migration 0022, and 0005's for a batch's items).
"""

from __future__ import annotations

from typing import Any

from roost.errors import InvalidInput, NotFound
from roost.storage import tenancy
from roost.storage.database import Connection, Row
from roost.storage.dispatch import ITEM_STATUSES, ITEM_VIEW, get_batch
from roost.storage.pagination import page

BATCH_COLUMNS = "id, account_id, created_by, idempotency_key, status, total_items, created_at, started_at, finished_at"


def _bad_cursor() -> InvalidInput:
    return InvalidInput("cursor is not one this endpoint handed out", code="bad_cursor")


async def list_batches(conn: Connection, *, account_id: str | None, status: str | None, limit: int,
                       cursor: str | None) -> dict[str, Any]:
    """Batches, oldest first, of one account and/or in one status (or all), each in the shape of
    ``get_batch`` (counts by item status: one grouped query for the page).

    Raises:
        NotFound: ``account_id`` names no account.
    """
    if account_id is not None:
        await tenancy.get_account(conn, account_id)
    where, args = ["id > $1"], [cursor or "", limit + 1]
    for column, value in (("account_id", account_id), ("status", status)):
        if value is not None:
            args.append(value)
            where.append(f"{column} = ${len(args)}")
    rows = await conn.fetch(
        f"SELECT {BATCH_COLUMNS} FROM outreach_batches WHERE {' AND '.join(where)} ORDER BY id LIMIT $2", *args,
    )
    result = page(rows, limit)
    await _add_counts(conn, result["items"])
    return result


async def _add_counts(conn: Connection, batches: list[Row]) -> None:
    """Set each batch's ``counts`` by item status: one grouped query for them all."""
    counts = {row["id"]: dict.fromkeys(ITEM_STATUSES, 0) for row in batches}
    if counts:
        for r in await conn.fetch(
            "SELECT batch_id, status, COUNT(*) AS n FROM outreach_items"
            f" WHERE batch_id {conn.dialect.in_list('$1')} GROUP BY batch_id, status", list(counts),
        ):
            counts[r["batch_id"]][r["status"]] = int(r["n"])
    for row in batches:
        row["counts"] = counts[row["id"]]


async def recent_batches(conn: Connection, account_id: str, *, status: str | None, limit: int,
                         before: str | None) -> dict[str, Any]:
    """An account's batches newest first (all, or in one status), with counts, for operators;
    keyset-paged on ``id`` backwards (``outreach_batches_account_id`` / ``_account_status``).

    Raises:
        NotFound: no such account.
    """
    await tenancy.get_account(conn, account_id)
    where, args = "account_id = $1", [account_id, limit + 1]
    if status is not None:
        args.append(status)
        where += f" AND status = ${len(args)}"
    if before is not None:
        args.append(before)
        where += f" AND id < ${len(args)}"
    rows = await conn.fetch(f"SELECT {BATCH_COLUMNS} FROM outreach_batches WHERE {where} ORDER BY id DESC LIMIT $2",
                            *args)
    result = page(rows, limit)
    await _add_counts(conn, result["items"])
    return result


async def account_devices(conn: Connection, account_id: str, *, limit: int) -> list[Row]:
    """The devices of an account's users (revoked ones too), each with ``pending`` and
    ``dispatched``: how many items wait for it and how many it holds (one grouped query over
    ``outreach_items_claim``)."""
    rows = await conn.fetch(
        "SELECT d.id, d.user_id, d.name, d.last_seen_at, d.revoked_at, u.display_name AS user_name"
        " FROM devices d JOIN users u ON u.id = d.user_id WHERE u.account_id = $1 ORDER BY d.id LIMIT $2",
        account_id, limit,
    )
    by_id = {r["id"]: r for r in rows}
    for r in rows:
        r["pending"] = r["dispatched"] = 0
    if by_id:
        for r in await conn.fetch(
            "SELECT device_id, status, COUNT(*) AS n FROM outreach_items"
            f" WHERE device_id {conn.dialect.in_list('$1')} AND status IN ('pending', 'dispatched')"
            " GROUP BY device_id, status", list(by_id),
        ):
            by_id[r["device_id"]][r["status"]] = int(r["n"])
    return rows


async def device_account(conn: Connection, device_id: str) -> str | None:
    """The account of a device's user (None: no such device)."""
    return await conn.fetchval(
        "SELECT u.account_id FROM devices d JOIN users u ON u.id = d.user_id WHERE d.id = $1", device_id)


def _seq_cursor(cursor: str) -> int:
    # A seq handed out: ASCII digits ("²".isdigit() is true) within the INTEGER column (PostgreSQL
    # refuses a larger number; 9 digits always fit).
    if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 9):
        raise _bad_cursor()
    return int(cursor)


async def list_items(conn: Connection, batch_id: str, *, limit: int, cursor: str | None) -> dict[str, Any]:
    await get_batch(conn, batch_id)
    after = _seq_cursor(cursor) if cursor else -1
    rows = await conn.fetch(
        f"SELECT {ITEM_VIEW} FROM outreach_items WHERE batch_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        batch_id, after, limit + 1,
    )
    result = page(rows, limit, key="seq")
    if result["next_cursor"] is not None:
        result["next_cursor"] = str(result["next_cursor"])
    return result


async def device_queue(conn: Connection, device_id: str, *, status: str | None, limit: int,
                       cursor: str | None) -> dict[str, Any]:
    """The items offered to or held by a device (any status, or one), in queue order (batch, seq).

    Raises:
        NotFound: no such device.
        InvalidInput: ``bad_cursor``.
    """
    if await conn.fetchval("SELECT 1 FROM devices WHERE id = $1", device_id) is None:
        raise NotFound(f"no device {device_id!r}")
    where, args = "device_id = $1", [device_id, limit + 1]
    if status is not None:
        where += f" AND status = ${len(args) + 1}"
        args.append(status)
    if cursor:
        batch_id, _, seq = cursor.rpartition(".")
        if not batch_id:
            raise _bad_cursor()
        where += f" AND (batch_id > ${len(args) + 1} OR (batch_id = ${len(args) + 1} AND seq > ${len(args) + 2}))"
        args += [batch_id, _seq_cursor(seq)]
    rows = await conn.fetch(f"SELECT {ITEM_VIEW} FROM outreach_items WHERE {where} ORDER BY batch_id, seq LIMIT $2",
                            *args)
    items = rows[:limit]
    last = items[-1] if len(rows) > limit and items else None
    return {"items": items, "next_cursor": f"{last['batch_id']}.{last['seq']}" if last else None}


async def pending_devices(conn: Connection, batch_id: str) -> list[Row]:
    """The devices the batch's pending items wait for: ``id``, ``last_seen_at``."""
    return await conn.fetch(
        "SELECT d.id, d.last_seen_at FROM devices d WHERE d.id IN"
        " (SELECT DISTINCT device_id FROM outreach_items WHERE batch_id = $1 AND status = 'pending')", batch_id,
    )


