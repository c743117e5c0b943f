"""The audit log: one row per admin action, written in the same transaction as the change.

An action taken through the API with a service token is recorded with actor ``service:<token name>``
(``acting_as`` is set by ``roost.http.auth.service_auth`` for the request's task), so a log entry says
which app or operator made each change, and a token that leaked can be traced to what it did.
"""

from __future__ import annotations

import datetime as dt
from contextvars import ContextVar
from typing import Any

from roost.storage.database import Connection, Row
from roost.storage.ids import new_id

SERVICE = "service"
acting_as: ContextVar[str | None] = ContextVar("roost_service_token_name", default=None)


def actor_name(actor: str) -> str:
    """``actor`` as recorded: the generic ``service`` becomes ``service:<token name>`` inside an API request,
    or ``console:<token name>`` inside an operator console action (``acting_as`` then holds the whole
    ``console:<name>``; a token name never holds a colon)."""
    name = acting_as.get()
    if actor != SERVICE or not name:
        return actor
    return name if ":" in name else f"{SERVICE}:{name}"


async def record(
    conn: Connection,
    *,
    at: dt.datetime,
    actor: str,
    action: str,
    target_type: str,
    target_id: str,
    details: dict[str, Any] | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO audit_log (id, at, actor, action, target_type, target_id, details)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)",
        new_id("aud"), at, actor_name(actor), action, target_type, target_id, details or {},
    )


async def list_entries(conn: Connection, *, target_id: str | None = None, limit: int = 100) -> list[Row]:
    if target_id is None:
        return await conn.fetch("SELECT * FROM audit_log ORDER BY id DESC LIMIT $1", limit)
    return await conn.fetch(
        "SELECT * FROM audit_log WHERE target_id = $1 ORDER BY id DESC LIMIT $2", target_id, limit
    )


async def prune(conn: Connection, *, older_than: dt.datetime) -> int:
    """Delete entries older than the retention window; returns how many went."""
    return await conn.execute("DELETE FROM audit_log WHERE at < $1", older_than)


FILTERS = ("actor", "action", "target_type", "target_id")


async def list_page(conn: Connection, *, filters: dict[str, str], before: str | None, limit: int) -> list[Row]:
    """Entries newest first, matching every given filter exactly (``FILTERS``), with ids below ``before``.

    Fetches ``limit`` rows; the caller asks for one more than it shows to know whether an older page exists.
    """
    clauses, args = [], []
    for name in FILTERS:
        value = filters.get(name)
        if value:
            args.append(value)
            clauses.append(f"{name} = ${len(args)}")
    if before:
        args.append(before)
        clauses.append(f"id < ${len(args)}")
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    args.append(limit)
    return await conn.fetch(f"SELECT * FROM audit_log{where} ORDER BY id DESC LIMIT ${len(args)}", *args)


async def actors(conn: Connection, *, limit: int = 50) -> list[str]:
    """Distinct actors (for the filter's suggestions), at most ``limit``."""
    rows = await conn.fetch("SELECT DISTINCT actor FROM audit_log ORDER BY actor LIMIT $1", limit)
    return [row["actor"] for row in rows]
