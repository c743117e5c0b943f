"""Device rows as the socket path and the console read them (accounts, users and tokens are
``roost.storage.tenancy``)."""

from __future__ import annotations

from typing import Iterable

from roost.storage.database import Connection, Database, Row


async def dead_among(db: Database, device_ids: Iterable[str]) -> list[str]:
    """The ids among ``device_ids`` whose device is revoked or whose user is inactive."""
    ids = sorted(set(device_ids))
    if not ids:
        return []
    rows = await db.fetch(
        "SELECT d.id FROM devices d JOIN users u ON u.id = d.user_id"
        f" WHERE (d.revoked_at IS NOT NULL OR NOT u.active) AND d.id {db.dialect.in_list('$1')}",
        ids,
    )
    return [row["id"] for row in rows]


DEVICE_VIEW = ("d.id, d.user_id, d.name, d.created_at, d.last_seen_at, d.revoked_at, u.email AS user_email,"
               " u.display_name AS user_name, u.account_id, u.active AS user_active")


async def described(db: Database, device_ids: Iterable[str]) -> list[Row]:
    """The devices among ``device_ids`` with their user (email, name, account), in id order.

    One statement for the whole list (a list parameter); an id that names no device is left out.
    """
    ids = sorted(set(device_ids))
    if not ids:
        return []
    return await db.fetch(
        f"SELECT {DEVICE_VIEW} FROM devices d JOIN users u ON u.id = d.user_id"
        f" WHERE d.id {db.dialect.in_list('$1')} ORDER BY d.id", ids)


async def recently_seen(conn: Connection, *, limit: int) -> list[Row]:
    """The live devices seen most recently (``last_seen_at``, newest first), at most ``limit``."""
    return await conn.fetch(
        f"SELECT {DEVICE_VIEW} FROM devices d JOIN users u ON u.id = d.user_id"
        " WHERE d.last_seen_at IS NOT NULL AND d.revoked_at IS NULL ORDER BY d.last_seen_at DESC, d.id LIMIT $1",
        limit)


async def of_user(conn: Connection, user_id: str, *, limit: int) -> list[Row]:
    """A user's devices (revoked ones too), in id order, at most ``limit``."""
    return await conn.fetch(
        f"SELECT {DEVICE_VIEW} FROM devices d JOIN users u ON u.id = d.user_id"
        " WHERE d.user_id = $1 ORDER BY d.id LIMIT $2", user_id, limit)
