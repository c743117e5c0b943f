"""Device rows as the socket path reads them (accounts, users and tokens are ``roost.storage.tenancy``)."""

from __future__ import annotations

from typing import Iterable

from roost.storage.database import Database


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
