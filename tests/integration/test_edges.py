"""Edges (issue 17 item 6), against a real server on SQLite and PostgreSQL: a bounded metrics method
label, deep JSON as a client error (HTTP bodies and WebSocket frames, before and after authentication),
no driver text in any answer, validated cursors, and a depth limit on free-form JSON fields."""

from __future__ import annotations

import json
import re
import secrets
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import httpx
import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from roost.http.app import METRIC_METHODS, metric_method
from roost.serve import Running
from tests.support.server import admin_client, make_device, running_server
from tests.support.ws import close_code

NESTED = "[" * 200_000  # the bar's frame: 200,000 nested "["


def nested(depth: int) -> Any:
    value: Any = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def no_traceback(output: str) -> None:
    assert "Traceback" not in output and "RecursionError" not in output, output[-3000:]


@asynccontextmanager
async def connect(running: Running, headers: list[tuple[str, str]] | None = None) -> AsyncIterator[WebSocketConnection]:
    ws: WebSocketConnection | None = None
    try:
        async with open_websocket_url(running.url.replace("http://", "ws://") + "/ws/device",
                                      extra_headers=headers or [], message_queue_size=8) as ws:
            yield ws
    finally:
        if ws is not None:
            await ws._stream.aclose()


async def receive(ws: WebSocketConnection) -> dict[str, Any]:
    with trio.fail_after(5):
        return json.loads(await ws.get_message())


# -- metrics ---------------------------------------------------------------------------------------


def test_the_method_label_is_a_fixed_set_or_other() -> None:
    for method in METRIC_METHODS:
        assert metric_method(method) == method
    for method in ("FOO", "get", "M-SEARCH", "PROPFIND", "X" * 100):
        assert metric_method(method) == "OTHER"


async def test_random_methods_do_not_add_metric_labels(database_url: str) -> None:
    async with running_server(database_url) as srv, httpx.AsyncClient(base_url=srv.url) as client:
        for _ in range(50):
            method = "M" + secrets.token_hex(6).upper()
            r = await client.request(method, "/healthz")
            assert r.status_code in (404, 405), r.text
        text = (await client.get("/metrics")).text
    labels = set(re.findall(r'method="([^"]*)"', text))
    assert labels <= METRIC_METHODS | {"OTHER"} and "OTHER" in labels


# -- deep JSON -------------------------------------------------------------------------------------


async def test_a_frame_of_200000_nested_brackets_is_bad_json_before_and_after_authentication(
    database_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    # The default frame limit (64 KiB) closes such a frame 1009 before it is parsed: raise it so the
    # parser sees it.
    async with running_server(database_url, ws_max_frame_bytes=1024 * 1024) as srv, admin_client(srv.url) as c:
        token = (await make_device(c))["token"]
        async with connect(srv) as ws:
            await ws.send_message(NESTED)  # before device_hello: nobody is authenticated yet
            before = await receive(ws)
            await ws.send_message(json.dumps({"type": "device_hello", "token": token}))
            await ws.send_message(NESTED)  # authenticated, not registered
            between = await receive(ws)
            await ws.send_message(json.dumps({"type": "register"}))
            assert (await receive(ws))["type"] == "hello_ok"
            await ws.send_message(NESTED)
            after = await receive(ws)
            await ws.send_message(json.dumps({"type": "ping", "deep": nested(40)}))
            too_deep = await receive(ws)
            await ws.send_message(json.dumps({"type": "ping", "deep": nested(32)}))
            assert (await receive(ws))["type"] == "pong"  # 32 levels in a field are fine
    for error in (before, between, after, too_deep):
        assert error["type"] == "error" and error["code"] == "bad_json", error
    assert "nested deeper than 32" in too_deep["message"] and "deep" in too_deep["message"]
    no_traceback("".join(capfd.readouterr()))


async def test_with_the_default_frame_limit_the_nested_frame_is_closed_1009(database_url: str) -> None:
    async with running_server(database_url) as srv, connect(srv) as ws:
        await ws.send_message(NESTED)
        assert await close_code(ws) == 1009


async def test_an_http_body_nested_too_deep_is_a_400(
    database_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    async with running_server(database_url) as srv, admin_client(srv.url) as client:
        env = await make_device(client)
        deep = await client.post("/api/admin/accounts", content=NESTED.encode(),
                                 headers={"Content-Type": "application/json"})
        base = {"account_id": env["account"]["id"], "subject_ref": "t", "intent": "park",
                "created_by": env["user"]["id"]}
        snapshot = await client.post("/api/v1/handoffs", json={**base, "snapshot": nested(33)})
        fine = await client.post("/api/v1/handoffs", json={**base, "snapshot": nested(32)})
        payload = await client.post("/api/v1/notifications", json={
            "recipient_user_id": env["user"]["id"], "event_kind": "comment", "topic": "t", "payload": nested(40)})
    assert deep.status_code == 400 and deep.json()["error"]["code"] == "malformed_json", deep.text
    assert snapshot.status_code == 400 and "snapshot: JSON nested deeper than 32" in snapshot.json()["error"]["message"]
    assert fine.status_code == 201, fine.text
    assert payload.status_code == 400, payload.text
    assert "payload: JSON nested deeper" in payload.json()["error"]["message"]
    no_traceback("".join(capfd.readouterr()))


# -- no driver text --------------------------------------------------------------------------------


async def test_a_database_failure_answers_a_generic_message_and_a_request_id_and_logs_the_detail(
    database_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    async with running_server(database_url) as srv, admin_client(srv.url) as client:
        await srv.services.db.execute("ALTER TABLE accounts RENAME TO accounts_gone")
        try:
            r = await client.post("/api/admin/accounts", json={"name": "Acme"})
        finally:
            await srv.services.db.execute("ALTER TABLE accounts_gone RENAME TO accounts")
    assert r.status_code == 500
    error = r.json()["error"]
    assert error["code"] == "storage_error"
    assert "accounts" not in r.text and "relation" not in r.text and "table" not in r.text, r.text
    assert error["request_id"] and error["request_id"] == r.headers["X-Request-Id"]
    log = capfd.readouterr().out
    assert error["request_id"] in log and "accounts" in log  # the operator finds the detail by the id


def test_a_value_the_database_refused_is_answered_without_the_drivers_text() -> None:
    import sqlite3

    from roost import errors
    from roost.http.errors import _public_message

    try:
        try:
            raise sqlite3.IntegrityError("CHECK constraint failed: secret_column > 0")
        except sqlite3.Error as exc:
            raise errors.InvalidInput(f"the database refused a value: {exc}") from exc
    except errors.InvalidInput as mapped:
        public = _public_message(mapped)
    assert public is not None and "secret_column" not in public
    assert _public_message(errors.InvalidInput("limit: must be positive")) is None  # our own text stays


# -- cursors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("cursor", ["²", "9" * 20, "%%garbage%%", "12.", "²." + "x"])
async def test_a_cursor_that_was_not_handed_out_is_400_bad_cursor(database_url: str, cursor: str) -> None:
    async with running_server(database_url) as srv, admin_client(srv.url) as client:
        env = await make_device(client)
        r = await client.post("/api/v1/outreach/batches", json={
            "account_id": env["account"]["id"], "created_by": env["user"]["id"],
            "items": [{"to_handle": "+1", "body": "hi", "device_id": env["device"]["id"]}]})
        assert r.status_code == 201, r.text
        answers = [
            await client.get("/api/v1/handoffs/queue", params={"account_id": env["account"]["id"], "cursor": cursor}),
            await client.get(f"/api/v1/outreach/batches/{r.json()['id']}/items", params={"cursor": cursor}),
        ]
        if not re.fullmatch(r"[A-Za-z0-9_.=-]*", cursor):  # id-keyed lists: only the shape can be checked
            answers.append(await client.get("/api/admin/users", params={"account_id": env["account"]["id"],
                                                                         "cursor": cursor}))
    for answer in answers:
        assert answer.status_code == 400, (answer.request.url, answer.text)
        assert answer.json()["error"]["code"] == "bad_cursor", answer.text
