"""Tool calls (table ``tool_calls``) and failed tool results (``tool_failures``), and their counts per
user, day and tool.

Both tables are keyed by (user, ``tool_use`` id), so storing the same call or failure again (a split
line, a copy in another file, a rescan) changes nothing: a call keeps the day and tool of its earliest
line, a failure is kept once. A failure counts against the day and tool of the call it answers; one whose
call has not been seen (yet) counts nowhere until the call is stored.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any, Iterable

from roost.errors import InvalidInput
from roost.storage.database import Connection, Database
from roost.storage.pagination import page


@dataclass(frozen=True)
class ToolCall:
    tool_use_id: str
    tool: str
    day: str
    seen_at: dt.datetime


@dataclass(frozen=True)
class ToolFailure:
    tool_use_id: str
    seen_at: dt.datetime


ToolItem = ToolCall | ToolFailure


def fold(items: Iterable[ToolItem]) -> tuple[list[ToolCall], list[ToolFailure]]:
    """One call per id (the earliest line's) and one failure per id (the earliest)."""
    calls: dict[str, ToolCall] = {}
    failures: dict[str, ToolFailure] = {}
    for item in items:
        into: dict[str, Any] = calls if isinstance(item, ToolCall) else failures
        have = into.get(item.tool_use_id)
        if have is None or item.seen_at < have.seen_at:
            into[item.tool_use_id] = item
    return list(calls.values()), list(failures.values())


_CALL_SQL = """
INSERT INTO tool_calls (username, tool_use_id, day, tool, seen_at) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (username, tool_use_id) DO UPDATE SET
    day = CASE WHEN excluded.seen_at < tool_calls.seen_at THEN excluded.day ELSE tool_calls.day END,
    tool = CASE WHEN excluded.seen_at < tool_calls.seen_at THEN excluded.tool ELSE tool_calls.tool END,
    seen_at = CASE WHEN excluded.seen_at < tool_calls.seen_at THEN excluded.seen_at ELSE tool_calls.seen_at END
"""

_FAILURE_SQL = """
INSERT INTO tool_failures (username, tool_use_id, seen_at) VALUES ($1, $2, $3)
ON CONFLICT (username, tool_use_id) DO UPDATE SET
    seen_at = CASE WHEN excluded.seen_at < tool_failures.seen_at THEN excluded.seen_at ELSE tool_failures.seen_at END
"""


async def record(conn: Connection, username: str, items: Iterable[ToolItem]) -> None:
    """Merge ``items`` into the stored calls and failures of ``username`` (idempotent)."""
    calls, failures = fold(items)
    if calls:
        await conn.execute_many(_CALL_SQL, [(username, c.tool_use_id, c.day, c.tool, c.seen_at) for c in calls])
    if failures:
        await conn.execute_many(_FAILURE_SQL, [(username, f.tool_use_id, f.seen_at) for f in failures])


def encode_cursor(row: dict[str, Any]) -> str:
    raw = json.dumps([row["day"], row["user"], row["tool"]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str, str]:
    """Raises: InvalidInput: a cursor this endpoint did not hand out."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        day, user, tool = json.loads(raw)
        if not all(isinstance(v, str) and len(v) <= 200 and "\x00" not in v for v in (day, user, tool)):
            raise ValueError("not strings a row could hold")
        dt.date.fromisoformat(day)
    except (ValueError, TypeError) as exc:
        raise InvalidInput("cursor: not a cursor from a previous page of this list", code="bad_cursor") from exc
    return day, user, tool


async def totals(db: Database, *, user: str | None = None, day_from: dt.date | None = None,
                 day_to: dt.date | None = None, limit: int = 100, cursor: str | None = None) -> dict[str, Any]:
    """Calls and failed calls per (day, user, tool), ordered so, filtered by user and an inclusive day range;
    one page.

    Raises:
        InvalidInput: a cursor this list did not hand out.
    """
    where, args = [], []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if user is not None:
        where.append(f"c.username = {arg(user)}")
    if day_from is not None:
        where.append(f"c.day >= {arg(day_from.isoformat())}")
    if day_to is not None:
        where.append(f"c.day <= {arg(day_to.isoformat())}")
    if cursor is not None:
        d, u, t = decode_cursor(cursor)
        where.append(f"(c.day, c.username, c.tool) > ({arg(d)}, {arg(u)}, {arg(t)})")
    sql = ("SELECT c.day AS day, c.username AS user, c.tool AS tool, COUNT(*) AS calls, "
           "COUNT(f.tool_use_id) AS failed FROM tool_calls c LEFT JOIN tool_failures f "
           "ON f.username = c.username AND f.tool_use_id = c.tool_use_id"
           + (f" WHERE {' AND '.join(where)}" if where else "")
           + f" GROUP BY c.day, c.username, c.tool ORDER BY c.day, c.username, c.tool LIMIT {arg(limit + 1)}")
    rows = await db.fetch(sql, *args)
    for row in rows:
        row["calls"], row["failed"] = int(row["calls"]), int(row["failed"])
        row["cursor"] = encode_cursor(row)
    result = page(rows, limit, key="cursor")
    for row in result["items"]:
        row.pop("cursor", None)
    return result
