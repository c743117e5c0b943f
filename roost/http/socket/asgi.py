"""quart-trio's WebSocket connection without a task, a nursery or a queue of its own on roost's server.

quart-trio runs each WebSocket in a nursery of two tasks: one runs the handler, the other moves
each message from the server's queue to one of its own (a trio memory channel) and cancels the
handler when the peer disconnects. On roost's Hypercorn stream (``roost.http.socket.stream``)
``DeviceWebsocketConnection`` does the same with neither: the handler runs in the ASGI app's own
task inside a cancel scope, the stream hands it each message directly (``_put``, in place of the
stream's queue), a disconnect cancels that scope, and the queue for ``websocket.receive`` is made
only if a message comes that way (the device socket's frames take ``roost.http.socket.transport``'s
path, so on an idle device socket it never is). That is two tasks, a nursery and a channel less per
socket, about 6 KiB of an idle socket's memory (BENCHMARKS.md). Anywhere else (another server, a
test client) it is quart-trio's connection as it was.
"""

from __future__ import annotations

from typing import Any

import trio
from quart.asgi import ASGIWebsocketConnection
from quart.signals import websocket_received
from quart_trio.asgi import TrioASGIWebsocketConnection

from roost.http.socket.stream import AppQueue, RoostWSStream

QUEUE_SIZE = 10  # messages for ``websocket.receive`` (quart-trio's own size)


class DeviceWebsocketConnection(TrioASGIWebsocketConnection):
    """quart-trio's ASGI WebSocket connection; leaner under roost's Hypercorn stream (module doc)."""

    def __init__(self, app: Any, scope: Any) -> None:  # no channel until one is needed
        self.app = app
        self.scope = scope
        self._accepted = False
        self._closed = False
        self._cancel: trio.CancelScope | None = None
        self._done = False

    async def __call__(self, receive: Any, send: Any) -> None:
        stream = getattr(send, "__self__", None)
        queue = getattr(receive, "__self__", None)
        if not isinstance(stream, RoostWSStream) or getattr(send, "__func__", None) is not RoostWSStream.app_send \
                or not isinstance(queue, (AppQueue, trio.MemoryReceiveChannel)):
            self.send_channel, self.receive_channel = trio.open_memory_channel[Any](QUEUE_SIZE)
            await super().__call__(receive, send)
            return
        # Messages the stream queued before this task ran (``websocket.connect``; a disconnect if
        # the peer left first) go the way later ones will.
        early = _take_queued(queue)
        stream.app_put = self._put
        websocket = self._create_websocket_from_scope(send)
        try:
            with trio.CancelScope() as self._cancel:
                for message in early:
                    await self._put(message)
                await ASGIWebsocketConnection.handle_websocket(self, websocket, send)
        finally:
            self._done = True
            self._cancel = None

    async def _put(self, message: dict[str, Any]) -> None:
        """A message from the stream (called by its reading task), as quart-trio's reader took it."""
        if self._done:
            return
        if message["type"] == "websocket.receive":
            data = message.get("bytes") or message["text"]
            await websocket_received.send_async(data, _sync_wrapper=self.app.ensure_async)
            if not hasattr(self, "send_channel"):
                self.send_channel, self.receive_channel = trio.open_memory_channel[Any](QUEUE_SIZE)
            await self.send_channel.send(data)
        elif message["type"] == "websocket.disconnect" and self._cancel is not None:
            self._cancel.cancel()

    async def _receive(self) -> Any:
        if not hasattr(self, "receive_channel"):
            self.send_channel, self.receive_channel = trio.open_memory_channel[Any](QUEUE_SIZE)
        return await self.receive_channel.receive()

    def _create_websocket_from_scope(self, send: Any) -> Any:
        if hasattr(self, "receive_channel"):
            return super()._create_websocket_from_scope(send)
        self.receive_channel = _LazyReceive(self)  # the websocket's receive: the channel made on first use
        try:
            return super()._create_websocket_from_scope(send)
        finally:
            del self.receive_channel


def _take_queued(queue: AppQueue | trio.MemoryReceiveChannel[Any]) -> list[Any]:
    if isinstance(queue, AppQueue):
        return queue.take_nowait()
    items = []
    while True:
        try:
            items.append(queue.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            return items


class _LazyReceive:
    """Stands in for the receive channel while the websocket object is made: its ``receive``
    makes the connection's channel only when first awaited."""

    __slots__ = ("receive",)

    def __init__(self, connection: DeviceWebsocketConnection):
        self.receive = connection._receive
