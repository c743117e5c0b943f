"""WebSocket test helpers shared by the integration and end-to-end tests."""

from __future__ import annotations

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection


async def close_code(ws: WebSocketConnection, timeout_s: float = 10) -> int:
    """Read (and drop) frames until the server closes the socket; its close code."""
    with trio.fail_after(timeout_s):
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed as closed:
            return closed.reason.code
