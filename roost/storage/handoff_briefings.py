"""The claimer's briefing: marked ``pending`` by the claim (``roost.storage.handoffs.claim``), written
after the commit under a lease, with the assessment's discipline (``claim_assessment``):

- ``claim_briefing`` takes a pending briefing, or a running one whose lease ran out (its process
  died while writing it), for ``lease_s``, and counts an attempt; past ``max_attempts`` the
  briefing is marked failed instead;
- ``store_briefing`` records the text (done) or a failure, only while the briefing is running,
  so a slow writer that outlived its lease cannot overwrite the one that took over.

Each terminal state (done, failed) writes a ``handoff_updated`` event with the handoff in the
same transaction, like every change a socket should hear of.
"""

from __future__ import annotations

import datetime as dt

from roost.storage.database import Connection, Database, Row
from roost.storage.handoffs import BRIEFING_MAX_CHARS, add_event, pending_leased

_FAILED = ("UPDATE handoffs SET briefing_state = 'failed', briefing_lease_until = NULL"
           " WHERE id = $1 AND briefing_state = 'running' RETURNING *")


async def claim_briefing(db: Database, handoff_id: str, *, now: dt.datetime, lease_s: float,
                         max_attempts: int) -> tuple[Row | None, Row | None]:
    """Take the handoff's briefing for ``lease_s``. Returns (handoff, claimer) to write it; (handoff,
    None) when this claim found ``max_attempts`` spent and marked it failed (with its event); (None,
    None) when another process has it or it is not due."""
    async with db.transaction() as tx:
        row = await tx.fetchrow(
            "UPDATE handoffs SET briefing_state = 'running', briefing_lease_until = $2,"
            " briefing_attempts = briefing_attempts + 1"
            " WHERE id = $1 AND (briefing_state = 'pending'"
            " OR (briefing_state = 'running' AND briefing_lease_until <= $3))"
            " RETURNING *", handoff_id, now + dt.timedelta(seconds=lease_s), now)
        if row is None:
            return None, None
        if row["briefing_attempts"] > max_attempts:
            failed = await tx.fetchrow(_FAILED, handoff_id)
            await add_event(tx, "handoff_updated", failed, now)
            return failed, None
        claimer = await tx.fetchrow("SELECT id, display_name, role, team, timezone FROM users WHERE id = $1",
                                    row["claimed_by"])
        return row, claimer


async def pending_briefings(conn: Connection, *, now: dt.datetime, limit: int = 100) -> list[str]:
    """Handoffs whose briefing is due: pending ones, and running ones whose lease ran out."""
    return await pending_leased(conn, "briefing", now=now, limit=limit)


async def store_briefing(db: Database, handoff_id: str, ok: bool, briefing: str | None,
                         now: dt.datetime) -> Row | None:
    """Record a running briefing as done (``briefing``, None for nothing to say) or failed (``ok``
    false), with a ``handoff_updated`` event. Returns the row changed, or None (not running)."""
    if briefing is not None:
        # PostgreSQL text cannot hold NUL; a model's answer is bounded like every outside text.
        briefing = briefing.replace("\x00", "")[:BRIEFING_MAX_CHARS]
    async with db.transaction() as tx:
        if ok:
            row = await tx.fetchrow(
                "UPDATE handoffs SET briefing = $2, briefing_state = 'done', briefing_lease_until = NULL"
                " WHERE id = $1 AND briefing_state = 'running' RETURNING *", handoff_id, briefing)
        else:
            row = await tx.fetchrow(_FAILED, handoff_id)
        if row is not None:
            await add_event(tx, "handoff_updated", row, now)
        return row
