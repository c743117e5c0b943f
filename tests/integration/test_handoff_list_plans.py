"""The account's handoff list and the team queue read an index, in its order, not the whole table
(both backends)."""

from __future__ import annotations

from typing import Any

import pytest

from roost.runtime.clock import utcnow
from roost.storage import handoff_lists as lists
from roost.storage import handoffs as repo
from roost.storage.database import Database
from tests.support.digest import make_account, make_user


async def _plan(db: Database, sql: str, args: list[Any]) -> str:
    async with db.transaction() as tx:
        # PostgreSQL's planner picks a sequential scan for a table this small; off, it shows which
        # index it can use. SQLite plans by the schema alone.
        explain = tx.dialect.pick(sqlite="EXPLAIN QUERY PLAN ", postgresql="EXPLAIN ")
        if tx.dialect.postgresql:
            await tx.execute("SET LOCAL enable_seqscan = off")
        rows = await tx.fetch(explain + sql, *args)
    return "\n".join(str(list(dict(r).values())[-1]) for r in rows)


@pytest.mark.parametrize("filters, index", [
    ({}, "handoffs_account_list"),
    ({"state": "claimed"}, "handoffs_account_status_list"),
    ({"state": "open", "intent": "park"}, "handoffs_account_status_list"),
    ({"team": "red"}, "handoffs_account_team_list"),
])
async def test_the_account_list_reads_its_index(db: Database, filters: dict[str, str], index: str) -> None:
    now = utcnow()
    account = await make_account(db, now)
    user = await make_user(db, account, now=now, email="ann@example.com", team="red")
    for i in range(20):
        async with db.transaction() as tx:
            await repo.create(tx, account_id=account, subject_ref=f"t{i}", intent="park", notes="", priority="normal",
                              snapshot={}, created_by=user["id"], assess=False, now=now)
    sql, args = lists.list_statement(account, limit=10, cursor=None, **filters)
    plan = await _plan(db, sql, args)
    assert index in plan, plan
    assert "SCAN handoffs\n" not in plan + "\n" and "Seq Scan" not in plan, plan
    assert "TEMP B-TREE" not in plan and "Sort " not in plan, plan  # the index gives the order: no sort


async def test_the_team_queue_reads_its_index(db: Database) -> None:
    sql, args = lists.queue_statement("acc_x", limit=10, cursor=None, team="red")
    plan = await _plan(db, sql, args)
    assert "handoffs_team_queue" in plan, plan
