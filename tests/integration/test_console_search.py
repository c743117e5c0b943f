"""Console search and bulk actions below HTTP, on both backends.

What each field finds (ids, refs, subjects, senders, recipients across items, mail, handoffs and
dispatch items), that every source reads an index range (never the table), that hostile text is
only text, that pages stop at the cap, and that bulk actions count, cap and call the domain
functions the API calls (skipping rows that changed since).
"""

from __future__ import annotations

from typing import Any

import pytest

from roost.domain import search
from roost.domain.dispatch import sending
from roost.errors import InvalidInput, StorageError
from roost.storage import outbox
from roost.storage import scouts as scout_repo
from roost.storage import search as repo
from roost.storage.database import Database
from roost.storage.scouts import NewItem, Outcomes
from tests.support.fixed_clock import services_at
from tests.support.search import T0, make_world

pytestmark = pytest.mark.timeout(60)


def _found(results: search.Results) -> set[tuple[str, str]]:
    return {(r["kind"], r["id"]) for r in results.rows}


async def test_each_field_finds_what_it_names_and_any_finds_them_all(db: Database) -> None:
    w = await make_world(db)
    s = services_at(db, T0)
    inv7, inv8 = w["items"]["ref-100%_x"]["id"], w["items"]["ref-101"]["id"]
    # ids: exact, in the table the prefix names
    for kind, id_ in [("item", inv7), ("mail", w["mail_id"]), ("handoff", w["handoff"]["id"]),
                      ("dispatch", w["dispatch_item"])]:
        assert _found(await search.search(s, id_, field="id")) == {(kind, id_)}
        assert _found(await search.search(s, f"  {id_}  ")) == {(kind, id_)}
    # refs: a case-sensitive prefix; the Message-ID exactly
    assert _found(await search.search(s, "ref-10", field="ref")) == {("item", inv7), ("item", inv8)}
    assert _found(await search.search(s, "ticket-4")) == {("handoff", w["handoff"]["id"])}
    message_id = (await outbox.get(db, w["mail_id"]))["message_id"]
    assert _found(await search.search(s, message_id, field="ref")) == {("mail", w["mail_id"])}
    # subjects and senders: an ASCII-case-insensitive prefix
    assert _found(await search.search(s, "INVOICE", field="subject")) == {("item", inv7), ("item", inv8)}
    assert _found(await search.search(s, "your inv", kind="mail")) == {("mail", w["mail_id"])}
    assert _found(await search.search(s, "billing@", field="sender")) == {("item", inv7)}
    assert _found(await search.search(s, "Été", field="subject")) == {("item", w["items"]["other-1"]["id"])}
    # recipients: a mail address, a dispatch handle, a user id (their items and mail)
    assert _found(await search.search(s, "ann@", field="recipient")) == {("mail", w["mail_id"])}
    assert _found(await search.search(s, "+1555")) == {("dispatch", w["dispatch_item"])}
    by_user = _found(await search.search(s, w["user"]["id"], field="recipient"))
    assert by_user == {("mail", w["mail_id"])}  # (a user's items: through their scouts)
    # a kind narrows; nothing is listed twice
    assert _found(await search.search(s, "invoice", kind="item")) == {("item", inv7), ("item", inv8)}
    assert _found(await search.search(s, "nothing-like-this")) == set()


HOSTILE = ["%", "_", "%%%%", "ref-1__%", "'; DROP TABLE scout_items; --", "(a|aa)+$", ".*", "[", "\\", "\x00",
           "ref\x00-10", "\ud800", "\U0010ffff", "\U0010ffff" * 3, "x" * 1_000_000, "\u202e", "💥" * 500, "$1", "?"]


async def test_hostile_queries_are_only_text(db: Database) -> None:
    w = await make_world(db)
    s = services_at(db, T0)
    for hostile in HOSTILE:
        for field in search.FIELDS:
            results = await search.search(s, hostile, field=field)
            assert len(results.rows) <= search.PAGE_SIZE
            assert len(results.query) <= repo.MAX_QUERY_CHARS and "\x00" not in results.query
            if hostile in ("%", "_", ".*", "%%%%"):
                assert results.rows == [], hostile  # a wildcard matches only itself
    results = await search.search(s, "ref\x00-10")
    # NUL dropped, the rest searched
    assert _found(results) == {("item", w["items"][r]["id"]) for r in ("ref-100%_x", "ref-101")}
    results = await search.search(s, "ref-100%")
    assert _found(results) == {("item", w["items"]["ref-100%_x"]["id"])}  # % is a character like any


async def test_a_long_query_is_cut_and_says_so(db: Database) -> None:
    await make_world(db)
    results = await search.search(services_at(db, T0), "ref-" + "z" * 10_000)
    assert results.shortened and len(results.query) == repo.MAX_QUERY_CHARS and results.rows == []


async def test_bad_choices_are_invalid_input(db: Database) -> None:
    s = services_at(db, T0)
    for kwargs in [{"kind": "users"}, {"field": "body"}, {"page": 0}, {"page": search.MAX_PAGE + 1}]:
        with pytest.raises(InvalidInput):
            await search.search(s, "x", **kwargs)


async def test_pages_are_bounded_and_stop_at_the_cap(db: Database) -> None:
    w = await make_world(db)
    n = search.MAX_RESULTS + 30
    await scout_repo.push_items(db, w["scout"], [NewItem(f"bulk-{i:05d}", "s", None, "x@example.com", None)
                                                 for i in range(n)], now=T0)
    s = services_at(db, T0)
    first = await search.search(s, "bulk-", field="ref")
    assert len(first.rows) == search.PAGE_SIZE and first.more
    assert [r["ref"] for r in first.rows] == [f"bulk-{i:05d}" for i in range(search.PAGE_SIZE)]
    second = await search.search(s, "bulk-", field="ref", page=2)
    assert second.rows[0]["ref"] == f"bulk-{search.PAGE_SIZE:05d}"
    last = await search.search(s, "bulk-", field="ref", page=search.MAX_PAGE)
    assert len(last.rows) == search.PAGE_SIZE and not last.more  # the rest is past the cap


async def _plan(db: Database, sql: str, args: list[Any]) -> str:
    async with db.transaction() as tx:
        explain = tx.dialect.pick(sqlite="EXPLAIN QUERY PLAN ", postgresql="EXPLAIN ")
        if tx.dialect.postgresql:
            # Empty tables: without these the planner picks a scan it knows is small; with them it
            # shows whether an index gives the rows in order.
            await tx.execute("SET LOCAL enable_seqscan = off")
            await tx.execute("SET LOCAL enable_bitmapscan = off")
            await tx.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        rows = await tx.fetch(explain + sql, *args)
    return "\n".join(str(list(dict(r).values())[-1]) for r in rows)


async def test_every_source_reads_an_index_range_in_its_order(db: Database) -> None:
    for source in repo.SOURCES:
        sql = source.statement(db, limit=51)
        args = ["abc"] if source.exact else ["abc", "abd"]
        plan = await _plan(db, sql, args)
        assert "Seq Scan" not in plan and "SCAN " not in plan.replace("SCAN USING", ""), plan
        assert "Sort" not in plan and "TEMP B-TREE" not in plan, plan  # the index gives the order
        if not source.exact:  # both ends of the range bound the index scan, neither is a filter
            assert ("Index Cond" in plan and "<" in plan) if db.dialect.postgresql else ("<?" in plan), plan



async def test_bulk_targets_read_an_index_in_id_order(db: Database) -> None:
    for kind, scope in [("item", "sct_x"), ("item", "usr_x"), ("item", None), ("mail", None), ("mail", "usr_x"),
                        ("batch", None), ("batch", "acc_x"), ("batch", "obt_x")]:
        sql, args = repo.bulk_statement(kind, status="failed", scope=scope, cap=1000)
        plan = await _plan(db, sql, args)
        assert "Seq Scan" not in plan and "SCAN " not in plan.replace("SCAN USING", ""), (kind, scope, plan)
        assert "Sort" not in plan and "TEMP B-TREE" not in plan, (kind, scope, plan)


def test_prefix_end_is_the_least_string_after_every_extension() -> None:
    assert repo.prefix_end("ab") == "ac"
    assert repo.prefix_end("a\U0010ffff") == "b"
    assert repo.prefix_end("\U0010ffff") is None
    assert repo.prefix_end("a\ud7ff") == "a\ue000"
    assert repo.fold("ÉtÉ ABC") == "ÉtÉ abc"


# -- bulk ----------------------------------------------------------------------------------------

async def _fail(db: Database, item_ids: list[str]) -> None:
    await scout_repo.record_outcomes(db, Outcomes([], [], [(i, 3, "unreachable") for i in item_ids]), now=T0)


async def test_bulk_retry_previews_the_count_then_retries_through_the_domain(db: Database) -> None:
    w = await make_world(db)
    s = services_at(db, T0)
    failed = [w["items"]["ref-100%_x"]["id"], w["items"]["ref-101"]["id"]]
    await _fail(db, failed)
    f = search.bulk_filter("item", "retry", "failed", w["scout"]["id"])
    assert await search.preview(s, f) == search.Preview(2, False)
    assert (await search.preview(s, search.bulk_filter("item", "retry", "failed", w["user"]["id"]))).count == 2
    outcome = await search.apply(s, f, actor="console:ops")
    assert (outcome.done, outcome.skipped, outcome.more) == (2, 0, False)
    for item_id in failed:
        assert (await scout_repo.get_item(db, w["scout"]["id"], item_id))["status"] == "pending"
    # retry_item audits each item as the API does
    assert await db.fetchval("SELECT COUNT(*) FROM audit_log WHERE action = 'scout.item_retry'") == 2
    assert await search.preview(s, f) == search.Preview(0, False)


async def test_bulk_caps_the_count_and_the_rows_it_takes(db: Database) -> None:
    w = await make_world(db)
    s = services_at(db, T0)
    await scout_repo.push_items(db, w["scout"], [NewItem(f"f{i}", "s", None, None, None) for i in range(7)], now=T0)
    ids = [r["id"] for r in await db.fetch("SELECT id FROM scout_items WHERE source_msg_ref LIKE 'f%'")]
    await _fail(db, ids)
    f = search.bulk_filter("item", "retry", "failed", w["scout"]["id"])
    assert await search.preview(s, f, cap=5) == search.Preview(5, True)
    outcome = await search.apply(s, f, actor="console:ops", cap=5)
    assert (outcome.done, outcome.more) == (5, True)
    assert await search.preview(s, f, cap=5) == search.Preview(2, False)
    assert search.BULK_CAP == 1000


async def test_bulk_skips_a_row_that_changed_since_and_counts_it(db: Database) -> None:
    w = await make_world(db)
    s = services_at(db, T0)
    item = w["items"]["ref-101"]["id"]
    await _fail(db, [item])
    real = search.BULK_ACTIONS[("item", "retry")]

    async def racing(fn, services, row, actor):  # someone else retries it first
        await fn(services, row["parent_id"], row["id"], actor=actor)
        return await fn(services, row["parent_id"], row["id"], actor=actor)

    search.BULK_ACTIONS[("item", "retry")] = search.BulkAction(real.kind, real.action, real.statuses, real.module,
                                                               real.function, racing, real.label)
    try:
        outcome = await search.apply(s, search.bulk_filter("item", "retry", "failed"), actor="t")
    finally:
        search.BULK_ACTIONS[("item", "retry")] = real
    assert (outcome.done, outcome.skipped) == (0, 1) and "not failed" in outcome.reasons[0]


async def test_bulk_stops_at_an_error_that_is_not_a_conflict_and_raises_it_alone(db: Database) -> None:
    w = await make_world(db)
    s = services_at(db, T0)
    ids = [w["items"]["ref-100%_x"]["id"], w["items"]["ref-101"]["id"]]
    await _fail(db, ids)
    real = search.BULK_ACTIONS[("item", "retry")]

    async def broken(fn, services, row, actor):
        raise StorageError("the database went away")

    search.BULK_ACTIONS[("item", "retry")] = search.BulkAction(real.kind, real.action, real.statuses, real.module,
                                                               real.function, broken, real.label)
    try:
        with pytest.raises(StorageError):  # itself, not an exception group: the console flashes its message
            await search.apply(s, search.bulk_filter("item", "retry", "failed"), actor="t")
    finally:
        search.BULK_ACTIONS[("item", "retry")] = real


async def test_bulk_cancel_of_batches_cancels_their_pending_items(db: Database) -> None:
    w = await make_world(db)
    s = services_at(db, T0)
    await sending.change_batch(s, w["batch"]["id"], "send")
    f = search.bulk_filter("batch", "cancel", "sending", w["account"]["id"])
    assert (await search.preview(s, f)).count == 1
    f = search.bulk_filter("batch", "cancel", "sending", w["batch"]["id"])  # the pending items of one batch
    assert (await search.preview(s, f)).count == 1
    outcome = await search.apply(s, f, actor="t")
    assert outcome.done == 1
    assert await db.fetchval("SELECT status FROM outreach_items WHERE id = $1", w["dispatch_item"]) == "cancelled"


async def test_bulk_mail_counts_by_status(db: Database) -> None:
    w = await make_world(db)
    await db.execute("UPDATE outbox SET status = 'failed' WHERE id = $1", w["mail_id"])
    rows = await repo.bulk_targets(db, "mail", status="failed", scope=None, cap=10)
    assert [r["id"] for r in rows] == [w["mail_id"]]
    rows = await repo.bulk_targets(db, "mail", status="failed", scope=w["user"]["id"], cap=10)
    assert [r["parent_id"] for r in rows] == [w["user"]["id"]]


@pytest.mark.parametrize("args", [
    ("item", "cancel", "failed", None),  # no such action
    ("item", "retry", "acked", None),  # not a status it applies to
    ("item", "retry", "failed", "acc_x"),  # not a scope of items
    ("item", "retry", "failed", "sct_%"),
    ("batch", "pause", "paused", None),
    ("batch", "cancel", "sending", "x" * 10_000),
    ("batch'; --", "cancel", "sending", None),
])
def test_bad_bulk_filters_are_invalid_input(args: tuple) -> None:
    with pytest.raises(InvalidInput):
        search.bulk_filter(*args)


async def test_bulk_mail_retry_and_cancel_go_through_the_mail_domain(db: Database) -> None:
    pytest.importorskip("roost.domain.mail")  # the console-jobs branch's retry and cancel
    w = await make_world(db)
    s = services_at(db, T0)
    await db.execute("UPDATE outbox SET status = 'failed', last_error = 'bounced' WHERE id = $1", w["mail_id"])
    retry = search.bulk_filter("mail", "retry", "failed")
    assert await search.preview(s, retry) == search.Preview(1, False)
    assert (await search.apply(s, retry, actor="t")).done == 1
    assert (await outbox.get(db, w["mail_id"]))["status"] in ("queued", "held")
    cancel = search.bulk_filter("mail", "cancel", "queued", w["user"]["id"])
    assert (await search.apply(s, cancel, actor="console:ops")).done == 1
    assert (await search.preview(s, cancel)).count == 0
