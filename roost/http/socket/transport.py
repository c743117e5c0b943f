"""How a device socket's frames reach the wire and come back: the Hypercorn fast path.

``open_socket_io`` is the one switch: a socket served by roost's own Hypercorn stream
(``roost.http.socket.stream.RoostWSStream``) gets ``HypercornIO``; any other (another server, a
test harness) gets ``SocketIO``, frames one at a time through Quart's ``websocket.send``/``receive``,
which is always correct. Both are the ``Transport`` a ``DeviceSocket`` writes through
(``roost.runtime.sockets``).

Writing. Through ASGI every frame is a trip of its own (Quart's send, Hypercorn's stream, wsproto,
the HTTP/1 protocol, the TCP server's lock and ``send_all``, each with its checkpoints): ~40 µs
per frame, and a fan-out of one event to 2,000 sockets spent about half a second of CPU there
(``bench/fanout.py``). On a roost socket every frame is a plain one (compression is declined), so
``HypercornIO`` builds the bytes itself (``FrameCache``: a 2-10 byte header and the UTF-8 text,
the same bytes for every socket of a broadcast) and has one write path, Hypercorn's send under
its lock (``write``: everything queued, in one ``Data`` event and one syscall). The one shortcut
is ``write_nowait``: over plain TCP (not TLS), a frame offered to an idle socket is written with
one non-blocking ``os.write`` from the sender's own task, when Hypercorn is not mid-write on the
connection (its send lock is free), the WebSocket is open, the frame is at most
``DIRECT_MAX_BYTES`` and the kernel has nothing of this socket's still unsent (``TIOCOUTQ``): a
small write to an empty TCP send queue goes in whole. Anything else is queued for ``write``, which
is what keeps frames whole: the rest of a partial direct write (which should not occur) is
written first, under the lock, before anything else.

Reading. Received frames took two memory-channel hops through two tasks (Hypercorn's queue to the
ASGI app, quart-trio's task to Quart's queue), each a scheduling round trip per frame, ~60 µs for
an ack all told. ``HypercornIO`` takes the text and binary messages from the stream directly: all
the frames of one read are appended to one bounded inbox and the handler takes them as a list,
one wake-up per read instead of three per frame. A full inbox makes the stream wait, as the
channel did; a disconnect still goes the ASGI way, so Quart ends the handler as before. Frames
handled this way skip Quart's ``websocket_sent``/``websocket_received`` signals, which roost does
not use.
"""

from __future__ import annotations

import fcntl
import os
import struct
import termios
from typing import Any

import trio
from hypercorn.protocol.events import Data
from hypercorn.protocol.ws_stream import ASGIWebsocketState
from wsproto.connection import ConnectionState

from roost.http.socket.stream import RoostWSStream, tcp_server
from roost.runtime.parking import LazyLot

INBOX_FRAMES = 256
DIRECT_MAX_BYTES = 16 * 1024


class FrameCache:
    """Text -> WebSocket frame bytes, remembering the last text by identity.

    A broadcast passes the same ``str`` to every socket, so it is framed once. One per server
    (its ``SocketConfig``), living as long as it serves.
    """

    __slots__ = ("_text", "_frame", "_outq")

    def __init__(self) -> None:
        self._text: str | None = None
        self._frame = b""
        self._outq = bytearray(4)  # for TIOCOUTQ (a scratch buffer: one per server, not per call)

    def frame(self, text: str) -> bytes:
        """``text`` as one unmasked, uncompressed, final text frame (RFC 6455 section 5.2)."""
        if text is self._text:
            return self._frame
        data = text.encode()
        n = len(data)
        if n < 126:
            head = bytes((0x81, n))
        elif n < 1 << 16:
            head = struct.pack("!BBH", 0x81, 126, n)
        else:
            head = struct.pack("!BBQ", 0x81, 127, n)
        self._text, self._frame = text, head + data
        return self._frame

    def unsent_bytes(self, fd: int) -> int:
        """Bytes in a socket's kernel send queue (not yet acknowledged); -1 if it cannot tell."""
        try:
            fcntl.ioctl(fd, termios.TIOCOUTQ, self._outq)
        except OSError:
            return -1
        return int.from_bytes(self._outq, "little", signed=True)


def hypercorn_stream(ws: Any) -> RoostWSStream | None:
    """roost's Hypercorn stream behind a Quart websocket object, or None if it is not one."""
    send = getattr(ws, "_send", None)  # Quart: partial(ASGIWebsocketConnection.send_data, asgi_send)
    args = getattr(send, "args", ())
    asgi_send = args[0] if len(args) == 1 else None
    stream = getattr(asgi_send, "__self__", None)
    if isinstance(stream, RoostWSStream) and getattr(asgi_send, "__func__", None) is RoostWSStream.app_send:
        return stream
    return None


def open_socket_io(ws: Any) -> SocketIO:
    """Frame I/O for one websocket: the Hypercorn fast path on roost's server, portable elsewhere.

    Open it before ``accept`` (so no frame takes the other path) and ``close`` it when the
    handler is done.
    """
    stream = hypercorn_stream(ws)
    if stream is None or getattr(stream, "app_put", None) is None or \
            not isinstance(getattr(stream.config, "frame_cache", None), FrameCache):
        return SocketIO(ws)  # not roost's server (its ``SocketConfig``), or not a stream we know
    return HypercornIO(ws, stream)


class SocketIO:
    """The portable path: frames one at a time through ``websocket.receive``/``send``."""

    __slots__ = ("_ws",)
    writes_directly = False

    def __init__(self, ws: Any):
        self._ws = ws

    async def receive(self) -> str | bytes:
        """The next frame received."""
        return await self._ws.receive()

    async def receive_some(self) -> list[str | bytes]:
        """The frames received so far (at least one), oldest first."""
        return [await self._ws.receive()]

    def write_nowait(self, text: str) -> bytes | None:
        """Write ``text`` at once if this transport can (see ``roost.runtime.sockets.Transport``)."""
        return None

    async def write(self, items: list[str | bytes]) -> None:
        """Write queued text frames, in order."""
        for text in items:
            await self._ws.send(text)

    async def receive_rest(self) -> list[str | bytes]:
        """Frames already read from the connection and not yet taken, without waiting for new ones.

        For the handler's last pass after its socket ended (``roost.http.socket.endpoint``): a frame the server
        has read is still handled. Empty when there are none, or where they cannot be reached
        (Quart's own queue here).
        """
        return []

    def close(self) -> None:
        """The handler is done with the socket."""


class HypercornIO(SocketIO, LazyLot):
    """Frames written to and taken from roost's Hypercorn stream directly (see the module doc).

    Received messages arrive through the stream's ``app_put`` (replaced, for this socket only,
    in place of its queue to the ASGI app) in a bounded list; the reader waits only while the
    list is empty and the stream only while it is full, so one ParkingLot, made on first use,
    serves both (an idle socket stays small).
    """

    __slots__ = ("_stream", "_tcp", "_frames", "_forward", "_items", "_done", "_lot", "_put_waiting")

    def __init__(self, ws: Any, stream: RoostWSStream):
        super().__init__(ws)
        self._stream = stream
        self._tcp = tcp_server(stream)  # None: no direct writes (TLS)
        self._frames: FrameCache = stream.config.frame_cache  # the server's (``SocketConfig``)
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

    @property
    def writes_directly(self) -> bool:  # type: ignore[override]
        return self._tcp is not None

    def _open(self) -> bool:
        stream = self._stream
        return (not stream.closed and stream.state is ASGIWebsocketState.CONNECTED
                and stream.connection is not None and stream.connection.state is ConnectionState.OPEN)

    def write_nowait(self, text: str) -> bytes | None:
        """Write ``text`` as a frame without waiting, straight to the TCP socket.

        Returns ``b""`` when all of it was written, the unwritten rest of the frame (for ``write``,
        before anything else), or None when nothing was written and the frame should be queued
        (TLS, Hypercorn busy on this connection, the socket closing or gone, a big frame).
        """
        tcp = self._tcp
        if tcp is None or tcp.send_lock.locked() or not self._open():
            return None
        fd = tcp.stream.socket.fileno()
        if fd < 0:  # closed; checked right before the write, with no await between
            return None
        frames = self._frames
        data = frames.frame(text)
        if len(data) > DIRECT_MAX_BYTES or frames.unsent_bytes(fd):
            return None
        try:
            n = os.write(fd, data)
        except BlockingIOError:
            n = 0
        except OSError:
            return None  # a broken connection: Hypercorn's own send finds out and closes it
        return data[n:]

    async def write(self, items: list[str | bytes]) -> None:
        """Write queued frames in one ``Data`` event: one trip through Hypercorn's lock, one syscall.

        The rest of a frame begun by ``write_nowait`` is written whatever the state (the peer must
        get whole frames); text frames only while the WebSocket is open (Hypercorn drops frames
        sent after a close the same way).
        """
        parts: list[bytes] = []
        if isinstance(items[0], bytes):
            parts.append(items[0])
            items = items[1:]
        if items and self._open():
            frames = self._frames
            parts.extend([frames.frame(text) for text in items])  # type: ignore[arg-type]
        if parts:
            stream = self._stream
            await stream.send(Data(stream_id=stream.stream_id, data=b"".join(parts)))
