"""Helpers for dispatch tests against real servers: a device that answers every send_request, and a batch started."""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio
from trio_websocket import open_websocket_url

from roost.client import handshake, ws_url_from_http


async def answering_device(url: str, token: str, seen: list[str], *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """A device socket that reports every ``send_request`` sent (and records its id in ``seen``)."""
    async with open_websocket_url(ws_url_from_http(url)) as ws:
        await handshake(ws, token)
        task_status.started()
        while True:
            frame = json.loads(await ws.get_message())
            if frame["type"] == "send_request":
                seen.append(frame["id"])
                await ws.send_message(json.dumps({"type": "send_result", "id": frame["id"], "status": "sent"}))


async def start_batch(client: httpx.AsyncClient, env: dict, n: int) -> dict[str, Any]:
    """A batch of ``n`` items for ``env``'s device, created and sent; returns the send answer."""
    r = await client.post("/api/v1/outreach/batches", json={
        "account_id": env["account"]["id"], "created_by": env["user"]["id"],
        "items": [{"to_handle": f"+1{i}", "body": "hi", "device_id": env["device"]["id"]} for i in range(n)]})
    assert r.status_code == 201, r.text
    r = await client.post(f"/api/v1/outreach/batches/{r.json()['id']}/send")
    assert r.status_code == 200, r.text
    return r.json()
