"""Migration 0022 on a database that already holds dispatch items, on SQLite and PostgreSQL: every
item gets an ``updated_at``, the latest time it is known to have changed."""

from __future__ import annotations

import datetime as dt

from roost.storage.database import open_database
from roost.storage.migrator import available

T0 = dt.datetime(2026, 11, 1, 9, 0, tzinfo=dt.UTC)
MINUTE = dt.timedelta(minutes=1)


async def test_0022_backfills_updated_at_from_result_dispatch_or_creation(unmigrated_database_url: str) -> None:
    async with open_database(unmigrated_database_url) as db:
        steps = available(db.dialect)
        [step_0022] = [s for s in steps if s.version == 22]
        async with db.transaction() as tx:
            for step in steps:
                if step.version < 22:
                    await db.run_script(tx, step.sql)
            await tx.execute("INSERT INTO accounts (id, name, timezone, created_at) VALUES ('acc_1', 'A', 'UTC', $1)",
                             T0)
            await tx.execute("INSERT INTO users (id, account_id, email, display_name, timezone, created_at, updated_at)"
                             " VALUES ('usr_1', 'acc_1', 'a@example.com', 'A', 'UTC', $1, $1)", T0)
            await tx.execute("INSERT INTO devices (id, user_id, name, token_hash, created_at)"
                             " VALUES ('dev_1', 'usr_1', 'phone', 'h', $1)", T0)
            await tx.execute("INSERT INTO outreach_batches (id, account_id, request_hash, status, open_items,"
                             " total_items, created_at, updated_at) VALUES ('obt_1', 'acc_1', 'x', 'sending', 2, 3,"
                             " $1, $1)", T0)
            await tx.execute_many(
                "INSERT INTO outreach_items (id, batch_id, account_id, seq, device_id, to_handle, body, status,"
                " dispatched_at, result_at, created_at) VALUES ($1, 'obt_1', 'acc_1', $2, 'dev_1', '+1', 'b', $3,"
                " $4, $5, $6)",
                [("oit_pending", 0, "pending", None, None, T0),
                 ("oit_dispatched", 1, "dispatched", T0 + MINUTE, None, T0),
                 ("oit_sent", 2, "sent", T0 + MINUTE, T0 + 2 * MINUTE, T0)],
            )
        async with db.transaction() as tx:
            await db.run_script(tx, step_0022.sql)
        async with db.transaction() as tx:
            await db.run_script(tx, step_0022.sql)  # again: idempotent, nothing moves
        rows = await db.fetch("SELECT id, updated_at FROM outreach_items ORDER BY seq")

    assert [(r["id"], r["updated_at"]) for r in rows] == [
        ("oit_pending", T0), ("oit_dispatched", T0 + MINUTE), ("oit_sent", T0 + 2 * MINUTE)]
