"""The device's send queue (dispatch storage, the sending side): the claim under the limits,
leases, the ledger, results.

The claim (``claim``) is the heart: in one transaction it locks the account's settings row (the
account's dispatch state: PostgreSQL ``FOR UPDATE``; SQLite's ``BEGIN IMMEDIATE`` serialises
every writer anyway), reads the ledger, asks ``roost.domain.dispatch.limits.decide`` how many may go
now, claims that many pending items (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), marks them
dispatched with a lease and writes one ledger row each. Every process and every device of the
account goes through that lock, so the limits are global per account and survive restarts.
``decision`` is the same read without the lock (a batch's ``next_send``). Every write that
changes an item also sets its ``updated_at``, in the same statement.
Batches and settings are ``roost.storage.dispatch``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from roost.domain.dispatch.limits import Decision, Policy, WindowUse, decide
from roost.errors import Conflict, InvalidInput, NotFound
from roost.storage.database import Connection, Database, Row
from roost.storage.dispatch import ITEM_COLUMNS, close_items, settings_view

# -- devices that can no longer send ---------------------------------------------------------------

DEAD_DEVICE_SKIPPED = "the device was revoked or its user deactivated before it was sent"
DEAD_DEVICE_FAILED = ("the device was revoked or its user deactivated before it reported a result"
                      " (it may have been sent)")


async def release_dead_devices(db: Database, *, now: dt.datetime, device_id: str | None = None,
                               user_id: str | None = None) -> list[dict[str, Any]]:
    """End the open items of revoked devices and inactive users, so their batches can finish.

    Pending items become ``skipped`` and dispatched ones ``failed``, each with the reason. The
    admin endpoints call this right after a revocation or deactivation (scoped to that device or
    user); the pruner sweeps everything, which also covers a crash between the two. Returns the
    batches this finished (for ``batch_done``).
    """
    scope, args = "", [DEAD_DEVICE_SKIPPED, DEAD_DEVICE_FAILED, now]
    if device_id is not None:
        scope, args = " AND d.id = $4", [*args, device_id]
    elif user_id is not None:
        scope, args = " AND d.user_id = $4", [*args, user_id]
    finished: list[dict[str, Any]] = []
    async with db.transaction() as tx:
        # One statement: a result or a claim that got to an item first has already moved it on.
        rows = await tx.fetch(
            "UPDATE outreach_items SET"
            " reason = CASE status WHEN 'pending' THEN $1 ELSE $2 END,"
            " status = CASE status WHEN 'pending' THEN 'skipped' ELSE 'failed' END,"
            " result_at = $3, updated_at = $3, lease_until = NULL"
            " WHERE status IN ('pending', 'dispatched') AND device_id IN (SELECT d.id FROM devices d"
            f" JOIN users u ON u.id = d.user_id WHERE (d.revoked_at IS NOT NULL OR NOT u.active){scope})"
            " RETURNING batch_id",
            *args,
        )
        finished.extend(await close_ended(tx, [r["batch_id"] for r in rows], now=now))
    return finished


async def close_ended(tx: Connection, batch_ids: list[str], *, now: dt.datetime) -> list[dict[str, Any]]:
    """Count off the items that just ended (one batch id per item) and close the batches they finish."""
    ended: dict[str, int] = {}
    for batch_id in batch_ids:
        ended[batch_id] = ended.get(batch_id, 0) + 1
    finished = []
    for batch_id, n in sorted(ended.items()):
        done = await close_items(tx, batch_id, n, now=now)
        if done is not None:
            finished.append(done)
    return finished


# -- the claim -------------------------------------------------------------------------------------


@dataclass
class Claim:
    items: list[Row] = field(default_factory=list)
    next_at: dt.datetime | None = None  # when nothing may go now: the earliest instant something may
    more: bool = False  # the claim took as many as it asked for: call again
    reason: str | None = None  # when nothing may go now: why (``limits.decide``'s reason)


async def _decision(conn: Connection, account_id: str, policy: Policy, now: dt.datetime) -> Decision:
    uses = []
    for window_s, limit in policy.windows():
        since = now - dt.timedelta(seconds=window_s)
        count = int(await conn.fetchval(
            "SELECT COUNT(*) FROM (SELECT 1 FROM outreach_dispatches WHERE account_id = $1 AND at > $2 LIMIT $3) AS w",
            account_id, since, limit,
        ))
        lth = None
        if count >= limit:
            lth = await conn.fetchval(
                "SELECT at FROM outreach_dispatches WHERE account_id = $1 AND at > $2"
                " ORDER BY at DESC LIMIT 1 OFFSET $3",
                account_id, since, limit - 1,
            )
        uses.append(WindowUse(window_s, limit, count, lth))
    last_at = None
    if policy.min_gap_seconds > 0:
        last_at = await conn.fetchval(
            "SELECT at FROM outreach_dispatches WHERE account_id = $1 ORDER BY at DESC LIMIT 1", account_id
        )
    return decide(now, policy, uses, last_at)


async def _policy(conn: Connection, account_id: str, *, lock: bool) -> Policy | None:
    """The account's effective policy from its settings row (None: no row yet), locking the row
    (the account's dispatch state) for a claim."""
    state = await conn.fetchrow(
        "SELECT s.*, a.timezone AS account_timezone FROM outreach_settings s JOIN accounts a ON a.id = s.account_id"
        f" WHERE s.account_id = $1{conn.dialect.for_update(of='s') if lock else ''}",
        account_id,
    )
    if state is None:
        return None
    return Policy.from_settings(settings_view(state, {"id": account_id, "timezone": state["account_timezone"]}))


async def decision(conn: Connection, account_id: str, now: dt.datetime) -> Decision:
    """What a claim at ``now`` would decide for the account's limits, without claiming (or locking)."""
    policy = await _policy(conn, account_id, lock=False)
    return await _decision(conn, account_id, policy or Policy(), now)


async def claim(db: Database, *, account_id: str, device_id: str, max_items: int, now: dt.datetime,
                lease_s: float) -> Claim:
    """Dispatch up to ``max_items`` of the device's pending items, within the account's limits."""
    if max_items <= 0:
        return Claim()
    async with db.transaction() as tx:
        policy = await _policy(tx, account_id, lock=True)
        if policy is None:
            return Claim()
        decided = await _decision(tx, account_id, policy, now)
        wanted = min(decided.allowed, max_items)
        if wanted <= 0:
            return Claim(next_at=decided.next_at, reason=decided.reason)
        rows = await tx.fetch(
            f"SELECT {ITEM_COLUMNS} FROM outreach_items i JOIN outreach_batches b ON b.id = i.batch_id"
            " WHERE i.device_id = $1 AND i.status = 'pending' AND b.status = 'sending' AND i.account_id = $2"
            f" ORDER BY i.batch_id, i.seq LIMIT $3{tx.dialect.for_update(skip_locked=True, of='i')}",
            device_id, account_id, wanted,
        )
        if rows:
            lease_until = now + dt.timedelta(seconds=lease_s)
            await tx.execute_many(
                "UPDATE outreach_items SET status = 'dispatched', dispatched_at = $2, updated_at = $2,"
                " lease_until = $3, offers = 1 WHERE id = $1",
                [(r["id"], now, lease_until) for r in rows],
            )
            for r in rows:
                r["updated_at"] = now
            await tx.execute_many(
                "INSERT INTO outreach_dispatches (item_id, account_id, device_id, at) VALUES ($1, $2, $3, $4)",
                [(r["id"], account_id, device_id, now) for r in rows],
            )
        return Claim(items=rows, more=len(rows) == wanted)


async def reoffer(db: Database, *, device_id: str, now: dt.datetime, lease_s: float, only_expired: bool,
                  max_offers: int | None = None, limit: int = 1000) -> list[Row]:
    """The device's dispatched items without a result (all, or those whose lease ran out), with a
    fresh lease: offered again with the same id. They do not count against the limits again.

    An item already offered ``max_offers`` times is not offered again: it waits out its last lease
    and is then failed ``no_result`` (``fail_unanswered``)."""
    where, args = ("AND i.lease_until <= $3", [device_id, limit, now]) if only_expired else ("", [device_id, limit])
    if max_offers is not None:
        where += f" AND i.offers < ${len(args) + 1}"
        args.append(max_offers)
    async with db.transaction() as tx:
        rows = await tx.fetch(
            f"SELECT {ITEM_COLUMNS} FROM outreach_items i WHERE i.device_id = $1 AND i.status = 'dispatched' {where}"
            f" ORDER BY i.dispatched_at, i.batch_id, i.seq LIMIT $2{tx.dialect.for_update(skip_locked=True)}",
            *args,
        )
        if rows:
            await tx.execute_many(
                "UPDATE outreach_items SET lease_until = $2, updated_at = $3, offers = offers + 1"
                " WHERE id = $1 AND status = 'dispatched'",
                [(r["id"], now + dt.timedelta(seconds=lease_s), now) for r in rows],
            )
            for r in rows:
                r["updated_at"] = now
        return rows


NO_RESULT = "no_result"


async def fail_unanswered(db: Database, *, now: dt.datetime, max_offers: int,
                          device_id: str | None = None) -> list[dict[str, Any]]:
    """Fail, with reason ``no_result``, the dispatched items offered ``max_offers`` times whose last
    lease has run out (of one device, or all): the device never answered, so their batches can end.

    One conditional UPDATE, so a result that got to an item first keeps it. Returns the batches
    this finished (for ``batch_done``).
    """
    scope, args = "", [NO_RESULT, now, max_offers]
    if device_id is not None:
        scope, args = " AND device_id = $4", [*args, device_id]
    finished: list[dict[str, Any]] = []
    async with db.transaction() as tx:
        rows = await tx.fetch(
            "UPDATE outreach_items SET status = 'failed', reason = $1, result_at = $2, updated_at = $2,"
            f" lease_until = NULL WHERE status = 'dispatched' AND offers >= $3 AND lease_until <= $2{scope}"
            " RETURNING batch_id",
            *args,
        )
        finished.extend(await close_ended(tx, [r["batch_id"] for r in rows], now=now))
    return finished


async def next_lease_expiry(conn: Connection, device_id: str) -> dt.datetime | None:
    return await conn.fetchval(
        "SELECT lease_until FROM outreach_items WHERE device_id = $1 AND status = 'dispatched'"
        " ORDER BY lease_until LIMIT 1", device_id,
    )


async def in_flight(conn: Connection, device_id: str) -> int:
    return int(await conn.fetchval(
        "SELECT COUNT(*) FROM outreach_items WHERE device_id = $1 AND status = 'dispatched'", device_id
    ))


async def dispatch_count(conn: Connection, account_id: str, *, since: dt.datetime | None = None) -> int:
    """Dispatches of the account in the ledger (since a time): for status and tests."""
    if since is None:
        return int(await conn.fetchval("SELECT COUNT(*) FROM outreach_dispatches WHERE account_id = $1", account_id))
    return int(await conn.fetchval(
        "SELECT COUNT(*) FROM outreach_dispatches WHERE account_id = $1 AND at >= $2", account_id, since
    ))


USAGE_CAP = 100_000  # counting stops here: an operator's view needs no exact figure beyond it


async def window_usage(conn: Connection, account_id: str, now: dt.datetime) -> dict[str, Any]:
    """The account's dispatches in the last minute, hour and day (each counted up to ``USAGE_CAP``
    over ``outreach_dispatches_window``) and the last one's time: what its limits are measured on."""
    usage: dict[str, Any] = {}
    for name, seconds in (("minute", 60), ("hour", 3600), ("day", 86400)):
        usage[name] = int(await conn.fetchval(
            "SELECT COUNT(*) FROM (SELECT 1 FROM outreach_dispatches WHERE account_id = $1 AND at > $2 LIMIT $3) AS w",
            account_id, now - dt.timedelta(seconds=seconds), USAGE_CAP,
        ))
    usage["last_at"] = await conn.fetchval(
        "SELECT at FROM outreach_dispatches WHERE account_id = $1 ORDER BY at DESC LIMIT 1", account_id)
    return usage


async def prune_ledger(conn: Connection, *, older_than: dt.datetime) -> int:
    """Drop ledger rows no window can see any more (the longest window is a day)."""
    return await conn.execute("DELETE FROM outreach_dispatches WHERE at < $1", older_than)


async def count_dispatched(conn: Connection) -> int:
    """Items dispatched and not answered yet, over every device (the ``dispatch_in_flight`` probe)."""
    return int(await conn.fetchval("SELECT COUNT(*) FROM outreach_items WHERE status = 'dispatched'"))


async def ledger(conn: Connection, account_id: str) -> list[dt.datetime]:
    rows = await conn.fetch("SELECT at FROM outreach_dispatches WHERE account_id = $1 ORDER BY at", account_id)
    return [r["at"] for r in rows]


# -- results ---------------------------------------------------------------------------------------


@dataclass
class ResultOutcome:
    item: Row
    changed: bool
    done_batch: dict[str, Any] | None = None  # the batch this result finished


@dataclass(frozen=True)
class Result:
    """One device report: ``status`` is 'sent' or 'failed'."""

    device_id: str
    item_id: str
    status: str
    error: str | None = None


async def record_result(db: Database, *, device_id: str, item_id: str, status: str, error: str | None,
                        now: dt.datetime) -> ResultOutcome:
    """Record the device's result for an item it was given.

    Idempotent: the same result again changes nothing.

    Raises:
        NotFound: no such item, or not this device's.
        Conflict: the item is not dispatched (``not_dispatched``), or already has a different
            result (``result_conflict``).
    """
    (outcome,) = await record_results(db, [Result(device_id, item_id, status, error)], now=now)
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


async def record_results(db: Database, results: list[Result], *, now: dt.datetime
                         ) -> list[ResultOutcome | NotFound | Conflict]:
    """Record many results in one transaction (the WebSocket path batches what arrives together).

    Each result gets its outcome, or the error ``record_result`` would raise for it; a batch
    that one of them finishes is on the outcome of the last of its results here.
    """
    for r in results:
        if r.status not in ("sent", "failed"):
            raise InvalidInput("status must be 'sent' or 'failed'")
    out: list[ResultOutcome | NotFound | Conflict] = []
    finished: dict[str, list[ResultOutcome]] = {}
    async with db.transaction() as tx:
        for r in results:
            error = r.error if r.status == "failed" else None
            row = await tx.fetchrow(
                "UPDATE outreach_items SET status = $3, reason = $4, result_at = $5, updated_at = $5,"
                " lease_until = NULL WHERE id = $1 AND device_id = $2 AND status = 'dispatched'"
                " RETURNING id, batch_id, account_id, status, reason AS error, result_at",
                r.item_id, r.device_id, r.status, error, now,
            )
            if row is not None:
                outcome = ResultOutcome(row, changed=True)
                finished.setdefault(row["batch_id"], []).append(outcome)
                out.append(outcome)
                continue
            current = await tx.fetchrow(
                "SELECT id, batch_id, account_id, device_id, status, reason AS error, result_at FROM outreach_items"
                " WHERE id = $1", r.item_id,
            )
            if current is None or current.pop("device_id") != r.device_id:
                out.append(NotFound(f"no send-queue item {r.item_id!r} for this device"))
            elif current["status"] in ("sent", "failed"):
                if current["status"] == r.status and current["error"] == error:
                    out.append(ResultOutcome(current, changed=False))
                else:
                    out.append(Conflict(f"item {r.item_id!r} already has the result {current['status']!r}",
                                        code="result_conflict"))
            else:
                out.append(Conflict(f"item {r.item_id!r} is {current['status']}, not dispatched",
                                    code="not_dispatched"))
        for batch_id, outcomes in finished.items():
            outcomes[-1].done_batch = await close_items(tx, batch_id, len(outcomes), now=now)
    return out
