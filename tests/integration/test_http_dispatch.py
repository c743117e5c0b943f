"""Dispatch over HTTP and the WebSocket against a real server, on SQLite and PostgreSQL.

A WebSocket device answers every send_request; a polling device drains over HTTP; bad input on
every endpoint and frame answers 4xx / an error frame.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from roost.client import handshake, ws_url_from_http
from roost.serve import Running
from tests.support.server import admin_client, make_device, running_server


def items(n: int, device_id: str | None = None) -> list[dict[str, Any]]:
    return [{"to_handle": f"+1555{i:04d}", "body": f"hi {i}", **({"device_id": device_id} if device_id else {})}
            for i in range(n)]


async def create(client: httpx.AsyncClient, env: dict, n: int, **extra: Any) -> dict[str, Any]:
    r = await client.post("/api/v1/outreach/batches", json={
        "account_id": env["account"]["id"], "items": items(n, env["device"]["id"]),
        "created_by": env["user"]["id"], **extra})
    assert r.status_code == 201, r.text
    return r.json()


def assert_error(r: httpx.Response, status: int, code: str | None = None) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert list(body) == ["error"], body
    if code:
        assert body["error"]["code"] == code, body


async def wait_for_status(client: httpx.AsyncClient, batch_id: str, status: str) -> dict[str, Any]:
    with trio.fail_after(15):
        while True:
            batch = (await client.get(f"/api/v1/outreach/batches/{batch_id}")).json()
            if batch["status"] == status:
                return batch
            await trio.sleep(0.05)


async def test_a_websocket_device_gets_send_requests_and_its_results_finish_the_batch(
    server: Running, client: httpx.AsyncClient, env: dict
) -> None:
    seen: list[str] = []
    frames: list[dict] = []
    async with open_websocket_url(ws_url_from_http(server.url)) as ws:
        await handshake(ws, env["token"])
        batch = await create(client, env, 25)
        r = await client.post(f"/api/v1/outreach/batches/{batch['id']}/send")
        assert r.status_code == 200 and r.json()["status"] == "sending"
        with trio.fail_after(15):
            while True:
                frame = json.loads(await ws.get_message())
                frames.append(frame)
                if frame["type"] == "send_request":
                    seen.append(frame["id"])
                    assert set(frame) == {"type", "id", "to_handle", "body"}
                    await ws.send_message(json.dumps({"type": "send_result", "id": frame["id"], "status": "sent"}))
                if frame["type"] == "batch_done":
                    break
        # A repeated result is a silent no-op; a malformed one gets an error frame.
        await ws.send_message(json.dumps({"type": "send_result", "id": seen[0], "status": "sent"}))
        await ws.send_message(json.dumps({"type": "send_result", "id": seen[0], "status": "lost"}))
        assert json.loads(await ws.get_message())["code"] == "bad_frame"
        await ws.send_message(json.dumps({"type": "send_result", "id": seen[0], "status": "failed", "error": "x"}))
        assert json.loads(await ws.get_message())["code"] == "result_conflict"
        await ws.send_message(json.dumps({"type": "send_result", "id": "oit_unknown", "status": "sent"}))
        reply = json.loads(await ws.get_message())
        assert reply["code"] == "not_found" and reply["id"] == "oit_unknown"
        for bad in ({"type": "send_result"}, {"type": "send_result", "id": 5, "status": "sent"},
                    {"type": "send_result", "id": seen[0], "status": "sent", "extra": 1},
                    {"type": "send_result", "id": seen[0], "status": "failed", "error": 7}):
            await ws.send_message(json.dumps(bad))
            assert json.loads(await ws.get_message())["code"] == "bad_frame"
    assert len(seen) == 25 and len(set(seen)) == 25
    done = [f for f in frames if f["type"] == "batch_done"][0]
    assert done["batch"]["id"] == batch["id"] and done["batch"]["counts"]["sent"] == 25
    final = (await client.get(f"/api/v1/outreach/batches/{batch['id']}")).json()
    assert final["status"] == "done" and final["counts"]["sent"] == 25 and final["finished_at"]
    assert done["batch"]["next_send"] == final["next_send"] == {"at": None, "reason": "nothing_pending"}


async def test_a_reconnecting_device_is_offered_its_unanswered_items_again_with_the_same_ids(
    server: Running, client: httpx.AsyncClient, env: dict
) -> None:
    async with open_websocket_url(ws_url_from_http(server.url)) as ws:
        await handshake(ws, env["token"])
        batch = await create(client, env, 2)
        await client.post(f"/api/v1/outreach/batches/{batch['id']}/send")
        with trio.fail_after(10):
            first = [json.loads(await ws.get_message()) for _ in range(2)]
    async with open_websocket_url(ws_url_from_http(server.url)) as ws:
        await handshake(ws, env["token"])
        with trio.fail_after(10):
            again = [json.loads(await ws.get_message()) for _ in range(2)]
    assert [f["id"] for f in again] == [f["id"] for f in first]
    counts = (await client.get(f"/api/v1/outreach/batches/{batch['id']}")).json()["counts"]
    assert counts["dispatched"] == 2


async def test_a_polling_device_drains_over_http(server: Running, client: httpx.AsyncClient, env: dict) -> None:
    r = await client.put(f"/api/admin/accounts/{env['account']['id']}/outreach-settings",
                         json={"max_per_minute": 60})
    assert r.status_code == 200, r.text
    batch = await create(client, env, 70)
    await client.post(f"/api/v1/outreach/batches/{batch['id']}/send")
    async with admin_client(server.url, token=env["token"]) as device:
        first = (await device.get("/api/device/send-queue/pending")).json()
        second = (await device.get("/api/device/send-queue/pending")).json()
        third = (await device.get("/api/device/send-queue/pending")).json()
        for item in first["items"]:
            r = await device.post(f"/api/device/send-queue/{item['id']}/result", json={"status": "sent"})
            assert r.status_code == 200 and r.json()["status"] == "sent"
        r = await device.post(f"/api/device/send-queue/{first['items'][0]['id']}/result", json={"status": "sent"})
        assert r.status_code == 200  # the same result again: a no-op
        r = await device.post(f"/api/device/send-queue/{first['items'][0]['id']}/result",
                              json={"status": "failed", "error": "x"})
        assert_error(r, 409, "result_conflict")
    assert len(first["items"]) == 50 and len(second["items"]) == 10 and third["items"] == []
    assert third["retry_at"] is not None  # the minute's 60 are used up
    ids = [i["id"] for i in first["items"] + second["items"]]
    assert len(set(ids)) == 60
    counts = (await client.get(f"/api/v1/outreach/batches/{batch['id']}")).json()["counts"]
    assert counts["sent"] == 50 and counts["dispatched"] == 10 and counts["pending"] == 10


async def test_revoking_the_device_ends_its_open_items_so_the_batch_finishes(
    server: Running, client: httpx.AsyncClient, env: dict
) -> None:
    r = await client.post("/api/admin/devices", json={"user_id": env["user"]["id"], "name": "laptop"})
    assert r.status_code == 201, r.text
    laptop = r.json()
    r = await client.put(f"/api/admin/accounts/{env['account']['id']}/outreach-settings", json={"max_per_minute": 2})
    assert r.status_code == 200, r.text
    batch = await create(client, env, 5)
    await client.post(f"/api/v1/outreach/batches/{batch['id']}/send")
    async with admin_client(server.url, token=env["token"]) as device:
        taken = (await device.get("/api/device/send-queue/pending")).json()["items"]
        assert len(taken) == 2  # the minute's limit: 2 dispatched, 3 still pending
        r = await device.post(f"/api/device/send-queue/{taken[0]['id']}/result", json={"status": "sent"})
        assert r.status_code == 200
    async with open_websocket_url(ws_url_from_http(server.url)) as ws:
        await handshake(ws, laptop["token"])  # the creator's other device hears batch_done
        r = await client.delete(f"/api/admin/devices/{env['device']['id']}")
        assert r.status_code == 200 and r.json()["revoked_at"]
        with trio.fail_after(10):
            frame = json.loads(await ws.get_message())
            while frame["type"] != "batch_done":
                frame = json.loads(await ws.get_message())
    final = (await client.get(f"/api/v1/outreach/batches/{batch['id']}")).json()
    assert final["status"] == "done" and frame["batch"]["id"] == batch["id"]
    assert final["counts"] == {**final["counts"], "sent": 1, "failed": 1, "skipped": 3, "pending": 0,
                               "dispatched": 0}
    listed = (await client.get(f"/api/v1/outreach/batches/{batch['id']}/items")).json()["items"]
    reasons = {i["status"]: i["reason"] for i in listed if i["status"] in ("failed", "skipped")}
    assert "may have been sent" in reasons["failed"] and "revoked" in reasons["skipped"]


async def test_deactivating_the_user_ends_the_open_items_of_every_device_of_theirs(
    server: Running, client: httpx.AsyncClient, env: dict
) -> None:
    batch = await create(client, env, 3)
    await client.post(f"/api/v1/outreach/batches/{batch['id']}/send")
    r = await client.patch(f"/api/admin/users/{env['user']['id']}", json={"active": False})
    assert r.status_code == 200, r.text
    final = (await client.get(f"/api/v1/outreach/batches/{batch['id']}")).json()
    assert final["status"] == "done" and final["counts"]["skipped"] == 3


async def test_a_draft_whose_device_is_revoked_stays_a_draft_until_sent(
    server: Running, client: httpx.AsyncClient, env: dict
) -> None:
    batch = await create(client, env, 3)
    r = await client.delete(f"/api/admin/devices/{env['device']['id']}")
    assert r.status_code == 200, r.text
    draft = (await client.get(f"/api/v1/outreach/batches/{batch['id']}")).json()
    assert draft["status"] == "draft" and draft["counts"]["skipped"] == 3 and draft["finished_at"] is None
    r = await client.post(f"/api/v1/outreach/batches/{batch['id']}/send")
    assert r.status_code == 200, r.text
    final = (await client.get(f"/api/v1/outreach/batches/{batch['id']}")).json()
    assert final["status"] == "done" and final["finished_at"] is not None


async def test_the_pruners_sweep_ends_items_of_a_device_revoked_without_the_release(server: Running,
                                                                                    client: httpx.AsyncClient,
                                                                                    env: dict) -> None:
    # As after a crash between the revocation's commit and the release: only the sweep is left.
    from roost.actors.dispatcher import dead_device_sweep
    from roost.storage import tenancy

    s = server.services
    batch = await create(client, env, 4)
    await client.post(f"/api/v1/outreach/batches/{batch['id']}/send")
    await tenancy.revoke_device(s.db, env["device"]["id"], now=s.clock.now(), actor="test")
    assert (await client.get(f"/api/v1/outreach/batches/{batch['id']}")).json()["status"] == "sending"
    assert await dead_device_sweep().run(s, s.clock.now()) == 1
    assert await dead_device_sweep().run(s, s.clock.now()) == 0  # idempotent
    final = (await client.get(f"/api/v1/outreach/batches/{batch['id']}")).json()
    assert final["status"] == "done" and final["counts"]["skipped"] == 4


async def test_results_for_another_devices_item_are_404_and_for_an_undispatched_item_409(
    server: Running, client: httpx.AsyncClient, env: dict
) -> None:
    other = await make_device(client, account=env["account"], email="bob@example.com")
    batch = await create(client, env, 1)
    item_id = (await client.get(f"/api/v1/outreach/batches/{batch['id']}/items")).json()["items"][0]["id"]
    async with admin_client(server.url, token=env["token"]) as mine, \
            admin_client(server.url, token=other["token"]) as theirs:
        assert_error(await mine.post(f"/api/device/send-queue/{item_id}/result", json={"status": "sent"}),
                     409, "not_dispatched")
        assert_error(await theirs.post(f"/api/device/send-queue/{item_id}/result", json={"status": "sent"}),
                     404, "not_found")
        assert_error(await mine.post(f"/api/device/send-queue/{item_id}/result", json={"status": "maybe"}), 400)
        assert_error(await mine.post(f"/api/device/send-queue/{item_id}/result", json={"status": "sent", "x": 1}),
                     400)
        assert_error(await mine.post(f"/api/device/send-queue/{item_id}/result", content=b"{", headers={
            "Content-Type": "application/json"}), 400)
    async with admin_client(server.url, token="rdt_wrong") as nobody:
        assert_error(await nobody.get("/api/device/send-queue/pending"), 401)
        assert_error(await nobody.post(f"/api/device/send-queue/{item_id}/result", json={"status": "sent"}), 401)


async def test_settings_round_trip_and_bad_settings_are_400(client: httpx.AsyncClient, env: dict) -> None:
    url = f"/api/admin/accounts/{env['account']['id']}/outreach-settings"
    defaults = (await client.get(url)).json()
    assert defaults["paused"] is False and defaults["timezone"] == "Europe/Berlin"
    assert defaults["max_per_minute"] is None and defaults["min_gap_seconds"] == 0
    body = {"paused": True, "quiet_hours": {"start": "22:00", "end": "07:00"}, "timezone": "America/New_York",
            "max_per_minute": 5, "max_per_hour": 100, "max_per_day": None, "min_gap_seconds": 1.5}
    r = await client.put(url, json=body)
    assert r.status_code == 200, r.text
    assert {k: r.json()[k] for k in body} == body
    for bad in ({"max_per_minute": 0}, {"max_per_hour": -1}, {"max_per_day": 1.5}, {"min_gap_seconds": -1},
                {"quiet_hours": {"start": "25:00", "end": "07:00"}}, {"quiet_hours": {"start": "7:00", "end": "8"}},
                {"quiet_hours": {"start": "07:00", "end": "07:00"}}, {"timezone": "Mars/Olympus"},
                {"paused": "yes"}, {"max_per_minute": "5"}, {"unknown": 1}):
        assert_error(await client.put(url, json=bad), 400)
    assert_error(await client.put("/api/admin/accounts/acc_nope/outreach-settings", json={}), 404)
    assert_error(await client.get("/api/admin/accounts/acc_nope/outreach-settings"), 404)
    async with admin_client(str(client.base_url), token=None) as anonymous:
        assert_error(await anonymous.get(url), 401)


async def test_batch_endpoints_validate_and_follow_the_state_machine(client: httpx.AsyncClient, env: dict) -> None:
    account = env["account"]["id"]
    dry = await client.post("/api/v1/outreach/batches", json={"account_id": account, "items": items(2),
                                                               "dry_run": True})
    assert dry.status_code == 200, dry.text
    assert [i["device_id"] for i in dry.json()["items"]] == [env["device"]["id"]] * 2
    assert (await client.get(f"/api/v1/outreach/batches/{'x'}")).status_code == 404
    batch = await create(client, env, 3, idempotency_key="abc")
    replay = await client.post("/api/v1/outreach/batches", json={
        "account_id": account, "items": items(3, env["device"]["id"]), "created_by": env["user"]["id"],
        "idempotency_key": "abc"})
    assert replay.status_code == 201 and replay.json()["id"] == batch["id"]
    assert replay.headers["Idempotent-Replayed"] == "true"
    reused = await client.post("/api/v1/outreach/batches", json={"account_id": account, "items": items(1),
                                                                  "idempotency_key": "abc"})
    assert_error(reused, 409, "idempotency_key_reused")
    bid = batch["id"]
    assert batch["status"] == "draft" and batch["counts"]["pending"] == 3
    assert_error(await client.post(f"/api/v1/outreach/batches/{bid}/pause"), 409, "invalid_batch_state")
    assert_error(await client.post(f"/api/v1/outreach/batches/{bid}/resume"), 409)
    assert (await client.post(f"/api/v1/outreach/batches/{bid}/send")).json()["status"] == "sending"
    assert (await client.post(f"/api/v1/outreach/batches/{bid}/pause")).json()["status"] == "paused"
    assert (await client.post(f"/api/v1/outreach/batches/{bid}/pause")).json()["status"] == "paused"
    assert (await client.post(f"/api/v1/outreach/batches/{bid}/resume")).json()["status"] == "sending"
    cancelled = (await client.post(f"/api/v1/outreach/batches/{bid}/cancel")).json()
    assert cancelled["status"] == "cancelled" and cancelled["counts"]["cancelled"] == 3
    assert_error(await client.post(f"/api/v1/outreach/batches/{bid}/send"), 409)
    for action in ("send", "pause", "resume", "cancel"):
        assert_error(await client.post(f"/api/v1/outreach/batches/obt_nope/{action}"), 404)
    page = (await client.get(f"/api/v1/outreach/batches/{bid}/items?limit=2")).json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    rest = (await client.get(f"/api/v1/outreach/batches/{bid}/items?cursor={page['next_cursor']}")).json()
    assert len(rest["items"]) == 1 and rest["next_cursor"] is None
    assert_error(await client.get(f"/api/v1/outreach/batches/{bid}/items?limit=0"), 400)


@pytest.mark.parametrize("body", [
    {},
    {"account_id": "x", "items": []},
    {"account_id": "x", "items": [{"to_handle": "", "body": "b"}]},
    {"account_id": "x", "items": [{"to_handle": "a", "body": ""}]},
    {"account_id": "x", "items": [{"to_handle": "a", "body": "b", "extra": 1}]},
    {"account_id": "x", "items": "nope"},
    {"account_id": "x", "items": [{"to_handle": "a", "body": "b"}], "dry_run": "true"},
    {"account_id": "x", "items": [{"to_handle": "a", "body": "b"}], "idempotency_key": ""},
    {"account_id": 5, "items": [{"to_handle": "a", "body": "b"}]},
])
async def test_bad_batch_bodies_are_400(client: httpx.AsyncClient, body: dict) -> None:
    assert_error(await client.post("/api/v1/outreach/batches", json=body), 400)


async def test_batch_references_are_checked(client: httpx.AsyncClient, env: dict) -> None:
    account = env["account"]["id"]
    assert_error(await client.post("/api/v1/outreach/batches", json={"account_id": "acc_nope", "items": items(1)}),
                 404)
    other = await make_device(client)  # another account
    r = await client.post("/api/v1/outreach/batches", json={"account_id": account,
                                                             "items": items(1, other["device"]["id"])})
    assert_error(r, 400)
    r = await client.post("/api/v1/outreach/batches", json={"account_id": account, "items": items(1),
                                                             "created_by": other["user"]["id"]})
    assert_error(r, 400)


async def test_a_polling_device_that_never_reports_gets_an_item_max_offers_times_then_it_fails_no_result(
    database_url: str,
) -> None:
    lease_s = 0.3
    async with running_server(database_url, dispatch_lease_s=lease_s, dispatch_max_offers=3) as server, \
            admin_client(server.url) as client:
        env = await make_device(client)
        batch = await create(client, env, 1)
        await client.post(f"/api/v1/outreach/batches/{batch['id']}/send")
        offered: list[str] = []
        async with admin_client(server.url, token=env["token"]) as device:
            for _ in range(20):
                r = await device.get("/api/device/send-queue/pending")
                assert r.status_code == 200, r.text
                offered += [i["id"] for i in r.json()["items"]]
                if (await client.get(f"/api/v1/outreach/batches/{batch['id']}")).json()["status"] == "done":
                    break
                await trio.sleep(lease_s + 0.05)  # the lease runs out unanswered
            late = await device.post(f"/api/device/send-queue/{offered[0]}/result", json={"status": "sent"})
        final = (await client.get(f"/api/v1/outreach/batches/{batch['id']}")).json()
        item = await server.services.db.fetchrow("SELECT status, reason, offers FROM outreach_items")
    assert len(offered) == 3 and len(set(offered)) == 1  # the same id, offered three times
    assert final["status"] == "done" and final["counts"]["failed"] == 1
    assert item == {"status": "failed", "reason": "no_result", "offers": 3}
    assert_error(late, 409, "result_conflict")  # a result after the item failed is refused, not lost silently
