"""Tenancy over HTTP: accounts, users and devices (service token), the device's own view (device token).

Each test runs against a real server (in this process, on a free port) on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from roost.serve import Running
from roost.storage import audit
from tests.support.server import SERVICE_TOKEN, admin_client, make_device, running_server
from tests.support.ws import close_code


@pytest.fixture
async def account(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.post("/api/admin/accounts", json={"name": "Acme", "timezone": "Europe/Berlin"})
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture
async def user(client: httpx.AsyncClient, account: dict) -> dict[str, Any]:
    r = await client.post("/api/admin/users", json={"account_id": account["id"], "email": "ann@example.com",
                                                     "display_name": "Ann"})
    assert r.status_code == 201, r.text
    return r.json()


def assert_error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and sorted(body["error"]) == ["code", "message"], body
    assert body["error"]["code"] == code, body
    return body["error"]["message"]


def parse_time(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert parsed.utcoffset() == dt.timedelta(0), value
    return parsed


async def device_me(server: Running, token: str | None) -> httpx.Response:
    async with admin_client(server.url, token=token) as device:
        return await device.get("/api/device/me")


async def audit_actions(server: Running, target_id: str) -> list[str]:
    rows = await audit.list_entries(server.services.db, target_id=target_id)
    assert all(row["actor"] == "service:default" for row in rows)  # ROOST_SERVICE_TOKEN is named "default"
    return sorted(row["action"] for row in rows)


# -- accounts -------------------------------------------------------------------------------------


async def test_create_account_answers_201_with_the_stored_account(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/admin/accounts", json={"name": "Acme", "timezone": "America/New_York"})

    assert r.status_code == 201, r.text
    created = r.json()
    assert set(created) == {"id", "name", "timezone", "assess_parks", "created_at"}
    assert (created["name"], created["timezone"], created["assess_parks"]) == ("Acme", "America/New_York", False)
    parse_time(created["created_at"])
    fetched = await client.get(f"/api/admin/accounts/{created['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == created


async def test_account_time_zone_defaults_to_utc(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/admin/accounts", json={"name": "Acme"})

    assert r.status_code == 201, r.text
    assert r.json()["timezone"] == "UTC"


async def test_accounts_get_distinct_opaque_ids(client: httpx.AsyncClient) -> None:
    ids = {(await client.post("/api/admin/accounts", json={"name": "Acme"})).json()["id"] for _ in range(5)}

    assert len(ids) == 5
    assert all(isinstance(i, str) and i for i in ids)


async def test_unknown_account_is_404(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/admin/accounts/acc_nope")

    assert "acc_nope" in assert_error(r, 404, "not_found")


# -- users ----------------------------------------------------------------------------------------


async def test_user_gets_defaults_and_the_account_time_zone(client: httpx.AsyncClient, account: dict) -> None:
    r = await client.post("/api/admin/users", json={"account_id": account["id"], "email": "Ann@Example.COM",
                                                     "display_name": "Ann"})

    assert r.status_code == 201, r.text
    created = r.json()
    assert created["account_id"] == account["id"]
    assert created["email"] == "ann@example.com"
    assert created["timezone"] == "Europe/Berlin"
    assert (created["role"], created["active"]) == ("member", True)
    assert (created["digest_cadence"], created["digest_time"], created["digest_weekday"]) == ("off", "08:00", "monday")
    assert created["quiet_hours"] is None
    assert parse_time(created["created_at"]) == parse_time(created["updated_at"])


async def test_user_with_every_field_set_is_stored_as_given(client: httpx.AsyncClient, account: dict) -> None:
    fields = {
        "account_id": account["id"], "email": "bo@example.com", "display_name": "Bo", "timezone": "Asia/Tokyo",
        "role": "engineer", "active": False, "digest_cadence": "weekly", "digest_time": "17:30",
        "digest_weekday": "friday", "quiet_hours": {"start": "22:00", "end": "07:00"},
    }

    r = await client.post("/api/admin/users", json=fields)

    assert r.status_code == 201, r.text
    created = r.json()
    assert {k: created[k] for k in fields} == fields
    fetched = await client.get(f"/api/admin/users/{created['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == created


async def test_user_in_unknown_account_is_404(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/admin/users", json={"account_id": "acc_nope", "email": "a@example.com",
                                                     "display_name": "A"})

    assert "acc_nope" in assert_error(r, 404, "not_found")


async def test_duplicate_email_in_one_account_is_409(client: httpx.AsyncClient, account: dict, user: dict) -> None:
    r = await client.post("/api/admin/users", json={"account_id": account["id"], "email": "ANN@example.com",
                                                     "display_name": "Other Ann"})

    assert_error(r, 409, "already_exists")


async def test_same_email_in_another_account_is_allowed(client: httpx.AsyncClient, user: dict) -> None:
    other = (await client.post("/api/admin/accounts", json={"name": "Other"})).json()

    r = await client.post("/api/admin/users", json={"account_id": other["id"], "email": user["email"],
                                                     "display_name": "Ann elsewhere"})

    assert r.status_code == 201, r.text


async def test_unknown_user_is_404(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/api/admin/users/usr_nope"), 404, "not_found")


# -- PATCH users ----------------------------------------------------------------------------------


async def test_patch_changes_only_the_fields_sent(client: httpx.AsyncClient, user: dict) -> None:
    r = await client.patch(f"/api/admin/users/{user['id']}", json={"display_name": "Annie", "role": "admin"})

    assert r.status_code == 200, r.text
    patched = r.json()
    assert (patched["display_name"], patched["role"]) == ("Annie", "admin")
    unchanged = {k: v for k, v in user.items() if k not in ("display_name", "role", "updated_at")}
    assert {k: patched[k] for k in unchanged} == unchanged
    assert parse_time(patched["updated_at"]) >= parse_time(user["updated_at"])
    assert (await client.get(f"/api/admin/users/{user['id']}")).json() == patched


async def test_patch_sets_and_null_clears_quiet_hours(client: httpx.AsyncClient, user: dict) -> None:
    url = f"/api/admin/users/{user['id']}"

    set_ = await client.patch(url, json={"quiet_hours": {"start": "21:30", "end": "06:45"}})
    kept = await client.patch(url, json={"display_name": "Ann B."})
    cleared = await client.patch(url, json={"quiet_hours": None})

    assert set_.json()["quiet_hours"] == {"start": "21:30", "end": "06:45"}
    assert kept.json()["quiet_hours"] == {"start": "21:30", "end": "06:45"}
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["quiet_hours"] is None
    assert cleared.json()["display_name"] == "Ann B."


@pytest.mark.parametrize("field", ["email", "display_name", "timezone", "role", "active", "digest_cadence",
                                   "digest_time", "digest_weekday"])
async def test_patch_with_null_for_a_field_other_than_quiet_hours_is_400(
    client: httpx.AsyncClient, user: dict, field: str
) -> None:
    r = await client.patch(f"/api/admin/users/{user['id']}", json={field: None})

    assert field in assert_error(r, 400, "validation_failed")
    assert (await client.get(f"/api/admin/users/{user['id']}")).json() == user


@pytest.mark.parametrize("field", ["nickname", "id", "account_id", "created_at"])
async def test_patch_with_a_field_that_cannot_change_is_400(client: httpx.AsyncClient, user: dict, field: str) -> None:
    r = await client.patch(f"/api/admin/users/{user['id']}", json={field: "x", "display_name": "Changed"})

    assert field in assert_error(r, 400, "validation_failed")
    assert (await client.get(f"/api/admin/users/{user['id']}")).json() == user


async def test_patch_with_an_empty_object_changes_nothing(
    client: httpx.AsyncClient, user: dict, server: Running
) -> None:
    r = await client.patch(f"/api/admin/users/{user['id']}", json={})

    assert r.status_code == 200, r.text
    assert r.json() == user
    assert await audit_actions(server, user["id"]) == ["user.create"]


async def test_patch_of_unknown_user_is_404(client: httpx.AsyncClient) -> None:
    assert_error(await client.patch("/api/admin/users/usr_nope", json={"display_name": "X"}), 404, "not_found")


async def test_patch_to_an_email_taken_in_the_account_is_409(
    client: httpx.AsyncClient, account: dict, user: dict
) -> None:
    r = await client.post("/api/admin/users", json={"account_id": account["id"], "email": "bo@example.com",
                                                     "display_name": "Bo"})

    clash = await client.patch(f"/api/admin/users/{r.json()['id']}", json={"email": user["email"]})

    assert_error(clash, 409, "already_exists")


# -- listing, with pagination ---------------------------------------------------------------------


async def collect(client: httpx.AsyncClient, path: str, **params: Any) -> tuple[list[dict], int]:
    """Follow next_cursor to the end; returns every item and the number of pages."""
    items: list[dict] = []
    pages = 0
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        r = await client.get(path, params=query)
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"items", "next_cursor"}
        items.extend(body["items"])
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return items, pages
        assert pages < 50, "next_cursor never ran out"


async def test_users_are_listed_in_pages_until_next_cursor_is_null(client: httpx.AsyncClient, account: dict) -> None:
    created = []
    for n in range(5):
        r = await client.post("/api/admin/users", json={"account_id": account["id"], "email": f"u{n}@example.com",
                                                         "display_name": f"U{n}"})
        created.append(r.json())

    items, pages = await collect(client, "/api/admin/users", account_id=account["id"], limit=2)

    assert pages == 3
    assert sorted(u["id"] for u in items) == sorted(u["id"] for u in created)
    assert len({u["id"] for u in items}) == 5


async def test_a_page_exactly_filled_has_no_next_cursor(client: httpx.AsyncClient, account: dict) -> None:
    for n in range(2):
        await client.post("/api/admin/users", json={"account_id": account["id"], "email": f"u{n}@example.com",
                                                     "display_name": f"U{n}"})

    r = await client.get("/api/admin/users", params={"account_id": account["id"], "limit": 2})

    assert len(r.json()["items"]) == 2
    assert r.json()["next_cursor"] is None


async def test_listing_uses_the_default_and_maximum_limits(client: httpx.AsyncClient, user: dict) -> None:
    default = await client.get("/api/admin/users", params={"account_id": user["account_id"]})
    maximum = await client.get("/api/admin/users", params={"account_id": user["account_id"], "limit": 1000})

    assert default.json() == {"items": [user], "next_cursor": None}
    assert maximum.json() == {"items": [user], "next_cursor": None}


@pytest.mark.parametrize("limit", [0, 1001])
async def test_limit_out_of_range_is_400(client: httpx.AsyncClient, account: dict, limit: int) -> None:
    r = await client.get("/api/admin/users", params={"account_id": account["id"], "limit": limit})

    assert "limit" in assert_error(r, 400, "validation_failed")


async def test_user_list_holds_only_that_accounts_users(client: httpx.AsyncClient, account: dict, user: dict) -> None:
    other = (await client.post("/api/admin/accounts", json={"name": "Other"})).json()
    await client.post("/api/admin/users", json={"account_id": other["id"], "email": "zed@example.com",
                                                 "display_name": "Zed"})

    r = await client.get("/api/admin/users", params={"account_id": account["id"]})

    assert [u["id"] for u in r.json()["items"]] == [user["id"]]


async def test_users_of_unknown_account_is_404(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/api/admin/users", params={"account_id": "acc_nope"}), 404, "not_found")


async def test_empty_account_lists_no_users(client: httpx.AsyncClient, account: dict) -> None:
    r = await client.get("/api/admin/users", params={"account_id": account["id"]})

    assert r.json() == {"items": [], "next_cursor": None}


async def test_devices_are_listed_in_pages_without_tokens(client: httpx.AsyncClient, user: dict) -> None:
    made = [(await client.post("/api/admin/devices", json={"user_id": user["id"], "name": f"d{n}"})).json()
            for n in range(3)]

    items, pages = await collect(client, "/api/admin/devices", user_id=user["id"], limit=2)

    assert pages == 2
    assert sorted(d["id"] for d in items) == sorted(d["id"] for d in made)
    assert all("token" not in d and "token_hash" not in d for d in items)


async def test_devices_of_unknown_user_is_404(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/api/admin/devices", params={"user_id": "usr_nope"}), 404, "not_found")


# -- devices ---------------------------------------------------------------------------------------


async def test_create_device_shows_its_token_once(client: httpx.AsyncClient, user: dict) -> None:
    r = await client.post("/api/admin/devices", json={"user_id": user["id"], "name": "phone"})

    assert r.status_code == 201, r.text
    created = r.json()
    assert created["token"] and created["user_id"] == user["id"] and created["name"] == "phone"
    assert created["revoked_at"] is None and created["last_seen_at"] is None
    fetched = (await client.get(f"/api/admin/devices/{created['id']}")).json()
    assert "token" not in fetched
    assert fetched == {k: v for k, v in created.items() if k != "token"}


async def test_device_for_unknown_user_is_404(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/admin/devices", json={"user_id": "usr_nope", "name": "phone"})

    assert "usr_nope" in assert_error(r, 404, "not_found")


async def test_each_device_gets_its_own_token(client: httpx.AsyncClient, user: dict) -> None:
    tokens = {(await client.post("/api/admin/devices", json={"user_id": user["id"], "name": "d"})).json()["token"]
              for _ in range(3)}

    assert len(tokens) == 3


async def test_unknown_device_is_404(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/api/admin/devices/dev_nope"), 404, "not_found")
    assert_error(await client.delete("/api/admin/devices/dev_nope"), 404, "not_found")


# -- the device's own view -------------------------------------------------------------------------


async def test_device_me_names_the_device_its_user_and_account(client: httpx.AsyncClient, server: Running) -> None:
    ids = await make_device(client)

    r = await device_me(server, ids["token"])

    assert r.status_code == 200, r.text
    assert r.json() == {"device_id": ids["device"]["id"], "user_id": ids["user"]["id"],
                        "account_id": ids["account"]["id"]}


@pytest.mark.parametrize("token", [None, "rdt_not-a-real-token", SERVICE_TOKEN, "x" * 500])
async def test_device_me_without_a_valid_device_token_is_401(
    client: httpx.AsyncClient, server: Running, token: str | None
) -> None:
    await make_device(client)

    r = await device_me(server, token)

    assert_error(r, 401, "unauthenticated")
    assert r.headers["www-authenticate"].startswith("Bearer")


async def test_revoked_device_token_stops_authenticating(client: httpx.AsyncClient, server: Running) -> None:
    ids = await make_device(client)
    other = (await client.post("/api/admin/devices", json={"user_id": ids["user"]["id"], "name": "laptop"})).json()

    r = await client.delete(f"/api/admin/devices/{ids['device']['id']}")

    assert r.status_code == 200, r.text
    parse_time(r.json()["revoked_at"])
    assert_error(await device_me(server, ids["token"]), 401, "unauthenticated")
    assert (await device_me(server, other["token"])).status_code == 200  # the user's other device is untouched


async def test_revoking_twice_is_idempotent_and_keeps_the_first_time(
    client: httpx.AsyncClient, server: Running
) -> None:
    ids = await make_device(client)
    url = f"/api/admin/devices/{ids['device']['id']}"

    first = await client.delete(url)
    second = await client.delete(url)

    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json() == first.json()
    assert await audit_actions(server, ids["device"]["id"]) == ["device.create", "device.revoke"]


async def test_deactivated_user_device_token_stops_authenticating(client: httpx.AsyncClient, server: Running) -> None:
    ids = await make_device(client)
    url = f"/api/admin/users/{ids['user']['id']}"

    r = await client.patch(url, json={"active": False})
    refused = await device_me(server, ids["token"])
    await client.patch(url, json={"active": True})
    restored = await device_me(server, ids["token"])

    assert r.status_code == 200 and r.json()["active"] is False
    assert_error(refused, 401, "unauthenticated")
    assert restored.status_code == 200


async def test_device_of_an_inactive_user_cannot_authenticate(client: httpx.AsyncClient, server: Running) -> None:
    ids = await make_device(client, active=False)

    assert_error(await device_me(server, ids["token"]), 401, "unauthenticated")


@pytest.mark.parametrize("action", ["revoke the device", "deactivate the user"])
async def test_live_socket_is_closed_with_1008(client: httpx.AsyncClient, server: Running, action: str) -> None:
    ids = await make_device(client)
    async with open_websocket_url(server.url.replace("http://", "ws://") + "/ws/device") as ws:
        await ws.send_message(json.dumps({"type": "device_hello", "token": ids["token"]}))
        await ws.send_message(json.dumps({"type": "register"}))
        with trio.fail_after(5):
            assert json.loads(await ws.get_message())["type"] == "hello_ok"

        if action == "revoke the device":
            r = await client.delete(f"/api/admin/devices/{ids['device']['id']}")
        else:
            r = await client.patch(f"/api/admin/users/{ids['user']['id']}", json={"active": False})
        assert r.status_code == 200, r.text

        assert await close_code(ws) == 1008


# -- the audit log ---------------------------------------------------------------------------------


async def test_every_admin_change_writes_an_audit_row(client: httpx.AsyncClient, server: Running) -> None:
    ids = await make_device(client)
    await client.patch(f"/api/admin/users/{ids['user']['id']}", json={"role": "owner", "display_name": "Boss"})
    await client.delete(f"/api/admin/devices/{ids['device']['id']}")

    assert await audit_actions(server, ids["account"]["id"]) == ["account.create"]
    assert await audit_actions(server, ids["user"]["id"]) == ["user.create", "user.update"]
    assert await audit_actions(server, ids["device"]["id"]) == ["device.create", "device.revoke"]
    update = next(row for row in await audit.list_entries(server.services.db, target_id=ids["user"]["id"])
                  if row["action"] == "user.update")
    assert update["target_type"] == "user"
    assert update["details"] == {"fields": ["display_name", "role"]}


async def test_refused_and_read_only_requests_write_no_audit_rows(
    client: httpx.AsyncClient, server: Running, user: dict
) -> None:
    before = len(await audit.list_entries(server.services.db, limit=1000))

    await client.get(f"/api/admin/users/{user['id']}")
    await client.get("/api/admin/users", params={"account_id": user["account_id"]})
    await client.post("/api/admin/users", json={"account_id": user["account_id"], "email": user["email"],
                                                 "display_name": "Dup"})
    await client.patch(f"/api/admin/users/{user['id']}", json={"role": "king"})
    await client.post("/api/admin/devices", json={"user_id": "usr_nope", "name": "x"})

    assert len(await audit.list_entries(server.services.db, limit=1000)) == before


async def test_audit_rows_carry_the_time_of_the_change(client: httpx.AsyncClient, server: Running) -> None:
    r = await client.post("/api/admin/accounts", json={"name": "Acme"})

    (row,) = await audit.list_entries(server.services.db, target_id=r.json()["id"])

    assert row["at"] == parse_time(r.json()["created_at"])


async def test_tenancy_survives_a_restart_on_the_same_database(database_url: str) -> None:
    async with running_server(database_url) as first:
        async with admin_client(first.url) as c:
            ids = await make_device(c)
    async with running_server(database_url) as second:
        async with admin_client(second.url) as c:
            user = await c.get(f"/api/admin/users/{ids['user']['id']}")
        me = await device_me(second, ids["token"])

    assert user.json() == ids["user"]
    assert me.status_code == 200
