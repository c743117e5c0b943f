"""Batched WebSocket I/O under Hypercorn: queued frames out in one write, received ones in bulk.

Through ASGI every frame is a trip of its own: Quart's ``websocket.send`` → Hypercorn's
``app_send`` → wsproto → a lock, a shielded cancel scope and one ``send`` syscall, ~40 µs per
frame; a socket streaming proposals has hundreds of frames queued at once. ``send_many``
frames them all with the connection's own wsproto ``Connection`` (so negotiated extensions such
as permessage-deflate still apply) and hands the bytes to Hypercorn's stream in one ``Data``
event: one trip and one syscall per batch.

Received frames take two memory-channel hops through two tasks (Hypercorn's queue to the ASGI
app, quart-trio's task to Quart's queue), each a scheduling round trip per frame, ~60 µs for an
ack all told. ``HypercornIO`` takes the text and binary messages from the stream directly: all
the frames of one read are appended to one bounded inbox and the handler takes them as a list,
one wake-up per read instead of three per frame. A full inbox makes the stream wait, as the
channel did; a disconnect still goes the ASGI way, so Quart ends the handler as before.

This reaches under the ASGI interface, so it is used only when the objects are the ones it was
written against (Hypercorn's ``WSStream`` behind Quart's websocket); otherwise, or on another
server, frames go one at a time through ``websocket.send``/``receive``, which is always
correct. Frames handled this way skip Quart's ``websocket_sent``/``websocket_received``
signals, which roost does not use.
"""

from __future__ import annotations

from typing import Any

import trio
from hypercorn.protocol.events import Data
from hypercorn.protocol.ws_stream import ASGIWebsocketState, WSStream
from wsproto.events import TextMessage
from wsproto.utilities import LocalProtocolError

INBOX_FRAMES = 256


def hypercorn_stream(ws: Any) -> WSStream | None:
    """The Hypercorn stream behind a Quart websocket object, or None if it is not one."""
    send = getattr(ws, "_send", None)  # Quart: partial(ASGIWebsocketConnection.send_data, asgi_send)
    args = getattr(send, "args", ())
    asgi_send = args[0] if len(args) == 1 else None
    stream = getattr(asgi_send, "__self__", None)
    if isinstance(stream, WSStream) and getattr(asgi_send, "__func__", None) is WSStream.app_send:
        return stream
    return None


def open_socket_io(ws: Any) -> SocketIO:
    """Frame I/O for one websocket: batched under Hypercorn, one frame at a time elsewhere.

    Open it before ``accept`` (so no frame takes the other path) and ``close`` it when the
    handler is done.
    """
    stream = hypercorn_stream(ws)
    if stream is None or getattr(stream, "app_put", None) is None:
        return SocketIO(ws)
    return HypercornIO(ws, stream)


class SocketIO:
    """The portable path: frames one at a time through ``websocket.receive``/``send``."""

    __slots__ = ("_ws",)

    def __init__(self, ws: Any):
        self._ws = ws

    async def receive(self) -> str | bytes:
        """The next frame received."""
        return await self._ws.receive()

    async def receive_some(self) -> list[str | bytes]:
        """The frames received so far (at least one), oldest first."""
        return [await self._ws.receive()]

    async def send_many(self, texts: list[str]) -> None:
        """Write text frames, in order."""
        for text in texts:
            await self._ws.send(text)

    async def receive_rest(self) -> list[str | bytes]:
        """Frames already read from the connection and not yet taken, without waiting for new ones.

        For the handler's last pass after its socket ended (``roost.http.ws``): a frame the server
        has read is still handled. Empty when there are none, or where they cannot be reached
        (Quart's own queue here).
        """
        return []

    def close(self) -> None:
        """The handler is done with the socket."""


class HypercornIO(SocketIO):
    """Frames written to and taken from Hypercorn's ``WSStream`` directly.

    Received messages arrive through the stream's ``app_put`` (replaced, for this socket only,
    in place of its queue to the ASGI app) in a bounded list; the reader waits only while the
    list is empty and the stream only while it is full, so one ParkingLot, made on first use,
    serves both (an idle socket stays small).
    """

    __slots__ = ("_stream", "_forward", "_items", "_done", "_lot", "_put_waiting")

    def __init__(self, ws: Any, stream: WSStream):
        super().__init__(ws)
        self._stream = stream
        self._forward = stream.app_put
        self._items: list[str | bytes] = []
        self._done = False  # the peer disconnected or the handler is finished
        self._lot: trio.lowlevel.ParkingLot | None = None
        self._put_waiting = False  # the stream's reader holds a frame (and maybe more) for a full inbox
        stream.app_put = self._put

    def close(self) -> None:
        """Give the stream its queue back (for the disconnect) and free a waiting put."""
        self._done = True
        self._stream.app_put = self._forward
        self._items = []
        self._changed()

    def _changed(self) -> None:
        if self._lot is not None:
            self._lot.unpark_all()

    async def _park(self) -> None:
        if self._lot is None:
            self._lot = trio.lowlevel.ParkingLot()
        await self._lot.park()

    async def _put(self, message: dict[str, Any]) -> None:
        # Called by Hypercorn's reading task for each complete message; no checkpoint unless the
        # inbox is full, so every frame of one read lands before the handler runs.
        if message["type"] == "websocket.receive" and not self._done:
            text = message.get("text")
            self._items.append(text if text is not None else message.get("bytes") or b"")
            self._changed()
            if len(self._items) >= INBOX_FRAMES and not self._done:
                self._put_waiting = True
                try:
                    while len(self._items) >= INBOX_FRAMES and not self._done:
                        await self._park()
                finally:
                    self._put_waiting = False
                    self._changed()  # for ``receive_rest``, waiting for what the reader still holds
            return
        if message["type"] == "websocket.disconnect":
            self._done = True
            self._changed()
        await self._forward(message)

    async def _wait(self) -> None:
        # After a disconnect nothing arrives: this waits for the cancellation Quart delivers,
        # as its ``receive`` did.
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._items:
            await self._park()

    async def receive(self) -> str | bytes:
        await self._wait()
        item = self._items.pop(0)
        self._changed()
        return item

    async def receive_some(self) -> list[str | bytes]:
        await self._wait()
        items, self._items = self._items, []
        self._changed()
        return items

    async def receive_rest(self) -> list[str | bytes]:
        """The inbox, and what the stream's reader still holds for it (read from TCP, parked on a
        full inbox); waits only for that reader, never for the peer."""
        while not self._items and self._put_waiting:
            await self._park()
        items, self._items = self._items, []
        self._changed()
        return items

    async def send_many(self, texts: list[str]) -> None:
        """Frame every text with the connection's wsproto and write them in one ``Data`` event."""
        stream = self._stream
        if stream.closed or stream.state is not ASGIWebsocketState.CONNECTED:
            return  # closing: Hypercorn drops frames sent after a close the same way
        connection = stream.connection
        try:
            data = b"".join([connection.send(TextMessage(data=text)) for text in texts])
        except LocalProtocolError:
            return  # the peer's close is being handled; nothing more can be written
        await stream.send(Data(stream_id=stream.stream_id, data=data))
