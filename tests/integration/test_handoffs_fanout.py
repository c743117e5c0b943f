# ruff: noqa: ASYNC110  (tests poll state other tasks and processes own)
"""Handoff events over real sockets on a real server, both backends: fan-out, replay, claims, rollback."""

from __future__ import annotations

import datetime as dt

import pytest
import trio

from roost.plugins.assessors import Assessor
from roost.plugins.assessors import registry as assessors
from roost.runtime.topics import HANDOFF_EVENTS, HANDOFF_FOLLOWUPS
from roost.storage import handoffs as repo
from tests.support.handoffs import handoff_body, make_account, make_user, open_inboxes, settle
from tests.support.server import admin_client, running_server


async def _world(client):
    a, b = await make_account(client, "A"), await make_account(client, "B")
    a_users = [await make_user(client, a, f"a{i}@example.com", role="engineer", devices=2) for i in range(3)]
    b_users = [await make_user(client, b, f"b{i}@example.com", role="engineer", devices=2) for i in range(2)]
    return a, b, a_users, b_users


async def test_create_reaches_every_socket_of_the_account_once_and_none_of_the_other(database_url: str) -> None:
    async with running_server(database_url) as server, admin_client(server.url) as client:
        a, b, a_users, b_users = await _world(client)
        async with trio.open_nursery() as nursery:
            a_inboxes = await open_inboxes(nursery, server.url, a_users)
            b_inboxes = await open_inboxes(nursery, server.url, b_users)
            r = await client.post("/api/v1/handoffs", json=handoff_body(a["id"], a_users[0]["id"]))
            assert r.status_code == 201, r.text
            handoff = r.json()
            await settle(a_inboxes, 1)
            for inbox in a_inboxes:
                assert [(f["type"], f["seq"], f["handoff"]["id"]) for f in inbox.frames] == [
                    ("handoff_created", 1, handoff["id"])]
                assert "snapshot" not in inbox.frames[0]["handoff"]
            assert all(inbox.frames == [] for inbox in b_inboxes)

            r = await client.post(f"/api/v1/handoffs/{handoff['id']}/claim", json={"user_id": a_users[1]["id"]})
            assert r.status_code == 200, r.text
            await settle(a_inboxes, 2)
            for inbox in a_inboxes:
                assert [(f["type"], f["seq"]) for f in inbox.frames] == [("handoff_created", 1), ("handoff_claimed", 2)]
                assert inbox.frames[1]["handoff"]["claimed_by"] == a_users[1]["id"]
            assert all(inbox.frames == [] for inbox in b_inboxes)
            nursery.cancel_scope.cancel()


async def test_a_deactivated_users_open_sockets_get_nothing(database_url: str) -> None:
    async with running_server(database_url) as server, admin_client(server.url) as client:
        a = await make_account(client, "A")
        ann = await make_user(client, a, "ann@example.com", role="engineer")
        bob = await make_user(client, a, "bob@example.com", role="engineer")
        async with trio.open_nursery() as nursery:
            ann_box, bob_box = await open_inboxes(nursery, server.url, [ann, bob])
            r = await client.patch(f"/api/admin/users/{bob['id']}", json={"active": False})
            assert r.status_code == 200 and r.json()["active"] is False
            assert (await client.post("/api/v1/handoffs", json=handoff_body(a["id"], ann["id"]))).status_code == 201
            await settle([ann_box], 1)
            assert bob_box.frames == []
            nursery.cancel_scope.cancel()


async def test_reconnect_with_since_replays_exactly_the_missed_events_then_live_ones(database_url: str) -> None:
    async with running_server(database_url) as server, admin_client(server.url) as client:
        a = await make_account(client, "A")
        ann = await make_user(client, a, "ann@example.com", role="engineer", devices=1)
        async with trio.open_nursery() as nursery:
            (first,) = await open_inboxes(nursery, server.url, [ann])
            assert (await client.post("/api/v1/handoffs", json=handoff_body(a["id"], ann["id"]))).status_code == 201
            await settle([first], 1, extra_s=0)
            first.scope.cancel()
            await first.closed.wait()
            for _ in range(4):  # the gap: seq 2..5 while disconnected
                r = await client.post("/api/v1/handoffs", json=handoff_body(a["id"], ann["id"]))
                assert r.status_code == 201

            # Reconnect while more are being created: the seam between replay and live.
            async def keep_creating() -> None:
                for _ in range(5):
                    await client.post("/api/v1/handoffs", json=handoff_body(a["id"], ann["id"]))

            nursery.start_soon(keep_creating)
            (again,) = await open_inboxes(nursery, server.url, [ann], since=first.seqs[-1])
            await settle([again], 9)
            assert again.seqs == list(range(2, 11))
            assert {f["type"] for f in again.frames} == {"handoff_created"}
            nursery.cancel_scope.cancel()


async def test_since_older_than_the_window_gets_resync_required(database_url: str) -> None:
    async with running_server(database_url) as server, admin_client(server.url) as client:
        a = await make_account(client, "A")
        ann = await make_user(client, a, "ann@example.com", role="engineer", devices=1)
        async with trio.open_nursery() as nursery:
            (watcher,) = await open_inboxes(nursery, server.url, [ann])
            for _ in range(3):
                assert (await client.post("/api/v1/handoffs", json=handoff_body(a["id"], ann["id"]))).status_code == 201
            # Pruning is the pruner's step a day later, long after the fan-out pushed these three.
            # Pruned before it had (a loaded machine), it would read nothing and stay at seq 2,
            # and the replies below would be about seq 2: a race of the test's own making.
            await settle([watcher], 3, extra_s=0)
            watcher.scope.cancel()
            db = server.services.db
            assert await repo.prune_events(db, server.services.clock.now() + dt.timedelta(seconds=1)) == 3
            (inbox,) = await open_inboxes(nursery, server.url, [ann], since=1)
            (ahead,) = await open_inboxes(nursery, server.url, [ann], since=99)
            (current,) = await open_inboxes(nursery, server.url, [ann], since=3)
            await settle([inbox, ahead], 1)
            assert inbox.frames == [{"type": "resync_required", "seq": 3, "message": inbox.frames[0]["message"]}]
            assert ahead.frames[0]["type"] == "resync_required"
            assert current.frames == []
            r = await client.post("/api/v1/handoffs", json=handoff_body(a["id"], ann["id"]))
            await settle([inbox], 2, extra_s=0)
            await settle([current], 1)
            assert inbox.seqs == [4] and current.seqs == [4]
            assert r.status_code == 201
            nursery.cancel_scope.cancel()


async def test_twenty_concurrent_claims_have_exactly_one_winner(database_url: str) -> None:
    async with running_server(database_url) as server, admin_client(server.url) as client:
        a, b = await make_account(client, "A"), await make_account(client, "B")
        users = [await make_user(client, a, f"e{i}@example.com", role="engineer") for i in range(20)]
        outsider = await make_user(client, b, "x@example.com", role="engineer")
        r = await client.post("/api/v1/handoffs", json=handoff_body(a["id"], users[0]["id"], intent="escalate"))
        handoff_id = r.json()["id"]
        results: list = []

        async def claim(user) -> None:
            resp = await client.post(f"/api/v1/handoffs/{handoff_id}/claim", json={"user_id": user["id"]})
            results.append((user["id"], resp.status_code, resp.json()))

        async with trio.open_nursery() as nursery:
            for user in users:
                nursery.start_soon(claim, user)
        statuses = sorted(status for _, status, _ in results)
        assert statuses == [200] + [409] * 19
        (winner, _, body) = next(r for r in results if r[1] == 200)
        assert body["claimed_by"] == winner and body["status"] == "claimed"
        for _, status, body in results:
            if status == 409:
                assert body["error"]["code"] == "already_claimed"
                assert body["error"]["claimed_by"] == winner
        again = await client.post(f"/api/v1/handoffs/{handoff_id}/claim", json={"user_id": winner})
        assert again.status_code == 200 and again.json()["claimed_at"] == body_claimed_at(results)
        r = await client.post(f"/api/v1/handoffs/{handoff_id}/claim", json={"user_id": outsider["id"]})
        assert r.status_code == 404
        r = await client.get(f"/api/v1/handoffs/{handoff_id}", params={"account_id": b["id"]})
        assert r.status_code == 404
        # One claimed event only, whatever the contention: created (1) and claimed (2).
        events = await repo.events_after(server.services.db, a["id"], 0)
        assert [(e["seq"], e["kind"]) for e in events] == [(1, "handoff_created"), (2, "handoff_claimed")]


def body_claimed_at(results) -> str:
    return next(body for _, status, body in results if status == 200)["claimed_at"]


class Boom(Exception):
    pass


async def test_a_failure_after_the_insert_publishes_nothing_and_mails_nobody(database_url: str) -> None:
    async with running_server(database_url, handoff_poll_s=0.1) as server, admin_client(server.url) as client:
        services = server.services
        a = await make_account(client, "A")
        ann = await make_user(client, a, "ann@example.com", role="engineer")
        boss = await make_user(client, a, "boss@example.com", role="owner")
        async with trio.open_nursery() as nursery:
            inboxes = await open_inboxes(nursery, server.url, [ann, boss])
            with pytest.raises(Boom):
                async with services.db.transaction() as tx:
                    row = await repo.create(tx, account_id=a["id"], subject_ref="t", intent="escalate", notes="",
                                            priority="urgent", snapshot={}, created_by=ann["id"], assess=False,
                                            now=services.clock.now())
                    raise Boom  # after the handoff and its event were inserted
            # Even a stray wake-up (a buggy caller publishing anyway) finds nothing committed.
            services.bus.publish(HANDOFF_EVENTS, a["id"])
            services.bus.publish(HANDOFF_FOLLOWUPS, row["id"])
            await trio.sleep(0.5)  # several fan-out polls
            assert all(inbox.frames == [] for inbox in inboxes)
            db = services.db
            assert await db.fetchval("SELECT COUNT(*) FROM handoffs") == 0
            assert await db.fetchval("SELECT COUNT(*) FROM handoff_events") == 0
            assert await db.fetchval("SELECT COUNT(*) FROM outbox") == 0
            # The rolled-back transaction gave its sequence number back: the next event is 1.
            r = await client.post("/api/v1/handoffs", json=handoff_body(a["id"], ann["id"]))
            assert r.status_code == 201
            await settle(inboxes, 1)
            assert all(inbox.seqs == [1] for inbox in inboxes)
            nursery.cancel_scope.cancel()


class _Quick(Assessor):
    name = "test_quick"

    async def assess(self, handoff):
        return {"likely_cause": f"looked at {handoff['subject_ref']}"}


class _Stuck(Assessor):
    name = "test_stuck"

    async def assess(self, handoff):
        await trio.sleep(3600)


assessors.register("test_quick", _Quick)
assessors.register("test_stuck", _Stuck)


async def test_an_assessment_is_stored_and_pushed_as_handoff_updated_after_the_commit(database_url: str) -> None:
    async with running_server(database_url, handoff_assessor="test_quick") as server, \
            admin_client(server.url) as client:
        a = await make_account(client, "A")
        ann = await make_user(client, a, "ann@example.com", role="engineer")
        async with trio.open_nursery() as nursery:
            (inbox,) = await open_inboxes(nursery, server.url, [ann])
            r = await client.post("/api/v1/handoffs", json=handoff_body(a["id"], ann["id"], intent="escalate"))
            assert r.status_code == 201 and r.json()["assessment"] is None  # never waited for
            await settle([inbox], 2)
            assert [(f["type"], f["seq"]) for f in inbox.frames] == [("handoff_created", 1), ("handoff_updated", 2)]
            assert inbox.frames[1]["handoff"]["assessment"] == {"likely_cause": "looked at ticket-42"}
            got = (await client.get(f"/api/v1/handoffs/{r.json()['id']}")).json()
            assert got["assessment"] == {"likely_cause": "looked at ticket-42"}
            nursery.cancel_scope.cancel()


async def test_an_assessor_timeout_leaves_the_handoff_as_it_is_but_for_its_failed_state(database_url: str) -> None:
    async with running_server(database_url, handoff_assessor="test_stuck", handoff_assessor_timeout_s=0.2) as server, \
            admin_client(server.url) as client:
        a = await make_account(client, "A")
        ann = await make_user(client, a, "ann@example.com", role="engineer")
        with trio.fail_after(5):
            r = await client.post("/api/v1/handoffs", json=handoff_body(a["id"], ann["id"], intent="escalate"))
        assert r.status_code == 201
        db = server.services.db
        with trio.fail_after(10):
            while await db.fetchval("SELECT assessment_state FROM handoffs WHERE id = $1", r.json()["id"]) != "failed":
                await trio.sleep(0.05)
        got = (await client.get(f"/api/v1/handoffs/{r.json()['id']}")).json()
        assert (got["assessment"], got["assessment_state"]) == (None, "failed")
        events = await repo.events_after(db, a["id"], 0)
        assert [e["kind"] for e in events] == ["handoff_created", "handoff_updated"]
        assert [e["handoff"]["assessment_state"] for e in events] == ["pending", "failed"]
