# ruff: noqa: ASYNC110  (tests poll state the server's actors own)
"""Listing and changing accounts, listing scouts, and what deleting a user or an account does.

Each test runs against a real server (in this process, on a free port) on SQLite and on PostgreSQL;
sockets are real WebSocket clients.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, AsyncIterator

import httpx
import pytest
import trio

from roost.serve import Running
from roost.storage import audit
from roost.storage import scouts as scout_repo
from roost.storage import webhooks as webhook_repo
from tests.integration.test_ws import registered
from tests.support.handoffs import handoff_body
from tests.support.scouting import make_push_scout, push
from tests.support.server import admin_client, make_device, running_server
from tests.support.ws import close_code

pytestmark = [
    pytest.mark.filterwarnings("error::ResourceWarning"),
    pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning"),
]


@pytest.fixture
async def server(database_url: str) -> AsyncIterator[Running]:
    async with running_server(database_url, allowed_destinations="127.0.0.1") as running:
        yield running


def error_code(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert list(body) == ["error"], body
    return body["error"]["code"]


async def new_account(client: httpx.AsyncClient, name: str, timezone: str = "UTC") -> dict[str, Any]:
    r = await client.post("/api/admin/accounts", json={"name": name, "timezone": timezone})
    assert r.status_code == 201, r.text
    return r.json()


async def all_pages(client: httpx.AsyncClient, path: str, **params: Any) -> list[list[dict[str, Any]]]:
    pages, cursor = [], None
    while True:
        r = await client.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        body = r.json()
        assert sorted(body) == ["items", "next_cursor"]
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


async def audit_actions(server: Running, target_id: str) -> list[str]:
    return sorted(row["action"] for row in await audit.list_entries(server.services.db, target_id=target_id))


# -- accounts -------------------------------------------------------------------------------------


async def test_accounts_list_pages_with_the_cursor_oldest_first(client: httpx.AsyncClient) -> None:
    created = [await new_account(client, f"Acme {i}") for i in range(5)]

    pages = await all_pages(client, "/api/admin/accounts", limit=2)

    assert [len(p) for p in pages] == [2, 2, 1]
    assert [a["id"] for p in pages for a in p] == [a["id"] for a in created]
    assert pages[0][0] == created[0]


async def test_accounts_list_filters_by_exact_name(client: httpx.AsyncClient) -> None:
    twins = [await new_account(client, "Twin") for _ in range(2)]
    await new_account(client, "Twins")
    await new_account(client, "twin")

    pages = await all_pages(client, "/api/admin/accounts", name="Twin", limit=1)

    assert [a["id"] for p in pages for a in p] == [t["id"] for t in twins]


@pytest.mark.parametrize("params", [
    {"cursor": "'; DROP TABLE accounts; --"}, {"cursor": "acc\x00x"}, {"cursor": "x" * 65},
    {"limit": 0}, {"limit": 1001}, {"limit": "ten"}, {"name": ""}, {"name": "x" * 201}, {"name": "a\x00b"},
])
async def test_accounts_list_refuses_bad_query_strings_with_400(client: httpx.AsyncClient, params: dict) -> None:
    r = await client.get("/api/admin/accounts", params=params)
    assert error_code(r, 400) in ("bad_cursor", "validation_failed", "invalid_input")


async def test_patch_account_changes_name_and_time_zone_and_is_audited(
    server: Running, client: httpx.AsyncClient
) -> None:
    account = await new_account(client, "Acme", "Europe/Berlin")

    r = await client.patch(f"/api/admin/accounts/{account['id']}", json={"name": "Acme GmbH"})
    assert r.status_code == 200, r.text
    assert r.json() == {**account, "name": "Acme GmbH"}
    r = await client.patch(f"/api/admin/accounts/{account['id']}", json={"timezone": "America/New_York"})
    assert r.json() == {**account, "name": "Acme GmbH", "timezone": "America/New_York"}

    assert (await client.get(f"/api/admin/accounts/{account['id']}")).json()["timezone"] == "America/New_York"
    assert await audit_actions(server, account["id"]) == ["account.create", "account.update", "account.update"]
    r = await client.patch(f"/api/admin/accounts/{account['id']}", json={})  # nothing to change: not audited
    assert r.status_code == 200 and r.json()["name"] == "Acme GmbH"
    assert len(await audit_actions(server, account["id"])) == 3


@pytest.mark.parametrize("body", [
    {"timezone": "Mars/Olympus_Mons"}, {"timezone": "x" * 10_000}, {"timezone": None}, {"timezone": 5},
    {"name": ""}, {"name": "x" * 201}, {"name": "a\x00b"}, {"name": None}, {"name": ["Acme"]},
    {"owner": "me"}, {"name": {"a": {"b": {"c": [[[[[]]]]]}}}},
])
async def test_patch_account_refuses_bad_bodies_with_400(client: httpx.AsyncClient, body: dict) -> None:
    account = await new_account(client, "Acme")

    r = await client.patch(f"/api/admin/accounts/{account['id']}", json=body)

    error_code(r, 400)
    assert (await client.get(f"/api/admin/accounts/{account['id']}")).json() == account


async def test_patch_or_delete_of_an_unknown_account_or_user_is_404(client: httpx.AsyncClient) -> None:
    assert error_code(await client.patch("/api/admin/accounts/acc_nobody", json={"name": "X"}), 404) == "not_found"
    assert error_code(await client.delete("/api/admin/accounts/acc_nobody"), 404) == "not_found"
    assert error_code(await client.delete("/api/admin/users/usr_nobody"), 404) == "not_found"
    async with admin_client(client.base_url.__str__(), token="wrong") as bad:
        assert (await bad.get("/api/admin/accounts")).status_code == 401
        assert (await bad.delete("/api/admin/users/usr_nobody")).status_code == 401


# -- scouts ---------------------------------------------------------------------------------------


async def wait_first_run(client: httpx.AsyncClient, scout_id: str) -> None:
    with trio.fail_after(10):
        while (await client.get(f"/api/admin/scouts/{scout_id}")).json()["last_run_at"] is None:
            await trio.sleep(0.02)


async def test_scouts_list_filters_by_user_provider_and_state_and_pages(
    server: Running, client: httpx.AsyncClient
) -> None:
    ann = await make_device(client)
    bob = await make_device(client, account=ann["account"], email="bob@example.com")
    slow = {"poll_interval_s": 86400}  # one run at creation, then none during the test
    a1, a2, a3 = [await make_push_scout(client, ann["user"]["id"], **slow) for _ in range(3)]
    b1, b2 = [await make_push_scout(client, bob["user"]["id"], **slow) for _ in range(2)]
    for scout in (a1, a2, a3, b1, b2):
        await wait_first_run(client, scout["id"])
    await push(client, a1["id"], ["m1", "m2", "win the lottery"])
    with trio.fail_after(10):  # triaged: 2 queued, the spam discarded
        while (counts := (await client.get(f"/api/admin/scouts/{a1['id']}")).json()["counts"])["pending"]:
            await trio.sleep(0.02)
    assert sum(counts.values()) == 3
    later = server.services.clock.now() + dt.timedelta(days=1)
    await scout_repo.finish_run(server.services.db, a2["id"], now=server.services.clock.now(), next_run_at=later,
                                paused=False, error="connection refused")
    await scout_repo.finish_run(server.services.db, b1["id"], now=server.services.clock.now(), next_run_at=later,
                                paused=True, error=None)
    assert (await client.patch(f"/api/admin/scouts/{b2['id']}", json={"enabled": False})).status_code == 200

    async def ids(**params: Any) -> list[str]:
        return [s["id"] for p in await all_pages(client, "/api/admin/scouts", **params) for s in p]

    pages = await all_pages(client, "/api/admin/scouts", limit=2)
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [s["id"] for p in pages for s in p] == [s["id"] for s in (a1, a2, a3, b1, b2)]
    assert {s["id"]: s["status"] for p in pages for s in p} == {
        a1["id"]: "active", a2["id"]: "failing", a3["id"]: "active", b1["id"]: "paused", b2["id"]: "disabled"}
    assert {s["id"]: s["counts"] for p in pages for s in p} == {
        a1["id"]: counts, **{s["id"]: dict.fromkeys(counts, 0) for s in (a2, a3, b1, b2)}}
    assert all(s["config"] == {} for p in pages for s in p)
    assert await ids(user_id=ann["user"]["id"], limit=1) == [a1["id"], a2["id"], a3["id"]]
    assert await ids(provider="push") == await ids()
    assert await ids(provider="imap") == []
    assert await ids(state="active") == [a1["id"], a3["id"]]
    assert await ids(state="failing") == [a2["id"]]
    assert await ids(state="paused") == [b1["id"]]
    assert await ids(state="disabled") == [b2["id"]]
    assert await ids(user_id=bob["user"]["id"], state="active") == []
    assert await ids(user_id=ann["user"]["id"], provider="push", state="active", limit=1) == [a1["id"], a3["id"]]


@pytest.mark.parametrize("params, status, code", [
    ({"state": "sleeping"}, 400, "validation_failed"),
    ({"state": "ACTIVE"}, 400, "validation_failed"),
    ({"provider": "nope"}, 400, "unknown_connector"),
    ({"provider": "x" * 65}, 400, "validation_failed"),
    ({"provider": "pu\x00sh"}, 400, "validation_failed"),
    ({"user_id": "usr_nobody"}, 404, "not_found"),
    ({"user_id": "x" * 65}, 400, "validation_failed"),
    ({"cursor": "not a cursor!"}, 400, "bad_cursor"),
    ({"cursor": "\x00"}, 400, "validation_failed"),
    ({"limit": -1}, 400, "validation_failed"),
])
async def test_scouts_list_refuses_bad_query_strings(
    client: httpx.AsyncClient, params: dict, status: int, code: str
) -> None:
    r = await client.get("/api/admin/scouts", params=params)
    assert error_code(r, status) in (code, "invalid_input")


# -- deleting -------------------------------------------------------------------------------------


def quiet_around_now(now: dt.datetime) -> dict[str, str]:
    return {"start": (now - dt.timedelta(hours=1)).strftime("%H:%M"),
            "end": (now + dt.timedelta(hours=1)).strftime("%H:%M")}


async def test_deleting_a_user_closes_its_live_socket_1008_and_erases_what_hangs_off_it(
    server: Running, client: httpx.AsyncClient
) -> None:
    db = server.services.db
    ann = await make_device(client, timezone="UTC", quiet_hours=quiet_around_now(server.services.clock.now()))
    bob = await make_device(client, account=ann["account"], email="bob@example.com")
    uid = ann["user"]["id"]
    scout = await make_push_scout(client, uid)
    assert (await client.post("/api/v1/watches", json={"user_id": uid, "topic": "rfc-1"})).status_code == 201
    r = await client.post("/api/v1/notifications", json={
        "recipient_user_id": uid, "event_kind": "mention", "topic": "rfc-1",
        "payload": {"category": "personal-direct"}, "email": True})
    assert r.status_code == 201, r.text
    [mail] = await db.fetch("SELECT status FROM outbox WHERE recipient_user_id = $1", uid)
    assert mail["status"] == "held"  # quiet hours
    r = await client.post("/api/v1/handoffs", json=handoff_body(ann["account"]["id"], uid))
    assert r.status_code == 201, r.text
    handoff = r.json()

    async with registered(server, ann["token"]) as ws, registered(server, bob["token"]) as other:
        r = await client.delete(f"/api/admin/users/{uid}")
        assert r.status_code == 200, r.text
        assert r.json() == ann["user"]
        assert await close_code(ws, timeout_s=1) == 1008
        with trio.move_on_after(0.3):  # the other user's socket stays open
            await close_code(other, timeout_s=1)
            pytest.fail("bob's socket was closed")

    for path in [f"/api/admin/users/{uid}", f"/api/admin/scouts/{scout['id']}", f"/api/admin/scouts?user_id={uid}",
                 f"/api/admin/devices?user_id={uid}"]:
        assert error_code(await client.get(path), 404) == "not_found", path
    assert error_code(await client.patch(f"/api/admin/users/{uid}", json={"active": True}), 404) == "not_found"
    assert error_code(await client.delete(f"/api/admin/users/{uid}"), 404) == "not_found"
    assert (await client.post("/api/admin/devices", json={"user_id": uid, "name": "x"})).status_code == 404
    assert (await client.get(f"/api/admin/devices/{ann['device']['id']}")).json()["revoked_at"] is not None
    async with admin_client(server.url, token=ann["token"]) as device:
        assert (await device.get("/api/device/me")).status_code == 401
    users = (await client.get("/api/admin/users", params={"account_id": ann["account"]["id"]})).json()["items"]
    assert [u["id"] for u in users] == [bob["user"]["id"]]
    for table, column in [("scouts", "user_id"), ("scout_items", "user_id"), ("watches", "user_id"),
                          ("notifications", "recipient_user_id"), ("digest_schedule", "user_id")]:
        assert await db.fetchval(f"SELECT COUNT(*) FROM {table} WHERE {column} = $1", uid) == 0, table
    [mail] = await db.fetch("SELECT status, last_error FROM outbox WHERE recipient_user_id = $1", uid)
    assert (mail["status"], mail["last_error"]) == ("failed", "recipient deleted")
    row = await db.fetchrow("SELECT email, display_name, active, deleted_at FROM users WHERE id = $1", uid)
    assert row["email"] == f"deleted-{uid}@invalid" and row["display_name"] == "" and not row["active"]
    assert row["deleted_at"] is not None
    # kept: the handoff it created (the account still has to handle it), and the audit log
    assert (await client.get(f"/api/v1/handoffs/{handoff['id']}")).json()["status"] == "open"
    assert "user.delete" in await audit_actions(server, uid)
    # the address can be used again
    r = await client.post("/api/admin/users", json={"account_id": ann["account"]["id"], "email": "ann@example.com",
                                                     "display_name": "Ann again"})
    assert r.status_code == 201, r.text


async def test_deleting_an_account_cancels_its_open_work_and_closes_every_socket_1008(
    server: Running, client: httpx.AsyncClient
) -> None:
    ann = await make_device(client)
    bob = await make_device(client, account=ann["account"], email="bob@example.com")
    other = await make_device(client, email="eve@example.com")  # another account: untouched
    aid = ann["account"]["id"]
    r = await client.post("/api/v1/handoffs", json=handoff_body(aid, ann["user"]["id"]))
    assert r.status_code == 201, r.text
    handoff = r.json()
    r = await client.post("/api/v1/outreach/batches", json={
        "account_id": aid, "created_by": ann["user"]["id"],
        "items": [{"to_handle": f"+1555000{i}", "body": "hi", "device_id": bob["device"]["id"]} for i in range(3)]})
    assert r.status_code == 201, r.text
    batch = r.json()
    assert (await client.post(f"/api/v1/outreach/batches/{batch['id']}/send")).status_code == 200
    r = await client.post("/api/v1/webhooks", json={"account_id": aid, "url": "http://127.0.0.1:9/hook",
                                                    "events": ["handoff.created"]})
    assert r.status_code == 201, r.text
    webhook = r.json()
    db = server.services.db
    async with db.transaction() as tx:
        assert await webhook_repo.add_deliveries(tx, account_id=aid, event="handoff.created", body="{}",
                                                 now=server.services.clock.now()) == 1

    async with (registered(server, ann["token"]) as ws_ann, registered(server, bob["token"]) as ws_bob,
                registered(server, other["token"]) as ws_other):
        r = await client.delete(f"/api/admin/accounts/{aid}")
        assert r.status_code == 200, r.text
        assert r.json() == ann["account"]
        assert await close_code(ws_ann, timeout_s=1) == 1008
        assert await close_code(ws_bob, timeout_s=1) == 1008
        with trio.move_on_after(0.3):
            await close_code(ws_other, timeout_s=1)
            pytest.fail("a socket of another account was closed")

    assert error_code(await client.get(f"/api/admin/accounts/{aid}"), 404) == "not_found"
    assert error_code(await client.patch(f"/api/admin/accounts/{aid}", json={"name": "X"}), 404) == "not_found"
    assert error_code(await client.delete(f"/api/admin/accounts/{aid}"), 404) == "not_found"
    assert error_code(await client.get("/api/admin/users", params={"account_id": aid}), 404) == "not_found"
    for user in (ann, bob):
        assert error_code(await client.get(f"/api/admin/users/{user['user']['id']}"), 404) == "not_found"
    listed = [a["id"] for p in await all_pages(client, "/api/admin/accounts") for a in p]
    assert listed == [other["account"]["id"]]
    r = await client.post("/api/admin/users", json={"account_id": aid, "email": "new@example.com",
                                                     "display_name": "New"})
    assert r.status_code == 404
    h = (await client.get(f"/api/v1/handoffs/{handoff['id']}")).json()
    assert h["status"] == "cancelled" and h["cancelled_by"] is None and h["cancelled_at"] is not None
    with trio.fail_after(5):  # items a device held end when the revoked devices are released
        while (b := (await client.get(f"/api/v1/outreach/batches/{batch['id']}")).json())["finished_at"] is None:
            await trio.sleep(0.02)
    assert b["status"] == "cancelled"
    items = (await client.get(f"/api/v1/outreach/batches/{batch['id']}/items")).json()["items"]
    assert {i["status"] for i in items} <= {"cancelled", "failed", "sent"}
    assert "account.delete" in await audit_actions(server, aid)
    assert error_code(await client.get(f"/api/v1/webhooks/{webhook['id']}"), 404) == "not_found"
    assert await db.fetchval("SELECT COUNT(*) FROM webhook_deliveries WHERE endpoint_id = $1", webhook["id"]) == 0
    r = await client.post("/api/v1/webhooks", json={"account_id": aid, "url": "http://127.0.0.1:9/hook",
                                                    "events": ["handoff.created"]})
    assert error_code(r, 400) == "missing_reference"  # as for an account that never existed
    r = await client.post("/api/v1/handoffs", json=handoff_body(aid, ann["user"]["id"]))
    assert error_code(r, 400) == "missing_reference"
    async with admin_client(server.url, token=other["token"]) as device:
        assert (await device.get("/api/device/me")).status_code == 200
