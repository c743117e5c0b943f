"""Migrations: idempotent, safe to run concurrently, refuse a newer database (both backends)."""

from __future__ import annotations

import datetime as dt

import pytest
import trio

from roost.errors import AlreadyExists, InvalidInput, MissingReference, SchemaError
from roost.storage.database import Database, open_database
from roost.storage.migrator import available, check_current, migrate

NOW = dt.datetime(2024, 5, 17, 9, 30, tzinfo=dt.UTC)


async def versions(db: Database) -> list[tuple[int, str]]:
    rows = await db.fetch("SELECT version, name FROM schema_version ORDER BY version")
    return [(r["version"], r["name"]) for r in rows]


async def test_migrate_on_a_fresh_database_applies_every_shipped_step(unmigrated_database_url: str) -> None:
    async with open_database(unmigrated_database_url) as db:
        applied = await migrate(db)

        shipped = available(db.dialect)
        assert [m.version for m in applied] == [m.version for m in shipped]
        assert await versions(db) == [(m.version, m.name) for m in shipped]
        await check_current(db)


async def test_migrating_twice_applies_nothing_the_second_time(unmigrated_database_url: str) -> None:
    async with open_database(unmigrated_database_url) as db:
        await migrate(db)
        before = await db.fetch("SELECT version, name, applied_at FROM schema_version ORDER BY version")

        assert await migrate(db) == []

        assert await db.fetch("SELECT version, name, applied_at FROM schema_version ORDER BY version") == before


async def test_migrating_a_template_clone_applies_nothing(db: Database) -> None:
    assert await migrate(db) == []
    await check_current(db)


async def schema(db: Database) -> list[dict]:
    """The tables, columns and indexes of the database, as the backend's catalog lists them."""
    return await db.fetch(db.dialect.pick(
        sqlite="SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name",
        postgresql="SELECT c.relkind::text AS kind, c.relname AS name, a.attname AS col,"
                   " format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS not_null"
                   " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                   " LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped"
                   " WHERE n.nspname = current_schema() ORDER BY kind, name, col",
    ))


async def test_rerunning_every_step_script_changes_nothing(db: Database) -> None:
    """Each step is itself idempotent (IF NOT EXISTS), so a half-recorded step can be re-run."""
    await add_account(db)
    before = await schema(db), await versions(db)
    assert len(before[0]) > 20  # every table, column and index is compared

    for step in available(db.dialect):
        async with db.transaction() as tx:
            await db.run_script(tx, step.sql)

    assert (await schema(db), await versions(db)) == before
    assert await db.fetchval("SELECT name FROM accounts WHERE id = $1", "acc_1") == "Acme"
    await check_current(db)


async def test_two_concurrent_migrators_record_each_version_exactly_once(unmigrated_database_url: str) -> None:
    results: list[list[int]] = []

    async def migrator() -> None:
        async with open_database(unmigrated_database_url) as db:
            results.append([m.version for m in await migrate(db)])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(migrator)
        nursery.start_soon(migrator)

    async with open_database(unmigrated_database_url) as db:
        shipped = [m.version for m in available(db.dialect)]
        recorded = [r["version"] for r in await db.fetch("SELECT version FROM schema_version ORDER BY version")]
        await check_current(db)
    assert recorded == shipped
    assert sorted(v for applied in results for v in applied) == shipped  # each step applied by one of them


async def test_database_newer_than_the_code_is_refused(db: Database) -> None:
    newer = available(db.dialect)[-1].version + 1
    await db.execute(
        "INSERT INTO schema_version (version, name, applied_at) VALUES ($1, $2, $3)", newer, "from_the_future", NOW
    )

    with pytest.raises(SchemaError, match="upgrade roost"):
        await migrate(db)
    with pytest.raises(SchemaError):
        await check_current(db)


async def test_check_current_raises_on_an_unmigrated_database(unmigrated_database_url: str) -> None:
    async with open_database(unmigrated_database_url) as db:
        with pytest.raises(SchemaError, match="roost migrate"):
            await check_current(db)


async def test_check_current_raises_when_a_step_is_missing(db: Database) -> None:
    last = available(db.dialect)[-1].version
    await db.execute("DELETE FROM schema_version WHERE version = $1", last)

    with pytest.raises(SchemaError, match=str(last)):
        await check_current(db)


async def test_check_current_passes_on_a_migrated_database(db: Database) -> None:
    assert [v for v, _ in await versions(db)] == [m.version for m in available(db.dialect)]

    await check_current(db)  # raises SchemaError otherwise


# -- the tenancy schema keeps its constraints ------------------------------------------------


async def add_account(db: Database, account_id: str = "acc_1") -> None:
    await db.execute(
        "INSERT INTO accounts (id, name, timezone, created_at) VALUES ($1, $2, $3, $4)",
        account_id, "Acme", "UTC", NOW,
    )


async def add_user(db: Database, user_id: str, *, account_id: str = "acc_1", email: str = "a@example.com",
                   role: str = "member", cadence: str = "off") -> None:
    await db.execute(
        "INSERT INTO users (id, account_id, email, display_name, timezone, role, digest_cadence,"
        " created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
        user_id, account_id, email, "A", "UTC", role, cadence, NOW,
    )


async def test_tenancy_tables_exist_after_migration(db: Database) -> None:
    for table in ("accounts", "users", "devices", "audit_log", "schema_version"):
        assert await db.fetchval(f"SELECT COUNT(*) AS n FROM {table}") is not None


async def test_user_defaults_fill_role_cadence_and_active(db: Database) -> None:
    await add_account(db)
    await db.execute(
        "INSERT INTO users (id, account_id, email, display_name, timezone, created_at, updated_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $6)",
        "usr_1", "acc_1", "a@example.com", "A", "UTC", NOW,
    )

    row = await db.fetchrow(
        "SELECT role, active, digest_cadence, digest_time, digest_weekday, quiet_hours FROM users WHERE id = $1",
        "usr_1",
    )
    assert row == {"role": "member", "active": True, "digest_cadence": "off", "digest_time": "08:00",
                   "digest_weekday": "monday", "quiet_hours": None}


@pytest.mark.parametrize("role", ["owner", "admin", "engineer", "member"])
async def test_user_with_a_known_role_is_accepted(db: Database, role: str) -> None:
    await add_account(db)
    await add_user(db, "usr_1", role=role)

    assert await db.fetchval("SELECT role FROM users WHERE id = $1", "usr_1") == role


async def test_user_with_an_unknown_role_is_refused(db: Database) -> None:
    await add_account(db)

    with pytest.raises(InvalidInput) as caught:
        await add_user(db, "usr_1", role="bogus")

    assert type(caught.value) is InvalidInput
    assert await db.fetchval("SELECT COUNT(*) AS n FROM users") == 0


async def test_user_with_an_unknown_digest_cadence_is_refused(db: Database) -> None:
    await add_account(db)

    with pytest.raises(InvalidInput) as caught:
        await add_user(db, "usr_1", cadence="hourly")

    assert type(caught.value) is InvalidInput


async def test_same_email_twice_in_one_account_is_refused(db: Database) -> None:
    await add_account(db)
    await add_user(db, "usr_1", email="same@example.com")

    with pytest.raises(AlreadyExists):
        await add_user(db, "usr_2", email="same@example.com")


async def test_same_email_in_two_accounts_is_allowed(db: Database) -> None:
    await add_account(db, "acc_1")
    await add_account(db, "acc_2")

    await add_user(db, "usr_1", account_id="acc_1", email="same@example.com")
    await add_user(db, "usr_2", account_id="acc_2", email="same@example.com")

    rows = await db.fetch("SELECT id, account_id FROM users WHERE email = $1 ORDER BY id", "same@example.com")
    assert rows == [{"id": "usr_1", "account_id": "acc_1"}, {"id": "usr_2", "account_id": "acc_2"}]


async def test_user_of_a_missing_account_is_refused(db: Database) -> None:
    with pytest.raises(MissingReference):
        await add_user(db, "usr_1", account_id="acc_missing")


async def test_device_of_a_missing_user_is_refused(db: Database) -> None:
    with pytest.raises(MissingReference):
        await db.execute(
            "INSERT INTO devices (id, user_id, name, token_hash, created_at) VALUES ($1, $2, $3, $4, $5)",
            "dev_1", "usr_missing", "phone", "hash", NOW,
        )


async def test_two_devices_with_one_token_hash_are_refused(db: Database) -> None:
    await add_account(db)
    await add_user(db, "usr_1")
    insert = "INSERT INTO devices (id, user_id, name, token_hash, created_at) VALUES ($1, $2, $3, $4, $5)"
    await db.execute(insert, "dev_1", "usr_1", "phone", "hash", NOW)

    with pytest.raises(AlreadyExists):
        await db.execute(insert, "dev_2", "usr_1", "tablet", "hash", NOW)
