"""A device client over trio-websocket: the reference client of the protocol and the load tool's core.

It connects, authenticates with ``device_hello``, registers (optionally ``since``), answers
pings, acknowledges every ``scout_proposal``, and hands each frame to a callback.
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

FrameCallback = Callable[[dict[str, Any]], Awaitable[None]]


async def handshake(ws: WebSocketConnection, token: str, since: int | None = None) -> dict[str, Any]:
    """Authenticate and register; returns the ``hello_ok`` frame (errors before it are raised)."""
    await ws.send_message(json.dumps({"type": "device_hello", "token": token}))
    register: dict[str, Any] = {"type": "register"}
    if since is not None:
        register["since"] = since
    await ws.send_message(json.dumps(register))
    while True:
        frame = json.loads(await ws.get_message())
        if frame.get("type") == "hello_ok":
            return frame
        if frame.get("type") == "error":
            raise RuntimeError(f"handshake refused: {frame.get('code')}: {frame.get('message')}")


async def answer(ws: WebSocketConnection, frame: dict[str, Any], *, ack: bool = True) -> None:
    """The protocol's automatic answers: pong to ping, ack to proposals (unless ``ack`` is False)."""
    kind = frame.get("type")
    if kind == "ping":
        await ws.send_message('{"type":"pong"}')
    elif kind == "scout_proposal" and ack:
        proposal_id = frame.get("proposal", {}).get("id")
        await ws.send_message(json.dumps({"type": "scout_proposal_ack", "proposal_id": proposal_id}))


async def run_device(
    ws_url: str,
    token: str,
    on_frame: FrameCallback,
    *,
    since: int | None = None,
    max_message_size: int = 1024 * 1024,
    ack: bool = True,
) -> int:
    """Connect and serve frames until the server closes; returns the close code."""
    async with open_websocket_url(ws_url, max_message_size=max_message_size) as ws:
        try:
            await on_frame(await handshake(ws, token, since))
            while True:
                frame = json.loads(await ws.get_message())
                await answer(ws, frame, ack=ack)
                await on_frame(frame)
        except ConnectionClosed as closed:
            # trio-websocket leaves its TCP stream open when the server closes first: close it here.
            await ws._stream.aclose()
            return closed.reason.code if closed.reason else 1006


def ws_url_from_http(url: str) -> str:
    base = url.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://"):] + "/ws/device"
    if base.startswith("http://"):
        return "ws://" + base[len("http://"):] + "/ws/device"
    return base


__all__ = ["handshake", "answer", "run_device", "ws_url_from_http", "trio"]
