"""Signed webhooks against a real HTTP receiver, on both backends: signatures checked with the
``standardwebhooks`` package (an independent implementation of the specification), retries after
500s and timeouts, order per endpoint, a slow endpoint beside a fast one, 410 and three days of
failures disabling an endpoint (with mail to the owners), rotation, and bad input of every kind."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, AsyncIterator

import httpx
import pytest
import trio
from standardwebhooks.webhooks import Webhook as Verifier

from roost.actors import webhooks as sender
from roost.domain import webhooks
from roost.errors import NotConfigured
from roost.runtime import destinations
from roost.serve import Running
from roost.storage import webhooks as repo
from roost.storage.database import Database
from tests.support.digest import make_account, make_services, make_user
from tests.support.fixed_clock import FixedClock
from tests.support.server import SECRET_KEY, admin_client, running_server
from tests.support.webhook_receiver import Answer, Receiver

LOOPBACK = "127.0.0.1"
FAST = {"allowed_destinations": LOOPBACK, "webhook_retry_initial_s": 0.05, "webhook_retry_max_s": 0.2,
        "secret_key": SECRET_KEY}


@pytest.fixture
async def srv(database_url: str) -> AsyncIterator[Running]:
    async with running_server(database_url, **FAST) as running:
        yield running


async def _account(client: httpx.AsyncClient, name: str = "Acme") -> str:
    r = await client.post("/api/admin/accounts", json={"name": name, "timezone": "UTC"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def _endpoint(client: httpx.AsyncClient, account_id: str, url: str, events: list[str] | None = None,
                    **fields: Any) -> dict[str, Any]:
    r = await client.post("/api/v1/webhooks", json={"account_id": account_id, "url": url,
                                                    "events": events or ["handoff.created"], **fields})
    assert r.status_code == 201, r.text
    return r.json()


async def _emit(srv: Running, account_id: str, event: str = "handoff.created", **payload: Any) -> int:
    s = srv.services
    async with s.db.transaction() as tx:
        n = await webhooks.emit(tx, account_id=account_id, event=event, payload=payload or {"n": 1})
    webhooks.wake(s.bus)
    return n


async def _deliveries(client: httpx.AsyncClient, endpoint_id: str, **params: Any) -> list[dict[str, Any]]:
    r = await client.get(f"/api/v1/webhooks/{endpoint_id}/deliveries", params=params)
    assert r.status_code == 200, r.text
    return r.json()["items"]


async def _until(check: Any, timeout_s: float = 10) -> Any:
    with trio.fail_after(timeout_s):
        while True:  # polling the HTTP API, as an app would
            found = await check()
            if found:
                return found
            await trio.sleep(0.02)


async def test_an_event_arrives_within_2s_signed_per_standard_webhooks(srv: Running, receiver: Receiver) -> None:
    async with admin_client(srv.url) as client:
        account = await _account(client)
        ep = await _endpoint(client, account, receiver.url + "/hook", ["handoff.created", "batch.done"],
                             description="the app")
        assert ep["secret"].startswith("whsec_") and len(ep["secret"]) >= len("whsec_") + 32
        assert "secret" not in (await client.get(f"/api/v1/webhooks/{ep['id']}")).json()
        started = trio.current_time()
        assert await _emit(srv, account, handoff={"id": "h1", "at": dt.datetime(2026, 12, 5, tzinfo=dt.UTC)}) == 1
        (got,) = await receiver.wait_for(1, timeout_s=2)
        assert got.at - started < 2
        assert Verifier(ep["secret"]).verify(got.body, got.headers) == got.json  # raises unless it verifies
        assert got.json["type"] == "handoff.created"
        assert got.json["data"] == {"handoff": {"id": "h1", "at": "2026-12-05T00:00:00Z"}}
        assert got.headers["content-type"] == "application/json"
        (row,) = await _until(lambda: _deliveries(client, ep["id"], status="delivered"))
        assert row["id"] == got.id and row["attempts"] == 1 and row["last_status_code"] == 200
        assert row["payload"] == got.json["data"] and row["next_attempt_at"] is None
        # an event it did not subscribe to, and another account's event, are not sent
        other = await _account(client, "Other")
        assert await _emit(srv, account, "digest.sent") == 0
        assert await _emit(srv, other) == 0
        stored = await srv.services.db.fetchval("SELECT secret FROM webhook_endpoints WHERE id = $1", ep["id"])
        assert stored.startswith("fernet:") and ep["secret"] not in stored  # sealed at rest


async def test_after_two_500s_the_third_try_succeeds_and_deliveries_shows_3_attempts(
        srv: Running, receiver: Receiver) -> None:
    receiver.answer(500, 500)
    async with admin_client(srv.url) as client:
        account = await _account(client)
        ep = await _endpoint(client, account, receiver.url + "/hook")
        await _emit(srv, account)
        tries = await receiver.wait_for(3)
        assert len({t.id for t in tries}) == 1  # the same webhook-id on every retry
        assert len({t.body for t in tries}) == 1  # and the same bytes
        for t in tries:
            Verifier(ep["secret"]).verify(t.body, t.headers)
        (row,) = await _until(lambda: _deliveries(client, ep["id"], status="delivered"))
        assert (row["attempts"], row["last_status_code"], row["last_error"]) == (3, 200, None)
        assert row["last_attempt_at"] is not None and row["delivered_at"] is not None
        assert (await client.get(f"/api/v1/webhooks/{ep['id']}")).json()["failing_since"] is None


async def test_a_timeout_is_retried(database_url: str, receiver: Receiver) -> None:
    receiver.answer(Answer(200, delay_s=3))
    async with running_server(database_url, **FAST, webhook_timeout_s=0.5) as srv, \
            admin_client(srv.url) as client:
        account = await _account(client)
        ep = await _endpoint(client, account, receiver.url + "/slow")
        await _emit(srv, account)
        first, second = await receiver.wait_for(2)
        assert first.id == second.id
        (row,) = await _until(lambda: _deliveries(client, ep["id"], status="delivered"))
        assert row["attempts"] == 2


async def test_timeouts_and_errors_are_recorded_while_pending(database_url: str, receiver: Receiver) -> None:
    receiver.default = Answer(200, delay_s=3)
    async with running_server(database_url, **{**FAST, "webhook_retry_initial_s": 60}, webhook_timeout_s=0.3) as srv, \
            admin_client(srv.url) as client:
        account = await _account(client)
        ep = await _endpoint(client, account, receiver.url + "/slow")
        await _emit(srv, account)
        (row,) = await _until(lambda: _deliveries(client, ep["id"], status="pending", limit=1))
        row = await _until(lambda: _first_with(client, ep["id"], lambda r: r["attempts"] == 1 and r["last_error"]))
        assert row["last_error"].startswith("timeout") and row["last_status_code"] is None
        assert row["next_attempt_at"] is not None
        assert (await client.get(f"/api/v1/webhooks/{ep['id']}")).json()["failing_since"] is not None


async def _first_with(client: httpx.AsyncClient, endpoint_id: str, test: Any) -> dict[str, Any] | None:
    rows = await _deliveries(client, endpoint_id)
    return rows[0] if rows and test(rows[0]) else None


async def test_deliveries_of_an_endpoint_arrive_in_order_a_failure_holding_back_the_next(
        srv: Running, receiver: Receiver) -> None:
    receiver.answer(500, 200, 503)
    async with admin_client(srv.url) as client:
        account = await _account(client)
        await _endpoint(client, account, receiver.url + "/ordered")
        for n in range(6):
            await _emit(srv, account, n=n)
        got = await receiver.wait_for(8)
        sequence = [r.json["data"]["n"] for r in got]
        assert sequence == [0, 0, 1, 1, 2, 3, 4, 5]


async def test_a_slow_endpoint_does_not_delay_another(database_url: str, receiver: Receiver) -> None:
    async with running_server(database_url, **FAST, webhook_timeout_s=5) as srv, admin_client(srv.url) as client:
        account = await _account(client)
        await _endpoint(client, account, receiver.url + "/slow")
        await _endpoint(client, account, receiver.url + "/fast")
        receiver.answer(Answer(200, hold=True))  # the first request (one of the two) is held
        await _emit(srv, account)
        await receiver.wait_for(2, timeout_s=2)  # the other one arrived while the first is held
        held = receiver.received[0]
        other = receiver.received[1]
        assert held.path != other.path
        receiver.release.set()


async def test_410_disables_at_once_mails_the_owners_and_reenabling_resumes(
        srv: Running, receiver: Receiver) -> None:
    receiver.answer(410)
    db = srv.services.db
    async with admin_client(srv.url) as client:
        account = await _account(client)
        for email, role in (("owner@example.com", "owner"), ("member@example.com", "member")):
            r = await client.post("/api/admin/users", json={"account_id": account, "email": email,
                                                             "display_name": role, "role": role})
            assert r.status_code == 201, r.text
        ep = await _endpoint(client, account, receiver.url + "/gone")
        await _emit(srv, account, n=1)
        await receiver.wait_for(1)
        view = await _until(lambda: _disabled(client, ep["id"]))
        assert view["disabled_reason"] == "the endpoint answered 410 Gone"
        mails = await db.fetch("SELECT to_addr, subject, text_body FROM outbox WHERE kind = 'webhook_disabled'")
        assert [m["to_addr"] for m in mails] == ["owner@example.com"]
        assert ep["url"] in mails[0]["subject"] and "410" in mails[0]["text_body"]
        assert await _emit(srv, account, n=2) == 0  # a disabled endpoint gets nothing new
        (row,) = await _deliveries(client, ep["id"])
        assert (row["status"], row["attempts"], row["last_status_code"]) == ("pending", 1, 410)

        r = await client.patch(f"/api/v1/webhooks/{ep['id']}", json={"enabled": True})
        assert r.status_code == 200 and r.json()["disabled_reason"] is None, r.text
        again = await receiver.wait_for(2)
        assert again[1].id == row["id"]
        await _until(lambda: _deliveries(client, ep["id"], status="delivered"))


async def _disabled(client: httpx.AsyncClient, endpoint_id: str) -> dict[str, Any] | None:
    view = (await client.get(f"/api/v1/webhooks/{endpoint_id}")).json()
    return None if view["enabled"] else view


async def test_rotation_signs_with_both_secrets_during_the_overlap(srv: Running, receiver: Receiver) -> None:
    async with admin_client(srv.url) as client:
        account = await _account(client)
        ep = await _endpoint(client, account, receiver.url + "/hook")
        r = await client.post(f"/api/v1/webhooks/{ep['id']}/rotate-secret")
        assert r.status_code == 200, r.text
        rotated = r.json()
        assert rotated["secret"] != ep["secret"] and rotated["previous_secret_expires_at"] is not None
        await _emit(srv, account)
        (got,) = await receiver.wait_for(1)
        assert len(got.headers["webhook-signature"].split(" ")) == 2
        Verifier(ep["secret"]).verify(got.body, got.headers)
        Verifier(rotated["secret"]).verify(got.body, got.headers)


async def test_an_endpoint_failing_for_3_days_is_disabled_and_its_owners_mailed(
        db: Database, receiver: Receiver) -> None:
    """Each delivery is retried for at least 24 h and then given up; after 3 days of failures the
    endpoint is disabled (the clock is injected: every attempt is a real request)."""
    receiver.default = Answer(500)
    t0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    services = make_services(db, allowed_destinations=LOOPBACK)
    clock = services.clock = FixedClock(t0)  # type: ignore[assignment]
    account = await make_account(db, t0)
    await make_user(db, account, now=t0, email="boss@example.com", role="owner")
    await make_user(db, account, now=t0, email="dev@example.com", role="engineer")
    with destinations.installed(destinations.Policy.parse([LOOPBACK])):
        ep, _ = await webhooks.create_endpoint(services, account_id=account, url=receiver.url + "/down",
                                               events=["batch.done"], description="", enabled=True)
        async with db.transaction() as tx:
            for n in range(5):
                await webhooks.emit(tx, account_id=account, event="batch.done", payload={"n": n}, now=t0)
        async with destinations.http_client(5) as client:
            while (await repo.get_endpoint(db, ep["id"]))["enabled"]:
                due = await repo.next_due(db)
                clock.at = max(clock.at, due)
                for row in await sender.claim_due(services, 10):
                    await sender.send_one(services, client, row)
    rows = {r["seq"]: r for r in (await webhooks.list_deliveries(services, ep["id"], None, status=None, limit=10,
                                                                 cursor=None))["items"]}
    first = rows[1]
    assert first["status"] == "failed"
    assert first["last_attempt_at"] - t0 >= dt.timedelta(hours=24)
    assert [rows[n]["status"] for n in (2, 3, 4, 5)].count("failed") >= 1  # the next ones went on
    assert rows[5]["status"] == "pending"  # not lost: waits for the endpoint to come back
    disabled = await repo.get_endpoint(db, ep["id"])
    assert clock.at - t0 >= dt.timedelta(days=3) and clock.at - t0 < dt.timedelta(days=3, hours=2)
    assert disabled["failing_since"] == t0 and "every attempt failed since" in disabled["disabled_reason"]
    mails = await db.fetch("SELECT to_addr FROM outbox WHERE kind = 'webhook_disabled'")
    assert [m["to_addr"] for m in mails] == ["boss@example.com"]
    # the retries backed off (doubling to the hourly cap), not a request a second
    assert 40 < len(receiver.received) < 150


async def test_a_claim_whose_process_died_is_sent_again_after_its_lease(db: Database, receiver: Receiver) -> None:
    t0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    services = make_services(db, allowed_destinations=LOOPBACK)
    clock = services.clock = FixedClock(t0)  # type: ignore[assignment]
    account = await make_account(db, t0)
    with destinations.installed(destinations.Policy.parse([LOOPBACK])):
        ep, secret = await webhooks.create_endpoint(services, account_id=account, url=receiver.url + "/h",
                                                    events=["digest.sent"], description="", enabled=True)
        async with db.transaction() as tx:
            await webhooks.emit(tx, account_id=account, event="digest.sent", payload={}, now=t0)
        (claimed,) = await sender.claim_due(services, 10)  # ... and the process dies here
        assert await sender.claim_due(services, 10) == []  # nobody takes it within the lease
        clock.at = t0 + dt.timedelta(seconds=services.settings.webhook_lease_s + 1)
        (again,) = await sender.claim_due(services, 10)
        assert again["id"] == claimed["id"] and again["attempts"] == 2
        async with destinations.http_client(5) as client:
            assert (await sender.send_one(services, client, again)).ok
    (got,) = receiver.received
    assert got.id == claimed["id"]
    assert json.loads(got.body)["type"] == "digest.sent"
    assert (await repo.counts(db))["delivered"] == 1


# -- bad input: a clear 4xx for every kind, never a 500 ---------------------------------------------


@pytest.fixture
async def strict_srv(database_url: str) -> AsyncIterator[Running]:
    """A server with the default destinations policy (public addresses only)."""
    async with running_server(database_url) as running:
        yield running


PUBLIC = "https://hooks.example.com/roost"
NESTED: Any = "x"
for _ in range(200):
    NESTED = [NESTED]


@pytest.mark.parametrize(("body", "code"), [
    ({}, "validation_failed"),
    ({"account_id": None, "url": PUBLIC, "events": ["handoff.created"]}, "validation_failed"),
    ({"account_id": 5, "url": PUBLIC, "events": ["handoff.created"]}, "validation_failed"),
    ({"url": 5, "events": ["handoff.created"]}, "validation_failed"),
    ({"url": PUBLIC, "events": "handoff.created"}, "validation_failed"),
    ({"url": PUBLIC, "events": []}, "validation_failed"),
    ({"url": PUBLIC, "events": ["handoff.exploded"]}, "validation_failed"),
    ({"url": PUBLIC, "events": [{"type": "handoff.created"}]}, "validation_failed"),
    ({"url": PUBLIC, "events": ["handoff.created"], "enabled": "yes"}, "validation_failed"),
    ({"url": PUBLIC, "events": ["handoff.created"], "description": 7}, "validation_failed"),
    ({"url": PUBLIC, "events": ["handoff.created"], "description": "d" * 501}, "validation_failed"),
    ({"url": PUBLIC, "events": ["handoff.created"], "secret": "whsec_mine"}, "validation_failed"),
    ({"url": PUBLIC, "events": ["handoff.created"], "description": "a\x00b"}, "validation_failed"),
    ({"url": PUBLIC, "events": ["handoff.created"], "description": NESTED}, "malformed_json"),
    ({"url": "https://" + "a" * 2000 + ".com/", "events": ["handoff.created"]}, "validation_failed"),
    ({"url": "ftp://hooks.example.com/", "events": ["handoff.created"]}, "invalid_url"),
    ({"url": "hooks.example.com/path", "events": ["handoff.created"]}, "invalid_url"),
    ({"url": "https://user:pw@hooks.example.com/", "events": ["handoff.created"]}, "invalid_url"),
    ({"url": "https://hooks.example.com:99999/", "events": ["handoff.created"]}, "invalid_url"),
    ({"url": "https://hooks.example.com/a b", "events": ["handoff.created"]}, "invalid_url"),
    ({"url": "http://127.0.0.1:8000/hook", "events": ["handoff.created"]}, "destination_not_allowed"),
    ({"url": "http://localhost/hook", "events": ["handoff.created"]}, "destination_not_allowed"),
    ({"url": "http://10.1.2.3/hook", "events": ["handoff.created"]}, "destination_not_allowed"),
    ({"url": "http://192.168.0.1/hook", "events": ["handoff.created"]}, "destination_not_allowed"),
    ({"url": "http://169.254.169.254/latest/meta-data", "events": ["handoff.created"]}, "destination_not_allowed"),
    ({"url": "http://[::1]/hook", "events": ["handoff.created"]}, "destination_not_allowed"),
    ({"url": "http://[fd00:ec2::254]/", "events": ["handoff.created"]}, "destination_not_allowed"),
    ({"url": "http://100.64.0.1/", "events": ["handoff.created"]}, "destination_not_allowed"),
])
async def test_create_refuses_bad_input_with_a_clear_400(strict_srv: Running, body: dict[str, Any],
                                                         code: str) -> None:
    async with admin_client(strict_srv.url) as client:
        if "account_id" not in body and body:
            body = {"account_id": await _account(client), **body}
        r = await client.post("/api/v1/webhooks", json=body)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == code, r.text
        assert r.json()["error"]["message"]
        assert (await client.get("/api/v1/webhooks")).json()["items"] == []


async def test_bad_requests_of_every_other_kind(strict_srv: Running) -> None:
    async with admin_client(strict_srv.url) as client:
        mine, theirs = await _account(client, "Mine"), await _account(client, "Theirs")
        r = await client.post("/api/v1/webhooks", json={"account_id": "acc_nope", "url": PUBLIC,
                                                        "events": ["batch.done"]})
        assert (r.status_code, r.json()["error"]["code"]) == (400, "missing_reference"), r.text
        ep = await _endpoint(client, mine, PUBLIC, ["batch.done", "batch.done"])
        assert ep["events"] == ["batch.done"]  # repeats dropped
        r = await client.post("/api/v1/webhooks", json={"account_id": mine, "url": PUBLIC, "events": ["batch.done"]})
        assert (r.status_code, r.json()["error"]["code"]) == (409, "already_exists"), r.text
        await _endpoint(client, theirs, PUBLIC)  # the same URL in another account is fine

        # another account's endpoint is 404 on every route that names one; so is an unknown id
        base = f"/api/v1/webhooks/{ep['id']}"
        calls = [("GET", base, None), ("PATCH", base, {"description": "x"}), ("DELETE", base, None),
                 ("POST", base + "/rotate-secret", None), ("GET", base + "/deliveries", None)]
        for method, path, body in calls:
            r = await client.request(method, path, params={"account_id": theirs}, json=body)
            assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found"), (method, path, r.text)
            r = await client.request(method, path.replace(ep["id"], "wh_nope"), json=body)
            assert r.status_code == 404, (method, path, r.text)
        assert (await client.get(base, params={"account_id": mine})).status_code == 200

        for patch in ({"url": None}, {"events": None}, {"enabled": None}, {"account_id": theirs}, {"secret": "x"},
                      {"events": ["nope"]}, {"url": "http://10.0.0.1/"}, {"url": "gopher://x/"}, {"enabled": 1},
                      [], "text"):
            r = await client.patch(base, json=patch)
            assert r.status_code == 400, (patch, r.text)
        r = await client.patch(base, content=b"{not json", headers={"content-type": "application/json"})
        assert (r.status_code, r.json()["error"]["code"]) == (400, "malformed_json")
        r = await client.post("/api/v1/webhooks", content=b"url=x")
        assert r.status_code == 415, r.text
        r = await client.post("/api/v1/webhooks", json={"account_id": mine, "url": PUBLIC, "events": ["batch.done"],
                                                        "description": "x" * 2_000_000})
        assert r.status_code == 413, r.text

        for params in ({"limit": 0}, {"limit": 1001}, {"limit": "many"}, {"cursor": "not a cursor!"},
                       {"account_id": "a" * 65}, {"account_id": "a\x00"}):
            r = await client.get("/api/v1/webhooks", params=params)
            assert r.status_code == 400, (params, r.text)
        for params in ({"status": "lost"}, {"cursor": "abc"}, {"limit": -1}):
            r = await client.get(base + "/deliveries", params=params)
            assert r.status_code == 400, (params, r.text)

        listed = (await client.get("/api/v1/webhooks", params={"account_id": mine, "limit": 1})).json()
        assert [i["id"] for i in listed["items"]] == [ep["id"]] and listed["next_cursor"] is None
        everything = (await client.get("/api/v1/webhooks", params={"limit": 1})).json()
        assert everything["next_cursor"] is not None
        rest = (await client.get("/api/v1/webhooks", params={"limit": 1, "cursor": everything["next_cursor"]})).json()
        assert len(rest["items"]) == 1 and rest["items"][0]["id"] != everything["items"][0]["id"]

        r = await client.delete(base)
        assert r.status_code == 200 and r.json()["id"] == ep["id"]
        assert (await client.get(base)).status_code == 404


async def test_emit_refuses_an_unknown_event_and_a_payload_that_is_not_json(db: Database) -> None:
    from roost.errors import InvalidInput, TooLarge

    t0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    account = await make_account(db, t0)
    async with db.transaction() as tx:
        with pytest.raises(InvalidInput):
            await webhooks.emit(tx, account_id=account, event="handoff.exploded", payload={})
        with pytest.raises(InvalidInput):
            await webhooks.emit(tx, account_id=account, event="batch.done", payload={"x": object()})
        with pytest.raises(TooLarge):
            await webhooks.emit(tx, account_id=account, event="batch.done", payload={"x": "y" * 300_000})
        assert await webhooks.emit(tx, account_id=account, event="batch.done", payload={}) == 0


async def test_the_destination_is_checked_again_at_delivery(db: Database, receiver: Receiver) -> None:
    """An endpoint saved while its host was allowed is refused at connect time once it is not (as
    when DNS now answers a private address): a failed attempt, retried, nothing sent."""
    t0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    services = make_services(db, allowed_destinations=LOOPBACK)
    services.clock = FixedClock(t0)  # type: ignore[assignment]
    account = await make_account(db, t0)
    with destinations.installed(destinations.Policy.parse([LOOPBACK])):
        ep, _ = await webhooks.create_endpoint(services, account_id=account, url=receiver.url + "/h",
                                               events=["batch.done"], description="", enabled=True)
    async with db.transaction() as tx:
        await webhooks.emit(tx, account_id=account, event="batch.done", payload={}, now=t0)
    with destinations.installed(destinations.Policy()):
        (row,) = await sender.claim_due(services, 10)
        async with destinations.http_client(5) as client:
            outcome = await sender.send_one(services, client, row)
    assert not outcome.ok and outcome.error.startswith("blocked:")
    assert receiver.received == []
    (pending,) = (await webhooks.list_deliveries(services, ep["id"], None, status="pending", limit=5,
                                                 cursor=None))["items"]
    assert pending["attempts"] == 1 and pending["last_error"].startswith("blocked:")
    assert await repo.open_count(db) == 1


async def test_reseal_moves_secrets_to_the_first_key_and_they_still_sign(db: Database) -> None:
    t0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    plain = make_services(db, secret_key=None)
    account = await make_account(db, t0)
    with destinations.installed(destinations.Policy.parse([LOOPBACK])):
        ep, secret = await webhooks.create_endpoint(plain, account_id=account, url="http://127.0.0.1:9/h",
                                                    events=["batch.done"], description="", enabled=True)
    assert (await repo.stored_secrets(db, ep["id"]))["secret"] == "plain:" + secret
    new_key = "bmV3LXNlY3JldC1rZXktZm9yLXJvb3N0LXRlc3RzLTE="
    assert await webhooks.reseal(db, [new_key]) == (1, [])
    stored = (await repo.stored_secrets(db, ep["id"]))["secret"]
    assert stored.startswith("fernet:") and secret not in stored
    sealed = make_services(db, secret_key=new_key)
    assert await webhooks.signing_secrets(sealed, ep["id"], t0) == [secret]
    other = make_services(db, secret_key=SECRET_KEY)
    with pytest.raises(NotConfigured, match="not in ROOST_SECRET_KEYS"):
        await webhooks.signing_secrets(other, ep["id"], t0)
