"""Webhook endpoints and their delivery outbox: the SQL of ``roost.domain.webhooks``.

An endpoint belongs to an account and lists the events it wants. ``add_deliveries`` writes one
delivery per enabled endpoint subscribed to an event, in the caller's transaction (the outbox):
each takes the endpoint's next ``seq`` with an UPDATE whose row lock lasts until that
transaction commits, so an endpoint's deliveries commit in ``seq`` order.

Life of a delivery::

    pending ──(claimed: the endpoint's head, due)──► sending (leased to one process)
    sending ──► delivered | failed (given up) | pending again (a retry, or its endpoint disabled)
    sending ──(the lease ran out: its process died)──► claimed again

The *head* of an endpoint is its delivery with the lowest ``seq`` still pending or sending; only
heads are claimed, so an endpoint never has two deliveries in flight and they arrive in order.
A claim is a conditional UPDATE (``pending`` and due, or ``sending`` with its lease run out), so
of several processes exactly one takes a head. Outcomes are written only by the claim's holder.

Transactions that change an endpoint and its deliveries lock the endpoint row first.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from roost.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from roost.storage import outbox
from roost.storage.database import Connection, Database, Row
from roost.storage.ids import new_id
from roost.storage.pagination import page

MAX_ENDPOINTS_PER_ACCOUNT = 20
STATUSES = ("pending", "sending", "delivered", "failed")
_ENDPOINT = ("id, account_id, url, events, description, enabled, created_at, updated_at, disabled_reason,"
             " failing_since, previous_secret_until")
_DELIVERY = ("id, endpoint_id, seq, event, body, status, attempts, created_at, next_attempt_at, first_attempt_at,"
             " last_attempt_at, last_status_code, last_error, delivered_at")
# The head of endpoint e: its lowest seq still pending or sending.
_HEAD = ("SELECT x.id FROM webhook_deliveries x WHERE x.endpoint_id = e.id AND x.status IN ('pending', 'sending')"
         " ORDER BY x.seq LIMIT 1")


# -- endpoints -------------------------------------------------------------------------------------


async def create_endpoint(conn: Connection, *, account_id: str, url: str, events: list[str], description: str,
                          enabled: bool, secret: str, now: dt.datetime) -> Row:
    """Insert an endpoint (``secret`` as stored: sealed or ``plain:``).

    Raises:
        NotFound: no such account.
        Conflict: the account has ``MAX_ENDPOINTS_PER_ACCOUNT`` endpoints already.
        AlreadyExists: the account has an endpoint with this URL.
    """
    if await conn.fetchval("SELECT id FROM accounts WHERE id = $1 AND deleted_at IS NULL", account_id) is None:
        raise NotFound(f"no account {account_id!r}")
    count = await conn.fetchval("SELECT COUNT(*) FROM webhook_endpoints WHERE account_id = $1", account_id)
    if int(count) >= MAX_ENDPOINTS_PER_ACCOUNT:
        raise Conflict(f"the account has {MAX_ENDPOINTS_PER_ACCOUNT} webhook endpoints, the most it may have",
                       code="too_many_endpoints")
    try:
        return await conn.fetchrow(
            "INSERT INTO webhook_endpoints (id, account_id, url, events, description, enabled, secret, created_at,"
            f" updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) RETURNING {_ENDPOINT}",
            new_id("wh"), account_id, url, list(events), description, enabled, secret, now)
    except AlreadyExists as exc:
        raise AlreadyExists(f"the account already has a webhook endpoint for {url!r}") from exc


async def get_endpoint(conn: Connection, endpoint_id: str, account_id: str | None = None, *,
                       lock: bool = False) -> Row:
    """The endpoint (public columns); with ``account_id``, one of another account is not found.

    Raises:
        NotFound: no such endpoint (in that account).
    """
    row = await conn.fetchrow(f"SELECT {_ENDPOINT} FROM webhook_endpoints WHERE id = $1"
                              f"{conn.dialect.for_update() if lock else ''}", endpoint_id)
    if row is None or (account_id is not None and row["account_id"] != account_id):
        raise NotFound(f"no webhook endpoint {endpoint_id!r}")
    return row


async def list_endpoints(conn: Connection, *, account_id: str | None, limit: int, cursor: str | None) -> dict[str, Any]:
    """A page of endpoints in id (creation) order, of one account or all."""
    where, args = _filters(("account_id = ", account_id), ("id > ", cursor))
    rows = await conn.fetch(f"SELECT {_ENDPOINT} FROM webhook_endpoints{where} ORDER BY id LIMIT ${len(args) + 1}",
                            *args, limit + 1)
    return page(rows, limit)


def _filters(*clauses: tuple[str, Any]) -> tuple[str, list[Any]]:
    """`` WHERE a = $1 AND b > $2`` for the clauses whose value is not None, and their values."""
    parts, args = [], []
    for sql, value in clauses:
        if value is not None:
            args.append(value)
            parts.append(f"{sql}${len(args)}")
    return (" WHERE " + " AND ".join(parts) if parts else ""), args


async def update_endpoint(conn: Connection, endpoint_id: str, account_id: str | None, changes: dict[str, Any],
                          now: dt.datetime) -> Row:
    """Apply ``changes`` (url, events, description, enabled) to the endpoint, locked.

    Enabling a disabled endpoint clears its disabled reason and failing streak, and gives its
    pending deliveries a fresh retry window, due now. Disabling one through the API says so.

    Raises:
        NotFound: no such endpoint (in that account).
        AlreadyExists: the account has another endpoint with the new URL.
    """
    old = await get_endpoint(conn, endpoint_id, account_id, lock=True)
    sets = {k: v for k, v in changes.items() if k in ("url", "events", "description", "enabled")}
    if "events" in sets:
        sets["events"] = list(sets["events"])
    if sets.get("enabled") is True and not old["enabled"]:
        sets.update(disabled_reason=None, failing_since=None)
        await conn.execute(
            "UPDATE webhook_deliveries SET next_attempt_at = $2, first_attempt_at = NULL"
            " WHERE endpoint_id = $1 AND status = 'pending'", endpoint_id, now)
    elif sets.get("enabled") is False and old["enabled"]:
        sets["disabled_reason"] = "disabled through the API"
    sets["updated_at"] = now
    names = list(sets)
    assignments = ", ".join(f"{name} = ${i + 2}" for i, name in enumerate(names))
    try:
        return await conn.fetchrow(f"UPDATE webhook_endpoints SET {assignments} WHERE id = $1 RETURNING {_ENDPOINT}",
                                   endpoint_id, *(sets[n] for n in names))
    except AlreadyExists as exc:
        raise AlreadyExists(f"the account already has a webhook endpoint for {sets.get('url')!r}") from exc


async def delete_endpoint(conn: Connection, endpoint_id: str, account_id: str | None) -> Row:
    """Delete the endpoint and its deliveries; returns it as it was.

    Raises:
        NotFound: no such endpoint (in that account).
    """
    row = await get_endpoint(conn, endpoint_id, account_id, lock=True)
    await conn.execute("DELETE FROM webhook_endpoints WHERE id = $1", endpoint_id)
    return row


async def set_secret(conn: Connection, endpoint_id: str, account_id: str | None, *, secret: str,
                     previous: str | None, previous_until: dt.datetime | None, now: dt.datetime) -> Row:
    """Store a new secret (sealed or ``plain:``), keeping ``previous`` until ``previous_until``.

    Raises:
        NotFound: no such endpoint (in that account).
    """
    await get_endpoint(conn, endpoint_id, account_id, lock=True)
    return await conn.fetchrow(
        "UPDATE webhook_endpoints SET secret = $2, previous_secret = $3, previous_secret_until = $4, updated_at = $5"
        f" WHERE id = $1 RETURNING {_ENDPOINT}", endpoint_id, secret, previous, previous_until, now)


async def stored_secrets(conn: Connection, endpoint_id: str) -> Row:
    """The endpoint's stored secrets: ``secret``, ``previous_secret``, ``previous_secret_until``.

    Raises:
        NotFound: no such endpoint.
    """
    row = await conn.fetchrow("SELECT secret, previous_secret, previous_secret_until FROM webhook_endpoints"
                              " WHERE id = $1", endpoint_id)
    if row is None:
        raise NotFound(f"no webhook endpoint {endpoint_id!r}")
    return row


async def secrets_to_reseal(conn: Connection) -> list[Row]:
    """Every endpoint's stored secrets (``id``, ``secret``, ``previous_secret``), for ``roost reseal``."""
    return await conn.fetch("SELECT id, secret, previous_secret FROM webhook_endpoints ORDER BY id")


async def store_resealed(conn: Connection, endpoint_id: str, *, secret: str, previous: str | None,
                         was: str) -> bool:
    """Replace the stored secrets unless they changed since they were read (``was``: the secret then)."""
    return bool(await conn.execute("UPDATE webhook_endpoints SET secret = $2, previous_secret = $3"
                                   " WHERE id = $1 AND secret = $4", endpoint_id, secret, previous, was))


# -- the outbox ------------------------------------------------------------------------------------


async def add_deliveries(conn: Connection, *, account_id: str, event: str, body: str, now: dt.datetime) -> int:
    """One pending delivery of ``body`` per enabled endpoint of the account subscribed to ``event``.

    In the caller's transaction; endpoints are locked in id order (two emitters never deadlock).
    Returns how many were written.
    """
    rows = await conn.fetch("SELECT id, events FROM webhook_endpoints WHERE account_id = $1 AND enabled"
                            " ORDER BY id", account_id)
    written = 0
    for row in rows:
        if event not in (row["events"] or []):
            continue
        seq = await conn.fetchval("UPDATE webhook_endpoints SET last_seq = last_seq + 1 WHERE id = $1 AND enabled"
                                  " RETURNING last_seq", row["id"])
        if seq is None:  # disabled or deleted since the read above
            continue
        await conn.execute(
            "INSERT INTO webhook_deliveries (id, endpoint_id, seq, event, body, status, created_at, next_attempt_at)"
            " VALUES ($1, $2, $3, $4, $5, 'pending', $6, $6)", new_id("msg"), row["id"], int(seq), event, body, now)
        written += 1
    return written


async def claim_heads(db: Database, *, now: dt.datetime, limit: int, claimed_by: str,
                      lease_until: dt.datetime) -> list[Row]:
    """Claim up to ``limit`` due heads of enabled endpoints (committed before anything is sent).

    A head is due when pending and its next attempt is due, or sending with its lease run out.
    Each claimed row counts an attempt and carries its endpoint's ``url`` and ``account_id``.
    """
    candidates = [r["id"] for r in await db.fetch(
        f"SELECT d.id FROM webhook_endpoints e JOIN webhook_deliveries d ON d.id = ({_HEAD})"
        " WHERE e.enabled AND ((d.status = 'pending' AND d.next_attempt_at <= $1)"
        " OR (d.status = 'sending' AND d.lease_until <= $1)) ORDER BY d.next_attempt_at LIMIT $2", now, limit)]
    if not candidates:
        return []
    claimed = await db.fetch(
        "UPDATE webhook_deliveries SET status = 'sending', claimed_by = $2, lease_until = $3,"
        " attempts = attempts + 1, last_attempt_at = $4, first_attempt_at = COALESCE(first_attempt_at, $4)"
        f" WHERE id {db.dialect.in_list('$1')} AND ((status = 'pending' AND next_attempt_at <= $4)"
        " OR (status = 'sending' AND lease_until <= $4))"
        " AND endpoint_id IN (SELECT id FROM webhook_endpoints WHERE enabled)"
        f" RETURNING {_DELIVERY}", candidates, claimed_by, lease_until, now)
    if not claimed:
        return []
    endpoints = {r["id"]: r for r in await db.fetch(
        f"SELECT id, url, account_id FROM webhook_endpoints WHERE id {db.dialect.in_list('$1')}",
        sorted({r["endpoint_id"] for r in claimed}))}
    return [{**r, "url": endpoints[r["endpoint_id"]]["url"], "account_id": endpoints[r["endpoint_id"]]["account_id"]}
            for r in claimed if r["endpoint_id"] in endpoints]


async def next_due(conn: Connection) -> dt.datetime | None:
    """When the next head of an enabled endpoint comes due (a retry, or a lease running out)."""
    value = await conn.fetchval(
        "SELECT MIN(CASE WHEN d.status = 'pending' THEN d.next_attempt_at ELSE d.lease_until END)"
        f" FROM webhook_endpoints e JOIN webhook_deliveries d ON d.id = ({_HEAD}) WHERE e.enabled")
    # An aggregate has no declared type: SQLite answers the stored ISO text.
    return dt.datetime.fromisoformat(value) if isinstance(value, str) else value


async def release_claims(db: Database) -> int:
    """Every delivery left sending back to pending, due now (SQLite at start: one process, so all are dead)."""
    return await db.execute("UPDATE webhook_deliveries SET status = 'pending', claimed_by = NULL, lease_until = NULL"
                            " WHERE status = 'sending'")


async def note_failure(conn: Connection, endpoint_id: str, now: dt.datetime) -> Row | None:
    """Start the endpoint's failing streak if none runs; its ``failing_since`` and ``enabled`` (None: deleted)."""
    return await conn.fetchrow(
        "UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, $2) WHERE id = $1"
        " RETURNING failing_since, enabled", endpoint_id, now)


async def note_success(conn: Connection, endpoint_id: str) -> None:
    """End the endpoint's failing streak (no write when none runs)."""
    await conn.execute("UPDATE webhook_endpoints SET failing_since = NULL WHERE id = $1 AND failing_since IS NOT NULL",
                       endpoint_id)


async def finish_attempt(conn: Connection, delivery_id: str, *, claimed_by: str, status: str, now: dt.datetime,
                         status_code: int | None, error: str | None, retry_at: dt.datetime | None = None) -> bool:
    """Record an attempt's outcome on a delivery this process still holds; False when it does not.

    ``status`` is delivered, failed (given up) or pending (then due at ``retry_at``).
    """
    return bool(await conn.execute(
        "UPDATE webhook_deliveries SET status = $3, last_status_code = $4, last_error = $5,"
        " next_attempt_at = COALESCE($6, next_attempt_at), delivered_at = $7,"
        " claimed_by = NULL, lease_until = NULL WHERE id = $1 AND status = 'sending' AND claimed_by = $2",
        delivery_id, claimed_by, status, status_code, error[:2000] if error else None, retry_at,
        now if status == "delivered" else None))


async def disable_endpoint(conn: Connection, endpoint_id: str, *, reason: str, now: dt.datetime) -> Row | None:
    """Disable an enabled endpoint with ``reason``; the endpoint, or None when it was not enabled."""
    return await conn.fetchrow(
        "UPDATE webhook_endpoints SET enabled = FALSE, disabled_reason = $2, updated_at = $3"
        f" WHERE id = $1 AND enabled RETURNING {_ENDPOINT}", endpoint_id, reason, now)


async def queue_owner_mail(conn: Connection, account_id: str, *, subject: str, text: str,
                           now: dt.datetime) -> list[str]:
    """Queue ``text`` to each active owner of the account through the mail outbox; the outbox ids."""
    owners = await conn.fetch("SELECT id, email FROM users WHERE account_id = $1 AND active AND role = 'owner'"
                              " ORDER BY id", account_id)
    return [await outbox.enqueue(conn, recipient_user_id=u["id"], to=u["email"], subject=subject[:300], text=text,
                                 kind="webhook_disabled", now=now) for u in owners]


async def list_deliveries(conn: Connection, endpoint_id: str, *, status: str | None, limit: int,
                          cursor: str | None) -> dict[str, Any]:
    """A page of the endpoint's deliveries, newest first (the cursor is a seq)."""
    if cursor is not None and not cursor.isdigit():
        raise InvalidInput("cursor is not one this endpoint handed out", code="bad_cursor")
    before = int(cursor) if cursor else None
    where, args = _filters(("endpoint_id = ", endpoint_id), ("status = ", status), ("seq < ", before))
    rows = await conn.fetch(f"SELECT {_DELIVERY} FROM webhook_deliveries{where} ORDER BY seq DESC"
                            f" LIMIT ${len(args) + 1}", *args, limit + 1)
    result = page(rows, limit, key="seq")
    if result["next_cursor"] is not None:
        result["next_cursor"] = str(result["next_cursor"])
    return result


async def counts(conn: Connection) -> dict[str, int]:
    """Deliveries by status (for status pages and tests)."""
    rows = await conn.fetch("SELECT status, COUNT(*) AS n FROM webhook_deliveries GROUP BY status")
    out = dict.fromkeys(STATUSES, 0)
    out.update({r["status"]: int(r["n"]) for r in rows})
    return out


async def open_count(conn: Connection) -> int:
    """Deliveries not yet delivered or given up (a queue depth for ``/api/admin/status``)."""
    return int(await conn.fetchval("SELECT COUNT(*) FROM webhook_deliveries WHERE status IN ('pending', 'sending')"))


async def prune(conn: Connection, *, older_than: dt.datetime) -> int:
    """Delete delivered and failed deliveries created before ``older_than``; returns how many."""
    return await conn.execute("DELETE FROM webhook_deliveries WHERE status IN ('delivered', 'failed')"
                              " AND created_at < $1", older_than)
