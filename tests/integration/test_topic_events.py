"""Topics and watchers over HTTP (a running server, SQLite and PostgreSQL): topic events fan out to
watchers, watch lists and deletes, and each endpoint's bad input."""

from __future__ import annotations

import datetime as dt
from typing import Any, AsyncIterator
from urllib.parse import quote

import httpx
import pytest
import trio

from roost.domain import watchers
from roost.domain.digest.tick import run_tick
from roost.serve import Running
from tests.support.server import admin_client, running_server

TOPIC = "rfc-42"


@pytest.fixture
async def server(database_url: str) -> AsyncIterator[Running]:
    async with running_server(database_url, public_url="https://roost.example", mail_transport="console") as running:
        yield running


async def make_account(client: httpx.AsyncClient, names: tuple[str, ...], label: str = "Acme") -> dict[str, Any]:
    r = await client.post("/api/admin/accounts", json={"name": label, "timezone": "UTC"})
    assert r.status_code == 201, r.text
    account = r.json()
    out = {}
    for name in names:
        r = await client.post("/api/admin/users", json={"account_id": account["id"], "display_name": name.title(),
                                                         "email": f"{name}@{label.lower()}.example",
                                                         "digest_cadence": "daily"})
        assert r.status_code == 201, r.text
        out[name] = r.json()
    return out


async def watch(client: httpx.AsyncClient, user: dict[str, Any], topic: str = TOPIC) -> None:
    r = await client.post("/api/v1/watches", json={"user_id": user["id"], "topic": topic})
    assert r.status_code == 201, r.text


def event(actor: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"event_kind": "comment_added", "actor_user_id": actor["id"], "payload": {"summary": "a reply"}, **extra}


async def publish(client: httpx.AsyncClient, body: dict[str, Any], topic: str = TOPIC) -> httpx.Response:
    return await client.post(f"/api/v1/topics/{quote(topic, safe='')}/events", json=body)


async def inbox(client: httpx.AsyncClient, user: dict[str, Any]) -> list[dict[str, Any]]:
    r = await client.get(f"/api/v1/users/{user['id']}/notifications")
    assert r.status_code == 200, r.text
    return r.json()["items"]


def error_code(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    return r.json()["error"]["code"]


async def test_an_event_by_one_of_three_watchers_notifies_the_other_two_once_each(client: httpx.AsyncClient) -> None:
    users = await make_account(client, ("ann", "bob", "cid"))
    for u in users.values():
        await watch(client, u)

    r = await publish(client, event(users["ann"]))

    assert r.status_code == 201, r.text
    assert r.json() == {"notified": 2}
    assert await inbox(client, users["ann"]) == []
    for name in ("bob", "cid"):
        [n] = await inbox(client, users[name])
        assert (n["topic"], n["event_kind"], n["actor_user_id"]) == (TOPIC, "comment_added", users["ann"]["id"])
        assert n["payload"] == {"summary": "a reply"} and n["email_sent_at"] is None


async def test_only_active_watchers_of_the_topic_in_the_actors_account_are_notified(
    client: httpx.AsyncClient, server: Running
) -> None:
    users = await make_account(client, ("ann", "bob", "cid", "dan", "eve"))
    others = await make_account(client, ("zed",), label="Other")
    for name in ("bob", "cid", "dan"):
        await watch(client, users[name])
    await watch(client, users["eve"], topic="another-topic")
    await watch(client, others["zed"])  # same topic name, another account
    r = await client.patch(f"/api/admin/users/{users['cid']['id']}", json={"active": False})
    assert r.status_code == 200, r.text
    stale = server.services.clock.now() - dt.timedelta(days=server.services.settings.watch_decay_days + 1)
    await server.services.db.execute("UPDATE watches SET last_participation_at = $1 WHERE user_id = $2",
                                     stale, users["dan"]["id"])  # decays at the next tick

    assert (await publish(client, event(users["ann"]))).json() == {"notified": 1}

    assert len(await inbox(client, users["bob"])) == 1
    for user in (users["cid"], users["dan"], users["eve"], others["zed"]):
        assert await inbox(client, user) == []


async def test_the_actor_takes_part_and_so_watches_the_topic(client: httpx.AsyncClient) -> None:
    users = await make_account(client, ("ann", "bob"))
    await watch(client, users["bob"])

    assert (await publish(client, event(users["ann"]))).json() == {"notified": 1}
    [ann_watch] = (await client.get(f"/api/v1/users/{users['ann']['id']}/watches")).json()["items"]
    assert ann_watch["topic"] == TOPIC

    assert (await publish(client, event(users["bob"]))).json() == {"notified": 1}  # ann hears of the reply
    [n] = await inbox(client, users["ann"])
    assert n["actor_user_id"] == users["bob"]["id"]
    [bob_watch] = (await client.get(f"/api/v1/users/{users['bob']['id']}/watches")).json()["items"]
    assert bob_watch["last_participation_at"] >= bob_watch["created_at"]


async def test_a_repeated_idempotency_key_answers_the_first_answer_and_notifies_nobody_again(
    client: httpx.AsyncClient
) -> None:
    users = await make_account(client, ("ann", "bob", "cid"))
    for name in ("bob", "cid"):
        await watch(client, users[name])
    body = event(users["ann"], idempotency_key="evt-1")

    first = await publish(client, body)
    await watch(client, (await make_account(client, ("dan",), label="Acme2"))["dan"])  # changes nothing here
    again = await publish(client, body)

    assert first.status_code == again.status_code == 201
    assert first.json() == again.json() == {"notified": 2}
    assert len(await inbox(client, users["bob"])) == len(await inbox(client, users["cid"])) == 1
    changed = await publish(client, {**body, "payload": {"summary": "something else"}})
    assert error_code(changed, 409) == "idempotency_key_reused"
    assert error_code(await publish(client, body, topic="other"), 409) == "idempotency_key_reused"
    assert len(await inbox(client, users["bob"])) == 1
    other = await make_account(client, ("yan", "zed"), label="Other")  # keys are per account
    await watch(client, other["zed"])
    assert (await publish(client, {**body, "actor_user_id": other["yan"]["id"]})).json() == {"notified": 1}


async def test_an_idempotency_key_is_forgotten_after_its_retention(client: httpx.AsyncClient, server: Running) -> None:
    users = await make_account(client, ("ann", "bob"))
    await watch(client, users["bob"])
    body = event(users["ann"], idempotency_key="evt-old")
    assert (await publish(client, body)).json() == {"notified": 1}
    now = server.services.clock.now()

    assert await watchers.prune_keys(server.services, now + watchers.KEY_RETENTION - dt.timedelta(minutes=1)) == 0
    assert await watchers.prune_keys(server.services, now + watchers.KEY_RETENTION + dt.timedelta(minutes=1)) == 1

    assert (await publish(client, body)).json() == {"notified": 1}  # a new event now
    assert len(await inbox(client, users["bob"])) == 2


async def test_concurrent_repeats_of_one_idempotency_key_fan_out_once(client: httpx.AsyncClient) -> None:
    users = await make_account(client, ("ann", "bob", "cid"))
    for name in ("bob", "cid"):
        await watch(client, users[name])
    body = event(users["ann"], idempotency_key="evt-race")
    answers: list[httpx.Response] = []

    async def send() -> None:
        answers.append(await publish(client, body))

    async with trio.open_nursery() as nursery:
        for _ in range(6):
            nursery.start_soon(send)

    assert [(r.status_code, r.json()) for r in answers] == [(201, {"notified": 2})] * 6
    assert len(await inbox(client, users["bob"])) == len(await inbox(client, users["cid"])) == 1


async def test_a_personal_direct_topic_event_mails_each_watcher_at_once(
    client: httpx.AsyncClient, server: Running
) -> None:
    users = await make_account(client, ("ann", "bob", "cid"))
    for name in ("bob", "cid"):
        await watch(client, users[name])

    r = await publish(client, event(users["ann"], payload={"category": "personal-direct", "text": "you are needed"},
                                    email=True))

    assert r.json() == {"notified": 2}
    db = server.services.db
    for name in ("bob", "cid"):
        [n] = await inbox(client, users[name])
        assert n["email_sent_at"] is not None
        [mail] = await db.fetch("SELECT * FROM outbox WHERE recipient_user_id = $1", users[name]["id"])
        assert mail["to_addr"] == users[name]["email"] and "you are needed" in mail["text_body"]
        assert await db.fetchval("SELECT notification_id FROM notification_mails WHERE outbox_id = $1",
                                 mail["id"]) == n["id"]
    digest = await run_tick(server.services)
    assert digest["notifications"] == 0  # e-mailed: not in a digest


async def test_watches_are_listed_a_page_at_a_time_and_deleted(client: httpx.AsyncClient) -> None:
    users = await make_account(client, ("ann",))
    ann = users["ann"]
    names = ["a/b", "x" * 300, "émoji 🐦", "zeta"]
    for topic in names:
        await watch(client, ann, topic)

    seen, cursor = [], None
    while True:
        params = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        r = await client.get(f"/api/v1/users/{ann['id']}/watches", params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        seen += [w["topic"] for w in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(names) and len(seen) == len(names)
    assert set(page["items"][0]) == {"user_id", "topic", "created_at", "last_participation_at"}

    r = await client.request("DELETE", "/api/v1/watches", json={"user_id": ann["id"], "topic": "a/b"})
    assert r.status_code == 200, r.text
    assert r.json()["topic"] == "a/b"
    again = await client.request("DELETE", "/api/v1/watches", json={"user_id": ann["id"], "topic": "a/b"})
    assert error_code(again, 404) == "no_such_watch"
    r = await client.get(f"/api/v1/users/{ann['id']}/watches")
    assert "a/b" not in [w["topic"] for w in r.json()["items"]]


async def test_a_topic_with_slashes_and_spaces_in_the_path_is_the_watched_topic(client: httpx.AsyncClient) -> None:
    users = await make_account(client, ("ann", "bob"))
    await watch(client, users["bob"], "rfc/42 events")
    assert (await publish(client, event(users["ann"]), topic="rfc/42 events")).json() == {"notified": 1}


async def test_bad_topic_event_requests_are_4xx_never_500(client: httpx.AsyncClient, server: Running) -> None:
    users = await make_account(client, ("ann", "bob"))
    await watch(client, users["bob"])
    ann = users["ann"]
    for body, status in [
        ({**event(ann), "actor_user_id": "usr_nobody"}, 404),
        ({**event(ann), "actor_user_id": "x" * 65}, 400),
        ({**event(ann), "actor_user_id": 5}, 400),
        ({**event(ann), "event_kind": ""}, 400),
        ({**event(ann), "event_kind": "k" * 101}, 400),
        ({**event(ann), "event_kind": "a\x00b"}, 400),
        ({**event(ann), "payload": {"t": "a\x00b"}}, 400),
        ({**event(ann), "payload": {"a\x00": 1}}, 400),
        ({**event(ann), "payload": []}, 400),
        ({**event(ann), "payload": "text"}, 400),
        ({**event(ann), "payload": {"category": 7}}, 400),
        ({**event(ann), "email": "yes"}, 400),
        ({**event(ann), "email": 1}, 400),
        ({**event(ann), "idempotency_key": ""}, 400),
        ({**event(ann), "idempotency_key": "k" * 201}, 400),
        ({**event(ann), "idempotency_key": 12}, 400),
        ({**event(ann), "topic": TOPIC}, 400),  # unknown field
        ({k: v for k, v in event(ann).items() if k != "actor_user_id"}, 400),
        ({**event(ann), "payload": {"big": "x" * 20_000}}, 413),  # over the 16 KiB a watcher's copy may be
        ({**event(ann), "payload": {"big": "x" * 2_000_000}}, 413),  # over the body limit
        ({**event(ann), "payload": _nested(100)}, 400),
        ([event(ann)], 400),
    ]:
        r = await publish(client, body)
        assert r.status_code == status, (str(body)[:200], r.text[:300])
        assert "error" in r.json() and "Traceback" not in r.text
    # NUL in any path is 404 before routing (roost.http.app); an empty topic matches no route.
    for topic, status in [("x" * 301, 400), ("x" * 20_000, 400), ("a\x00b", 404), ("", 404)]:
        r = await publish(client, event(ann), topic=topic)
        assert r.status_code == status, (topic[:20], r.text[:300])
    deep = "[" * 100_000 + "]" * 100_000
    r = await client.post(f"/api/v1/topics/{TOPIC}/events", content=deep, headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert await inbox(client, users["bob"]) == []  # none of them notified anybody
    async with admin_client(server.url, token=None) as anon:
        assert (await anon.post(f"/api/v1/topics/{TOPIC}/events", json=event(ann))).status_code == 401


async def test_bad_watch_list_and_delete_requests_are_4xx_never_500(client: httpx.AsyncClient) -> None:
    ann = (await make_account(client, ("ann",)))["ann"]
    await watch(client, ann)
    for path, params, status in [
        ("/api/v1/users/usr_nobody/watches", {}, 404),
        (f"/api/v1/users/{ann['id']}/watches", {"limit": 0}, 400),
        (f"/api/v1/users/{ann['id']}/watches", {"limit": 1001}, 400),
        (f"/api/v1/users/{ann['id']}/watches", {"limit": "ten"}, 400),
        (f"/api/v1/users/{ann['id']}/watches", {"cursor": "not a cursor!"}, 400),
        (f"/api/v1/users/{ann['id']}/watches", {"cursor": "A" * 421}, 400),
        (f"/api/v1/users/{ann['id']}/watches", {"cursor": "_w"}, 400),  # not UTF-8 once decoded
        (f"/api/v1/users/{ann['id']}/watches", {"cursor": "a\x00"}, 400),
    ]:
        r = await client.get(path, params=params)
        assert r.status_code == status, (path, params, r.text)
        assert "error" in r.json()
    for body, status in [
        ({"user_id": "usr_nobody", "topic": TOPIC}, 404),
        ({"user_id": ann["id"], "topic": "never-watched"}, 404),
        ({"user_id": ann["id"], "topic": ""}, 400),
        ({"user_id": ann["id"], "topic": "x" * 301}, 400),
        ({"user_id": ann["id"], "topic": "a\x00"}, 400),
        ({"user_id": ann["id"], "topic": 5}, 400),
        ({"user_id": ann["id"], "topic": {"a": _nested(100)}}, 400),
        ({"user_id": ann["id"]}, 400),
        ({"user_id": ann["id"], "topic": TOPIC, "extra": 1}, 400),
        ([ann["id"], TOPIC], 400),
    ]:
        r = await client.request("DELETE", "/api/v1/watches", json=body)
        assert r.status_code == status, (str(body)[:100], r.text)
        assert "error" in r.json()
    assert [w["topic"] for w in (await client.get(f"/api/v1/users/{ann['id']}/watches")).json()["items"]] == [TOPIC]


def _nested(depth: int) -> Any:
    value: Any = {}
    for _ in range(depth):
        value = {"a": value}
    return value


async def test_the_openapi_document_describes_the_topic_and_watch_operations(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    publish_op = paths["/api/v1/topics/{topic}/events"]["post"]
    list_op = paths["/api/v1/users/{user_id}/watches"]["get"]
    delete_op = paths["/api/v1/watches"]["delete"]
    for op in (publish_op, list_op, delete_op, paths["/api/v1/watches"]["post"]):
        assert op.get("summary"), op
    assert {"201", "400", "401", "404", "409", "413"} <= set(publish_op["responses"])
    assert {"200", "400", "401", "404"} <= set(list_op["responses"])
    assert {"200", "400", "401", "404"} <= set(delete_op["responses"])
    assert {p["name"] for p in list_op["parameters"]} >= {"user_id", "limit", "cursor"}
