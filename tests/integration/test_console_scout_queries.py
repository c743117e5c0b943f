"""The console's scout and device reads and the failed-item retry, on both backends.

Capped item counts, one scout's item by id (never another scout's), retrying a failed item (the
domain function the API and the console share), the index the unfiltered item list pages by,
and who is connected where (the socket registry beside the device rows).
"""

from __future__ import annotations

import datetime as dt

import pytest
import trio

from roost.domain import devices as device_ops
from roost.domain import scouts
from roost.errors import Conflict, NotFound
from roost.runtime.topics import SCOUT_ITEMS
from roost.storage import audit, tenancy
from roost.storage import scouts as repo
from roost.storage.scouts import NewItem, Outcomes
from tests.support.fixed_clock import services_at
from tests.support.server import admin_client, make_device, running_server

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
pytestmark = pytest.mark.timeout(30)


async def _user(db, email: str = "a@example.com") -> dict:
    acc = await tenancy.create_account(db, name="A", timezone="UTC", now=T0, actor="t")
    return await tenancy.create_user(db, account_id=acc["id"], fields={
        "email": email, "display_name": "A", "timezone": "UTC", "role": "member", "active": True,
        "digest_cadence": "off", "digest_time": "08:00", "digest_weekday": "monday", "quiet_hours": None},
        now=T0, actor="t")


async def _push_scout(db, user_id: str) -> dict:
    fields = {"provider": "push", "config": {}, "classifier": "rules", "classifier_config": {},
              "poll_interval_s": 60.0, "enabled": True, "auto_trash_spam": False,
              "device_inactivity_pause_days": None, "ttl_days": 30, "max_failures": 3}
    return await repo.create_scout(db, user_id=user_id, fields=fields, now=T0, actor="t")


async def _with_items(db, scout: dict, refs: list[str], *, failed: list[str] = ()) -> dict[str, dict]:
    await repo.push_items(db, scout, [NewItem(r, f"subject {r}", None, "s@example.com", "body") for r in refs],
                          now=T0)
    items = {i["source_msg_ref"]: i for i in
             (await repo.list_items(db, scout["id"], status=None, limit=1000, cursor=None))["items"]}
    await repo.record_outcomes(db, Outcomes([], [], [(items[r]["id"], 3, "unreachable: timed out")
                                                     for r in failed]), now=T0)
    return items


async def test_capped_counts_count_each_status_up_to_the_cap_plus_one(db):
    user = await _user(db)
    scout = await _push_scout(db, user["id"])
    await _with_items(db, scout, [str(i) for i in range(12)], failed=["0", "1"])
    counts = await repo.item_counts_capped(db, scout["id"], cap=5)
    assert counts == {"pending": 6, "queued": 0, "delivered": 0, "acked": 0, "discarded": 0, "failed": 2,
                      "expired": 0}
    assert await repo.item_counts_capped(db, scout["id"], cap=100) == await repo.item_counts(db, scout["id"])
    assert (await repo.item_counts_capped(db, "sct_none", cap=5))["pending"] == 0


async def test_retry_puts_a_failed_item_back_to_pending_audits_it_and_wakes_the_scout(db):
    user = await _user(db)
    scout = await _push_scout(db, user["id"])
    items = await _with_items(db, scout, ["a", "b"], failed=["a"])
    services = services_at(db, T0)
    services.clock.at = T0 + dt.timedelta(hours=1)
    with services.bus.subscribe(SCOUT_ITEMS) as inbox:
        row = await scouts.retry_item(services, scout["id"], items["a"]["id"], actor="console:ops")
        messages, _ = inbox.take()
    assert row["status"] == "pending" and row["attempts"] == 0 and row["last_error"] is None
    assert row["next_attempt_at"] == services.clock.at
    assert [m.ids for m in messages] == [(scout["id"],)]
    due = await repo.due_pending(db, scout["id"], now=services.clock.at, limit=10)
    assert items["a"]["id"] in {r["id"] for r in due}
    entry = (await audit.list_entries(db, target_id=items["a"]["id"]))[0]
    assert entry["action"] == "scout.item_retry" and entry["actor"] == "console:ops"


async def test_retry_refuses_an_item_not_failed_and_another_scouts_item(db):
    user = await _user(db)
    scout, other = await _push_scout(db, user["id"]), await _push_scout(db, user["id"])
    items = await _with_items(db, scout, ["a", "b"], failed=["a"])
    services = services_at(db, T0)
    with pytest.raises(Conflict) as caught:
        await scouts.retry_item(services, scout["id"], items["b"]["id"], actor="t")
    assert caught.value.code == "item_not_failed"
    for scout_id, item_id in [(other["id"], items["a"]["id"]), (scout["id"], "prp_none"), ("sct_x", "prp_x"),
                              (scout["id"], "x" * 10_000)]:
        with pytest.raises(NotFound):
            await scouts.retry_item(services, scout_id, item_id, actor="t")
    assert (await repo.get_item(db, scout["id"], items["a"]["id"]))["status"] == "failed"  # unchanged


async def test_the_unfiltered_item_list_pages_by_the_scout_and_id_index(db):
    if db.dialect.postgresql:
        plan = await db.fetch("SELECT indexname FROM pg_indexes WHERE indexname = 'scout_items_scout_id'")
        assert plan
        return
    for sql in ("SELECT id FROM scout_items WHERE scout_id = $1 AND id > $2 ORDER BY id LIMIT 51",
                "SELECT id FROM scout_items WHERE scout_id = $1 AND id < $2 ORDER BY id DESC LIMIT 51"):
        rows = await db.fetch("EXPLAIN QUERY PLAN " + sql, "sct_x", "")
        detail = " ".join(str(r["detail"]) for r in rows)
        assert "scout_items_scout_id" in detail and "TEMP B-TREE" not in detail, (sql, detail)


async def test_newest_first_pages_walk_every_item_once_with_or_without_a_status(db):
    user = await _user(db)
    scout = await _push_scout(db, user["id"])
    items = await _with_items(db, scout, [str(i) for i in range(7)], failed=["1", "4", "5"])
    for status, expected in ((None, sorted((i["id"] for i in items.values()), reverse=True)),
                             ("failed", sorted((items[r]["id"] for r in ("1", "4", "5")), reverse=True))):
        seen, cursor = [], None
        while True:
            result = await repo.list_items_newest(db, scout["id"], status=status, limit=2, cursor=cursor)
            seen += [i["id"] for i in result["items"]]
            cursor = result["next_cursor"]
            if cursor is None:
                break
        assert seen == expected, status


async def test_connected_lists_this_processes_open_sockets_and_leaves_a_revoked_device_out(database_url):
    from trio_websocket import open_websocket_url

    from roost.client import handshake
    from tests.support.scouting import ws_url

    async with running_server(database_url) as srv, admin_client(srv.url) as client:
        ann = await make_device(client)
        bob = await make_device(client, account={"id": ann["account"]["id"]}, email="bob@example.com")
        async with open_websocket_url(ws_url(srv.url)) as ws_a, open_websocket_url(ws_url(srv.url)) as ws_b:
            await handshake(ws_a, ann["token"])
            await handshake(ws_b, bob["token"])
            assert srv.services.sockets.count == 2  # registered before hello_ok
            seen = await device_ops.connected(srv.services)
            assert seen.total == 2
            assert {d["id"] for d in seen.devices} == {ann["device"]["id"], bob["device"]["id"]}
            assert all(d["sockets"] == 1 for d in seen.devices)
            assert seen.here.process_id == srv.services.process_id
            first = await device_ops.connected(srv.services, limit=1)
            assert len(first.devices) == 1 and first.next_cursor == first.devices[0]["id"]
            rest = await device_ops.connected(srv.services, cursor=first.next_cursor, limit=1)
            assert len(rest.devices) == 1 and rest.next_cursor is None
            assert any(p["here"] and p["alive"] for p in seen.processes)

            await device_ops.revoke_device(srv.services, ann["device"]["id"], actor="console:ops")
            after = await device_ops.connected(srv.services)  # at once, before the handler has ended
            assert [d["id"] for d in after.devices] == [bob["device"]["id"]]
            users = await device_ops.of_user(srv.services, ann["user"]["id"])
            assert [(d["id"], d["revoked_at"] is not None) for d in users] == [(ann["device"]["id"], True)]
            with pytest.raises(NotFound):
                await device_ops.of_user(srv.services, "usr_nobody")


async def test_the_retry_endpoint_answers_the_item_404_for_another_scouts_and_409_when_not_failed(database_url):
    from tests.support.scouting import make_push_scout, push

    async with running_server(database_url) as srv, admin_client(srv.url) as client:
        ann = await make_device(client)
        scout = await make_push_scout(client, ann["user"]["id"])
        other = await make_push_scout(client, ann["user"]["id"])
        await push(client, scout["id"], ["a"])
        item = (await client.get(f"/api/admin/scouts/{scout['id']}/items")).json()["items"][0]
        await srv.services.db.execute("UPDATE scout_items SET status = 'failed' WHERE id = $1", item["id"])
        r = await client.post(f"/api/admin/scouts/{other['id']}/items/{item['id']}/retry")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        r = await client.post(f"/api/admin/scouts/{scout['id']}/items/{item['id']}/retry")
        assert r.status_code == 200 and r.json()["id"] == item["id"], r.text
        r = await client.post(f"/api/admin/scouts/{scout['id']}/items/{item['id']}/retry")
        assert r.status_code == 409 and r.json()["error"]["code"] == "item_not_failed"
        async with admin_client(srv.url, token="wrong") as bad:
            assert (await bad.post(f"/api/admin/scouts/{scout['id']}/items/{item['id']}/retry")).status_code == 401


async def test_devices_connected_to_another_process_are_listed_with_where_they_are(database_url):
    """PostgreSQL: each heartbeat writes this process's device sockets (``process_devices``) and the
    console lists another live process's devices with its host and pid; SQLite writes nothing."""
    from trio_websocket import open_websocket_url

    from roost.client import handshake
    from roost.storage import processes
    from tests.support.scouting import ws_url

    async with running_server(database_url, heartbeat_s=0.2) as srv, admin_client(srv.url) as client:
        s = srv.services
        ann = await make_device(client)
        bob = await make_device(client, account=ann["account"], email="bob@example.com")
        async with open_websocket_url(ws_url(srv.url)) as ws:
            await handshake(ws, ann["token"])
            for _ in range(100):  # the next heartbeats write it
                if not s.db.shared or await s.db.fetchval(
                        "SELECT sockets FROM process_devices WHERE process_id = $1 AND device_id = $2",
                        s.process_id, ann["device"]["id"]):
                    break
                await trio.sleep(0.05)
            else:
                raise AssertionError("the heartbeat did not write this process's device socket")
            now = s.clock.now()
            await processes.beat(s.db, process_id="elsewhere:1:x", host="other-host", pid=4242, port=None,
                                 started_at=now, now=now, sockets=1, leads=[])
            await processes.write_devices(s.db, "elsewhere:1:x", changed={bob["device"]["id"]: 2}, gone=())
            seen = await device_ops.connected(s)
            if not s.db.shared:
                assert seen.elsewhere == []
                assert await s.db.fetchval("SELECT COUNT(*) FROM process_devices WHERE process_id = $1",
                                           s.process_id) == 0
                return
            assert [(d["id"], d["host"], d["pid"], d["sockets"]) for d in seen.elsewhere] == [
                (bob["device"]["id"], "other-host", 4242, 2)]
            assert ann["device"]["id"] not in {d["id"] for d in seen.elsewhere}  # here, not elsewhere
            await device_ops.revoke_device(s, bob["device"]["id"], actor="t")
            assert (await device_ops.connected(s)).elsewhere == []  # revoked: gone at once
            await processes.remove(s.db, "elsewhere:1:x")
            assert await s.db.fetchval("SELECT COUNT(*) FROM process_devices WHERE process_id = $1",
                                       "elsewhere:1:x") == 0
