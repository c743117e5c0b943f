"""The deliverer end to end: a real server, real trio-websocket clients, both storage backends."""

from __future__ import annotations

from contextlib import AsyncExitStack

import trio

from tests.support.scouting import connect, make_push_scout, push
from tests.support.server import admin_client, make_device, running_server


async def _status_of(client, scout_id: str, status: str) -> list[str]:
    r = await client.get(f"/api/admin/scouts/{scout_id}/items", params={"status": status})
    assert r.status_code == 200, r.text
    return [i["source_msg_ref"] for i in r.json()["items"]]


async def _wait_status(client, scout_id: str, status: str, n: int) -> list[str]:
    with trio.fail_after(10):
        while True:  # polling the HTTP API, as an app would
            refs = await _status_of(client, scout_id, status)
            if len(refs) >= n:
                return refs
            await trio.sleep(0.02)


async def test_backlog_live_ack_and_redelivery_of_unacked(database_url):
    async with running_server(database_url) as srv, admin_client(srv.url) as client, AsyncExitStack() as stack:
        ann = await make_device(client)
        scout = await make_push_scout(client, ann["user"]["id"])
        await push(client, scout["id"], ["m1", "m2", "spam1"], body="hello")
        await push(client, scout["id"], ["spam1"], body="you won the lottery")  # seen before: ignored
        await _wait_status(client, scout["id"], "queued", 3)

        first = await connect(srv.url, ann["token"], stack)
        backlog = await first.proposals(3)
        assert [p["source_msg_ref"] for p in backlog] == ["m1", "m2", "spam1"]
        assert set(backlog[0]) == {"id", "scout_id", "source_type", "source_msg_ref", "raw_subject",
                                   "raw_snippet", "category", "payload"}
        assert backlog[0]["raw_subject"] == "subject m1" and backlog[0]["raw_snippet"] == "hello"
        await first.ack(backlog[0]["id"])
        await first.ack(backlog[0]["id"])  # a repeated ack is a no-op
        await _wait_status(client, scout["id"], "acked", 1)

        await push(client, scout["id"], ["live1"])
        (live,) = await first.proposals(1)
        assert live["source_msg_ref"] == "live1"
        await first.ack(live["id"])
        await first.nothing_more(0.3)
        await first.ws.aclose()

        # unacked ones come again on a new registration, with the same ids; acked ones never
        second = await connect(srv.url, ann["token"], stack)
        again = await second.proposals(2)
        assert [p["id"] for p in again] == [p["id"] for p in backlog[1:]]
        await second.nothing_more(0.3)


async def test_spam_is_discarded_with_reason_and_body_erased(database_url):
    async with running_server(database_url) as srv, admin_client(srv.url) as client:
        ann = await make_device(client)
        scout = await make_push_scout(client, ann["user"]["id"])
        await push(client, scout["id"], ["s1"], body="claim your lottery prize")
        await _wait_status(client, scout["id"], "discarded", 1)
        r = await client.get(f"/api/admin/scouts/{scout['id']}/items", params={"status": "discarded"})
        item = r.json()["items"][0]
        assert item["verdict"] == "spam" and "lottery" in item["reason"]
        body = await srv.services.db.fetchval("SELECT body FROM scout_items WHERE id = $1", item["id"])
        assert body is None
        r = await client.get(f"/api/admin/scouts/{scout['id']}")
        assert r.json()["counts"]["discarded"] == 1


async def test_ack_from_another_users_device_is_refused(database_url):
    async with running_server(database_url) as srv, admin_client(srv.url) as client, AsyncExitStack() as stack:
        ann = await make_device(client)
        bob = await make_device(client, account=ann["account"], email="bob@example.com")
        scout = await make_push_scout(client, ann["user"]["id"])
        ann_dev = await connect(srv.url, ann["token"], stack)
        bob_dev = await connect(srv.url, bob["token"], stack)
        await push(client, scout["id"], ["m1"])
        (p,) = await ann_dev.proposals(1)
        await bob_dev.ack(p["id"])
        error = await bob_dev.next_frame()
        assert error["type"] == "error" and error["code"] == "not_found"
        await bob_dev.ws.send_message('{"type": "scout_proposal_ack", "proposal_id": 5}')
        assert (await bob_dev.next_frame())["code"] == "bad_frame"
        assert await _status_of(client, scout["id"], "delivered") == ["m1"]
        await bob_dev.nothing_more(0.2)


async def test_two_sockets_of_one_user_both_get_live_proposals(database_url):
    async with running_server(database_url) as srv, admin_client(srv.url) as client, AsyncExitStack() as stack:
        ann = await make_device(client)
        scout = await make_push_scout(client, ann["user"]["id"])
        tab1 = await connect(srv.url, ann["token"], stack)
        tab2 = await connect(srv.url, ann["token"], stack)
        await push(client, scout["id"], ["m1", "m2"])
        got1, got2 = await tab1.proposals(2), await tab2.proposals(2)
        assert [p["id"] for p in got1] == [p["id"] for p in got2]
        for p in got1:
            await tab1.ack(p["id"])
        await _wait_status(client, scout["id"], "acked", 2)
        await tab1.nothing_more(0.2)
        await tab2.nothing_more(0.1)
