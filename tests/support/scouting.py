"""Helpers for scout and deliverer tests: a push scout (through the API, or straight through storage
with its user and device), pushing items, and a device on a socket."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import httpx
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from roost.client import handshake
from roost.storage import scouts, tenancy
from roost.storage.database import Database


async def make_scouting_user(db: Database, *, now: dt.datetime, email: str, display_name: str,
                             account_name: str = "A", **scout: Any) -> dict[str, Any]:
    """Written straight through storage at ``now``: an account (UTC), a member user with no digest, their
    phone and a push scout (``scout`` overrides its fields). Returns the rows by "account", "user",
    "device" and "scout"."""
    acc = await tenancy.create_account(db, name=account_name, timezone="UTC", now=now, actor="t")
    user = await tenancy.create_user(db, account_id=acc["id"], fields={
        "email": email, "display_name": display_name, "timezone": "UTC", "role": "member", "active": True,
        "digest_cadence": "off", "digest_time": "08:00", "digest_weekday": "monday", "quiet_hours": None},
        now=now, actor="t")
    device, _ = await tenancy.create_device(db, user_id=user["id"], name="phone", now=now, actor="t")
    fields = {"provider": "push", "config": {}, "classifier": "rules", "classifier_config": {},
              "poll_interval_s": 60.0, "enabled": True, "auto_trash_spam": False,
              "device_inactivity_pause_days": None, "ttl_days": 30, "max_failures": 3, **scout}
    made = await scouts.create_scout(db, user_id=user["id"], fields=fields, now=now, actor="t")
    return {"account": acc, "user": user, "device": device, "scout": made}


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
