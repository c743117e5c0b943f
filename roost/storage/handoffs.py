"""Handoffs, and their event outbox with a per-account sequence.

Every change a socket should hear of (created, claimed, cancelled, updated) writes one row to
``handoff_events`` in the same transaction as the change itself: a transactional outbox. The
event's ``seq`` comes from the account's row in ``handoff_seq``, incremented in that
transaction; the row stays locked until the transaction ends, so an account's events commit in
``seq`` order, without gaps (a rollback gives its number back). The fan-out actor only ever
reads committed rows, so a transaction that rolls back publishes nothing.

Escalation mail, assessment and the claimer's briefing are follow-ups, marked ``pending`` on the
handoff in the same transaction and done after the commit in transactions of their own (the
mail in ``roost.storage.handoff_mail``, ``store_assessment``; briefings in
``roost.storage.handoff_briefings``): they can neither fail nor delay the handoff, and a crash
between the two leaves the mark, which the follow-up actor picks up again. Assessments and
briefings are claimed with a lease (``claim_assessment``, ``claim_briefing``), so one process does
each, and another takes it over once a dead process's lease has run out. The lists are in
``roost.storage.handoff_lists``.

States of ``assessment_state`` and ``briefing_state``: pending, running, done, failed, skipped.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from roost.errors import Conflict, InvalidInput, NotFound
from roost.storage import webhook_events as webhooks
from roost.storage.database import Connection, Database, Row
from roost.storage.ids import new_id

SNAPSHOT_MAX_BYTES = 64 * 1024
PRIORITY_RANK = {"low": 0, "normal": 1, "high": 2, "urgent": 3}
NOTIFY_ROLES = ("owner", "admin", "engineer")
_PUBLIC = (
    "id", "account_id", "team", "subject_ref", "intent", "notes", "priority", "created_by", "created_at",
    "claimed_by", "claimed_at", "cancelled_by", "cancelled_at", "status", "assessment", "assessment_state",
    "briefing", "briefing_state",
)
_CARD_COLUMNS = ", ".join((*_PUBLIC, "priority_rank"))
STATES = ("open", "claimed", "cancelled")
INTENTS = ("park", "escalate")
BRIEFING_MAX_CHARS = 8000


def snapshot_size(snapshot: Any) -> int:
    return len(json.dumps(snapshot, separators=(",", ":"), ensure_ascii=False).encode())


def card(row: Row) -> dict[str, Any]:
    """What an event carries: the handoff without its snapshot (GET the handoff for that)."""
    return {k: row[k] for k in _PUBLIC}


async def next_seq(conn: Connection, account_id: str) -> int:
    """The account's next event number; locks its counter row until the transaction ends."""
    return int(await conn.fetchval(
        "INSERT INTO handoff_seq (account_id, last_seq) VALUES ($1, 1)"
        " ON CONFLICT (account_id) DO UPDATE SET last_seq = handoff_seq.last_seq + 1 RETURNING last_seq",
        account_id,
    ))


async def add_event(conn: Connection, kind: str, row: Row, now: dt.datetime) -> int:
    """Write the event ``kind`` (``handoff_created``...) and, in the same transaction, its webhook
    ``handoff.created``... with the frame's ``{seq, handoff}``; returns its seq."""
    seq = await next_seq(conn, row["account_id"])
    handoff = _jsonable(card(row))
    await conn.execute(
        "INSERT INTO handoff_events (account_id, seq, kind, handoff_id, handoff, created_at)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        row["account_id"], seq, kind, row["id"], handoff, now,
    )
    await webhooks.enqueue(conn, account_id=row["account_id"], event=kind.replace("_", ".", 1),
                           payload={"seq": seq, "handoff": handoff}, now=now)
    return seq


def _jsonable(value: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat().replace("+00:00", "Z") if isinstance(v, dt.datetime) else v) for k, v in value.items()}


async def active_user(conn: Connection, user_id: str, account_id: str) -> Row:
    """The user, if they belong to ``account_id``; another account's user is not found.

    Raises:
        NotFound: no such user in this account.
        InvalidInput: the user is deactivated (code ``user_inactive``).
    """
    row = await conn.fetchrow("SELECT id, account_id, active, team FROM users WHERE id = $1", user_id)
    if row is None or row["account_id"] != account_id:
        raise NotFound(f"no user {user_id!r} in this handoff's account")
    if not row["active"]:
        raise InvalidInput(f"user {user_id!r} is deactivated", code="user_inactive")
    return row


KEEP_TEAM: Any = object()  # ``team`` left out of ``create``: the creator's team


async def create(conn: Connection, *, account_id: str, subject_ref: str, intent: str, notes: str, priority: str,
                 snapshot: Any, created_by: str, assess: bool, now: dt.datetime, team: Any = KEEP_TEAM) -> Row:
    """Insert a handoff and its ``handoff_created`` event, in the caller's transaction.

    ``assess`` says an assessor is configured: an escalation is then marked for assessment, a
    park only when its account's ``assess_parks`` is set; otherwise the assessment is
    ``skipped``. ``team`` defaults to the creator's team; None is no team.
    """
    account = await conn.fetchrow("SELECT assess_parks FROM accounts WHERE id = $1 AND deleted_at IS NULL",
                                  account_id)
    if account is None:
        raise NotFound(f"no account {account_id!r}")
    creator = await active_user(conn, created_by, account_id)
    assessed = assess and (intent == "escalate" or bool(account["assess_parks"]))
    row = {
        "id": new_id("hnd"), "account_id": account_id, "team": creator["team"] if team is KEEP_TEAM else team,
        "subject_ref": subject_ref, "intent": intent, "notes": notes,
        "priority": priority, "priority_rank": PRIORITY_RANK[priority], "snapshot": snapshot,
        "created_by": created_by, "created_at": now, "claimed_by": None, "claimed_at": None,
        "cancelled_by": None, "cancelled_at": None, "status": "open", "assessment": None,
        "assessment_state": "pending" if assessed else "skipped", "briefing": None, "briefing_state": "skipped",
        "mail_state": "pending" if intent == "escalate" else "none",
    }
    await conn.execute(
        "INSERT INTO handoffs (id, account_id, team, subject_ref, intent, notes, priority, priority_rank, snapshot,"
        " created_by, created_at, status, assessment_state, mail_state, briefing_state)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'open', $12, $13, 'skipped')",
        row["id"], account_id, row["team"], subject_ref, intent, notes, priority, row["priority_rank"], snapshot,
        created_by, now, row["assessment_state"], row["mail_state"],
    )
    await add_event(conn, "handoff_created", row, now)
    return row


async def get(conn: Connection, handoff_id: str, account_id: str | None = None) -> Row:
    row = await conn.fetchrow("SELECT * FROM handoffs WHERE id = $1", handoff_id)
    if row is None or (account_id is not None and row["account_id"] != account_id):
        raise NotFound(f"no handoff {handoff_id!r}")
    return row


def _held(row: Row) -> Conflict:
    if row["status"] == "cancelled":
        return Conflict("this handoff was cancelled", code="handoff_cancelled",
                        details={"cancelled_by": row["cancelled_by"]})
    return Conflict(f"this handoff is already claimed by {row['claimed_by']}", code="already_claimed",
                    details={"claimed_by": row["claimed_by"],
                             "claimed_at": _jsonable({"t": row["claimed_at"]})["t"]})


async def claim(db: Database, handoff_id: str, user_id: str, now: dt.datetime, *,
                brief: bool = False, account_id: str | None = None) -> tuple[Row, bool]:
    """Claim an open handoff for ``user_id``: one conditional UPDATE, so exactly one claim wins.

    ``brief`` (the assessor writes briefings) marks the claimer's briefing pending, in the same
    transaction. Returns (row, changed); re-claiming your own claim changes nothing.

    Raises:
        NotFound: no such handoff (in ``account_id``, when given), or ``user_id`` is of another account.
        Conflict: someone else holds it (details name them), or it was cancelled.
    """
    async with db.transaction() as tx:
        row = await get(tx, handoff_id, account_id)
        await active_user(tx, user_id, row["account_id"])
        updated = await tx.fetchrow(
            "UPDATE handoffs SET status = 'claimed', claimed_by = $2, claimed_at = $3, briefing_state = $4"
            " WHERE id = $1 AND status = 'open' RETURNING *", handoff_id, user_id, now,
            "pending" if brief else "skipped",
        )
        if updated is not None:
            await add_event(tx, "handoff_claimed", updated, now)
            return updated, True
    row = await get(db, handoff_id)
    if row["status"] == "claimed" and row["claimed_by"] == user_id:
        return row, False
    raise _held(row)


async def cancel(db: Database, handoff_id: str, user_id: str, now: dt.datetime, *,
                 account_id: str | None = None) -> tuple[Row, bool]:
    """Cancel an open handoff (conditional, like ``claim``); cancelling a cancelled one changes nothing.

    Raises:
        NotFound: no such handoff (in ``account_id``, when given), or ``user_id`` is of another account.
        Conflict: it is claimed (details name who holds it).
    """
    async with db.transaction() as tx:
        row = await get(tx, handoff_id, account_id)
        await active_user(tx, user_id, row["account_id"])
        updated = await tx.fetchrow(
            "UPDATE handoffs SET status = 'cancelled', cancelled_by = $2, cancelled_at = $3"
            " WHERE id = $1 AND status = 'open' RETURNING *", handoff_id, user_id, now,
        )
        if updated is not None:
            await add_event(tx, "handoff_cancelled", updated, now)
            return updated, True
    row = await get(db, handoff_id)
    if row["status"] == "cancelled":
        return row, False
    raise _held(row)


async def notifications(conn: Connection, handoff_id: str) -> list[dict[str, Any]]:
    """Each recipient's delivery state: the state of the outbox row queued for them."""
    rows = await conn.fetch(
        "SELECT n.user_id, n.channel, o.status FROM handoff_notifications n"
        " LEFT JOIN outbox o ON o.id = n.outbox_id WHERE n.handoff_id = $1 ORDER BY n.user_id, n.channel",
        handoff_id,
    )
    return [{"user_id": r["user_id"], "channel": r["channel"], "state": r["status"] or "unknown"} for r in rows]


# -- events ------------------------------------------------------------------------------------


async def events_after(conn: Connection, account_id: str, after: int, *, upto: int | None = None,
                       limit: int = 1000) -> list[Row]:
    if upto is None:
        return await conn.fetch(
            "SELECT seq, kind, handoff, created_at FROM handoff_events WHERE account_id = $1 AND seq > $2"
            " ORDER BY seq LIMIT $3", account_id, after, limit)
    return await conn.fetch(
        "SELECT seq, kind, handoff, created_at FROM handoff_events WHERE account_id = $1 AND seq > $2"
        " AND seq <= $3 ORDER BY seq LIMIT $4", account_id, after, upto, limit)


async def event_log(conn: Connection, account_id: str, *, limit: int, before: int | None = None) -> dict[str, Any]:
    """The account's event log, newest first (the primary key ``(account_id, seq)`` read backwards),
    keyset-paged on ``seq``: ``before`` is the ``next_cursor`` of the page before. Events older
    than the replay window are pruned (``prune_events``), so the log reaches back that far."""
    if before is None:
        rows = await conn.fetch(
            "SELECT seq, kind, handoff_id, handoff, created_at FROM handoff_events WHERE account_id = $1"
            " ORDER BY seq DESC LIMIT $2", account_id, limit + 1)
    else:
        rows = await conn.fetch(
            "SELECT seq, kind, handoff_id, handoff, created_at FROM handoff_events WHERE account_id = $1"
            " AND seq < $2 ORDER BY seq DESC LIMIT $3", account_id, before, limit + 1)
    items = rows[:limit]
    return {"items": items, "next_cursor": int(items[-1]["seq"]) if len(rows) > limit and items else None}


async def claimable_users(conn: Connection, account_id: str, *, limit: int) -> list[Row]:
    """Active users of the account, who may claim or cancel its handoffs (``users_account`` index)."""
    return await conn.fetch(
        "SELECT id, display_name, email, team FROM users WHERE account_id = $1 AND active AND deleted_at IS NULL"
        " ORDER BY id LIMIT $2", account_id, limit)


async def last_seqs(conn: Connection) -> dict[str, int]:
    """Every account's last committed sequence number."""
    rows = await conn.fetch("SELECT account_id, last_seq FROM handoff_seq")
    return {r["account_id"]: int(r["last_seq"]) for r in rows}


async def last_seq(conn: Connection, account_id: str) -> int:
    value = await conn.fetchval("SELECT last_seq FROM handoff_seq WHERE account_id = $1", account_id)
    return int(value or 0)


async def active_user_ids(conn: Connection, account_id: str) -> set[str]:
    return {r["id"] for r in await conn.fetch("SELECT id FROM users WHERE account_id = $1 AND active", account_id)}


async def prune_events(db: Database, older_than: dt.datetime) -> int:
    return await db.execute("DELETE FROM handoff_events WHERE created_at < $1", older_than)


# -- follow-ups after the commit ---------------------------------------------------------------


async def pending_mail(conn: Connection, limit: int = 100) -> list[str]:
    return [r["id"] for r in await conn.fetch(
        "SELECT id FROM handoffs WHERE mail_state = 'pending' ORDER BY id LIMIT $1", limit)]


async def pending_assessment_mail(conn: Connection, limit: int = 100) -> list[str]:
    """Escalations whose assessment mail is marked and whose escalation mail is queued (the
    assessment goes to those it went to; while that is pending, it will carry the assessment)."""
    return [r["id"] for r in await conn.fetch(
        "SELECT id FROM handoffs WHERE assessment_mail_state = 'pending' AND mail_state = 'queued'"
        " ORDER BY id LIMIT $1", limit)]


async def claim_assessment(db: Database, handoff_id: str, *, now: dt.datetime, lease_s: float,
                           max_attempts: int) -> Row | None:
    """Take the handoff's assessment for ``lease_s``: a pending one, or a running one whose lease ran
    out (its process died while assessing). None when another process has it, or it is not due.

    The claim counts an attempt; a claim that finds ``max_attempts`` spent (every earlier
    assessor died with its process) marks the assessment failed instead (with a
    ``handoff_updated`` event) and answers the failed row: the caller wakes the fan-out, and
    assesses only a row that is ``running``.
    """
    async with db.transaction() as tx:
        row = await tx.fetchrow(
            "UPDATE handoffs SET assessment_state = 'running', assessment_lease_until = $2,"
            " assessment_attempts = assessment_attempts + 1"
            " WHERE id = $1 AND (assessment_state = 'pending'"
            " OR (assessment_state = 'running' AND assessment_lease_until <= $3))"
            " RETURNING *", handoff_id, now + dt.timedelta(seconds=lease_s), now)
        if row is not None and row["assessment_attempts"] > max_attempts:
            failed = await tx.fetchrow("UPDATE handoffs SET assessment_state = 'failed', assessment_lease_until = NULL"
                                       " WHERE id = $1 RETURNING *", handoff_id)
            await add_event(tx, "handoff_updated", failed, now)
            return failed
        return row


async def pending_assessments(conn: Connection, *, now: dt.datetime, limit: int = 100) -> list[str]:
    """Handoffs to assess: pending ones, and running ones whose lease ran out."""
    return await pending_leased(conn, "assessment", now=now, limit=limit)


async def pending_leased(conn: Connection, work: str, *, now: dt.datetime, limit: int = 100) -> list[str]:
    """Handoffs whose ``work`` (``assessment`` or ``briefing``, a follow-up claimed with a lease) is
    due: pending ones, and running ones whose lease ran out."""
    if work not in ("assessment", "briefing"):  # the column names are formatted in: a fixed set only
        raise ValueError(f"no leased follow-up {work!r}")
    pending = [r["id"] for r in await conn.fetch(
        f"SELECT id FROM handoffs WHERE {work}_state = 'pending' ORDER BY id LIMIT $1", limit)]
    orphaned = [r["id"] for r in await conn.fetch(
        f"SELECT id FROM handoffs WHERE {work}_state = 'running' AND {work}_lease_until <= $1"
        f" ORDER BY {work}_lease_until LIMIT $2", now, limit)]
    return pending + orphaned


async def store_assessment(db: Database, handoff_id: str, assessment: dict[str, Any] | None,
                           now: dt.datetime) -> Row | None:
    """Record an assessor's result with a ``handoff_updated`` event; None marks it failed (an event too,
    so a socket showing "assessing" learns the state). Returns the row changed, or None.

    Only a running assessment is stored: when a slow assessor outlived its lease and another
    process assessed the handoff meanwhile, the first result written wins and this one is dropped.
    """
    async with db.transaction() as tx:
        if assessment is None:
            row = await tx.fetchrow("UPDATE handoffs SET assessment_state = 'failed', assessment_lease_until = NULL"
                                    " WHERE id = $1 AND assessment_state = 'running' RETURNING *", handoff_id)
        else:
            # An escalation's assessment is mailed to those its mail went to: marked here, in the
            # assessment's own transaction, so a crash before the mail is queued loses nothing.
            row = await tx.fetchrow(
                "UPDATE handoffs SET assessment = $2, assessment_state = 'done', assessment_lease_until = NULL,"
                " assessment_mail_state = CASE WHEN intent = 'escalate' THEN 'pending' ELSE assessment_mail_state END"
                " WHERE id = $1 AND assessment_state = 'running' RETURNING *",
                handoff_id, assessment)
        if row is not None:
            await add_event(tx, "handoff_updated", row, now)
        return row
