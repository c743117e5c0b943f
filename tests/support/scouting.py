"""Helpers for scout and deliverer tests: a push scout, pushing items, and a device on a socket."""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from roost.client import handshake


async def make_push_scout(client: httpx.AsyncClient, user_id: str, **fields: Any) -> dict[str, Any]:
    body = {"user_id": user_id, "provider": "push", "config": {}, "poll_interval_s": 60,
            "classifier_config": {"spam_patterns": ["(?i)lottery"]}, **fields}
    r = await client.post("/api/admin/scouts", json=body)
    assert r.status_code == 201, r.text
    return r.json()


async def push(client: httpx.AsyncClient, scout_id: str, refs: list[str], **item: Any) -> None:
    items = [{"source_msg_ref": ref, "subject": f"subject {ref}", "body": item.get("body", f"body of {ref}"),
              "sender": item.get("sender", "a@example.com")} for ref in refs]
    r = await client.post(f"/api/v1/scouts/{scout_id}/items", json={"items": items})
    assert r.status_code == 202, r.text


def ws_url(base: str) -> str:
    return base.replace("http://", "ws://") + "/ws/device"


class Device:
    """One socket of a device: collects proposals, acks on request."""

    def __init__(self, ws: WebSocketConnection):
        self.ws = ws

    async def next_frame(self, wait_s: float = 10) -> dict[str, Any]:
        with trio.fail_after(wait_s):
            while True:
                frame = json.loads(await self.ws.get_message())
                if frame.get("type") != "ping":
                    return frame

    async def proposals(self, n: int, wait_s: float = 10) -> list[dict[str, Any]]:
        out = []
        while len(out) < n:
            frame = await self.next_frame(wait_s)
            assert frame["type"] == "scout_proposal", frame
            out.append(frame["proposal"])
        return out

    async def nothing_more(self, seconds: float = 0.5) -> None:
        with trio.move_on_after(seconds):
            frame = await self.next_frame(seconds + 1)
            raise AssertionError(f"unexpected frame {frame}")

    async def ack(self, proposal_id: str) -> None:
        await self.ws.send_message(json.dumps({"type": "scout_proposal_ack", "proposal_id": proposal_id}))


async def connect(base_url: str, token: str, nursery_stack: Any) -> Device:
    ws = await nursery_stack.enter_async_context(open_websocket_url(ws_url(base_url)))
    await handshake(ws, token)
    return Device(ws)
