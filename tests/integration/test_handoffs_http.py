# ruff: noqa: ASYNC110  (tests poll state other tasks and processes own)
"""Handoff endpoints on a real server, both backends: escalation mail on a real SMTP server, the
queue's order and pages, cancel, and bad input on every endpoint."""

from __future__ import annotations

import trio

from tests.support.handoffs import handoff_body, make_account, make_user
from tests.support.server import admin_client, free_port, running_server


async def test_an_escalation_mails_owners_admins_engineers_but_not_the_creator_or_members(
    database_url: str, smtp
) -> None:
    recorder, port = smtp
    async with running_server(database_url, smtp_url=f"smtp://127.0.0.1:{port}") as server, \
            admin_client(server.url) as client:
        a, b = await make_account(client, "A"), await make_account(client, "B")
        creator = await make_user(client, a, "creator@example.com", role="engineer")
        owner = await make_user(client, a, "owner@example.com", role="owner")
        admin = await make_user(client, a, "admin@example.com", role="admin")
        engineer = await make_user(client, a, "eng@example.com", role="engineer")
        await make_user(client, a, "member@example.com", role="member")
        await make_user(client, a, "gone@example.com", role="engineer", active=False)
        await make_user(client, b, "other@example.com", role="owner")

        r = await client.post("/api/v1/handoffs", json=handoff_body(a["id"], creator["id"], intent="park"))
        assert r.status_code == 201 and r.json()["notifications"] == []
        r = await client.post("/api/v1/handoffs", json=handoff_body(a["id"], creator["id"], intent="escalate",
                                                                    priority="urgent"))
        assert r.status_code == 201, r.text
        handoff = r.json()
        expected = {owner["email"], admin["email"], engineer["email"]}
        with trio.fail_after(15):
            while len(recorder.messages) < 3:
                await trio.sleep(0.05)
        await trio.sleep(0.3)
        assert {m["To"] for m in recorder.messages} == expected  # once each; nobody else, no park mail
        assert all(m["X-Roost-Handoff"] == handoff["id"] for m in recorder.messages)
        assert all("[urgent]" in m["Subject"] for m in recorder.messages)
        with trio.fail_after(10):
            while True:
                got = (await client.get(f"/api/v1/handoffs/{handoff['id']}")).json()
                if all(n["state"] == "sent" for n in got["notifications"]) and len(got["notifications"]) == 3:
                    break
                await trio.sleep(0.05)
        assert sorted(n["user_id"] for n in got["notifications"]) == sorted([owner["id"], admin["id"], engineer["id"]])
        assert {n["channel"] for n in got["notifications"]} == {"email"}


async def test_an_escalation_answers_at_once_when_the_mail_server_is_down(database_url: str) -> None:
    async with running_server(database_url, smtp_url=f"smtp://127.0.0.1:{free_port()}") as server, \
            admin_client(server.url) as client:
        a = await make_account(client, "A")
        creator = await make_user(client, a, "creator@example.com", role="engineer")
        owner = await make_user(client, a, "owner@example.com", role="owner")
        r = await client.post("/api/v1/handoffs", json=handoff_body(a["id"], creator["id"], intent="escalate"))
        assert r.status_code == 201
        with trio.fail_after(10):
            while True:
                got = (await client.get(f"/api/v1/handoffs/{r.json()['id']}")).json()
                if got["notifications"]:
                    break
                await trio.sleep(0.05)
        # Queued and retried by the mailer (refused connections are transient); the handoff is open.
        assert got["notifications"][0]["user_id"] == owner["id"]
        assert got["notifications"][0]["state"] in ("queued", "sending")
        assert got["status"] == "open"


async def test_the_queue_lists_open_handoffs_urgent_first_then_oldest_in_pages(database_url: str) -> None:
    async with running_server(database_url) as server, admin_client(server.url) as client:
        a, b = await make_account(client, "A"), await make_account(client, "B")
        ann = await make_user(client, a, "ann@example.com", role="engineer")
        bea = await make_user(client, b, "bea@example.com", role="engineer")
        made = []
        for priority in ["low", "urgent", "normal", "urgent", "high", "low", "normal"]:
            r = await client.post("/api/v1/handoffs", json=handoff_body(a["id"], ann["id"], priority=priority))
            made.append((priority, r.json()["id"]))
        await client.post("/api/v1/handoffs", json=handoff_body(b["id"], bea["id"]))
        cancelled = made[2][1]
        r = await client.post(f"/api/v1/handoffs/{cancelled}/cancel", json={"user_id": ann["id"]})
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        again = await client.post(f"/api/v1/handoffs/{cancelled}/cancel", json={"user_id": ann["id"]})
        assert again.status_code == 200 and again.json()["cancelled_at"] == r.json()["cancelled_at"]
        r = await client.post(f"/api/v1/handoffs/{cancelled}/claim", json={"user_id": ann["id"]})
        assert r.status_code == 409 and r.json()["error"]["code"] == "handoff_cancelled"
        claimed = made[0][1]
        assert (await client.post(f"/api/v1/handoffs/{claimed}/claim", json={"user_id": ann["id"]})).status_code == 200
        r = await client.post(f"/api/v1/handoffs/{claimed}/cancel", json={"user_id": ann["id"]})
        assert r.status_code == 409 and r.json()["error"]["claimed_by"] == ann["id"]

        rank = {"urgent": 0, "high": 1, "normal": 2, "low": 3}
        open_ = [(p, i) for p, i in made if i not in (cancelled, claimed)]
        expected = [i for p, i in sorted(open_, key=lambda pi: (rank[pi[0]], pi[1]))]
        seen, cursor = [], None
        while True:
            params = {"account_id": a["id"], "limit": 2, **({"cursor": cursor} if cursor else {})}
            r = await client.get("/api/v1/handoffs/queue", params=params)
            assert r.status_code == 200, r.text
            seen += [item["id"] for item in r.json()["items"]]
            assert all("snapshot" not in item for item in r.json()["items"])
            cursor = r.json()["next_cursor"]
            if cursor is None:
                break
        assert seen == expected


async def test_bad_input_on_every_endpoint(database_url: str) -> None:
    async with running_server(database_url) as server, admin_client(server.url) as client:
        a, b = await make_account(client, "A"), await make_account(client, "B")
        ann = await make_user(client, a, "ann@example.com", role="engineer")
        bea = await make_user(client, b, "bea@example.com", role="engineer")
        good = handoff_body(a["id"], ann["id"])

        async def create(**changes):
            return await client.post("/api/v1/handoffs", json={**good, **changes})

        assert (await create(intent="shelve")).status_code == 400
        assert (await create(priority="asap")).status_code == 400
        assert (await create(subject_ref="")).status_code == 400
        assert (await create(snapshot=[1, 2])).status_code == 400
        assert (await create(bogus=1)).status_code == 400
        r = await create(snapshot={"blob": "x" * (64 * 1024)})
        assert r.status_code == 413 and r.json()["error"]["code"] == "snapshot_too_large"
        assert (await create(snapshot={"blob": "x" * (64 * 1024 - 20)})).status_code == 201
        assert (await create(account_id="acc_nope")).status_code == 400
        r = await create(created_by=bea["id"])  # another account's user
        assert r.status_code == 400 and r.json()["error"]["code"] == "missing_reference"
        assert (await client.post("/api/v1/handoffs", content=b"{", headers={"Content-Type": "application/json"})
                ).status_code == 400
        assert (await admin_client(server.url, token="wrong").post("/api/v1/handoffs", json=good)).status_code == 401

        handoff = (await create()).json()
        url = f"/api/v1/handoffs/{handoff['id']}"
        for action in ("claim", "cancel"):
            assert (await client.post(f"/api/v1/handoffs/hnd_nope/{action}", json={"user_id": ann["id"]})
                    ).status_code == 404
            assert (await client.post(f"{url}/{action}", json={"user_id": "usr_nope"})).status_code == 404
            assert (await client.post(f"{url}/{action}", json={"user_id": bea["id"]})).status_code == 404
            assert (await client.post(f"{url}/{action}", json={})).status_code == 400
            assert (await client.post(f"{url}/{action}", json={"user_id": 5})).status_code == 400
        assert (await client.get("/api/v1/handoffs/hnd_nope")).status_code == 404
        assert (await client.get(url, params={"account_id": b["id"]})).status_code == 404
        assert (await client.get(url, params={"account_id": a["id"]})).status_code == 200
        assert (await client.get("/api/v1/handoffs/queue")).status_code == 400
        assert (await client.get("/api/v1/handoffs/queue", params={"account_id": a["id"], "limit": 0})
                ).status_code == 400
        r = await client.get("/api/v1/handoffs/queue", params={"account_id": a["id"], "cursor": "garbage"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_cursor"
        r = await client.get("/api/v1/handoffs/queue", params={"account_id": "acc_nope"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
