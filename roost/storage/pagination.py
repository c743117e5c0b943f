"""Keyset pagination over time-ordered ids: fetch one row more than asked to know if there is more."""

from __future__ import annotations

from typing import Any

from roost.storage.database import Row

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def page(rows: list[Row], limit: int, key: str = "id") -> dict[str, Any]:
    """Turn ``limit + 1`` fetched rows into ``{"items", "next_cursor"}``."""
    items = rows[:limit]
    next_cursor = items[-1][key] if len(rows) > limit and items else None
    return {"items": items, "next_cursor": next_cursor}
