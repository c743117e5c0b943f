"""Where the server was made to agree with its OpenAPI document, on SQLite and PostgreSQL alike
(what tests/e2e/test_openapi_fuzz.py found): an integer sent as ``5.0``, a list cursor the schema
allows that its column cannot hold."""

from __future__ import annotations

from typing import Any

import httpx


def assert_error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code, r.text


async def test_an_integer_field_takes_an_integral_float_and_refuses_a_fraction(
    client: httpx.AsyncClient, env: dict[str, Any]
) -> None:
    url = f"/api/admin/accounts/{env['account']['id']}/outreach-settings"

    r = await client.put(url, json={"max_per_minute": 5.0})
    assert r.status_code == 200, r.text
    assert r.json()["max_per_minute"] == 5 and isinstance(r.json()["max_per_minute"], int)

    assert_error(await client.put(url, json={"max_per_minute": 5.5}), 400, "validation_failed")
    assert_error(await client.put(url, json={"max_per_minute": "5"}), 400, "validation_failed")


async def test_a_batch_items_cursor_beyond_its_integer_column_is_bad_cursor(
    client: httpx.AsyncClient, env: dict[str, Any]
) -> None:
    r = await client.post("/api/v1/outreach/batches", json={
        "account_id": env["account"]["id"], "created_by": env["user"]["id"],
        "items": [{"to_handle": "+15550100", "body": "hi", "device_id": env["device"]["id"]}]})
    assert r.status_code == 201, r.text
    items = f"/api/v1/outreach/batches/{r.json()['id']}/items"

    assert (await client.get(items, params={"cursor": "999999999"})).json()["items"] == []
    assert_error(await client.get(items, params={"cursor": "9999999999"}), 400, "bad_cursor")
    queue = f"/api/admin/devices/{env['device']['id']}/send-queue"
    assert_error(await client.get(queue, params={"cursor": "obt_x.9999999999"}), 400, "bad_cursor")


async def test_a_handoff_queue_cursor_beyond_its_integer_column_is_bad_cursor(
    client: httpx.AsyncClient, env: dict[str, Any]
) -> None:
    queue = "/api/v1/handoffs/queue"
    account = env["account"]["id"]

    r = await client.get(queue, params={"account_id": account, "cursor": "999999999.hnd_x"})
    assert r.status_code == 200 and r.json()["items"] == [], r.text
    assert_error(await client.get(queue, params={"account_id": account, "cursor": "9999999999.hnd_x"}), 400,
                 "bad_cursor")
