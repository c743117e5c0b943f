# ruff: noqa: ASYNC110  (tests poll state other tasks and processes own)
"""Helpers for the handoff tests: a two-account world with devices, and inboxes that record frames."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from roost.client import answer, handshake, ws_url_from_http
from tests.support.server import make_device

HANDOFF_FRAMES = ("handoff_created", "handoff_claimed", "handoff_cancelled", "handoff_updated", "resync_required")


async def make_user(client: httpx.AsyncClient, account: dict, email: str, role: str = "member",
                    active: bool = True, devices: int = 1) -> dict[str, Any]:
    made = await make_device(client, account=account, email=email, role=role, active=active)
    tokens = [made["token"]]
    for i in range(devices - 1):
        r = await client.post("/api/admin/devices", json={"user_id": made["user"]["id"], "name": f"tab{i}"})
        assert r.status_code == 201, r.text
        tokens.append(r.json()["token"])
    return {"id": made["user"]["id"], "email": email, "tokens": tokens}


async def make_account(client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    r = await client.post("/api/admin/accounts", json={"name": name, "timezone": "UTC"})
    assert r.status_code == 201, r.text
    return r.json()


@dataclass
class Inbox:
    """One open socket; ``frames`` keeps the handoff frames it received, in order."""

    user_id: str
    frames: list[dict[str, Any]] = field(default_factory=list)
    ready: trio.Event = field(default_factory=trio.Event)
    closed: trio.Event = field(default_factory=trio.Event)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)

    @property
    def seqs(self) -> list[int]:
        return [f["seq"] for f in self.frames if f["type"] != "resync_required"]

    async def run(self, url: str, token: str, since: int | None = None) -> None:
        with self.scope:
            try:
                async with open_websocket_url(ws_url_from_http(url)) as ws:
                    await handshake(ws, token, since)
                    self.ready.set()
                    while True:
                        frame = json.loads(await ws.get_message())
                        await answer(ws, frame)
                        if frame["type"] in HANDOFF_FRAMES:
                            self.frames.append(frame)
            except ConnectionClosed:
                pass
        self.closed.set()


async def open_inboxes(nursery: trio.Nursery, url: str, users: list[dict], since: int | None = None) -> list[Inbox]:
    inboxes = []
    for user in users:
        for token in user["tokens"]:
            inbox = Inbox(user["id"])
            nursery.start_soon(inbox.run, url, token, since)
            inboxes.append(inbox)
    for inbox in inboxes:
        with trio.fail_after(10):
            await inbox.ready.wait()
    return inboxes


async def settle(inboxes: list[Inbox], count: int, timeout_s: float = 10.0, extra_s: float = 0.3) -> None:
    """Wait until every inbox has ``count`` handoff frames, then a little longer (to see duplicates)."""
    with trio.fail_after(timeout_s):
        while any(len(i.frames) < count for i in inboxes):
            await trio.sleep(0.02)
    await trio.sleep(extra_s)


def handoff_body(account_id: str, created_by: str, **extra: Any) -> dict[str, Any]:
    return {"account_id": account_id, "subject_ref": "ticket-42", "intent": "park", "notes": "printer on fire",
            "priority": "normal", "snapshot": {"steps": [1, 2, 3]}, "created_by": created_by, **extra}
