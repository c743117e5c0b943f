"""Bad input over HTTP: every mistake is a clear 4xx with ``{"error": {"code", "message"}}``, never a 500.

Each test runs against a real server (in this process, on a free port) on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
import re
from typing import Any, AsyncIterator

import httpx
import pytest

from roost.serve import Running
from tests.support.server import SERVICE_TOKEN, admin_client, make_device, running_server

CODE = re.compile(r"^[a-z][a-z0-9_]*$")
LIMIT = 64 * 1024  # max_body_bytes of these servers: small, so oversize bodies stay cheap


@pytest.fixture
async def server(database_url: str) -> AsyncIterator[Running]:
    async with running_server(database_url, max_body_bytes=LIMIT) as running:
        yield running


@pytest.fixture
async def account(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.post("/api/admin/accounts", json={"name": "Acme", "timezone": "Europe/Berlin"})
    assert r.status_code == 201, r.text
    return r.json()


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> str:
    """The response is the project's error body with this status (and code); returns the message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["error"], body
    # A 500 also carries the request id (as X-Request-Id), for the log line with the details.
    assert sorted(body["error"]) == ["code", "message"] + (["request_id"] if status == 500 else []), body
    assert CODE.match(body["error"]["code"]), body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"].strip(), body
    assert "Traceback" not in response.text
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]["message"]


def user_body(account_id: str, **fields: Any) -> dict[str, Any]:
    return {"account_id": account_id, "email": "ann@example.com", "display_name": "Ann", **fields}


# -- the body is not what the endpoint takes ------------------------------------------------------


async def test_malformed_json_body_is_400_malformed_json(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/admin/accounts", content=b'{"name": "Acme",',
                          headers={"Content-Type": "application/json"})

    message = assert_error(r, 400, "malformed_json")
    assert "JSON" in message


async def test_empty_json_body_is_400_malformed_json(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/admin/accounts", content=b"", headers={"Content-Type": "application/json"})

    assert_error(r, 400, "malformed_json")


@pytest.mark.parametrize("payload", [[], ["Acme"], "Acme", 42, True, None], ids=repr)
async def test_json_body_that_is_not_an_object_is_400_saying_so(client: httpx.AsyncClient, payload: Any) -> None:
    r = await client.post("/api/admin/accounts", content=json.dumps(payload).encode(),
                          headers={"Content-Type": "application/json"})

    message = assert_error(r, 400, "validation_failed")
    assert "JSON object" in message
    assert "AccountCreate" not in message  # no internal class names in messages


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_body_that_is_not_declared_json_is_415(client: httpx.AsyncClient, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}

    r = await client.post("/api/admin/accounts", content=b'{"name": "Acme"}', headers=headers)

    message = assert_error(r, 415, "unsupported_media_type")
    assert "application/json" in message


async def test_json_with_charset_parameter_is_accepted(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/admin/accounts", content=b'{"name": "Acme"}',
                          headers={"Content-Type": "application/json; charset=utf-8"})

    assert r.status_code == 201, r.text


async def test_field_of_wrong_type_is_400_naming_the_field(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/admin/accounts", json={"name": 5})

    message = assert_error(r, 400, "validation_failed")
    assert "name" in message


async def test_number_in_a_string_is_not_coerced(client: httpx.AsyncClient, account: dict) -> None:
    r = await client.post("/api/admin/users", json=user_body(account["id"], active="false"))

    message = assert_error(r, 400, "validation_failed")
    assert "active" in message


async def test_missing_required_field_is_400_naming_the_field(client: httpx.AsyncClient, account: dict) -> None:
    r = await client.post("/api/admin/users", json={"account_id": account["id"], "display_name": "Ann"})

    message = assert_error(r, 400, "validation_failed")
    assert "email" in message
    assert "required" in message.lower()


async def test_unknown_field_is_400_rather_than_ignored(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/admin/accounts", json={"name": "Acme", "timezone": "UTC", "tz": "UTC"})

    message = assert_error(r, 400, "validation_failed")
    assert "tz" in message


@pytest.mark.parametrize(
    "fields, where",
    [
        ({"email": "not-an-address"}, "email"),
        ({"email": "a" * 320 + "@example.com"}, "email"),
        ({"display_name": ""}, "display_name"),
        ({"display_name": "x" * 201}, "display_name"),
        ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"role": "king"}, "role"),
        ({"digest_cadence": "hourly"}, "digest_cadence"),
        ({"digest_time": "8:00"}, "digest_time"),
        ({"digest_time": "24:00"}, "digest_time"),
        ({"digest_weekday": "funday"}, "digest_weekday"),
        ({"quiet_hours": {"start": "22:00"}}, "quiet_hours"),
        ({"quiet_hours": {"start": "22:00", "end": "07:61"}}, "quiet_hours"),
        ({"quiet_hours": {"start": "22:00", "end": "07:00", "days": []}}, "quiet_hours"),
        ({"quiet_hours": "22:00-07:00"}, "quiet_hours"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
async def test_out_of_range_user_field_is_400_naming_it(
    client: httpx.AsyncClient, account: dict, fields: dict, where: str
) -> None:
    r = await client.post("/api/admin/users", json=user_body(account["id"], **fields))

    message = assert_error(r, 400, "validation_failed")
    assert where in message


# Values of every JSON type and some awkward strings, thrown at every field of a request body.
ODD_VALUES: list[Any] = [
    None, 0, -1, 2**63, 1.5, True, "", " ", "x" * 5000, "\u0000", "a\u0000b", "\ud7ff☃", [], [1], {}, {"a": 1},
]


async def test_odd_values_in_any_user_field_are_answered_below_500(client: httpx.AsyncClient, account: dict) -> None:
    """A crude fuzz: whatever a field holds, the answer is 201 or a proper 4xx, never a 500."""
    fields = ["account_id", "email", "display_name", "timezone", "role", "active", "digest_cadence",
              "digest_time", "digest_weekday", "quiet_hours"]
    statuses: set[int] = set()
    for n, field in enumerate(fields):
        for value in ODD_VALUES:
            body = user_body(account["id"], email=f"u{n}@example.com") | {field: value}

            r = await client.post("/api/admin/users", json=body)

            if r.status_code != 201:
                assert_error(r, r.status_code)
                assert 400 <= r.status_code < 500, (field, value, r.text)
            statuses.add(r.status_code)
    assert 500 not in statuses


# The few odd values that are a valid PATCH of that field (the others are garbage there).
VALID_PATCHES = [("display_name", " "), ("display_name", "\ud7ff☃"), ("active", True), ("quiet_hours", None)]


async def test_odd_values_in_any_patch_field_are_refused_with_a_4xx_unless_valid_there(
    client: httpx.AsyncClient,
) -> None:
    """A crude fuzz: a value a field cannot hold is refused with the error body (a 200 would store
    garbage); the few odd values valid for a field are stored as sent."""
    ids = await make_device(client)
    url = f"/api/admin/users/{ids['user']['id']}"
    for field in ["email", "display_name", "timezone", "role", "active", "digest_cadence", "digest_time",
                  "digest_weekday", "quiet_hours", "account_id", "id"]:
        for value in ODD_VALUES:
            r = await client.patch(url, json={field: value})

            if any(field == f and value == v and type(value) is type(v) for f, v in VALID_PATCHES):
                assert r.status_code == 200, (field, value, r.text)
                assert r.json()[field] == value
            else:
                assert_error(r, r.status_code)
                assert 400 <= r.status_code < 500, (field, value, r.text)


@pytest.mark.parametrize("name", ["Ac\u0000me", "\u0000"])
async def test_nul_character_in_text_is_400_on_every_backend(client: httpx.AsyncClient, name: str) -> None:
    """PostgreSQL cannot store U+0000 in text; SQLite could, but both refuse it alike, with a 400."""
    r = await client.post("/api/admin/accounts", json={"name": name})

    message = assert_error(r, 400, "validation_failed")
    assert "NUL" in message


@pytest.mark.parametrize("depth", [990, 5000, 30000])
async def test_deeply_nested_json_is_400_not_a_recursion_error(client: httpx.AsyncClient, depth: int) -> None:
    """Regression: the json module raised RecursionError (not ValueError) on deep nesting: a 500."""
    body = '{"name": "Acme", "x": ' + "[" * depth + "]" * depth + "}"

    r = await client.post("/api/admin/accounts", content=body.encode(), headers={"Content-Type": "application/json"})

    assert_error(r, 400)


# -- size ---------------------------------------------------------------------------------------


async def test_oversize_body_is_413(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/admin/accounts", json={"name": "x" * (LIMIT + 1)})

    assert_error(r, 413, "too_large")


async def test_body_just_under_the_limit_is_read(client: httpx.AsyncClient) -> None:
    padding = LIMIT - 100
    r = await client.post("/api/admin/accounts", content=b'{"name": "Acme"' + b" " * padding + b"}",
                          headers={"Content-Type": "application/json"})

    assert r.status_code == 201, r.text


@pytest.mark.parametrize("size", [LIMIT + 1, 4 * LIMIT, 40 * LIMIT])
async def test_connection_still_answers_after_an_oversize_body(client: httpx.AsyncClient, size: int) -> None:
    """Regression: after a 413 sent before the body was read, the next request on the same
    keep-alive connection hung for ever (Hypercorn's per-request queue filled with unread body)."""
    r = await client.post("/api/admin/accounts", content=b"x" * size, headers={"Content-Type": "application/json"})
    assert_error(r, 413, "too_large")

    r = await client.get("/healthz", timeout=5)

    assert r.status_code == 200


async def test_connection_still_answers_after_a_large_body_refused_for_auth(server: Running) -> None:
    async with admin_client(server.url, token=None) as anonymous:
        r = await anonymous.post("/api/admin/accounts", content=b"{" + b" " * (LIMIT - 10) + b"}",
                                 headers={"Content-Type": "application/json"})
        assert_error(r, 401)

        for _ in range(3):
            r = await anonymous.post("/api/admin/accounts", content=b"x" * (20 * LIMIT),
                                     headers={"Content-Type": "application/json"}, timeout=5)
            assert r.status_code in (401, 413)

        r = await anonymous.get("/healthz", timeout=5)

    assert r.status_code == 200


async def test_response_sent_before_the_body_was_read_says_connection_close(client: httpx.AsyncClient) -> None:
    """The server closes such a connection; saying so keeps a client from sending into it."""
    r = await client.post("/api/admin/accounts", content=b"x" * (4 * LIMIT),
                          headers={"Content-Type": "application/json"})

    assert_error(r, 413)
    assert r.headers["connection"] == "close"


async def test_ordinary_requests_keep_the_connection_alive(client: httpx.AsyncClient) -> None:
    for _ in range(5):
        created = await client.post("/api/admin/accounts", json={"name": "Acme"})
        fetched = await client.get(f"/api/admin/accounts/{created.json()['id']}")
        missing = await client.get("/api/admin/accounts/acc_missing")

        for r in (created, fetched, missing):
            assert "connection" not in r.headers, r.headers


# -- routing --------------------------------------------------------------------------------------


async def test_unknown_route_is_404_with_error_body(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/admin/nothing-here")

    assert_error(r, 404, "not_found")


async def test_wrong_method_is_405_with_allow_header(client: httpx.AsyncClient) -> None:
    r = await client.put("/api/admin/accounts", json={"name": "Acme"})

    assert_error(r, 405, "method_not_allowed")
    assert "POST" in r.headers["allow"]


async def test_a_method_a_route_does_not_take_is_405_with_allow(client: httpx.AsyncClient) -> None:
    # (DELETE on a user was the example until users could be deleted: DELETE /api/admin/users/{id})
    r = await client.delete("/api/admin/accounts/acc_x/outreach-settings")

    assert_error(r, 405, "method_not_allowed")
    assert set(re.split(r",\s*", r.headers["allow"])) >= {"GET", "PUT"}


@pytest.mark.parametrize(
    "path",
    ["/api/admin/accounts/acc_missing", "/api/admin/users/usr_missing", "/api/admin/devices/dev_missing",
     "/api/admin/accounts/" + "a" * 500, "/api/admin/users/%00", "/api/admin/devices/%C3%A9t%C3%A9"],
)
async def test_unknown_id_is_404(client: httpx.AsyncClient, path: str) -> None:
    r = await client.get(path)

    assert_error(r, 404, "not_found")


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "limit=-5", "limit=ten", "limit=1.5", "cursor=" + "c" * 65])
async def test_bad_page_arguments_are_400(client: httpx.AsyncClient, account: dict, query: str) -> None:
    r = await client.get(f"/api/admin/users?account_id={account['id']}&{query}")

    message = assert_error(r, 400, "validation_failed")
    assert query.split("=")[0] in message


async def test_list_without_its_required_filter_is_400(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/admin/users")

    message = assert_error(r, 400, "validation_failed")
    assert "account_id" in message


async def test_cursor_with_nul_character_is_400(client: httpx.AsyncClient, account: dict) -> None:
    r = await client.get("/api/admin/users", params={"account_id": account["id"], "cursor": "usr_\u0000"})

    assert_error(r, 400, "validation_failed")


# -- authentication -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer wrong-token", "Basic dGVzdDp0ZXN0", SERVICE_TOKEN, "Bearer " + "x" * 5000],
)
async def test_admin_endpoint_without_the_service_token_is_401(server: Running, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    async with httpx.AsyncClient(base_url=server.url, headers=headers) as anonymous:
        r = await anonymous.post("/api/admin/accounts", json={"name": "Acme"})

    message = assert_error(r, 401, "unauthenticated")
    assert "service token" in message
    assert r.headers["www-authenticate"].startswith("Bearer")


async def test_bearer_scheme_is_case_insensitive(server: Running) -> None:
    async with httpx.AsyncClient(base_url=server.url,
                                 headers={"Authorization": f"bearer {SERVICE_TOKEN}"}) as c:
        r = await c.post("/api/admin/accounts", json={"name": "Acme"})

    assert r.status_code == 201, r.text


async def test_auth_is_checked_before_the_body(server: Running) -> None:
    """An anonymous caller learns nothing about the schema: bad body and no token is 401."""
    async with admin_client(server.url, token=None) as anonymous:
        r = await anonymous.post("/api/admin/accounts", content=b"{nope", headers={"Content-Type": "application/json"})

    assert_error(r, 401)


async def test_device_token_is_not_a_service_token(client: httpx.AsyncClient, server: Running) -> None:
    ids = await make_device(client)
    async with admin_client(server.url, token=ids["token"]) as device:
        r = await device.get("/api/admin/status")

    assert_error(r, 401, "unauthenticated")


ADMIN_ENDPOINTS = [
    ("GET", "/api/admin/status"), ("POST", "/api/admin/accounts"), ("GET", "/api/admin/accounts/acc_x"),
    ("POST", "/api/admin/users"), ("GET", "/api/admin/users?account_id=acc_x"), ("GET", "/api/admin/users/usr_x"),
    ("PATCH", "/api/admin/users/usr_x"), ("POST", "/api/admin/devices"), ("GET", "/api/admin/devices?user_id=usr_x"),
    ("GET", "/api/admin/devices/dev_x"), ("DELETE", "/api/admin/devices/dev_x"),
]


async def test_every_admin_endpoint_refuses_with_503_when_no_service_token_is_configured(database_url: str) -> None:
    async with running_server(database_url, service_token=None) as running:
        async with admin_client(running.url, token="anything") as c:
            for method, path in ADMIN_ENDPOINTS:
                r = await c.request(method, path, json={} if method in ("POST", "PATCH") else None)

                message = assert_error(r, 503, "not_configured")
                assert "ROOST_SERVICE_TOKEN" in message, (method, path)
