"""Notifications, watches, digest run and unsubscribe over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any, AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from roost.serve import Running
from roost.storage import outbox, tenancy
from tests.support.server import SECRET_KEY, admin_client, running_server


@pytest.fixture
async def server(database_url: str) -> AsyncIterator[Running]:
    async with running_server(database_url, secret_key=SECRET_KEY, public_url="https://roost.example",
                              mail_transport="console") as running:
        yield running


@pytest.fixture
async def users(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.post("/api/admin/accounts", json={"name": "Acme", "timezone": "UTC"})
    acc = r.json()
    out = {}
    for name in ("ann", "bob"):
        r = await client.post("/api/admin/users", json={"account_id": acc["id"], "email": f"{name}@example.com",
                                                         "display_name": name.title(), "digest_cadence": "daily"})
        assert r.status_code == 201, r.text
        out[name] = r.json()
    return out


def error_code(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    return r.json()["error"]["code"]


async def test_create_list_and_read_notifications(client: httpx.AsyncClient, users: dict) -> None:
    ann, bob = users["ann"], users["bob"]
    r = await client.post("/api/v1/notifications", json={
        "recipient_user_id": ann["id"], "event_kind": "comment", "topic": "rfc-1", "actor_user_id": bob["id"],
        "payload": {"summary": "hi"}})
    assert r.status_code == 201, r.text
    first = r.json()
    assert first["read_at"] is None and first["email"] is False and first["payload"] == {"summary": "hi"}
    r = await client.post("/api/v1/notifications", json={
        "recipient_user_id": ann["id"], "event_kind": "comment", "topic": "rfc-1"})
    second = r.json()

    r = await client.post(f"/api/v1/notifications/{first['id']}/read")
    assert r.status_code == 200 and r.json()["read_at"] is not None
    again = await client.post(f"/api/v1/notifications/{first['id']}/read")
    assert again.json()["read_at"] == r.json()["read_at"]

    r = await client.get(f"/api/v1/users/{ann['id']}/notifications", params={"unread": "true"})
    assert [n["id"] for n in r.json()["items"]] == [second["id"]]
    r = await client.get(f"/api/v1/users/{ann['id']}/notifications", params={"limit": 1})
    page = r.json()
    assert [n["id"] for n in page["items"]] == [first["id"]] and page["next_cursor"] == first["id"]


async def test_a_personal_direct_email_notification_is_queued_at_once(
    client: httpx.AsyncClient, users: dict, server: Running
) -> None:
    r = await client.post("/api/v1/notifications", json={
        "recipient_user_id": users["ann"]["id"], "event_kind": "mention", "topic": "rfc-1",
        "payload": {"category": "personal-direct", "text": "you were mentioned"}, "email": True})
    assert r.status_code == 201, r.text
    assert r.json()["email_sent_at"] is not None
    rows = await server.services.db.fetch("SELECT * FROM outbox WHERE recipient_user_id = $1", users["ann"]["id"])
    assert len(rows) == 1 and "you were mentioned" in rows[0]["text_body"]


async def test_bad_notification_bodies_are_400(client: httpx.AsyncClient, users: dict) -> None:
    ann = users["ann"]["id"]
    base = {"recipient_user_id": ann, "event_kind": "comment", "topic": "t"}
    for body, code in [
        ({**base, "event_kind": ""}, "invalid_input"),
        ({**base, "topic": "x" * 301}, "invalid_input"),
        ({**base, "payload": []}, "invalid_input"),
        ({**base, "payload": {"category": 5}}, "invalid_input"),
        ({**base, "email": "yes"}, "invalid_input"),
        ({**base, "extra": 1}, "invalid_input"),
        ({k: v for k, v in base.items() if k != "topic"}, "invalid_input"),
        ({**base, "recipient_user_id": "usr_nobody"}, "missing_reference"),
        ({**base, "actor_user_id": "usr_nobody"}, "missing_reference"),
    ]:
        r = await client.post("/api/v1/notifications", json=body)
        assert error_code(r, 400) in (code, "validation_failed"), body
    r = await client.post("/api/v1/notifications", content=b"{", headers={"Content-Type": "application/json"})
    assert r.status_code == 400


async def test_unknown_ids_are_404_and_no_token_is_401(client: httpx.AsyncClient, server: Running) -> None:
    assert error_code(await client.post("/api/v1/notifications/ntf_nope/read"), 404) == "not_found"
    assert error_code(await client.get("/api/v1/users/usr_nope/notifications"), 404) == "not_found"
    async with admin_client(server.url, token=None) as anon:
        assert (await anon.post("/api/admin/digest/run")).status_code == 401
        assert (await anon.get("/api/v1/users/x/notifications")).status_code == 401
    r = await client.get("/api/v1/users/x/notifications", params={"limit": 0})
    assert r.status_code == 400


async def test_watch_and_bad_watch_bodies(client: httpx.AsyncClient, users: dict) -> None:
    r = await client.post("/api/v1/watches", json={"user_id": users["ann"]["id"], "topic": "rfc-1"})
    assert r.status_code == 201 and r.json()["topic"] == "rfc-1"
    again = await client.post("/api/v1/watches", json={"user_id": users["ann"]["id"], "topic": "rfc-1"})
    assert again.status_code == 201 and again.json()["created_at"] == r.json()["created_at"]
    assert error_code(await client.post("/api/v1/watches", json={"user_id": "usr_x", "topic": "t"}), 400) \
        == "missing_reference"
    assert (await client.post("/api/v1/watches", json={"user_id": users["ann"]["id"], "topic": ""})).status_code == 400


async def test_digest_run_answers_the_counters(client: httpx.AsyncClient, users: dict) -> None:
    r = await client.post("/api/admin/digest/run")
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"released", "decayed", "due", "digests", "empty", "batches", "notifications"}
    assert r.json()["due"] == 0  # their first slot is tomorrow 08:00 (or today, later)


async def test_one_click_unsubscribe_turns_the_digest_off(
    client: httpx.AsyncClient, users: dict, server: Running
) -> None:
    from roost.domain.digest.tick import run_tick
    from roost.storage import notifications

    ann = users["ann"]
    db = server.services.db
    async with db.transaction() as tx:
        await notifications.insert(tx, recipient_user_id=ann["id"], event_kind="comment", topic="t",
                                   actor_user_id=None, payload={}, email=False, now=server.services.clock.now())
    await db.execute("UPDATE digest_schedule SET next_at = $2 WHERE user_id = $1", ann["id"],
                     server.services.clock.now())
    await run_tick(server.services)
    [row] = await db.fetch("SELECT id FROM outbox WHERE recipient_user_id = $1", ann["id"])
    link = (await outbox.get(db, row["id"]))["headers"]["List-Unsubscribe"].strip("<>")
    token = parse_qs(urlsplit(link).query)["token"][0]

    page = await client.get("/unsubscribe", params={"token": token})
    assert page.status_code == 200 and "<form method=post" in page.text
    assert (await tenancy.get_user(db, ann["id"]))["digest_cadence"] == "daily"  # GET changes nothing

    async with admin_client(server.url, token=None) as mail_client:  # no service token: the link is the key
        r = await mail_client.post("/unsubscribe", params={"token": token},
                                   content=b"List-Unsubscribe=One-Click",
                                   headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 200, r.text
        assert r.json() == {"user_id": ann["id"], "digest_cadence": "off"}
        assert (await tenancy.get_user(db, ann["id"]))["digest_cadence"] == "off"
        for bad in (token[:-2] + "xx", users["bob"]["id"] + ".AAAA", "nodot", ""):
            r = await mail_client.post("/unsubscribe", params={"token": bad})
            assert r.status_code == 400, (bad, r.text)
            assert (await mail_client.get("/unsubscribe", params={"token": bad})).status_code == 400
        assert (await mail_client.post("/unsubscribe")).status_code == 400
