"""Console scouts pages and actions on both backends: the list, one scout's counts and items, run
now (409 as a message), enable and disable, retry a failed item; the read role, CSRF, bad input."""

from __future__ import annotations

import re
from urllib.parse import unquote

import pytest
import trio

from roost.domain.scouting import lock_name
from roost.errors import AlreadyRunning
from roost.runtime.topics import SCOUT_RAN
from roost.storage import audit
from tests.support.scouting import make_push_scout, push
from tests.support.server import admin_client, make_device

pytestmark = pytest.mark.timeout(60)


async def _setup(server) -> dict:
    """A user with a push scout holding a failed item, a queued one, and a second scout."""
    async with admin_client(server.url) as client:
        ann = await make_device(client)
        scout = await make_push_scout(client, ann["user"]["id"])
        other = await make_push_scout(client, ann["user"]["id"])
        await push(client, scout["id"], ["a", "b"], sender="secret-sender@example.com")
        with trio.fail_after(10):
            while True:  # the scout actor triages them
                items = (await client.get(f"/api/admin/scouts/{scout['id']}/items")).json()["items"]
                if len(items) == 2 and all(i["status"] != "pending" for i in items):
                    break
                await trio.sleep(0.02)
    db = server.services.db
    failed = items[0]["id"]
    await db.execute("UPDATE scout_items SET status = 'failed', last_error = 'unreachable: timed out'"
                     " WHERE id = $1", failed)
    await db.execute("UPDATE scouts SET last_error = 'unreachable: refused' WHERE id = $1", other["id"])
    return {"user": ann["user"], "scout": scout, "other": other, "failed": failed, "ok": items[1]["id"]}


async def _flash(client, response) -> str:
    """Follow an action's 303 and return the page's flash message."""
    assert response.status_code == 303, response.text
    page = await client.get(response.headers["location"])
    assert page.status_code == 200, page.text
    start = page.text.index('class="flash')
    return page.text[start:page.text.index("</p>", start)]


async def test_the_list_shows_state_paused_next_run_and_last_error_and_filters_by_state(console, console_server):
    ids = await _setup(console_server)
    client = await console("read")
    r = await client.get("/console/scouts")
    assert r.status_code == 200
    assert ids["scout"]["id"] in r.text and ids["other"]["id"] in r.text
    assert "unreachable: refused" in r.text and "failing" in r.text and "<time datetime=" in r.text
    r = await client.get("/console/scouts", params={"state": "failing"})
    assert ids["other"]["id"] in r.text and ids["scout"]["id"] not in r.text
    r = await client.get("/console/scouts", params={"user_id": ids["user"]["id"], "provider": "push"})
    assert ids["scout"]["id"] in r.text
    r = await client.get("/console/scouts", params={"fragment": "list"})
    assert r.status_code == 200 and "<html" not in r.text and ids["scout"]["id"] in r.text


async def test_a_scouts_page_shows_counts_and_items_by_status_with_bodies_hidden_from_read(console, console_server,
                                                                                         monkeypatch):
    from roost.http.console.pages import scouts as scouts_page

    ids = await _setup(console_server)
    path = f"/console/scouts/{ids['scout']['id']}"
    reader = await console("read")
    r = await reader.get(path)
    assert r.status_code == 200
    assert ids["failed"] in r.text and ids["ok"] in r.text
    assert 'data-status="failed">1<' in r.text
    assert "secret-sender@example.com" not in r.text and "subject a" not in r.text  # hidden for read
    assert "Retry" not in r.text and "Run now" not in r.text  # no actions for read
    r = await reader.get(path, params={"show": "bodies"})
    assert "secret-sender@example.com" in r.text
    r = await reader.get(path, params={"status": "failed"})
    assert ids["failed"] in r.text and ids["ok"] not in r.text
    r = await reader.get(path, params={"fragment": "counts"})
    assert r.status_code == 200 and "<html" not in r.text and 'data-status="failed">1<' in r.text
    r = await reader.get(path, params={"fragment": "items", "status": "failed"})
    assert r.status_code == 200 and "<html" not in r.text and ids["failed"] in r.text
    operator = await console()
    r = await operator.get(path)
    assert "secret-sender@example.com" in r.text and "Retry" in r.text and "Run now" in r.text
    monkeypatch.setattr(scouts_page, "ITEMS_PER_PAGE", 1)  # newest first, a page at a time
    r = await reader.get(path)
    assert ids["ok"] in r.text and ids["failed"] not in r.text
    older = re.search(r'<a href="([^"]+)" rel="next">Older items</a>', r.text)[1].replace("&amp;", "&")
    r = await reader.get(older)
    assert f"<code>{ids['failed']}</code>" in r.text and f"<code>{ids['ok']}</code>" not in r.text
    assert "Older items" not in r.text
    monkeypatch.setattr(scouts_page, "COUNT_CAP", 0)  # counts stop at the cap: "over" it
    r = await reader.get(path, params={"fragment": "counts"})
    assert 'data-status="failed">over 0<' in r.text and 'data-status="expired">0<' in r.text


async def test_run_now_reports_the_run_and_a_409_as_a_message(console, console_server):
    ids = await _setup(console_server)
    sid = ids["scout"]["id"]
    client = await console()
    with console_server.services.bus.subscribe(SCOUT_RAN) as ran:
        message = await _flash(client, await client.act(f"/console/scouts/{sid}/run", back=f"/console/scouts/{sid}"))
        assert f"Scout {sid} ran" in message
        assert (sid,) in [m.ids for m in ran.take()[0]]
    while True:  # the scout actor may be running it right now: wait for the lock
        try:
            async with console_server.services.locks.hold(lock_name(sid)):
                r = await client.act(f"/console/scouts/{sid}/run", back=f"/console/scouts/{sid}")
                message = await _flash(client, r)
            break
        except AlreadyRunning:
            await trio.sleep(0.05)
    assert "flash error" in message and "running" in message
    entries = await audit.list_entries(console_server.services.db, target_id=sid)
    assert any(e["action"] == "console.scout.run" and e["actor"] == "console:ops" for e in entries)


async def test_disable_and_enable_change_the_scout_as_the_api_does(console, console_server):
    ids = await _setup(console_server)
    sid = ids["scout"]["id"]
    client = await console()
    assert "disabled" in await _flash(client, await client.act(f"/console/scouts/{sid}/disable"))
    async with admin_client(console_server.url) as api:
        assert (await api.get(f"/api/admin/scouts/{sid}")).json()["status"] == "disabled"
        message = await _flash(client, await client.act(f"/console/scouts/{sid}/run"))
        assert "flash error" in message and "disabled" in message  # scout_disabled, 409, as a message
        assert "enabled" in await _flash(client, await client.act(f"/console/scouts/{sid}/enable"))
        assert (await api.get(f"/api/admin/scouts/{sid}")).json()["enabled"] is True
    entries = await audit.list_entries(console_server.services.db, target_id=sid)
    actions = {(e["action"], e["actor"]) for e in entries}
    assert ("scout.update", "console:ops") in actions and ("console.scout.disable", "console:ops") in actions


async def test_retry_puts_a_failed_item_back_and_refuses_others_and_another_scouts(console, console_server):
    ids = await _setup(console_server)
    sid, other = ids["scout"]["id"], ids["other"]["id"]
    client = await console()
    db = console_server.services.db
    message = await _flash(client, await client.act(f"/console/scouts/{other}/items/{ids['failed']}/retry"))
    assert "flash error" in message  # an item of another scout is not found
    assert (await db.fetchval("SELECT status FROM scout_items WHERE id = $1", ids["failed"])) == "failed"
    message = await _flash(client, await client.act(f"/console/scouts/{sid}/items/{ids['ok']}/retry"))
    assert "flash error" in message and "not failed" in message
    message = await _flash(client, await client.act(f"/console/scouts/{sid}/items/{ids['failed']}/retry"))
    assert "goes back to triage" in message
    status = await db.fetchval("SELECT status FROM scout_items WHERE id = $1", ids["failed"])
    assert status != "failed"  # pending, or triaged again already
    entries = await audit.list_entries(db, target_id=ids["failed"])
    assert {e["action"] for e in entries} >= {"scout.item_retry", "console.scout.item_retry"}


async def test_the_read_role_and_a_missing_csrf_get_403_on_every_action(console, console_server):
    ids = await _setup(console_server)
    sid = ids["scout"]["id"]
    actions = [f"/console/scouts/{sid}/run", f"/console/scouts/{sid}/disable", f"/console/scouts/{sid}/enable",
               f"/console/scouts/{sid}/items/{ids['failed']}/retry"]
    reader = await console("read")
    operator = await console()
    for url in actions:
        assert (await reader.act(url)).status_code == 403, url
        assert (await operator.post(url, data={"back": "/console"})).status_code == 403, url
        assert (await operator.post(url, data={"csrf": "x" * 100_000})).status_code in (403, 413), url
    assert (await console_server.services.db.fetchval("SELECT enabled FROM scouts WHERE id = $1", sid)) is True
    status = await console_server.services.db.fetchval("SELECT status FROM scout_items WHERE id = $1", ids["failed"])
    assert status == "failed"


BAD_QUERIES = [
    ("/console/scouts", {"state": "bogus"}, 400),
    ("/console/scouts", {"provider": "nope"}, 400),
    ("/console/scouts", {"user_id": "<script>alert(1)</script>"}, 400),
    ("/console/scouts", {"cursor": "x" * 10_000}, 400),
    ("/console/scouts", {"fragment": "nope"}, 404),
    ("/console/scouts/sct_nope", {}, 404),
    ("/console/scouts/" + "x" * 5000, {}, 404),
    ("/console/scouts/%3Cscript%3E", {}, 404),
]


async def test_bad_and_hostile_query_values_answer_a_clear_4xx(console):
    client = await console("read")
    for path, params, status in BAD_QUERIES:
        r = await client.get(path, params=params)
        assert r.status_code == status, (path, params, r.text[:300])
        assert "<script>alert" not in r.text and "Traceback" not in r.text


async def test_bad_values_on_a_scouts_page_and_hostile_action_targets(console, console_server):
    ids = await _setup(console_server)
    sid = ids["scout"]["id"]
    client = await console()
    for params in ({"status": "bogus"}, {"status": "x" * 5000}, {"cursor": "'; DROP TABLE scouts; --"}):
        r = await client.get(f"/console/scouts/{sid}", params=params)
        assert r.status_code == 400, (params, r.text[:200])
    for url in ("/console/scouts/sct_nope/run", "/console/scouts/" + "x" * 3000 + "/disable",
                f"/console/scouts/{sid}/items/" + "y" * 3000 + "/retry", "/console/scouts/sct_nope/items/prp_x/retry"):
        r = await client.act(url, back="//evil.example.com/x")
        assert r.status_code == 303, (url, r.text[:200])
        assert not unquote(r.headers["location"]).startswith("//")  # never an open redirect
        message = await _flash(client, r)
        assert "flash error" in message and "no " in message, message
