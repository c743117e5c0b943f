# ruff: noqa: ASYNC110  (tests poll state other tasks and processes own)
"""Every webhook event from the write that makes it, on both backends, against a real server and a
real HTTP receiver: the event arrives signed (checked with the ``standardwebhooks`` package) with
the object the socket or the API shows, an endpoint not subscribed to it gets nothing, and a write
that rolls back queues nothing (the deliveries are written in the write's own transaction)."""

from __future__ import annotations

import datetime as dt
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, AsyncIterator

import httpx
import pytest
import trio
from standardwebhooks.webhooks import Webhook as Verifier

from roost.domain.digest.tick import run_tick
from roost.domain.scouting import run_scout
from roost.plugins.assessors import Assessor
from roost.plugins.assessors import registry as assessors
from roost.plugins.connectors import Connector, Content, Metadata, Ref, SourceConnection, connectors
from roost.serve import Running
from roost.storage import handoffs as handoff_repo
from roost.storage import scouts as scout_repo
from roost.storage.scouts import NewItem
from tests.support.digest import notify
from tests.support.handoffs import handoff_body, make_account, make_user, open_inboxes, settle
from tests.support.scouting import connect, make_push_scout, push
from tests.support.server import SECRET_KEY, admin_client, make_device, running_server
from tests.support.smtp import SmtpRecorder
from tests.support.webhook_receiver import Received, Receiver

LOOPBACK = "127.0.0.1"
FAST = {"allowed_destinations": LOOPBACK, "webhook_retry_initial_s": 0.05, "webhook_retry_max_s": 0.2,
        "secret_key": SECRET_KEY}
ALL = ["handoff.created", "handoff.claimed", "handoff.cancelled", "handoff.updated", "batch.done",
       "proposal.acked", "digest.sent", "scout.failed_item"]


class _Quick(Assessor):
    name = "webhook_events_quick"

    async def assess(self, handoff: dict[str, Any]) -> dict[str, Any] | None:
        return {"likely_cause": f"looked at {handoff['subject_ref']}"}


class _Unreachable(SourceConnection):
    """A source with one message whose content never comes: its item fails at max_failures."""

    async def list_new(self, cursor: str | None) -> tuple[list[NewItem], str | None]:
        return ([], cursor) if cursor else ([NewItem("m-1")], "1")

    async def fetch_content(self, ref: Ref) -> Content:
        raise OSError("connection reset")

    async def fetch_metadata(self, ref: Ref) -> Metadata:
        return Metadata("subject", "")

    async def archive(self, ref: Ref) -> None:
        return None


class _UnreachableConnector(Connector):
    name = "webhook_events_unreachable"

    @asynccontextmanager
    async def open(self, config: dict[str, Any]) -> AsyncIterator[_Unreachable]:
        yield _Unreachable()


if _Quick.name not in assessors.names():
    assessors.register(_Quick.name, _Quick)
if _UnreachableConnector.name not in connectors.names():
    connectors.register(_UnreachableConnector.name, _UnreachableConnector)


@pytest.fixture
async def srv(database_url: str, smtp: tuple[SmtpRecorder, int]) -> AsyncIterator[Running]:
    async with running_server(database_url, handoff_assessor=_Quick.name, smtp_url=f"smtp://127.0.0.1:{smtp[1]}",
                              **FAST) as running:
        yield running


@pytest.fixture
async def client(srv: Running) -> AsyncIterator[httpx.AsyncClient]:
    async with admin_client(srv.url) as c:
        yield c


async def _endpoints(client: httpx.AsyncClient, account_id: str, receiver: Receiver,
                     events: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """An endpoint at /hook for ``events``, and one at /other for every other event."""
    made = []
    for path, wanted in (("/hook", events), ("/other", [e for e in ALL if e not in events] or None)):
        if wanted is None:
            made.append({})
            continue
        r = await client.post("/api/v1/webhooks", json={"account_id": account_id, "url": receiver.url + path,
                                                        "events": wanted})
        assert r.status_code == 201, r.text
        made.append(r.json())
    return made[0], made[1]


async def _device_with_endpoints(client: httpx.AsyncClient, receiver: Receiver, events: list[str],
                                 **device: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A new device (``make_device``, ``device`` for its user) and ``_endpoints`` on its account."""
    made = await make_device(client, **device)
    hook, other = await _endpoints(client, made["account"]["id"], receiver, events)
    return made, hook, other


async def _nothing_more_came(srv: Running, receiver: Receiver, other: dict[str, Any]) -> None:
    """A moment later still: the one delivery received, and none queued for the other endpoint."""
    await trio.sleep(0.3)
    assert len(receiver.received) == 1 and await _delivered(srv, other["id"]) == []


def _verified(got: Received, secret: str, event: str) -> dict[str, Any]:
    """The delivery's data, after its signature verified per Standard Webhooks (raises if not)."""
    body = Verifier(secret).verify(got.body, got.headers)
    assert body["type"] == event and got.headers["webhook-id"].startswith("msg")
    return body["data"]


async def _delivered(srv: Running, endpoint_id: str, status: str | None = None) -> list[dict[str, Any]]:
    sql = "SELECT event, status FROM webhook_deliveries WHERE endpoint_id = $1" + (" AND status = $2" if status else "")
    return await srv.services.db.fetch(sql + " ORDER BY seq", *([endpoint_id, status] if status else [endpoint_id]))


async def test_a_webhook_endpoint_gets_handoff_created_within_2s_of_the_post_as_the_socket_shows_it(
        srv: Running, client: httpx.AsyncClient, receiver: Receiver) -> None:
    account = await make_account(client, "A")
    ann = await make_user(client, account, "ann@example.com", role="engineer")
    bob = await make_user(client, account, "bob@example.com", role="engineer")
    hook, other = await _endpoints(client, account["id"], receiver,
                                   ["handoff.created", "handoff.claimed", "handoff.cancelled", "handoff.updated"])
    async with trio.open_nursery() as nursery:
        (inbox,) = await open_inboxes(nursery, srv.url, [bob])
        started = trio.current_time()
        r = await client.post("/api/v1/handoffs", json=handoff_body(account["id"], ann["id"], intent="escalate"))
        assert r.status_code == 201, r.text
        (first,) = await receiver.wait_for(1, path="/hook", timeout_s=2)
        assert first.at - started < 2  # the bar
        handoff = r.json()
        r = await client.post(f"/api/v1/handoffs/{handoff['id']}/claim", json={"user_id": bob["id"]})
        assert r.status_code == 200, r.text
        r = await client.post("/api/v1/handoffs", json=handoff_body(account["id"], ann["id"], subject_ref="t-2"))
        second = r.json()
        r = await client.post(f"/api/v1/handoffs/{second['id']}/cancel", json={"user_id": ann["id"]})
        assert r.status_code == 200, r.text
        # the escalation: created, updated (its assessment), claimed; the park: created, cancelled
        await settle([inbox], 5, extra_s=1.0)
        got = await receiver.wait_for(len(inbox.frames), path="/hook")
        await trio.sleep(0.3)
        nursery.cancel_scope.cancel()
    assert len(receiver.for_path("/hook")) == len(inbox.frames)  # once each
    assert sorted(f["type"] for f in inbox.frames) == sorted(
        ["handoff_created", "handoff_updated", "handoff_claimed", "handoff_created", "handoff_cancelled"])
    data = [_verified(g, hook["secret"], g.json["type"]) for g in got]
    assert [g.json["type"] for g in got] == [f["type"].replace("_", ".", 1) for f in inbox.frames]
    assert data == [{"seq": f["seq"], "handoff": f["handoff"]} for f in inbox.frames]
    assert {(d["handoff"]["id"], g.json["type"]) for d, g in zip(data, got, strict=True)} >= {
        (handoff["id"], "handoff.claimed"), (second["id"], "handoff.cancelled")}
    assert receiver.for_path("/other") == []  # subscribed to every other event, none of these
    assert await _delivered(srv, other["id"]) == []


async def test_a_rolled_back_handoff_queues_no_webhook(srv: Running, client: httpx.AsyncClient,
                                                       receiver: Receiver) -> None:
    made, hook, _ = await _device_with_endpoints(client, receiver, ["handoff.created"])
    account, user = made["account"]["id"], made["user"]["id"]
    db = srv.services.db
    with pytest.raises(RuntimeError, match="after the write"):
        async with db.transaction() as tx:
            await handoff_repo.create(tx, account_id=account, subject_ref="s", intent="park", notes="", priority="low",
                                      snapshot={}, created_by=user, assess=False, now=srv.services.clock.now())
            assert len(await tx.fetch("SELECT id FROM webhook_deliveries WHERE endpoint_id = $1", hook["id"])) == 1
            raise RuntimeError("after the write")
    assert await _delivered(srv, hook["id"]) == []
    assert await db.fetch("SELECT id FROM handoffs") == []
    r = await client.post("/api/v1/handoffs", json=handoff_body(account, "u_nobody"))  # refused: nothing written
    assert r.status_code in (400, 404, 422), r.text
    await trio.sleep(0.3)
    assert receiver.received == [] and await _delivered(srv, hook["id"]) == []


async def test_batch_done_carries_the_batch_as_get_shows_it(srv: Running, client: httpx.AsyncClient,
                                                            receiver: Receiver) -> None:
    env, hook, other = await _device_with_endpoints(client, receiver, ["batch.done"])
    r = await client.post("/api/v1/outreach/batches", json={
        "account_id": env["account"]["id"], "created_by": env["user"]["id"],
        "items": [{"to_handle": f"+1555000{i}", "body": f"hi {i}", "device_id": env["device"]["id"]}
                  for i in range(3)]})
    assert r.status_code == 201, r.text
    batch = r.json()
    assert (await client.post(f"/api/v1/outreach/batches/{batch['id']}/send")).status_code == 200
    async with admin_client(srv.url, token=env["token"]) as device:
        taken = (await device.get("/api/device/send-queue/pending")).json()["items"]
        assert len(taken) == 3
        for i, item in enumerate(taken):
            assert receiver.received == []  # nothing before the last item ends
            r = await device.post(f"/api/device/send-queue/{item['id']}/result",
                                  json={"status": "sent"} if i else {"status": "failed", "error": "no signal"})
            assert r.status_code == 200, r.text
    (got,) = await receiver.wait_for(1, path="/hook")
    shown = (await client.get(f"/api/v1/outreach/batches/{batch['id']}")).json()
    assert shown["status"] == "done"
    assert shown["next_send"] == {"at": None, "reason": "nothing_pending"}
    assert _verified(got, hook["secret"], "batch.done") == {"batch": shown}  # the same object as GET and the frame
    await _nothing_more_came(srv, receiver, other)


async def test_proposal_acked_once_per_proposal_the_ack_changed(srv: Running, client: httpx.AsyncClient,
                                                                receiver: Receiver) -> None:
    ann, hook, other = await _device_with_endpoints(client, receiver, ["proposal.acked"])
    scout = await make_push_scout(client, ann["user"]["id"])
    await push(client, scout["id"], ["m1", "m2"])
    async with AsyncExitStack() as stack:
        device = await connect(srv.url, ann["token"], stack)
        p1, p2 = await device.proposals(2)
        await device.ack(p1["id"])
        await device.ack(p1["id"])  # acked already: changes nothing, no second event
        (got,) = await receiver.wait_for(1, path="/hook")
        await device.ack(p2["id"])
        await receiver.wait_for(2, path="/hook")
        await trio.sleep(0.3)
    data = _verified(got, hook["secret"], "proposal.acked")
    acked = (await client.get(f"/api/admin/scouts/{scout['id']}/items", params={"status": "acked"})).json()["items"]
    by_id = {i["id"]: i for i in acked}
    assert data == {"proposal": p1, "user_id": ann["user"]["id"], "device_id": ann["device"]["id"],
                    "acked_at": by_id[p1["id"]]["acked_at"]}
    assert [g.json["data"]["proposal"]["id"] for g in receiver.for_path("/hook")] == [p1["id"], p2["id"]]
    assert receiver.for_path("/other") == [] and await _delivered(srv, other["id"]) == []


async def test_digest_sent_when_the_digest_mail_is_marked_sent(srv: Running, client: httpx.AsyncClient,
                                                               receiver: Receiver) -> None:
    ann, hook, other = await _device_with_endpoints(client, receiver, ["digest.sent"], digest_cadence="daily",
                                                    digest_time="08:00")
    user_id = ann["user"]["id"]
    now = srv.services.clock.now()
    await notify(srv.services.db, user_id, now=now - dt.timedelta(hours=1), topic="rfc-7")
    await notify(srv.services.db, user_id, now=now - dt.timedelta(minutes=50), topic="rfc-8")
    # the user's slot has come (a day passed, in short); the digest actor may tick first: one digest either way
    assert await srv.services.db.execute("UPDATE digest_schedule SET next_at = $2 WHERE user_id = $1", user_id,
                                  now - dt.timedelta(minutes=1))
    await run_tick(srv.services)
    (got,) = await receiver.wait_for(1, path="/hook")
    data = _verified(got, hook["secret"], "digest.sent")
    (digest,) = await srv.services.db.fetch("SELECT id, outbox_id FROM digests WHERE recipient_user_id = $1", user_id)
    mail = await srv.services.db.fetchrow("SELECT subject, sent_at, status FROM outbox WHERE id = $1",
                                          digest["outbox_id"])
    assert mail["status"] == "sent"
    assert data == {"user_id": user_id, "digest_id": digest["id"], "outbox_id": digest["outbox_id"],
                    "notifications": 2, "subject": mail["subject"],
                    "sent_at": mail["sent_at"].astimezone(dt.UTC).isoformat().replace("+00:00", "Z")}
    await _nothing_more_came(srv, receiver, other)


async def test_scout_failed_item_when_an_item_fails_at_max_failures(srv: Running, client: httpx.AsyncClient,
                                                                    receiver: Receiver) -> None:
    ann, hook, other = await _device_with_endpoints(client, receiver, ["scout.failed_item"])
    scout = await scout_repo.create_scout(srv.services.db, user_id=ann["user"]["id"], fields={
        "provider": _UnreachableConnector.name, "config": {}, "classifier": "rules", "classifier_config": {},
        "poll_interval_s": 3600.0, "enabled": True, "auto_trash_spam": False, "device_inactivity_pause_days": 7,
        "ttl_days": 30, "max_failures": 1}, now=srv.services.clock.now(), actor="test")
    await run_scout(srv.services, scout["id"])
    await run_scout(srv.services, scout["id"])  # failed already: nothing more
    (got,) = await receiver.wait_for(1, path="/hook")
    (item,) = (await client.get(f"/api/admin/scouts/{scout['id']}/items")).json()["items"]
    assert item["status"] == "failed" and item["reason"].startswith("unreachable")
    assert _verified(got, hook["secret"], "scout.failed_item") == {"scout_id": scout["id"], "item": item}
    await _nothing_more_came(srv, receiver, other)


async def test_without_a_subscribed_endpoint_no_event_is_queued(srv: Running, client: httpx.AsyncClient,
                                                                receiver: Receiver) -> None:
    """Acks, a handoff and its assessment on an account whose only endpoint (for every event) is
    disabled: no delivery row at all."""
    ann, hook, _ = await _device_with_endpoints(client, receiver, ALL)
    assert (await client.patch(f"/api/v1/webhooks/{hook['id']}", json={"enabled": False})).status_code == 200
    scout = await make_push_scout(client, ann["user"]["id"])
    await push(client, scout["id"], ["m1"])
    async with AsyncExitStack() as stack:
        device = await connect(srv.url, ann["token"], stack)
        (p1,) = await device.proposals(1)
        await device.ack(p1["id"])
        with trio.fail_after(10):
            while not (await client.get(f"/api/admin/scouts/{scout['id']}/items",
                                        params={"status": "acked"})).json()["items"]:
                await trio.sleep(0.02)
    r = await client.post("/api/v1/handoffs", json=handoff_body(ann["account"]["id"], ann["user"]["id"],
                                                                intent="escalate"))  # assessed: handoff_updated
    assert r.status_code == 201, r.text
    with trio.fail_after(10):
        while (await client.get(f"/api/v1/handoffs/{r.json()['id']}")).json()["assessment"] is None:
            await trio.sleep(0.02)
    await trio.sleep(0.3)
    assert receiver.received == [] and await srv.services.db.fetch("SELECT id FROM webhook_deliveries") == []


async def test_an_event_too_large_for_a_webhook_is_not_queued_and_the_write_goes_on(
        srv: Running, client: httpx.AsyncClient, receiver: Receiver) -> None:
    made, hook, _ = await _device_with_endpoints(client, receiver, ["handoff.created"])
    account, user = made["account"]["id"], made["user"]["id"]
    async with srv.services.db.transaction() as tx:  # notes over the body limit (the API allows 10,000)
        row = await handoff_repo.create(tx, account_id=account, subject_ref="s", intent="park", notes="x" * 300_000,
                                        priority="low", snapshot={}, created_by=user, assess=False,
                                        now=srv.services.clock.now())
    assert (await handoff_repo.get(srv.services.db, row["id"]))["notes"] == "x" * 300_000
    assert await _delivered(srv, hook["id"]) == []
