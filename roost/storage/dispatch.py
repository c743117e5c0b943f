"""Dispatch storage, the app's side: per-account settings, batches and their items.

Sending them (the claim under the limits, leases, the ledger, device results) is the device's
send queue, ``roost.storage.send_queue``. The tables keep their ``outreach_`` names (the
``/outreach`` API's).

Item states: ``pending → dispatched → sent | failed``, or ``skipped | cancelled``. Every write
that changes an item sets its ``updated_at`` (here and in ``send_queue``), in the statement that
changes it.
Batch states: ``draft → sending (⇄ paused) → done``, or ``cancelled``. A single message
(``create_message``) is a one-item batch created already sending, so it goes through the same
claim, limits, results and ``batch_done`` as every batch item.

The lists (batches, a batch's items, a device's queue) are ``roost.storage.dispatch_lists``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from roost.domain.dispatch import limits  # pure (no I/O): see docs/architecture.md
from roost.errors import Conflict, InvalidInput, NotFound
from roost.storage import tenancy
from roost.storage import webhook_events as webhooks
from roost.storage.database import Connection, Database, Row
from roost.storage.ids import new_id

ITEM_STATUSES = ("pending", "dispatched", "sent", "failed", "skipped", "cancelled")
SETTINGS_FIELDS = ("paused", "quiet_hours", "timezone", "max_per_minute", "max_per_hour", "max_per_day",
                   "min_gap_seconds")
# What a claim or re-offer hands a device; both set updated_at to their own time in Python (the
# row's value is the one before their UPDATE), which also spares a timestamp conversion per item.
ITEM_COLUMNS = "i.id, i.batch_id, i.device_id, i.to_handle, i.body, i.created_at"
BATCH_STATUSES = ("draft", "sending", "paused", "done", "cancelled")
ITEM_VIEW = ("id, batch_id, account_id, seq, device_id, to_handle, body, status, reason, offers, dispatched_at,"
             " lease_until, result_at, created_at, updated_at")


# -- settings --------------------------------------------------------------------------------------


def settings_view(row: Row | None, account: Row) -> dict[str, Any]:
    """The effective settings: stored values, with the defaults and the account's zone filled in."""
    row = row or {}
    return {
        "account_id": account["id"],
        "paused": bool(row.get("paused", False)),
        "quiet_hours": row.get("quiet_hours"),
        "timezone": row.get("timezone") or account["timezone"],
        "max_per_minute": row.get("max_per_minute"),
        "max_per_hour": row.get("max_per_hour"),
        "max_per_day": row.get("max_per_day"),
        "min_gap_seconds": float(row.get("min_gap_seconds") or 0.0),
        "updated_at": row.get("updated_at"),
    }


async def get_settings(conn: Connection, account_id: str) -> dict[str, Any]:
    account = await tenancy.get_account(conn, account_id)
    row = await conn.fetchrow("SELECT * FROM outreach_settings WHERE account_id = $1", account_id)
    return settings_view(row, account)


async def _ensure_state(conn: Connection, account_id: str, now: dt.datetime) -> None:
    await conn.execute(
        "INSERT INTO outreach_settings (account_id, updated_at) VALUES ($1, $2) ON CONFLICT (account_id) DO NOTHING",
        account_id, now,
    )


async def put_settings(db: Database, account_id: str, values: dict[str, Any], *, now: dt.datetime) -> dict[str, Any]:
    """Replace the account's settings (a field left out takes its default)."""
    async with db.transaction() as tx:
        await tenancy.get_account(tx, account_id)
        await _ensure_state(tx, account_id, now)
        await tx.execute(
            "UPDATE outreach_settings SET paused = $2, quiet_hours = $3, timezone = $4, max_per_minute = $5,"
            " max_per_hour = $6, max_per_day = $7, min_gap_seconds = $8, updated_at = $9 WHERE account_id = $1",
            account_id, bool(values.get("paused", False)), values.get("quiet_hours"), values.get("timezone"),
            values.get("max_per_minute"), values.get("max_per_hour"), values.get("max_per_day"),
            float(values.get("min_gap_seconds") or 0.0), now,
        )
        return await get_settings(tx, account_id)


# -- batches ---------------------------------------------------------------------------------------


async def _default_device(conn: Connection, account_id: str, user_id: str | None) -> str | None:
    """The most recently seen live device of ``user_id`` (or of the account's active users)."""
    where, args = ("u.id = $2", [account_id, user_id]) if user_id else ("u.active", [account_id])
    return await conn.fetchval(
        "SELECT d.id FROM devices d JOIN users u ON u.id = d.user_id"
        f" WHERE u.account_id = $1 AND {where} AND d.revoked_at IS NULL"
        " ORDER BY d.last_seen_at DESC NULLS LAST, d.id DESC LIMIT 1",
        *args,
    )


async def resolve_items(conn: Connection, account_id: str, created_by: str | None,
                        items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each item with the device it goes to and ``pending``, or ``skipped`` with the reason.

    Raises:
        NotFound: no such account.
        InvalidInput: ``created_by`` is not a user of the account, or an item names a device
            that does not exist or belongs to another account.
    """
    await tenancy.get_account(conn, account_id)
    if created_by is not None:
        user = await conn.fetchrow("SELECT account_id FROM users WHERE id = $1", created_by)
        if user is None or user["account_id"] != account_id:
            raise InvalidInput(f"created_by {created_by!r} is not a user of account {account_id!r}")
    devices: dict[str, Row] = {}
    for device_id in {i["device_id"] for i in items if i.get("device_id")}:
        row = await conn.fetchrow(
            "SELECT d.id, d.revoked_at, u.account_id, u.active FROM devices d JOIN users u ON u.id = d.user_id"
            " WHERE d.id = $1", device_id,
        )
        if row is None or row["account_id"] != account_id:
            raise InvalidInput(f"device {device_id!r} is not a device of account {account_id!r}")
        devices[device_id] = row
    fallback: str | None = None
    if any(not i.get("device_id") for i in items):
        fallback = await _default_device(conn, account_id, created_by)
    out = []
    for seq, item in enumerate(items):
        device_id, status, reason = item.get("device_id") or fallback, "pending", None
        if device_id is None:
            status, reason = "skipped", "no device: the user has no live device to send from"
        elif item.get("device_id") and (devices[device_id]["revoked_at"] is not None
                                        or not devices[device_id]["active"]):
            status, reason = "skipped", "the device is revoked or its user inactive"
        out.append({"seq": seq, "to_handle": item["to_handle"], "body": item["body"], "device_id": device_id,
                    "status": status, "reason": reason})
    return out


def _request_hash(created_by: str | None, items: list[dict[str, Any]]) -> str:
    canonical = json.dumps([created_by, [[i["to_handle"], i["body"], i.get("device_id")] for i in items]],
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


async def create_batch(db: Database, *, account_id: str, created_by: str | None, idempotency_key: str | None,
                       items: list[dict[str, Any]], now: dt.datetime) -> tuple[dict[str, Any], bool]:
    """Store a draft batch; returns (batch, created).

    With an ``idempotency_key``, a retry (same account, key and content) returns the batch the
    first call made, so a lost response never queues the messages twice.

    Raises:
        Conflict: the key was used before for a different batch.
    """
    async with db.transaction() as tx:
        resolved = await resolve_items(tx, account_id, created_by, items)
        batch_id, created = await _insert_batch(tx, account_id, created_by, idempotency_key, items, resolved,
                                                status="draft", now=now)
        return await get_batch(tx, batch_id), created


async def _insert_batch(tx: Connection, account_id: str, created_by: str | None, idempotency_key: str | None,
                        items: list[dict[str, Any]], resolved: list[dict[str, Any]], *, status: str,
                        now: dt.datetime) -> tuple[str, bool]:
    """Insert the batch and its resolved items (or find the one a reused key made); (batch id, created)."""
    digest = _request_hash(created_by, items)
    batch_id = new_id("obt")
    open_items = sum(1 for i in resolved if i["status"] == "pending")
    inserted = await tx.execute(
        "INSERT INTO outreach_batches (id, account_id, created_by, idempotency_key, request_hash, status,"
        " open_items, total_items, created_at, updated_at, started_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10) ON CONFLICT (account_id, idempotency_key) DO NOTHING",
        batch_id, account_id, created_by, idempotency_key, digest, status, open_items, len(resolved), now,
        None if status == "draft" else now,
    )
    if not inserted:
        existing = await tx.fetchrow(
            "SELECT id, request_hash FROM outreach_batches WHERE account_id = $1 AND idempotency_key = $2",
            account_id, idempotency_key,
        )
        assert existing is not None
        if existing["request_hash"] != digest:
            raise Conflict("idempotency_key was already used for a different batch or message",
                           code="idempotency_key_reused")
        return existing["id"], False
    await _ensure_state(tx, account_id, now)
    await tx.execute_many(
        "INSERT INTO outreach_items (id, batch_id, account_id, seq, device_id, to_handle, body, status, reason,"
        " created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
        [(new_id("oit"), batch_id, account_id, i["seq"], i["device_id"], i["to_handle"], i["body"], i["status"],
          i["reason"], now) for i in resolved],
    )
    return batch_id, True


async def create_message(db: Database, *, device_id: str | None, user_id: str | None, account_id: str | None,
                         to_handle: str, body: str, idempotency_key: str | None,
                         now: dt.datetime) -> tuple[dict[str, Any], bool]:
    """One message without a batch: a one-item batch created already ``sending``, in one
    transaction; returns (item, created). The account is the device's or the user's; the batch's
    ``created_by`` is the user the message goes out as (the device's, or ``user_id``), whose
    sockets hear ``batch_done``. With ``user_id`` the device is that user's most recently seen
    live one, as for a batch item without a device.

    Raises:
        NotFound: no such device or user, or not of ``account_id`` when that is given.
        Conflict: ``no_live_device``: the device is revoked, the user inactive, or the user has
            no live device; ``idempotency_key_reused``.
    """
    async with db.transaction() as tx:
        if device_id is not None:
            sender = await tx.fetchrow("SELECT u.id, u.account_id, u.active FROM devices d"
                                       " JOIN users u ON u.id = d.user_id WHERE d.id = $1", device_id)
            what = f"device {device_id!r}"
        else:
            sender = await tx.fetchrow("SELECT id, account_id, active FROM users WHERE id = $1", user_id)
            what = f"user {user_id!r}"
        if sender is None or (account_id is not None and sender["account_id"] != account_id):
            raise NotFound(f"no {what}" + (f" in account {account_id!r}" if account_id else ""))
        if not sender["active"]:
            raise Conflict(f"the user of {what} is inactive", code="no_live_device")
        items = [{"to_handle": to_handle, "body": body, "device_id": device_id}]
        (resolved,) = await resolve_items(tx, sender["account_id"], sender["id"], items)
        if resolved["status"] != "pending":
            raise Conflict(f"{what}: {resolved['reason']}", code="no_live_device")
        batch_id, created = await _insert_batch(tx, sender["account_id"], sender["id"], idempotency_key, items,
                                                [resolved], status="sending", now=now)
        item = await tx.fetchrow(f"SELECT {ITEM_VIEW} FROM outreach_items WHERE batch_id = $1 ORDER BY seq LIMIT 1",
                                 batch_id)
        assert item is not None
        return item, created


async def get_batch(conn: Connection, batch_id: str) -> dict[str, Any]:
    row = await conn.fetchrow("SELECT * FROM outreach_batches WHERE id = $1", batch_id)
    if row is None:
        raise NotFound(f"no batch {batch_id!r}")
    counts = dict.fromkeys(ITEM_STATUSES, 0)
    for r in await conn.fetch("SELECT status, COUNT(*) AS n FROM outreach_items WHERE batch_id = $1 GROUP BY status",
                              batch_id):
        counts[r["status"]] = int(r["n"])
    return {
        "id": row["id"], "account_id": row["account_id"], "created_by": row["created_by"],
        "idempotency_key": row["idempotency_key"], "status": row["status"], "total_items": row["total_items"],
        "counts": counts, "created_at": row["created_at"], "started_at": row["started_at"],
        "finished_at": row["finished_at"],
    }


@dataclass
class BatchChange:
    batch: dict[str, Any]
    changed: bool
    done: bool = False  # this change finished the batch (batch_done is due)


_TRANSITIONS: dict[str, dict[str, str | None]] = {
    # action: {from status: to status (None: already there, a no-op)}
    "send": {"draft": "sending", "sending": None, "paused": None, "done": None},
    "pause": {"sending": "paused", "paused": None},
    "resume": {"paused": "sending", "sending": None},
    "cancel": {"draft": "cancelled", "sending": "cancelled", "paused": "cancelled", "cancelled": None},
}


async def change_batch(db: Database, batch_id: str, action: str, *, now: dt.datetime,
                       account_id: str | None = None) -> BatchChange:
    """Apply send / pause / resume / cancel.

    A paused batch's pending items are not claimed (``send_queue.claim`` takes only a sending
    batch's) until it is resumed; items already dispatched still finish.

    Raises:
        NotFound: no such batch (in ``account_id``, when given).
        Conflict: the action does not apply to the batch's status (e.g. resuming a done batch).
    """
    async with db.transaction() as tx:
        row = await tx.fetchrow(
            f"SELECT status, open_items, account_id FROM outreach_batches WHERE id = $1{tx.dialect.for_update()}",
            batch_id,
        )
        if row is None or (account_id is not None and row["account_id"] != account_id):
            raise NotFound(f"no batch {batch_id!r}")
        allowed = _TRANSITIONS[action]
        if row["status"] not in allowed:
            raise Conflict(f"cannot {action} a batch that is {row['status']}", code="invalid_batch_state")
        target = allowed[row["status"]]
        if target is None:
            return BatchChange(await get_batch(tx, batch_id), changed=False)
        open_items = row["open_items"]
        if action == "cancel":
            cancelled = await tx.execute(
                "UPDATE outreach_items SET status = 'cancelled', result_at = $2, updated_at = $2"
                " WHERE batch_id = $1 AND status = 'pending'",
                batch_id, now,
            )
            open_items -= cancelled
        done = target == "sending" and open_items == 0
        if done:
            target = "done"
        await tx.execute(
            "UPDATE outreach_batches SET status = $2, open_items = $3, updated_at = $4,"
            " started_at = CASE WHEN $5 THEN COALESCE(started_at, $4) ELSE started_at END,"
            " finished_at = CASE WHEN $6 THEN $4 ELSE finished_at END WHERE id = $1",
            batch_id, target, open_items, now, action == "send", done or (target == "cancelled" and open_items == 0),
        )
        batch = await (_done(tx, batch_id, now) if done else get_batch(tx, batch_id))
        return BatchChange(batch, changed=True, done=done)


async def close_items(conn: Connection, batch_id: str, n: int, *, now: dt.datetime) -> dict[str, Any] | None:
    """``n`` of the batch's open items reached an end state: count them off; the batch, if that finished it.

    A batch with no open items left becomes ``done`` (a cancelled one stays cancelled, with its
    finish time; a draft stays a draft, done when sent); the returned view is for ``batch_done``.
    """
    batch = await conn.fetchrow(
        "UPDATE outreach_batches SET open_items = open_items - $3, updated_at = $2 WHERE id = $1"
        " RETURNING status, open_items",
        batch_id, now, n,
    )
    assert batch is not None
    if batch["open_items"] != 0 or batch["status"] == "draft":
        return None  # a draft is finished by its send (change_batch), not here
    status = "done" if batch["status"] in ("sending", "paused") else batch["status"]
    await conn.execute("UPDATE outreach_batches SET status = $2, finished_at = $3 WHERE id = $1",
                       batch_id, status, now)
    return await _done(conn, batch_id, now) if status == "done" else None


def done_view(batch: dict[str, Any]) -> dict[str, Any]:
    """A done batch as the API shows it: with its ``next_send`` (nothing pending, so no time)."""
    found = limits.next_send(batch["status"], batch["counts"]["pending"], limits.Decision(limits.UNLIMITED), True)
    return {**batch, "next_send": None if found is None else {"at": found.at, "reason": found.reason}}


async def _done(conn: Connection, batch_id: str, now: dt.datetime) -> dict[str, Any]:
    """The view of a batch that just became done, its ``batch.done`` webhook queued with the change."""
    batch = done_view(await get_batch(conn, batch_id))
    await webhooks.enqueue(conn, account_id=batch["account_id"], event="batch.done", payload={"batch": batch}, now=now)
    return batch
