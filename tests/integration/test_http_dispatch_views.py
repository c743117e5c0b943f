"""Issue 19's dispatch additions over HTTP against a real server, on SQLite and PostgreSQL: items'
``created_at``/``updated_at``, an operator's view of a device's send queue, one message without a
batch (to a polling and to a WebSocket device), a batch's ``next_send``, the list of batches, and
bad input on each.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, AsyncIterator

import httpx
import pytest
import trio

from roost.serve import Running
from tests.support.dispatch import answering_device
from tests.support.server import admin_client, make_device, running_server


@pytest.fixture
async def server(database_url: str) -> AsyncIterator[Running]:
    async with running_server(database_url, dispatch_lease_s=0.5) as running:
        yield running


def ts(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


def assert_error(r: httpx.Response, status: int, code: str | None = None) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert list(body) == ["error"], body
    if code:
        assert body["error"]["code"] == code, body


async def create_batch(client: httpx.AsyncClient, account_id: str, items: list[dict], *, send: bool = False
                       ) -> dict[str, Any]:
    r = await client.post("/api/v1/outreach/batches", json={"account_id": account_id, "items": items})
    assert r.status_code == 201, r.text
    if send:
        r = await client.post(f"/api/v1/outreach/batches/{r.json()['id']}/send")
        assert r.status_code == 200, r.text
    await trio.sleep(0.002)  # the next id is in a later millisecond: ids order by time
    return r.json()


def to(device: dict, n: int, start: int = 0) -> list[dict]:
    return [{"to_handle": f"+1555{i:04d}", "body": f"hi {i}", "device_id": device["id"]}
            for i in range(start, start + n)]


async def poll(server: Running, token: str) -> list[dict[str, Any]]:
    async with admin_client(server.url, token=token) as device:
        r = await device.get("/api/device/send-queue/pending")
        assert r.status_code == 200, r.text
        return r.json()["items"]


async def items_of(client: httpx.AsyncClient, batch_id: str) -> dict[str, dict[str, Any]]:
    r = await client.get(f"/api/v1/outreach/batches/{batch_id}/items")
    assert r.status_code == 200, r.text
    return {i["id"]: i for i in r.json()["items"]}


# -- created_at / updated_at -----------------------------------------------------------------------


async def test_items_and_the_pending_list_carry_created_at_and_an_updated_at_that_moves_with_each_write(
    server: Running, client: httpx.AsyncClient, env: dict
) -> None:
    batch = await create_batch(client, env["account"]["id"], to(env["device"], 2), send=True)
    created = await items_of(client, batch["id"])
    assert all(i["created_at"] == i["updated_at"] for i in created.values())

    await trio.sleep(0.01)
    pulled = await poll(server, env["token"])
    assert {p["id"] for p in pulled} == set(created)
    for p in pulled:
        assert set(p) == {"id", "batch_id", "to_handle", "body", "created_at", "updated_at"}
        assert p["created_at"] == created[p["id"]]["created_at"] and ts(p["updated_at"]) > ts(p["created_at"])
    dispatched = await items_of(client, batch["id"])
    assert all(dispatched[p["id"]]["updated_at"] == p["updated_at"] for p in pulled)  # the claim's own time

    await trio.sleep(0.6)  # the 0.5 s lease runs out: offered again with the same id
    again = await poll(server, env["token"])
    assert {p["id"] for p in again} == set(created)
    reoffered = await items_of(client, batch["id"])
    for item_id, item in reoffered.items():
        assert item["offers"] == 2 and ts(item["updated_at"]) > ts(dispatched[item_id]["updated_at"])
        assert ts(item["lease_until"]) > ts(dispatched[item_id]["lease_until"])

    first = pulled[0]["id"]
    async with admin_client(server.url, token=env["token"]) as device:
        r = await device.post(f"/api/device/send-queue/{first}/result", json={"status": "sent"})
        assert r.status_code == 200, r.text
    final = await items_of(client, batch["id"])
    assert final[first]["status"] == "sent" and final[first]["updated_at"] == r.json()["result_at"]
    assert ts(final[first]["updated_at"]) > ts(reoffered[first]["updated_at"])
    other = next(i for i in final if i != first)
    assert final[other]["updated_at"] == reoffered[other]["updated_at"]  # untouched rows keep theirs


async def test_cancelling_moves_updated_at_of_the_items_it_cancels(client: httpx.AsyncClient, env: dict) -> None:
    batch = await create_batch(client, env["account"]["id"], to(env["device"], 2))
    before = await items_of(client, batch["id"])
    await trio.sleep(0.01)
    assert (await client.post(f"/api/v1/outreach/batches/{batch['id']}/cancel")).status_code == 200
    after = await items_of(client, batch["id"])
    assert all(i["status"] == "cancelled" and ts(i["updated_at"]) > ts(before[k]["updated_at"])
               for k, i in after.items())


# -- an operator's view of a device's queue --------------------------------------------------------


async def test_the_admin_view_lists_a_devices_items_in_queue_order_with_status_offers_lease_and_times(
    server: Running, client: httpx.AsyncClient, env: dict
) -> None:
    account = env["account"]["id"]
    laptop = await make_device(client, account=env["account"], email="bob@example.com")
    first = await create_batch(client, account, to(env["device"], 3) + to(laptop["device"], 2, start=3), send=True)
    r = await client.post("/api/v1/outreach/messages", json={"to_handle": "+1999", "body": "one",
                                                             "device_id": env["device"]["id"]})
    assert r.status_code == 201, r.text
    message = r.json()
    view = f"/api/admin/devices/{env['device']['id']}/send-queue"

    whole = (await client.get(view)).json()
    assert whole["next_cursor"] is None
    assert [(i["batch_id"], i["seq"]) for i in whole["items"]] == [
        (first["id"], 0), (first["id"], 1), (first["id"], 2), (message["batch_id"], 0)]
    assert all(i["device_id"] == env["device"]["id"] and i["status"] == "pending" and i["offers"] == 0
               and i["lease_until"] is None and i["created_at"] and i["updated_at"] for i in whole["items"])

    pages, cursor = [], None
    while True:
        r = await client.get(view, params={"limit": 3, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        pages.append([i["id"] for i in r.json()["items"]])
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert pages == [[i["id"] for i in whole["items"][:3]], [whole["items"][3]["id"]]]

    await poll(server, env["token"])
    held = (await client.get(view, params={"status": "dispatched"})).json()["items"]
    assert len(held) == 4
    assert all(i["offers"] == 1 and i["lease_until"] and i["dispatched_at"] for i in held)
    assert (await client.get(view, params={"status": "pending"})).json()["items"] == []
    laptops = (await client.get(f"/api/admin/devices/{laptop['device']['id']}/send-queue")).json()["items"]
    assert [(i["seq"], i["status"]) for i in laptops] == [(3, "pending"), (4, "pending")]


@pytest.mark.parametrize(("query", "status", "code"), [
    ({"status": "queued"}, 400, None),
    ({"status": "pending\x00"}, 400, None),
    ({"cursor": "!!"}, 400, "bad_cursor"),
    ({"cursor": "obt_only"}, 400, "bad_cursor"),
    ({"cursor": "obt_x.12a"}, 400, "bad_cursor"),
    ({"cursor": "obt_x.²"}, 400, "bad_cursor"),
    ({"cursor": "obt_x.1234567890123456789"}, 400, "bad_cursor"),
    ({"cursor": "a\x00.1"}, 400, None),
    ({"cursor": "x" * 500}, 400, None),
    ({"limit": "0"}, 400, None),
    ({"limit": "1001"}, 400, None),
    ({"limit": "ten"}, 400, None),
])
async def test_bad_queries_of_the_admin_view_are_400(client: httpx.AsyncClient, env: dict, query: dict,
                                                     status: int, code: str | None) -> None:
    assert_error(await client.get(f"/api/admin/devices/{env['device']['id']}/send-queue", params=query), status, code)


async def test_the_admin_view_of_an_unknown_device_is_404_and_needs_the_service_token(
    server: Running, client: httpx.AsyncClient, env: dict
) -> None:
    assert_error(await client.get("/api/admin/devices/dev_nope/send-queue"), 404)
    assert_error(await client.get("/api/admin/devices/dev%00x/send-queue"), 404)
    async with admin_client(server.url, token=env["token"]) as device:  # a device token is not enough
        assert_error(await device.get(f"/api/admin/devices/{env['device']['id']}/send-queue"), 401)


# -- one message without a batch -------------------------------------------------------------------


async def test_a_single_message_reaches_a_polling_device_and_its_result_finishes_it(
    server: Running, client: httpx.AsyncClient, env: dict
) -> None:
    r = await client.post("/api/v1/outreach/messages", json={
        "to_handle": "+15550001", "body": "hello", "device_id": env["device"]["id"], "idempotency_key": "k1"})
    assert r.status_code == 201, r.text
    assert r.headers["Idempotent-Replayed"] == "false"
    item = r.json()
    assert item["id"].startswith("oit_") and item["status"] == "pending" and item["device_id"] == env["device"]["id"]
    assert item["created_at"] == item["updated_at"] and (item["to_handle"], item["body"]) == ("+15550001", "hello")

    again = await client.post("/api/v1/outreach/messages", json={
        "to_handle": "+15550001", "body": "hello", "device_id": env["device"]["id"], "idempotency_key": "k1"})
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == item["id"]
    assert_error(await client.post("/api/v1/outreach/messages", json={
        "to_handle": "+15550001", "body": "other", "device_id": env["device"]["id"], "idempotency_key": "k1"}),
        409, "idempotency_key_reused")

    pulled = await poll(server, env["token"])
    assert [(p["id"], p["body"]) for p in pulled] == [(item["id"], "hello")]
    async with admin_client(server.url, token=env["token"]) as device:
        r = await device.post(f"/api/device/send-queue/{item['id']}/result", json={"status": "sent"})
        assert r.status_code == 200, r.text
    batch = (await client.get(f"/api/v1/outreach/batches/{item['batch_id']}")).json()
    assert batch["status"] == "done" and batch["total_items"] == 1 and batch["counts"]["sent"] == 1
    assert batch["created_by"] == env["user"]["id"] and batch["next_send"] == {"at": None, "reason": "nothing_pending"}


async def test_a_single_message_from_a_user_reaches_their_websocket_device(
    server: Running, client: httpx.AsyncClient, env: dict
) -> None:
    seen: list[str] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(answering_device, server.url, env["token"], seen)
        r = await client.post("/api/v1/outreach/messages", json={
            "to_handle": "+15550002", "body": "hi there", "user_id": env["user"]["id"]})
        assert r.status_code == 201, r.text
        item = r.json()
        assert item["device_id"] == env["device"]["id"]  # the user's most recently seen live device
        with trio.fail_after(15):
            while True:  # polling the API, as an app would
                if (await client.get(f"/api/v1/outreach/batches/{item['batch_id']}")).json()["status"] == "done":
                    break
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    assert seen == [item["id"]]
    sent = await items_of(client, item["batch_id"])
    assert sent[item["id"]]["status"] == "sent" and ts(sent[item["id"]]["updated_at"]) > ts(item["created_at"])


@pytest.mark.parametrize("body", [
    {"to_handle": "+1", "body": "x"},  # neither device_id nor user_id
    {"to_handle": "+1", "body": "x", "device_id": "dev_a", "user_id": "usr_a"},  # both
    {"to_handle": "+1", "body": "x", "device_id": None, "user_id": None},
    {"to_handle": "", "body": "x", "device_id": "dev_a"},
    {"to_handle": "+1", "body": "", "device_id": "dev_a"},
    {"to_handle": "+1" * 200, "body": "x", "device_id": "dev_a"},
    {"to_handle": "+1", "body": "x\x00y", "device_id": "dev_a"},
    {"to_handle": "+1\x00", "body": "x", "device_id": "dev_a"},
    {"to_handle": "+1", "body": "x", "device_id": "dev\x00a"},
    {"to_handle": "+1", "body": "x", "device_id": "d" * 65},
    {"to_handle": "+1", "body": 5, "device_id": "dev_a"},
    {"to_handle": "+1", "body": {"a": [[[[["deep"]]]]]}, "device_id": "dev_a"},
    {"to_handle": "+1", "body": "x", "device_id": 7},
    {"to_handle": "+1", "body": "x", "device_id": "dev_a", "extra": True},
    {"to_handle": "+1", "body": "x", "device_id": "dev_a", "idempotency_key": ""},
    [],
])
async def test_bad_single_message_bodies_are_400(client: httpx.AsyncClient, body: Any) -> None:
    assert_error(await client.post("/api/v1/outreach/messages", json=body), 400)


async def test_single_message_bodies_too_long_are_400_and_over_the_request_limit_413(client: httpx.AsyncClient,
                                                                                       env: dict) -> None:
    device_id = env["device"]["id"]
    r = await client.post("/api/v1/outreach/messages", json={"to_handle": "+1", "body": "x" * 10_001,
                                                             "device_id": device_id})
    assert_error(r, 400, "body_too_long")
    r = await client.post("/api/v1/outreach/messages", json={"to_handle": "+1", "body": "x" * (2 << 20),
                                                             "device_id": device_id})
    assert_error(r, 413)
    r = await client.post("/api/v1/outreach/messages", content=b"{not json",
                          headers={"Content-Type": "application/json"})
    assert_error(r, 400)


async def test_single_message_senders_are_checked_404_for_unknown_or_another_accounts_409_for_dead(
    client: httpx.AsyncClient, env: dict
) -> None:
    other = await make_device(client)  # another account
    mine, theirs = env["account"]["id"], other["account"]["id"]

    def message(**sender: str) -> dict:
        return {"to_handle": "+1", "body": "x", **sender}

    assert_error(await client.post("/api/v1/outreach/messages", json=message(device_id="dev_nope")), 404)
    assert_error(await client.post("/api/v1/outreach/messages", json=message(user_id="usr_nope")), 404)
    r = await client.post("/api/v1/outreach/messages", json=message(device_id=other["device"]["id"], account_id=mine))
    assert_error(r, 404)
    r = await client.post("/api/v1/outreach/messages", json=message(user_id=other["user"]["id"], account_id=mine))
    assert_error(r, 404)
    r = await client.post("/api/v1/outreach/messages", json=message(device_id=env["device"]["id"], account_id=theirs))
    assert_error(r, 404)
    r = await client.post("/api/v1/outreach/messages", json=message(device_id=env["device"]["id"], account_id=mine))
    assert r.status_code == 201 and r.json()["device_id"] == env["device"]["id"]

    assert (await client.delete(f"/api/admin/devices/{other['device']['id']}")).status_code == 200
    assert_error(await client.post("/api/v1/outreach/messages", json=message(device_id=other["device"]["id"])),
                 409, "no_live_device")
    assert_error(await client.post("/api/v1/outreach/messages", json=message(user_id=other["user"]["id"])),
                 409, "no_live_device")  # the user's only device is revoked
    assert (await client.patch(f"/api/admin/users/{env['user']['id']}", json={"active": False})).status_code == 200
    assert_error(await client.post("/api/v1/outreach/messages", json=message(user_id=env["user"]["id"])),
                 409, "no_live_device")
    # Nothing was stored for the refused ones: the account has the one message above.
    listed = (await client.get("/api/v1/outreach/batches", params={"account_id": theirs})).json()
    assert listed["items"] == []


# -- next_send over HTTP ---------------------------------------------------------------------------


async def test_a_batchs_next_send_names_the_full_minute_window_and_then_the_pause(
    server: Running, client: httpx.AsyncClient, env: dict
) -> None:
    account = env["account"]["id"]
    r = await client.put(f"/api/admin/accounts/{account}/outreach-settings", json={"max_per_minute": 1})
    assert r.status_code == 200, r.text
    draft = await create_batch(client, account, to(env["device"], 1))
    assert (await client.get(f"/api/v1/outreach/batches/{draft['id']}")).json()["next_send"] == {
        "at": None, "reason": "draft"}

    r = await client.post("/api/v1/outreach/messages", json={"to_handle": "+1", "body": "a",
                                                             "device_id": env["device"]["id"]})
    first = r.json()
    assert [p["id"] for p in await poll(server, env["token"])] == [first["id"]]
    dispatched_at = ts((await items_of(client, first["batch_id"]))[first["id"]]["dispatched_at"])
    r = await client.post("/api/v1/outreach/messages", json={"to_handle": "+2", "body": "b",
                                                             "device_id": env["device"]["id"]})
    second = r.json()
    next_send = (await client.get(f"/api/v1/outreach/batches/{second['batch_id']}")).json()["next_send"]
    assert next_send["reason"] == "window:minute"
    assert ts(next_send["at"]) == dispatched_at + dt.timedelta(seconds=60)

    r = await client.put(f"/api/admin/accounts/{account}/outreach-settings", json={"paused": True})
    assert r.status_code == 200, r.text
    assert (await client.get(f"/api/v1/outreach/batches/{second['batch_id']}")).json()["next_send"] == {
        "at": None, "reason": "paused"}


# -- listing batches -------------------------------------------------------------------------------


async def test_batches_are_listed_oldest_first_by_account_and_status_in_pages(client: httpx.AsyncClient,
                                                                               env: dict) -> None:
    other = await make_device(client)
    mine = env["account"]["id"]
    draft = await create_batch(client, mine, to(env["device"], 2))
    sending = await create_batch(client, mine, to(env["device"], 3), send=True)
    cancelled = await create_batch(client, mine, to(env["device"], 1))
    assert (await client.post(f"/api/v1/outreach/batches/{cancelled['id']}/cancel")).status_code == 200
    theirs = await create_batch(client, other["account"]["id"], to(other["device"], 1))

    listed = (await client.get("/api/v1/outreach/batches", params={"account_id": mine})).json()
    assert [b["id"] for b in listed["items"]] == [draft["id"], sending["id"], cancelled["id"]]
    assert listed["next_cursor"] is None
    by_id = {b["id"]: b for b in listed["items"]}
    assert by_id[sending["id"]]["counts"]["pending"] == 3 and by_id[sending["id"]]["status"] == "sending"
    assert by_id[cancelled["id"]]["counts"]["cancelled"] == 1 and by_id[draft["id"]]["total_items"] == 2

    page1 = (await client.get("/api/v1/outreach/batches", params={"account_id": mine, "limit": 2})).json()
    page2 = (await client.get("/api/v1/outreach/batches",
                              params={"account_id": mine, "limit": 2, "cursor": page1["next_cursor"]})).json()
    assert [b["id"] for b in page1["items"] + page2["items"]] == [draft["id"], sending["id"], cancelled["id"]]
    assert page1["next_cursor"] and page2["next_cursor"] is None

    async def listed_ids(**query: Any) -> list[str]:
        r = await client.get("/api/v1/outreach/batches", params=query)
        assert r.status_code == 200, r.text
        return [b["id"] for b in r.json()["items"]]

    assert await listed_ids(account_id=mine, status="draft") == [draft["id"]]
    assert await listed_ids(account_id=mine, status="cancelled") == [cancelled["id"]]
    assert await listed_ids(account_id=mine, status="done") == []
    assert await listed_ids(status="draft") == [draft["id"], theirs["id"]]
    assert await listed_ids() == [draft["id"], sending["id"], cancelled["id"], theirs["id"]]


@pytest.mark.parametrize(("query", "status", "code"), [
    ({"status": "finished"}, 400, None),
    ({"status": ""}, 400, None),
    ({"account_id": "acc_nope"}, 404, None),
    ({"account_id": "a\x00b"}, 400, None),
    ({"account_id": "a" * 65}, 400, None),
    ({"cursor": "!!"}, 400, "bad_cursor"),
    ({"cursor": "obt\x00"}, 400, None),
    ({"limit": "0"}, 400, None),
    ({"limit": "100000"}, 400, None),
])
async def test_bad_batch_list_queries_are_4xx(client: httpx.AsyncClient, query: dict, status: int,
                                              code: str | None) -> None:
    assert_error(await client.get("/api/v1/outreach/batches", params=query), status, code)
