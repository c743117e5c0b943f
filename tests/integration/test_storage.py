"""The ``Database`` interface behaves the same on SQLite and PostgreSQL (each test runs on both)."""

from __future__ import annotations

import datetime as dt

import pytest
import trio
import trio.lowlevel

from roost.errors import AlreadyExists, MissingReference
from roost.storage.database import Database, open_database
from roost.storage.ids import new_id

UTC = dt.UTC
NOW = dt.datetime(2024, 5, 17, 9, 30, 15, 123456, tzinfo=UTC)


async def add_account(db, account_id: str | None = None, *, name: str = "Acme") -> str:
    account_id = account_id or new_id("acc")
    await db.execute(
        "INSERT INTO accounts (id, name, timezone, created_at) VALUES ($1, $2, $3, $4)",
        account_id, name, "Europe/Berlin", NOW,
    )
    return account_id


async def add_user(db, account_id: str, *, email: str = "ada@example.com", active: bool = True,
                   quiet_hours: object = None) -> str:
    user_id = new_id("usr")
    await db.execute(
        "INSERT INTO users (id, account_id, email, display_name, timezone, active, quiet_hours,"
        " created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
        user_id, account_id, email, "Ada", "UTC", active, quiet_hours, NOW,
    )
    return user_id


async def count(db, table: str) -> int:
    return await db.fetchval(f"SELECT COUNT(*) AS n FROM {table}")


# -- values cross the boundary as Python types ------------------------------------------------


async def test_aware_datetime_round_trips_as_the_same_utc_instant(db: Database) -> None:
    berlin = dt.timezone(dt.timedelta(hours=2))
    account_id = await add_account(db)
    await db.execute("UPDATE accounts SET created_at = $2 WHERE id = $1", account_id,
                     dt.datetime(2024, 5, 17, 11, 30, 15, 123456, tzinfo=berlin))

    stored = await db.fetchval("SELECT created_at FROM accounts WHERE id = $1", account_id)

    assert isinstance(stored, dt.datetime)
    assert stored == NOW
    assert stored.utcoffset() == dt.timedelta(0)
    assert stored.microsecond == 123456


async def test_datetimes_compare_in_sql_by_instant(db: Database) -> None:
    early = await add_account(db)
    await db.execute("UPDATE accounts SET created_at = $2 WHERE id = $1", early, NOW - dt.timedelta(days=1))
    late = await add_account(db)

    rows = await db.fetch("SELECT id FROM accounts WHERE created_at > $1", NOW - dt.timedelta(hours=1))

    assert [r["id"] for r in rows] == [late]


async def test_booleans_round_trip_as_bool(db: Database) -> None:
    account_id = await add_account(db)
    on = await add_user(db, account_id, email="on@example.com", active=True)
    off = await add_user(db, account_id, email="off@example.com", active=False)

    assert await db.fetchval("SELECT active FROM users WHERE id = $1", on) is True
    assert await db.fetchval("SELECT active FROM users WHERE id = $1", off) is False
    assert [r["id"] for r in await db.fetch("SELECT id FROM users WHERE active")] == [on]


@pytest.mark.parametrize(
    "value",
    [
        {"start": "22:00", "end": "07:00"},
        {"nested": {"list": [1, 2.5, None, True, "ü"]}, "empty": {}},
        [{"a": 1}, {"b": [2]}],
        [],
    ],
    ids=["object", "nested-unicode", "list", "empty-list"],
)
async def test_json_objects_and_lists_round_trip(db: Database, value: object) -> None:
    account_id = await add_account(db)
    user_id = await add_user(db, account_id, quiet_hours=value)

    assert await db.fetchval("SELECT quiet_hours FROM users WHERE id = $1", user_id) == value


async def test_json_column_holds_sql_null_as_none(db: Database) -> None:
    account_id = await add_account(db)
    user_id = await add_user(db, account_id, quiet_hours=None)

    assert await db.fetchval("SELECT quiet_hours FROM users WHERE id = $1", user_id) is None


async def test_fetch_returns_dicts_keyed_by_column_and_fetchrow_none_when_empty(db: Database) -> None:
    account_id = await add_account(db, name="Acme")

    rows = await db.fetch("SELECT id, name FROM accounts")

    assert rows == [{"id": account_id, "name": "Acme"}]
    assert await db.fetchrow("SELECT id FROM accounts WHERE id = $1", "acc_missing") is None
    assert await db.fetchval("SELECT id FROM accounts WHERE id = $1", "acc_missing") is None


async def test_insert_returning_gives_the_written_row(db: Database) -> None:
    rows = await db.fetch(
        "INSERT INTO accounts (id, name, timezone, created_at) VALUES ($1, $2, $3, $4) RETURNING id, name",
        "acc_1", "Acme", "UTC", NOW,
    )

    assert rows == [{"id": "acc_1", "name": "Acme"}]
    assert await count(db, "accounts") == 1


# -- transactions ----------------------------------------------------------------------------


async def test_transaction_that_exits_normally_commits_every_statement(db: Database) -> None:
    async with db.transaction() as tx:
        account_id = await add_account(tx)
        await add_user(tx, account_id)

    assert await count(db, "accounts") == 1
    assert await count(db, "users") == 1


async def test_transaction_sees_its_own_writes_before_commit(db: Database) -> None:
    async with db.transaction() as tx:
        account_id = await add_account(tx)
        assert await tx.fetchval("SELECT name FROM accounts WHERE id = $1", account_id) == "Acme"


async def test_uncommitted_writes_are_invisible_outside_the_transaction(db: Database) -> None:
    async with db.transaction() as tx:
        await add_account(tx)
        assert await count(db, "accounts") == 0

    assert await count(db, "accounts") == 1


async def test_transaction_that_raises_persists_nothing(db: Database) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with db.transaction() as tx:
            account_id = await add_account(tx)
            await add_user(tx, account_id)
            raise Boom

    assert await count(db, "accounts") == 0
    assert await count(db, "users") == 0


async def test_transaction_cancelled_midway_persists_nothing(db: Database) -> None:
    with trio.CancelScope() as scope:
        async with db.transaction() as tx:
            await add_account(tx)
            scope.cancel()
            await add_account(tx)  # the first checkpoint after cancel raises Cancelled
            pytest.fail("not reached")

    assert scope.cancelled_caught
    assert await count(db, "accounts") == 0


async def test_transaction_timed_out_while_waiting_persists_nothing(db: Database) -> None:
    with trio.move_on_after(0.05) as scope:
        async with db.transaction() as tx:
            await add_account(tx)
            await trio.sleep_forever()

    assert scope.cancelled_caught
    assert await count(db, "accounts") == 0


async def test_failed_statement_in_transaction_rolls_back_the_earlier_ones(db: Database) -> None:
    account_id = await add_account(db)

    with pytest.raises(AlreadyExists):
        async with db.transaction() as tx:
            await add_account(tx, name="second")
            await add_account(tx, account_id)  # duplicate primary key

    assert await count(db, "accounts") == 1


async def test_database_is_usable_after_a_rolled_back_transaction(db: Database) -> None:
    with pytest.raises(AlreadyExists):
        async with db.transaction() as tx:
            await add_account(tx, "acc_dup")
            await add_account(tx, "acc_dup")

    async with db.transaction() as tx:
        await add_account(tx, "acc_dup")

    assert await count(db, "accounts") == 1


# -- errors become roost errors ----------------------------------------------------------------


async def test_unique_violation_raises_already_exists(db: Database) -> None:
    account_id = await add_account(db)
    await add_user(db, account_id, email="same@example.com")

    with pytest.raises(AlreadyExists):
        await add_user(db, account_id, email="same@example.com")

    assert await count(db, "users") == 1


async def test_primary_key_violation_raises_already_exists(db: Database) -> None:
    await add_account(db, "acc_1")

    with pytest.raises(AlreadyExists):
        await add_account(db, "acc_1")


async def test_foreign_key_violation_raises_missing_reference(db: Database) -> None:
    with pytest.raises(MissingReference):
        await add_user(db, "acc_does_not_exist")

    assert await count(db, "users") == 0


async def test_deleting_a_referenced_row_raises_missing_reference(db: Database) -> None:
    account_id = await add_account(db)
    await add_user(db, account_id)

    with pytest.raises(MissingReference):
        await db.execute("DELETE FROM accounts WHERE id = $1", account_id)

    assert await count(db, "accounts") == 1


# -- execute and execute_many ----------------------------------------------------------------


async def test_execute_returns_the_number_of_rows_changed(db: Database) -> None:
    account_id = await add_account(db)
    for i in range(3):
        await add_user(db, account_id, email=f"u{i}@example.com")

    assert await db.execute("UPDATE users SET display_name = $1 WHERE account_id = $2", "x", account_id) == 3
    assert await db.execute("UPDATE users SET display_name = $1 WHERE id = $2", "x", "usr_none") == 0
    assert await db.execute("DELETE FROM users WHERE email = $1", "u0@example.com") == 1
    assert await db.execute("DELETE FROM users WHERE account_id = $1", account_id) == 2


async def test_execute_inside_a_transaction_returns_rows_changed(db: Database) -> None:
    await add_account(db, "acc_a")
    await add_account(db, "acc_b")

    async with db.transaction() as tx:
        assert await tx.execute("UPDATE accounts SET name = $1", "renamed") == 2


async def test_execute_many_runs_the_statement_for_every_row(db: Database) -> None:
    rows = [(f"acc_{i:03d}", f"Account {i}", "UTC", NOW + dt.timedelta(seconds=i)) for i in range(100)]

    await db.execute_many("INSERT INTO accounts (id, name, timezone, created_at) VALUES ($1, $2, $3, $4)", rows)

    assert await count(db, "accounts") == 100
    last = await db.fetchrow("SELECT name, created_at FROM accounts WHERE id = $1", "acc_099")
    assert last == {"name": "Account 99", "created_at": NOW + dt.timedelta(seconds=99)}


async def test_execute_many_with_a_bad_row_persists_none_of_them(db: Database) -> None:
    rows = [("acc_1", "a", "UTC", NOW), ("acc_2", "b", "UTC", NOW), ("acc_1", "dup", "UTC", NOW)]

    with pytest.raises(AlreadyExists):
        await db.execute_many("INSERT INTO accounts (id, name, timezone, created_at) VALUES ($1, $2, $3, $4)", rows)

    assert await count(db, "accounts") == 0


async def test_execute_many_inside_a_transaction_rolls_back_with_it(db: Database) -> None:
    with pytest.raises(RuntimeError):
        async with db.transaction() as tx:
            await tx.execute_many(
                "INSERT INTO accounts (id, name, timezone, created_at) VALUES ($1, $2, $3, $4)",
                [("acc_1", "a", "UTC", NOW), ("acc_2", "b", "UTC", NOW)],
            )
            raise RuntimeError("abort")

    assert await count(db, "accounts") == 0


# -- concurrency -----------------------------------------------------------------------------


async def test_concurrent_transactions_from_many_tasks_all_land(db: Database) -> None:
    await db.execute("CREATE TABLE counters (name TEXT PRIMARY KEY, n INTEGER NOT NULL)")
    await db.execute("INSERT INTO counters (name, n) VALUES ('hits', 0)")
    tasks = 50

    async def worker(i: int) -> None:
        async with db.transaction() as tx:
            await add_account(tx, f"acc_{i:02d}")
            await trio.lowlevel.checkpoint()  # let the other tasks interleave inside their transactions
            await tx.execute("UPDATE counters SET n = n + 1 WHERE name = 'hits'")

    async with trio.open_nursery() as nursery:
        for i in range(tasks):
            nursery.start_soon(worker, i)

    assert await db.fetchval("SELECT n FROM counters WHERE name = 'hits'") == tasks
    assert await count(db, "accounts") == tasks


async def test_concurrent_inserts_of_one_unique_key_let_exactly_one_win(db: Database) -> None:
    account_id = await add_account(db)
    outcomes: list[str] = []

    async def claim() -> None:
        try:
            await add_user(db, account_id, email="race@example.com")
            outcomes.append("won")
        except AlreadyExists:
            outcomes.append("refused")

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(claim)

    assert sorted(outcomes) == ["refused"] * 19 + ["won"]
    assert await count(db, "users") == 1


async def test_two_database_handles_on_one_url_see_each_others_commits(database_url: str) -> None:
    async with open_database(database_url) as first, open_database(database_url) as second:
        await add_account(first, "acc_1")
        assert await second.fetchval("SELECT id FROM accounts") == "acc_1"


@pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
async def test_postgres_query_cancelled_midway_leaves_the_pool_usable(db: Database) -> None:
    with trio.move_on_after(0.1) as scope:
        async with db.transaction() as tx:
            await tx.execute("SELECT pg_sleep(10)")

    assert scope.cancelled_caught
    for _ in range(20):  # more than the pool holds: every connection came back healthy
        assert await db.fetchval("SELECT 1 AS one") == 1


async def test_each_fresh_database_is_isolated_from_the_others(make_database_url) -> None:
    """Made from inside a running test: the factory works there too, and clones share nothing."""
    first_url, second_url = make_database_url(), make_database_url()
    async with open_database(first_url) as first, open_database(second_url) as second:
        await add_account(first, "acc_only_in_first")

        assert await count(first, "accounts") == 1
        assert await count(second, "accounts") == 0
