"""Listing scouts across users: ``GET /api/admin/scouts?user_id=&provider=&state=``.

A scout's state (its ``status`` in the API) comes from three columns:

* ``disabled``: ``enabled`` is false (set by an admin);
* ``paused``: enabled, but paused because none of its user's devices was seen for
  ``device_inactivity_pause_days`` (it resumes by itself when one is);
* ``failing``: enabled, not paused, and its last run ended with an error (``last_error``; the
  next run that succeeds clears it);
* ``active``: enabled, not paused, and its last run (if any) succeeded.
"""

from __future__ import annotations

from typing import Any

from roost.storage.database import Connection, Row
from roost.storage.pagination import page
from roost.storage.scouts import STATUSES

STATES = ("active", "paused", "failing", "disabled")
_STATE_SQL = {
    "disabled": "NOT enabled",
    "paused": "enabled AND paused",
    "failing": "enabled AND NOT paused AND last_error IS NOT NULL",
    "active": "enabled AND NOT paused AND last_error IS NULL",
}


def state_of(row: Row) -> str:
    """The state of a scout row, as :data:`_STATE_SQL` selects it."""
    if not row["enabled"]:
        return "disabled"
    if row["paused"]:
        return "paused"
    return "failing" if row["last_error"] is not None else "active"


async def list_scouts(conn: Connection, *, user_id: str | None, provider: str | None, state: str | None,
                      limit: int, cursor: str | None) -> dict[str, Any]:
    """Scouts in id (creation) order, filtered by any of user, provider and state (each indexed)."""
    where, args = ["id > $1"], [cursor or ""]
    for column, value in (("user_id", user_id), ("provider", provider)):
        if value is not None:
            args.append(value)
            where.append(f"{column} = ${len(args)}")
    if state is not None:
        where.append(f"({_STATE_SQL[state]})")  # the SQL comes from _STATE_SQL, never from the request
    args.append(limit + 1)
    rows = await conn.fetch(f"SELECT * FROM scouts WHERE {' AND '.join(where)} ORDER BY id LIMIT ${len(args)}",
                            *args)
    return page(rows, limit)


async def item_counts_of(conn: Connection, scout_ids: list[str]) -> dict[str, dict[str, int]]:
    """Each scout's number of items in each status (as ``scouts.item_counts``), for a page in one query."""
    rows = await conn.fetch(
        f"SELECT scout_id, status, COUNT(*) AS n FROM scout_items WHERE scout_id {conn.dialect.in_list('$1')}"
        " GROUP BY scout_id, status", scout_ids,
    )
    counts = {scout_id: dict.fromkeys(STATUSES, 0) for scout_id in scout_ids}
    for r in rows:
        counts[r["scout_id"]][r["status"]] = int(r["n"])
    return counts
