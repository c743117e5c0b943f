"""The account's handoff list and the queue scoped by team and intent, on a real server, both
backends: filters, cursor paging, and bad input for every new parameter (never a 500)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.handoffs import handoff_body, make_account
from tests.support.server import admin_client, running_server


async def _user(client: httpx.AsyncClient, account: dict, email: str, **fields: Any) -> dict[str, Any]:
    r = await client.post("/api/admin/users", json={"account_id": account["id"], "email": email,
                                                     "display_name": email.split("@")[0], "role": "engineer",
                                                     **fields})
    assert r.status_code == 201, r.text
    return r.json()


async def _post(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    r = await client.post("/api/v1/handoffs", json=body)
    assert r.status_code == 201, r.text
    return r.json()


async def _all(client: httpx.AsyncClient, path: str, limit: int, **params: Any) -> list[dict[str, Any]]:
    """Follow next_cursor to the end, ``limit`` a page."""
    items, cursor = [], None
    for _ in range(100):
        r = await client.get(path, params={**params, "limit": limit, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        page = r.json()
        assert set(page) == {"items", "next_cursor"} and len(page["items"]) <= limit
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("next_cursor never ran out")


async def test_a_handoff_takes_its_creators_team_unless_it_names_one_and_the_queue_scopes_by_team_and_intent(
    database_url: str,
) -> None:
    async with running_server(database_url) as server, admin_client(server.url) as client:
        a, b = await make_account(client, "A"), await make_account(client, "B")
        red = await _user(client, a, "red@example.com", team="red")
        solo = await _user(client, a, "solo@example.com")
        other = await _user(client, b, "other@example.com", team="red")
        assert (red["team"], solo["team"]) == ("red", None)

        red_park = await _post(client, handoff_body(a["id"], red["id"], intent="park"))
        red_esc = await _post(client, handoff_body(a["id"], red["id"], intent="escalate", priority="urgent"))
        blue_esc = await _post(client, handoff_body(a["id"], red["id"], intent="escalate", team="blue"))
        none_park = await _post(client, handoff_body(a["id"], red["id"], intent="park", team=None))
        solo_park = await _post(client, handoff_body(a["id"], solo["id"], intent="park"))
        await _post(client, handoff_body(b["id"], other["id"], intent="park"))  # B's red team is not A's
        assert [h["team"] for h in (red_park, red_esc, blue_esc, none_park, solo_park)] == [
            "red", "red", "blue", None, None]

        async def queue(**params: Any) -> list[str]:
            return [h["id"] for h in await _all(client, "/api/v1/handoffs/queue", 1, account_id=a["id"], **params)]

        assert await queue(team="red") == [red_esc["id"], red_park["id"]]  # urgent first
        assert await queue(team="blue") == [blue_esc["id"]]
        assert await queue(intent="escalate") == [red_esc["id"], blue_esc["id"]]
        assert await queue(intent="park") == [red_park["id"], none_park["id"], solo_park["id"]]
        assert await queue(team="red", intent="park") == [red_park["id"]]
        assert await queue(team="green") == []
        assert len(await queue()) == 5
        # A claimed one leaves the queue; a user changing team leaves their handoffs where they were.
        r = await client.post(f"/api/v1/handoffs/{red_park['id']}/claim", json={"user_id": solo["id"]})
        assert r.status_code == 200
        r = await client.patch(f"/api/admin/users/{red['id']}", json={"team": None})
        assert r.status_code == 200 and r.json()["team"] is None
        assert await queue(team="red") == [red_esc["id"]]
        r = await client.patch(f"/api/admin/users/{solo['id']}", json={"team": "blue"})
        assert r.status_code == 200 and r.json()["team"] == "blue"
        assert (await _post(client, handoff_body(a["id"], solo["id"])))["team"] == "blue"


async def test_the_account_list_pages_newest_first_through_every_state_and_filters(database_url: str) -> None:
    async with running_server(database_url) as server, admin_client(server.url) as client:
        a, b = await make_account(client, "A"), await make_account(client, "B")
        ann = await _user(client, a, "ann@example.com", team="red")
        bea = await _user(client, b, "bea@example.com")
        made = []
        for i in range(9):
            made.append(await _post(client, handoff_body(a["id"], ann["id"], intent=("park", "escalate")[i % 2],
                                                         team=("red", "blue", None)[i % 3], subject_ref=f"t{i}")))
        await _post(client, handoff_body(b["id"], bea["id"]))
        for h in made[0:3]:
            assert (await client.post(f"/api/v1/handoffs/{h['id']}/claim", json={"user_id": ann["id"]})
                    ).status_code == 200
        for h in made[3:5]:
            assert (await client.post(f"/api/v1/handoffs/{h['id']}/cancel", json={"user_id": ann["id"]})
                    ).status_code == 200
        status = {h["id"]: "claimed" for h in made[0:3]} | {h["id"]: "cancelled" for h in made[3:5]}
        newest_first = [h["id"] for h in reversed(made)]

        everything = await _all(client, "/api/v1/handoffs", 2, account_id=a["id"])
        assert [h["id"] for h in everything] == newest_first  # all of A's, none of B's, each once
        assert all("snapshot" not in h and h["assessment_state"] == "skipped" for h in everything)
        assert {h["id"]: h["status"] for h in everything} == {i: status.get(i, "open") for i in newest_first}
        for state in ("open", "claimed", "cancelled"):
            got = await _all(client, "/api/v1/handoffs", 1, account_id=a["id"], state=state)
            assert [h["id"] for h in got] == [i for i in newest_first if status.get(i, "open") == state]
        got = await _all(client, "/api/v1/handoffs", 2, account_id=a["id"], team="red", intent="park")
        assert [h["subject_ref"] for h in got] == ["t6", "t0"]
        got = await _all(client, "/api/v1/handoffs", 3, account_id=a["id"], state="claimed", intent="escalate")
        assert [h["subject_ref"] for h in got] == ["t1"]
        assert await _all(client, "/api/v1/handoffs", 1000, account_id=a["id"], team="green") == []
        only_b = await _all(client, "/api/v1/handoffs", 100, account_id=b["id"])
        assert [h["account_id"] for h in only_b] == [b["id"]]


async def test_bad_input_for_every_new_parameter_is_a_4xx_with_the_error_shape(database_url: str) -> None:
    async with running_server(database_url) as server, admin_client(server.url) as client:
        a, b = await make_account(client, "A"), await make_account(client, "B")
        ann = await _user(client, a, "ann@example.com")
        handoff = await _post(client, handoff_body(a["id"], ann["id"]))
        huge = "x" * 201

        async def refused(method: str, path: str, status: int = 400, code: str | None = None, **kw: Any) -> None:
            r = await client.request(method, path, **kw)
            assert r.status_code == status, (path, kw, r.text)
            body = r.json()
            assert set(body) == {"error"} and isinstance(body["error"]["message"], str)
            assert "asyncpg" not in r.text and "sqlite" not in r.text.lower()
            if code is not None:
                assert body["error"]["code"] == code, r.text

        for path in ("/api/v1/handoffs", "/api/v1/handoffs/queue"):
            ok = {"account_id": a["id"]}
            for bad in ({"intent": "shelve"}, {"intent": ""}, {"team": huge}, {"team": ""}, {"team": "r\x00d"},
                        {"limit": 0}, {"limit": 1001}, {"limit": "many"}, {"account_id": "a" * 65}, {"cursor": "\x00"},
                        {"cursor": "x" * 65},
                        {"account_id": "acc\x00"}, {}):
                params = {**ok, **bad} if bad else {}
                await refused("GET", path, params=params)
            await refused("GET", path, 404, "not_found", params={"account_id": "acc_nope"})
            for cursor in ("garbage!", "x" * 64, "9" * 40 + ".hnd_x"):
                await refused("GET", path, 400, "bad_cursor", params={**ok, "cursor": cursor})
        for state in ("shelved", "OPEN", ""):
            await refused("GET", "/api/v1/handoffs", params={"account_id": a["id"], "state": state})
        for cursor in ("abc", "hnd_short", "usr_" + "0" * 26, "hnd_" + "U" * 26, "2." + handoff["id"]):
            await refused("GET", "/api/v1/handoffs", 400, "bad_cursor",
                          params={"account_id": a["id"], "cursor": cursor})
        r = await client.get("/api/v1/handoffs", params={"account_id": b["id"], "cursor": handoff["id"]})
        assert r.status_code == 200 and r.json() == {"items": [], "next_cursor": None}  # A's id: nothing of B's

        good = handoff_body(a["id"], ann["id"])
        for team in (huge, "", "a\x00b", 5, ["red"], {"t": 1}):
            await refused("POST", "/api/v1/handoffs", json={**good, "team": team})
        for team in (huge, "", "a\x00b", 5):
            await refused("POST", "/api/admin/users", json={"account_id": a["id"], "email": "t@example.com",
                                                            "display_name": "T", "team": team})
            await refused("PATCH", f"/api/admin/users/{ann['id']}", json={"team": team})

        acc = f"/api/admin/accounts/{a['id']}"
        for body in ({"assess_parks": "yes"}, {"assess_parks": 1}, {"assess_parks": None}, {"name": None},
                     {"name": ""}, {"name": "x\x00"}, {"name": huge}, {"timezone": "Mars/Base"}, {"bogus": 1}, []):
            await refused("PATCH", acc, json=body)
        await refused("PATCH", "/api/admin/accounts/acc_nope", 404, json={"assess_parks": True})
        await refused("POST", "/api/admin/accounts", json={"name": "C", "assess_parks": "true"})
        r = await client.patch(acc, json={"name": "Renamed", "timezone": "Europe/Berlin"})
        assert r.status_code == 200
        assert (r.json()["name"], r.json()["timezone"], r.json()["assess_parks"]) == ("Renamed", "Europe/Berlin", False)
        assert (await client.patch(acc, json={})).json() == r.json()  # nothing sent, nothing changed


async def test_the_openapi_document_describes_the_new_parameters_and_states(database_url: str) -> None:
    async with running_server(database_url) as server, admin_client(server.url) as client:
        spec = (await client.get("/openapi.json")).json()
    listing = spec["paths"]["/api/v1/handoffs"]["get"]
    queue = spec["paths"]["/api/v1/handoffs/queue"]["get"]
    patch = spec["paths"]["/api/admin/accounts/{account_id}"]["patch"]
    for operation in (listing, queue, patch):
        assert operation.get("summary") or operation.get("description"), operation
    ids = [op["operationId"] for path in spec["paths"].values() for op in path.values() if "operationId" in op]
    assert ids.count(listing["operationId"]) == 1 and ids.count(patch["operationId"]) == 1
    params = {p["name"]: p for p in listing["parameters"]}
    assert {"account_id", "state", "team", "intent", "limit", "cursor"} <= set(params)
    assert {"team", "intent"} <= {p["name"] for p in queue["parameters"]}
    text = str(spec)
    for word in ("assess_parks", "assessment_state", "briefing_state", "skipped", "cancelled"):
        assert word in text, word
