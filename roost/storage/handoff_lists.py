"""Handoff lists of an account: the open queue (urgent first, then oldest) and every handoff
(newest first), each narrowed by team and intent, keyset-paged.

Indexes (migrations 0006 and 0021): the queue reads ``handoffs_queue`` or, for a team,
``handoffs_team_queue``; the list reads ``handoffs_account_list``, ``handoffs_account_status_list``
(by state) or ``handoffs_account_team_list`` (by team). An intent narrows within those.
"""

from __future__ import annotations

from typing import Any

from roost.errors import InvalidInput
from roost.storage.database import Connection
from roost.storage.handoffs import card

_COLUMNS = ("id, account_id, team, subject_ref, intent, notes, priority, priority_rank, created_by, created_at,"
            " claimed_by, claimed_at, cancelled_by, cancelled_at, status, assessment, assessment_state, briefing,"
            " briefing_state")
_ID_CHARS = frozenset("0123456789abcdefghjkmnpqrstvwxyz")  # roost.storage.ids: Crockford base32, lower case


def _bad_cursor() -> InvalidInput:
    return InvalidInput("cursor is not one this endpoint handed out", code="bad_cursor")


def _handoff_id(value: str) -> str:
    # A handoff id (``hnd_`` and 26 characters): anything else was not handed out here.
    if not (value.startswith("hnd_") and len(value) == 30 and set(value[4:]) <= _ID_CHARS):
        raise _bad_cursor()
    return value


def _queue_cursor(cursor: str | None) -> tuple[int, str] | None:
    if cursor is None:
        return None
    rank, _, last_id = cursor.partition(".")
    # ASCII digits only ("²".isdigit() is true, and int() refuses it) and within a BIGINT.
    if not (rank.isascii() and rank.isdigit() and len(rank) <= 18) or not last_id:
        raise _bad_cursor()
    return int(rank), last_id


def _filters(first: int, **values: str | None) -> tuple[str, list[Any]]:
    """`` AND column = $n`` for each value given (column names come from the callers, never a request)."""
    sql, args = "", []
    for column, value in values.items():
        if value is not None:
            args.append(value)
            sql += f" AND {column} = ${first + len(args) - 1}"
    return sql, args


def queue_statement(account_id: str, *, limit: int, cursor: str | None, team: str | None = None,
                    intent: str | None = None) -> tuple[str, list[Any]]:
    """The queue's SELECT and its arguments (the plan test reads them too)."""
    after = _queue_cursor(cursor)
    where, args = _filters(3, team=team, intent=intent)
    if after is not None:
        n = 3 + len(args)
        where += f" AND (priority_rank < ${n} OR (priority_rank = ${n} AND id > ${n + 1}))"
        args += [after[0], after[1]]
    return (f"SELECT {_COLUMNS} FROM handoffs WHERE account_id = $1 AND status = 'open'{where}"
            " ORDER BY priority_rank DESC, id LIMIT $2", [account_id, limit + 1, *args])


def list_statement(account_id: str, *, limit: int, cursor: str | None, state: str | None = None,
                   team: str | None = None, intent: str | None = None) -> tuple[str, list[Any]]:
    """The list's SELECT and its arguments (the plan test reads them too)."""
    where, args = _filters(3, status=state, team=team, intent=intent)
    if cursor is not None:
        args.append(_handoff_id(cursor))
        where += f" AND id < ${2 + len(args)}"
    return (f"SELECT {_COLUMNS} FROM handoffs WHERE account_id = $1{where} ORDER BY id DESC LIMIT $2",
            [account_id, limit + 1, *args])


async def queue(conn: Connection, account_id: str, *, limit: int, cursor: str | None, team: str | None = None,
                intent: str | None = None) -> dict[str, Any]:
    """Open handoffs of an account (of one team, of one intent), urgent first then oldest; keyset-paged
    on (rank, id).

    Raises:
        InvalidInput: a cursor this list did not hand out (code ``bad_cursor``).
    """
    sql, args = queue_statement(account_id, limit=limit, cursor=cursor, team=team, intent=intent)
    rows = await conn.fetch(sql, *args)
    items = rows[:limit]
    next_cursor = f"{items[-1]['priority_rank']}.{items[-1]['id']}" if len(rows) > limit and items else None
    return {"items": [card(r) for r in items], "next_cursor": next_cursor}


async def list_for_account(conn: Connection, account_id: str, *, limit: int, cursor: str | None,
                           state: str | None = None, team: str | None = None,
                           intent: str | None = None) -> dict[str, Any]:
    """Every handoff of an account (narrowed by state, team, intent), newest first; keyset-paged on id.

    Raises:
        InvalidInput: a cursor this list did not hand out (code ``bad_cursor``).
    """
    sql, args = list_statement(account_id, limit=limit, cursor=cursor, state=state, team=team, intent=intent)
    rows = await conn.fetch(sql, *args)
    items = rows[:limit]
    next_cursor = items[-1]["id"] if len(rows) > limit and items else None
    return {"items": [card(r) for r in items], "next_cursor": next_cursor}
