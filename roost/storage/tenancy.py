"""Accounts, users and devices.

A deleted account or user (``deleted_at`` set, see ``roost/storage/erasure.py``) is left out of
every read here: it answers 404 like one that never existed.

Device tokens are shown once, at creation; only their SHA-256 is stored (a token carries 256
random bits, so a slow hash adds nothing), and a presented token is looked up by its hash and
compared with ``hmac.compare_digest``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from typing import Any

from roost.errors import InvalidInput, NotFound
from roost.storage import audit, digests
from roost.storage.database import Connection, Database, Row
from roost.storage.ids import new_id
from roost.storage.pagination import page

USER_FIELDS = (
    "email", "display_name", "timezone", "role", "active",
    "digest_cadence", "digest_time", "digest_weekday", "quiet_hours", "team",
)
USER_DEFAULTS = {"team": None}
ACCOUNT_FIELDS = ("name", "timezone", "assess_parks")
ACCOUNT_COLUMNS = "id, name, timezone, assess_parks, created_at"
USER_COLUMNS = "id, account_id, " + ", ".join(USER_FIELDS) + ", created_at, updated_at"
_DEVICE_COLUMNS = "id, user_id, name, created_at, last_seen_at, revoked_at"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_device_token() -> str:
    return "rdt_" + secrets.token_urlsafe(32)


async def create_account(db: Database, *, name: str, timezone: str, now: dt.datetime, actor: str,
                         assess_parks: bool = False) -> Row:
    row = {"id": new_id("acc"), "name": name, "timezone": timezone, "assess_parks": assess_parks, "created_at": now}
    async with db.transaction() as tx:
        await tx.execute(
            "INSERT INTO accounts (id, name, timezone, assess_parks, created_at) VALUES ($1, $2, $3, $4, $5)",
            row["id"], name, timezone, assess_parks, now,
        )
        await audit.record(tx, at=now, actor=actor, action="account.create", target_type="account",
                           target_id=row["id"], details={"name": name})
    return row


async def get_account(conn: Connection, account_id: str) -> Row:
    row = await conn.fetchrow(f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1 AND deleted_at IS NULL",
                              account_id)
    if row is None:
        raise NotFound(f"no account {account_id!r}")
    return row


async def list_accounts(conn: Connection, *, name: str | None, limit: int, cursor: str | None) -> dict[str, Any]:
    """Live accounts in id (creation) order, all or those named exactly ``name``."""
    if name is None:
        rows = await conn.fetch(
            f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id > $1 AND deleted_at IS NULL ORDER BY id LIMIT $2",
            cursor or "", limit + 1,
        )
    else:
        rows = await conn.fetch(
            f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE name = $1 AND id > $2 AND deleted_at IS NULL"
            " ORDER BY id LIMIT $3", name, cursor or "", limit + 1,
        )
    return page(rows, limit)


async def update_account(db: Database, account_id: str, changes: dict[str, Any], *, now: dt.datetime,
                         actor: str) -> Row:
    """Apply a partial update of ``name``, ``timezone`` or ``assess_parks`` (audited as ``account.update``).

    Raises:
        InvalidInput: a key that is not in ACCOUNT_FIELDS.
        NotFound: no such (live) account.
    """
    unknown = set(changes) - set(ACCOUNT_FIELDS)
    if unknown:
        raise InvalidInput(f"cannot change {sorted(unknown)}")
    async with db.transaction() as tx:
        await get_account(tx, account_id)
        if changes:
            # Column names come from ACCOUNT_FIELDS, never from the request: safe to format in.
            sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(changes, start=2))
            await tx.execute(f"UPDATE accounts SET {sets} WHERE id = $1", account_id, *changes.values())
            await audit.record(tx, at=now, actor=actor, action="account.update", target_type="account",
                               target_id=account_id, details={"fields": sorted(changes)})
        return await get_account(tx, account_id)


async def create_user(db: Database, *, account_id: str, fields: dict[str, Any], now: dt.datetime, actor: str) -> Row:
    user_id = new_id("usr")
    values = {k: fields[k] if k in fields else USER_DEFAULTS[k] for k in USER_FIELDS}
    async with db.transaction() as tx:
        await get_account(tx, account_id)
        await tx.execute(
            "INSERT INTO users (id, account_id, email, display_name, timezone, role, active, digest_cadence,"
            " digest_time, digest_weekday, quiet_hours, team, created_at, updated_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)",
            user_id, account_id, *values.values(), now,
        )
        await audit.record(tx, at=now, actor=actor, action="user.create", target_type="user",
                           target_id=user_id, details={"account_id": account_id, "role": values["role"]})
        await digests.reschedule(tx, user_id, now)  # the first digest slot after subscribing
        return await get_user(tx, user_id)


async def get_user(conn: Connection, user_id: str) -> Row:
    row = await conn.fetchrow(f"SELECT {USER_COLUMNS} FROM users WHERE id = $1 AND deleted_at IS NULL", user_id)
    if row is None:
        raise NotFound(f"no user {user_id!r}")
    return row


async def update_user(db: Database, user_id: str, changes: dict[str, Any], *, now: dt.datetime, actor: str) -> Row:
    """Apply a partial update; only keys in USER_FIELDS may change."""
    unknown = set(changes) - set(USER_FIELDS)
    if unknown:
        raise InvalidInput(f"cannot change {sorted(unknown)}")
    async with db.transaction() as tx:
        before = await get_user(tx, user_id)
        if changes:
            # Column names come from USER_FIELDS, never from the request: safe to format in.
            sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(changes, start=3))
            # Turning the digest back on starts a new unsubscribe epoch: links mailed before stop working.
            await tx.execute(
                f"UPDATE users SET updated_at = $2, {sets} WHERE id = $1", user_id, now, *changes.values()
            )
            if before["digest_cadence"] == "off" and changes.get("digest_cadence", "off") != "off":
                await digests.bump_unsubscribe_epoch(tx, user_id)
            await audit.record(tx, at=now, actor=actor, action="user.update", target_type="user",
                               target_id=user_id, details={"fields": sorted(changes)})
            if digests.DIGEST_FIELDS & changes.keys():
                await digests.reschedule(tx, user_id, now)
        return await get_user(tx, user_id)


async def list_users(conn: Connection, *, account_id: str, limit: int, cursor: str | None) -> dict[str, Any]:
    rows = await conn.fetch(
        f"SELECT {USER_COLUMNS} FROM users WHERE account_id = $1 AND id > $2 AND deleted_at IS NULL"
        " ORDER BY id LIMIT $3",
        account_id, cursor or "", limit + 1,
    )
    return page(rows, limit)


async def create_device(db: Database, *, user_id: str, name: str, now: dt.datetime, actor: str) -> tuple[Row, str]:
    """Create a device; returns its row and the token, which is never retrievable again."""
    token = new_device_token()
    device_id = new_id("dev")
    async with db.transaction() as tx:
        await get_user(tx, user_id)
        await tx.execute(
            "INSERT INTO devices (id, user_id, name, token_hash, created_at) VALUES ($1, $2, $3, $4, $5)",
            device_id, user_id, name, hash_token(token), now,
        )
        await audit.record(tx, at=now, actor=actor, action="device.create", target_type="device",
                           target_id=device_id, details={"user_id": user_id})
        return await get_device(tx, device_id), token


async def get_device(conn: Connection, device_id: str) -> Row:
    row = await conn.fetchrow(f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE id = $1", device_id)
    if row is None:
        raise NotFound(f"no device {device_id!r}")
    return row


async def list_devices(conn: Connection, *, user_id: str, limit: int, cursor: str | None) -> dict[str, Any]:
    rows = await conn.fetch(
        f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE user_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        user_id, cursor or "", limit + 1,
    )
    return page(rows, limit)


async def revoke_device(db: Database, device_id: str, *, now: dt.datetime, actor: str) -> Row:
    """Revoke a device (idempotent: revoking it again keeps the first revocation time)."""
    async with db.transaction() as tx:
        await get_device(tx, device_id)
        changed = await tx.execute(
            "UPDATE devices SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL", device_id, now
        )
        if changed:
            await audit.record(tx, at=now, actor=actor, action="device.revoke", target_type="device",
                               target_id=device_id)
        return await get_device(tx, device_id)


async def authenticate_device(conn: Connection, token: str) -> Row | None:
    """The live device (with its user and account) a token belongs to, or None.

    A revoked device, or one whose user is inactive, does not authenticate.
    """
    if not token or len(token) > 200:
        return None
    digest = hash_token(token)
    row = await conn.fetchrow(
        "SELECT d.id AS device_id, d.token_hash, d.user_id, u.account_id"
        " FROM devices d JOIN users u ON u.id = d.user_id"
        " WHERE d.token_hash = $1 AND d.revoked_at IS NULL AND u.active",
        digest,
    )
    if row is None or not hmac.compare_digest(row.pop("token_hash"), digest):
        return None
    return row


async def device_is_live(conn: Connection, device_id: str) -> bool:
    return bool(await conn.fetchval(
        "SELECT 1 FROM devices d JOIN users u ON u.id = d.user_id"
        " WHERE d.id = $1 AND d.revoked_at IS NULL AND u.active", device_id,
    ))


async def touch_device(conn: Connection, device_id: str, now: dt.datetime) -> None:
    await conn.execute("UPDATE devices SET last_seen_at = $2 WHERE id = $1", device_id, now)


async def touch_devices(db: Database, device_ids: list[str], now: dt.datetime) -> None:
    """``last_seen_at = now`` for many devices in one statement (never moving it back)."""
    await db.execute(
        f"UPDATE devices SET last_seen_at = $2 WHERE id {db.dialect.in_list('$1')}"
        " AND (last_seen_at IS NULL OR last_seen_at < $2)", device_ids, now)
