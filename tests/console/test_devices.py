"""Console devices page on both backends: connected now and where, a user's devices, recently
seen; revoke closes the device's socket 1008 and the device leaves the list; the read role, CSRF
and bad input."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from typing import AsyncIterator

import pytest
from trio_websocket import WebSocketConnection, open_websocket_url

from roost.runtime.topics import DEVICE_REVOKED
from roost.storage import audit
from tests.support.server import admin_client, make_device
from tests.support.ws import close_code

pytestmark = pytest.mark.timeout(60)


@asynccontextmanager
async def registered(server, token: str) -> AsyncIterator[WebSocketConnection]:
    """A device socket, authenticated and registered; its TCP stream closed on exit."""
    ws: WebSocketConnection | None = None
    url = server.url.replace("http://", "ws://") + "/ws/device"
    try:
        async with open_websocket_url(url, extra_headers=[("Authorization", f"Bearer {token}")]) as ws:
            await ws.send_message(json.dumps({"type": "register"}))
            while json.loads(await ws.get_message())["type"] != "hello_ok":
                pass
            yield ws
    finally:
        if ws is not None:
            await ws._stream.aclose()


async def _two_devices(server) -> tuple[dict, dict]:
    async with admin_client(server.url) as client:
        ann = await make_device(client)
        bob = await make_device(client, account=ann["account"], email="bob@example.com")
    return ann, bob


async def test_connected_devices_show_with_their_user_sockets_and_this_process(console, console_server):
    ann, bob = await _two_devices(console_server)
    reader = await console("read")
    async with registered(console_server, ann["token"]), registered(console_server, ann["token"]):
        r = await reader.get("/console/devices")
        assert r.status_code == 200
        assert f'data-device="{ann["device"]["id"]}"' in r.text and "ann@example.com" in r.text
        assert f'data-device="{bob["device"]["id"]}"' not in r.text
        assert "<td>2</td>" in r.text  # two sockets of ann's device here
        assert f"pid {console_server.services.process_id.split(':')[1]}" in r.text
        assert "Revoke" not in r.text  # read: no actions
        r = await reader.get("/console/devices", params={"fragment": "connected"})
        assert r.status_code == 200 and "<html" not in r.text and ann["device"]["id"] in r.text
        operator = await console()
        assert "Revoke" in (await operator.get("/console/devices")).text


async def test_a_users_devices_are_listed_with_revoked_ones(console, console_server):
    ann, bob = await _two_devices(console_server)
    async with admin_client(console_server.url) as client:
        await client.delete(f"/api/admin/devices/{bob['device']['id']}")
    reader = await console("read")
    r = await reader.get("/console/devices", params={"user_id": bob["user"]["id"]})
    assert r.status_code == 200 and bob["device"]["id"] in r.text and ann["device"]["id"] not in r.text


async def test_revoke_closes_the_socket_1008_and_the_device_leaves_the_connected_list(console, console_server):
    ann, bob = await _two_devices(console_server)
    client = await console()
    async with registered(console_server, ann["token"]) as ws, registered(console_server, bob["token"]):
        with console_server.services.bus.subscribe(DEVICE_REVOKED) as revoked:
            r = await client.act(f"/console/devices/{ann['device']['id']}/revoke", back="/console/devices")
            assert r.status_code == 303 and r.headers["location"] == "/console/devices"
            assert [m.ids for m in revoked.take()[0]] == [(ann["device"]["id"],)]
        assert await close_code(ws, timeout_s=2) == 1008
        page = await client.get("/console/devices")
        assert "revoked; its sockets are closed" in page.text
        assert f'data-device="{ann["device"]["id"]}"' not in page.text
        assert f'data-device="{bob["device"]["id"]}"' in page.text
    async with admin_client(console_server.url) as api:
        assert (await api.get(f"/api/admin/devices/{ann['device']['id']}")).json()["revoked_at"] is not None
    entries = await audit.list_entries(console_server.services.db, target_id=ann["device"]["id"])
    assert {(e["action"], e["actor"]) for e in entries} >= {("device.revoke", "console:ops"),
                                                            ("console.device.revoke", "console:ops")}


async def test_the_read_role_and_a_bad_csrf_cannot_revoke(console, console_server):
    ann, _ = await _two_devices(console_server)
    url = f"/console/devices/{ann['device']['id']}/revoke"
    reader = await console("read")
    operator = await console()
    assert (await reader.act(url)).status_code == 403
    assert (await operator.post(url, data={"csrf": "nope"})).status_code == 403
    assert (await operator.post(url, data={})).status_code == 403
    async with admin_client(console_server.url) as api:
        assert (await api.get(f"/api/admin/devices/{ann['device']['id']}")).json()["revoked_at"] is None


BAD_QUERIES = [
    ({"user_id": "usr_nobody"}, 404),
    ({"user_id": "<script>alert(1)</script>"}, 400),
    ({"user_id": "u" * 10_000}, 400),
    ({"cursor": "x" * 1000}, 400),
    ({"fragment": "nope"}, 404),
]


async def test_bad_and_hostile_query_values_answer_a_clear_4xx(console):
    client = await console("read")
    for params, status in BAD_QUERIES:
        r = await client.get("/console/devices", params=params)
        assert r.status_code == status, (params, r.text[:300])
        assert "<script>alert" not in r.text


async def test_revoking_an_unknown_or_hostile_id_is_a_message_never_a_500(console, console_server):
    client = await console()
    for device_id in ("dev_nobody", "d" * 3000, "%3Cscript%3E"):
        r = await client.act(f"/console/devices/{device_id}/revoke", back="/console/devices")
        assert r.status_code == 303, r.text[:200]
        page = await client.get(r.headers["location"])
        assert page.status_code == 200 and "flash error" in page.text and "no device" in page.text


async def test_devices_of_another_process_show_where_they_are_connected(console, console_server):
    """PostgreSQL: a device with a socket in another live process is listed with its host and pid
    (from that process's heartbeat rows); SQLite has one process and no such section."""
    from roost.storage import processes

    ann, bob = await _two_devices(console_server)
    s = console_server.services
    now = s.clock.now()
    await processes.beat(s.db, process_id="other:7:x", host="other-host", pid=7777, port=None, started_at=now,
                         now=now, sockets=1, leads=[])
    await processes.write_devices(s.db, "other:7:x", changed={bob["device"]["id"]: 1}, gone=())
    r = await (await console("read")).get("/console/devices")
    assert r.status_code == 200
    if s.db.shared:
        assert f'data-device-elsewhere="{bob["device"]["id"]}"' in r.text and "other-host" in r.text
        assert "pid 7777" in r.text and "console.tick" in r.text  # refreshed every heartbeat
    else:
        assert "data-device-elsewhere" not in r.text and "Connected to other processes" not in r.text
