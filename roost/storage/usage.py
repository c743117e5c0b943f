"""Token usage per message (table ``usage_messages``) and its totals per user, day and model."""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any, Iterable

from roost.errors import InvalidInput
from roost.storage.database import Connection, Database
from roost.storage.pagination import page

COUNTERS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


@dataclass(frozen=True)
class MessageUsage:
    message_id: str
    request_id: str
    day: str
    model: str
    seen_at: dt.datetime
    counts: tuple[int, int, int, int]

    @property
    def key(self) -> tuple[str, str]:
        return (self.message_id, self.request_id)


def fold(items: Iterable[MessageUsage]) -> list[MessageUsage]:
    """One entry per message: each counter the largest seen, day and model from the earliest line."""
    best: dict[tuple[str, str], MessageUsage] = {}
    for item in items:
        have = best.get(item.key)
        if have is None:
            best[item.key] = item
            continue
        first = item if item.seen_at < have.seen_at else have
        counts = tuple(max(a, b) for a, b in zip(have.counts, item.counts, strict=True))
        best[item.key] = MessageUsage(item.message_id, item.request_id, first.day, first.model, first.seen_at,
                                      counts)  # type: ignore[arg-type]
    return list(best.values())


def _upsert_sql(greatest: str) -> str:
    """The merge of one message's counters; ``greatest`` is the backend's two-argument maximum."""
    counters = ",\n    ".join(f"{c} = {greatest}(usage_messages.{c}, excluded.{c})" for c in COUNTERS)
    earlier = "excluded.seen_at < usage_messages.seen_at"
    return f"""
INSERT INTO usage_messages (username, message_id, request_id, day, model, seen_at, {", ".join(COUNTERS)})
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (username, message_id, request_id) DO UPDATE SET
    {counters},
    day = CASE WHEN {earlier} THEN excluded.day ELSE usage_messages.day END,
    model = CASE WHEN {earlier} THEN excluded.model ELSE usage_messages.model END,
    seen_at = CASE WHEN {earlier} THEN excluded.seen_at ELSE usage_messages.seen_at END
"""


async def record(conn: Connection, username: str, items: Iterable[MessageUsage]) -> None:
    """Merge ``items`` into the stored messages of ``username`` (idempotent; counters only ever grow)."""
    rows = [(username, m.message_id, m.request_id, m.day, m.model, m.seen_at, *m.counts) for m in fold(items)]
    if rows:
        await conn.execute_many(_upsert_sql(conn.dialect.greatest), rows)


def encode_cursor(row: dict[str, Any]) -> str:
    raw = json.dumps([row["day"], row["user"], row["model"]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str, str]:
    """Raises: InvalidInput: a cursor this endpoint did not hand out."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        day, user, model = json.loads(raw)
        if not all(isinstance(v, str) for v in (day, user, model)):
            raise ValueError("not strings")
    except (ValueError, TypeError) as exc:
        raise InvalidInput("cursor: not a cursor from a previous page of this list") from exc
    return day, user, model


async def totals(db: Database, *, user: str | None = None, day_from: dt.date | None = None,
                 day_to: dt.date | None = None, limit: int = 100, cursor: str | None = None) -> dict[str, Any]:
    """Totals per (day, user, model), ordered so, filtered by user and an inclusive day range; one page."""
    where, args = [], []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if user is not None:
        where.append(f"username = {arg(user)}")
    if day_from is not None:
        where.append(f"day >= {arg(day_from.isoformat())}")
    if day_to is not None:
        where.append(f"day <= {arg(day_to.isoformat())}")
    if cursor is not None:
        d, u, m = decode_cursor(cursor)
        where.append(f"(day, username, model) > ({arg(d)}, {arg(u)}, {arg(m)})")
    sums = ", ".join(f"CAST(SUM({c}) AS BIGINT) AS {c}" for c in COUNTERS)
    sql = (f"SELECT day, username AS user, model, {sums} FROM usage_messages"
           + (f" WHERE {' AND '.join(where)}" if where else "")
           + f" GROUP BY day, username, model ORDER BY day, username, model LIMIT {arg(limit + 1)}")
    rows = await db.fetch(sql, *args)
    for row in rows:
        for c in COUNTERS:
            row[c] = int(row[c])
        row["cursor"] = encode_cursor(row)
    result = page(rows, limit, key="cursor")
    for row in result["items"]:
        row.pop("cursor", None)
    return result


def _filters(user: str | None, day_from: dt.date | None, day_to: dt.date | None) -> tuple[str, list[Any]]:
    where, args = [], []
    if user is not None:
        args.append(user)
        where.append(f"username = ${len(args)}")
    if day_from is not None:
        args.append(day_from.isoformat())
        where.append(f"day >= ${len(args)}")
    if day_to is not None:
        args.append(day_to.isoformat())
        where.append(f"day <= ${len(args)}")
    return (f" WHERE {' AND '.join(where)}" if where else ""), args


async def per_day_and_model(db: Database, *, day_from: dt.date, day_to: dt.date,
                            user: str | None = None) -> list[dict[str, Any]]:
    """Totals per (day, model) over every user (or one), in day order: the console's chart.
    The caller bounds the day range (a row per day and model)."""
    where, args = _filters(user, day_from, day_to)
    sums = ", ".join(f"CAST(SUM({c}) AS BIGINT) AS {c}" for c in COUNTERS)
    rows = await db.fetch(f"SELECT day, model, {sums} FROM usage_messages{where} GROUP BY day, model"
                          " ORDER BY day, model", *args)
    for row in rows:
        for c in COUNTERS:
            row[c] = int(row[c] or 0)
    return rows

