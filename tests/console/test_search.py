"""The console's search page and bulk actions, over HTTP, on both backends.

Results link to their pages; hostile queries answer a page, never a 500 or driver text; pages stop
at the cap; a bulk action shows how many it will take before it acts, needs the operate role and
the CSRF field, runs through the domain function and writes one audit row with the count.
"""

from __future__ import annotations

import re

import pytest

from roost.storage import scouts as scout_repo
from roost.storage.scouts import NewItem, Outcomes
from tests.support.search import T0, make_world

pytestmark = pytest.mark.timeout(60)


async def _failed_items(db, world, n: int) -> list[str]:
    await scout_repo.push_items(db, world["scout"], [NewItem(f"fail-{i:04d}", "s", None, None, None)
                                                     for i in range(n)], now=T0)
    ids = [r["id"] for r in await db.fetch("SELECT id FROM scout_items WHERE source_msg_ref LIKE 'fail-%'")]
    await scout_repo.record_outcomes(db, Outcomes([], [], [(i, 3, "unreachable") for i in ids]), now=T0)
    return ids


async def test_search_finds_a_ref_and_links_to_its_scout(console, console_server):
    db = console_server.services.db
    world = await make_world(db)
    client = await console("read")
    r = await client.get("/console/search", params={"q": "ref-101"})
    assert r.status_code == 200
    item = world["items"]["ref-101"]
    assert item["id"] in r.text and f'href="/console/scouts/{world["scout"]["id"]}?status=pending"' in r.text
    r = await client.get("/console/search", params={"q": "ticket-42", "kind": "handoff", "field": "ref"})
    assert f'href="/console/handoffs/{world["handoff"]["id"]}"' in r.text
    r = await client.get("/console/search", params={"q": "+1555"})
    assert f'href="/console/dispatch/batches/{world["batch"]["id"]}"' in r.text
    r = await client.get("/console/search", params={"q": world["mail_id"]})
    assert "Your invoice digest" in r.text and "/console/mail?" in r.text
    empty = await client.get("/console/search")
    assert empty.status_code == 200 and "Type something to search for" in empty.text


async def test_hostile_queries_answer_a_page_never_an_error(console, console_server):
    await make_world(console_server.services.db)
    client = await console("read")
    for q in ["%", "_%_", "'; DROP TABLE outbox; --", "(a|aa)+$", "\x00", "ref\x00", "<script>alert(1)</script>",
              "x" * 5000, "💥" * 300]:
        r = await client.get("/console/search", params={"q": q})
        assert r.status_code == 200, (q[:20], r.status_code)
        assert "<script>alert" not in r.text
    for raw in ["%ED%A0%80", "%FF%FE", "%00%00", "%25%5F", "%", "%zz"]:  # bad UTF-8, NULs, a broken escape
        r = await client.get("/console/search?q=" + raw)
        assert r.status_code in (200, 400), raw
    for params in [{"kind": "users"}, {"field": "body"}, {"page": "0"}, {"page": "-1"}, {"page": "1e9"},
                   {"page": "٣"}, {"page": "9" * 50}, {"q": "a", "page": "21"}]:
        r = await client.get("/console/search", params={"q": "a", **params})
        assert r.status_code == 400, params
        assert "asyncpg" not in r.text and "sqlite3" not in r.text and "Traceback" not in r.text
    r = await client.get("/console/search?q=" + "a" * 60_000)  # near httpx's URL limit, past the server's
    assert r.status_code != 500


async def test_result_pages_stop_at_the_cap(console, console_server):
    db = console_server.services.db
    world = await make_world(db)
    await scout_repo.push_items(db, world["scout"], [NewItem(f"many-{i:05d}", "s", None, None, None)
                                                     for i in range(1010)], now=T0)
    client = await console("read")
    r = await client.get("/console/search", params={"q": "many-", "field": "ref"})
    assert r.text.count("<tr><td>Scout item") == 50 and 'rel="next"' in r.text
    r = await client.get("/console/search", params={"q": "many-", "field": "ref", "page": "20"})
    assert "many-00999" in r.text and "many-01000" not in r.text and 'rel="next"' not in r.text


async def test_bulk_confirmation_says_how_many_then_retries_and_audits_the_count(console, console_server):
    db = console_server.services.db
    world = await make_world(db)
    ids = await _failed_items(db, world, 3)
    client = await console()
    query = {"bulk": "item:retry", "status": "failed", "scope": world["scout"]["id"]}
    confirm = await client.get("/console/search/bulk", params=query)
    assert confirm.status_code == 200
    assert re.search(r"This will affect <strong>3</strong> rows", confirm.text), confirm.text
    r = await client.act("/console/search/bulk", **query)
    assert r.status_code == 303
    statuses = {(await scout_repo.get_item(db, world["scout"]["id"], i))["status"] for i in ids}
    assert "failed" not in statuses  # pending again (the running scout may have triaged them since)
    rows = await db.fetch("SELECT actor, target_id, details FROM audit_log WHERE action = 'console.search.bulk'")
    assert len(rows) == 1 and rows[0]["actor"] == "console:ops" and rows[0]["target_id"] == "item:retry"
    details = rows[0]["details"]
    details = details if isinstance(details, dict) else __import__("json").loads(details)
    assert details["count"] == 3 and details["scope"] == world["scout"]["id"]
    after = await client.get(r.headers["location"])
    assert "3 done" in after.text and "Nothing matches this filter now" in after.text


async def test_bulk_confirmation_says_more_than_the_cap(console, console_server):
    db = console_server.services.db
    world = await make_world(db)
    await _failed_items(db, world, 1001)
    client = await console("read")
    confirm = await client.get("/console/search/bulk", params={"bulk": "item:retry", "status": "failed"})
    assert "More than 1000 match" in confirm.text and "<strong>1000</strong>" in confirm.text


async def test_bulk_needs_operate_and_csrf(console, console_server, anonymous):
    db = console_server.services.db
    world = await make_world(db)
    ids = await _failed_items(db, world, 2)
    fields = {"bulk": "item:retry", "status": "failed", "scope": ""}
    reader = await console("read")
    confirm = await reader.get("/console/search/bulk", params=fields)
    assert confirm.status_code == 200 and "disabled" in confirm.text  # a reader sees the count, not the button
    assert (await reader.act("/console/search/bulk", **fields)).status_code == 403
    operator = await console()
    r = await operator.post("/console/search/bulk", data={**fields, "csrf": "wrong"})
    assert r.status_code == 403
    r = await operator.post("/console/search/bulk", data=fields)
    assert r.status_code == 403
    r = await anonymous.post("/console/search/bulk", data={**fields, "csrf": "x"})
    assert r.status_code in (303, 403)
    assert (await anonymous.get("/console/search", params={"q": "x"})).status_code == 303
    assert {(await scout_repo.get_item(db, world["scout"]["id"], i))["status"] for i in ids} == {"failed"}
    assert await db.fetchval("SELECT COUNT(*) FROM audit_log WHERE action = 'console.search.bulk'") == 0


async def test_bad_bulk_filters_are_refused_with_a_message(console, console_server):
    client = await console()
    for params in [{"bulk": "item:delete", "status": "failed"}, {"bulk": "item:retry", "status": "acked"},
                   {"bulk": "item:retry", "status": "failed", "scope": "acc_' OR 1=1"},
                   {"bulk": "x" * 50_00, "status": "\x00"}, {}]:
        r = await client.get("/console/search/bulk", params=params)
        assert r.status_code == 400, params
        r = await client.act("/console/search/bulk", **params)
        assert r.status_code == 303  # back with the message flashed
    assert await console_server.services.db.fetchval(
        "SELECT COUNT(*) FROM audit_log WHERE action = 'console.search.bulk'") == 0
