"""roost's own Hypercorn WebSocket stream: protocol errors fail the connection at once (RFC 6455
section 7.1.7), and compression is declined.

Hypercorn has no setting for either, so ``serving`` puts ``RoostWSStream`` in place of Hypercorn's
HTTP/1.1 WebSocket stream while roost's server runs and puts Hypercorn's back when it stops
(another Hypercorn server in the process, before or after, gets Hypercorn's own).

Hypercorn 0.18 (over wsproto) handles an oversize message, invalid UTF-8 or another protocol
error in ways that leave a standard client hanging:

- Oversize: it sends close 1009, then keeps reading the rest of the frame into its message buffer
  (which grows past the limit, up to whatever the peer sends) and waits for the peer's close. A
  client such as ``websockets`` cannot send that close until its whole frame is written, and the
  close, arriving with the frame's last bytes, is left unparsed behind the error (Hypercorn stops
  reading events at the error): the client sits in CLOSING with no close code until its own
  timeout (seen: no close within 10 s for 200 KB to 16 MiB frames).
- Invalid UTF-8 (1007) or a malformed frame (1002): it closes TCP without sending any close frame.

``RoostWSStream`` checks
each frame's declared length as soon as the header is parsed, so an oversize frame is refused
before its payload is read, and on any protocol error it *fails the connection*: the close frame
with its code, then FIN at once (the peer reads the close and then end-of-stream, without waiting
for any closing handshake), the app is told the socket is gone, and the connection is closed.
Between the FIN and the close, whatever the peer still sends is read and discarded (never fed
to wsproto nor buffered) for at most ``LINGER_S`` or until the peer closes: closing a socket with
unread data makes the kernel send RST, which can make the peer's stack drop the close frame it
has not read yet (the "lingering close" every HTTP server does).

The limit is Hypercorn's ``websocket_max_message_size`` (``ROOST_WS_MAX_FRAME_BYTES``): a frame
whose payload is longer than that many bytes, or a fragmented message whose parts add up to more,
closes with 1009.

Compression (permessage-deflate) is declined: browsers always offer it and Hypercorn always
accepts; wsproto then keeps a zlib compressor and decompressor for the life of each socket
(context takeover), about 100 KiB of RSS per idle socket: 500 idle device sockets measured 145 KiB
each with the offer, 43 KiB without, against a bar of 40 KiB. Device frames are small JSON, so
compression buys little. A declined offer is ordinary negotiation: the client goes on without it,
and every frame on a roost socket is a plain one (which ``roost.http.socket.transport`` relies on).

An idle socket should stay small (``bench/ws_connections.py``; the breakdown is in BENCHMARKS.md),
so while roost serves, four of Hypercorn's per-connection objects are leaner, with the same
behaviour: the queue from the stream to the ASGI app is an ``AppQueue`` (a list and a ParkingLot
made on first wait) instead of a trio memory channel (whose empty deque, sets and OrderedDicts
take about 1.7 KiB); wsproto's event queue, which only ever holds the close event of a lost
connection, is a list instead of a deque (0.7 KiB); the h11 connection of the upgrade request is
let go once the 101 is sent (1 KiB); and ``RoostTCPServer`` reads without a
``fail_after(inf)`` around every read when no read timeout is set (a cancel scope, its status
and two sets held for as long as the connection is idle, about 0.9 KiB).
"""

from __future__ import annotations

import socket
from collections import deque
from contextlib import contextmanager
from typing import Any, Iterator

import h11
import trio
from hypercorn.events import Closed, RawData
from hypercorn.protocol import h11 as hypercorn_h11
from hypercorn.protocol.events import Data, StreamClosed
from hypercorn.protocol.ws_stream import FrameTooLargeError, WSStream
from hypercorn.trio import run as hypercorn_trio_run
from hypercorn.trio import task_group as hypercorn_task_group
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Message, Ping
from wsproto.frame_protocol import CloseReason

from roost.http.socket.frames_in import take_text_frames
from roost.runtime.parking import LazyLot

LINGER_S = 0.5  # discard what the peer still sends after a failure for at most this long
CLOSE_SEND_S = 0.5  # time for the close frame to get Hypercorn's send lock (a stuck writer holds it)
READ_BYTES = 1 << 16
_REASONS = {CloseReason.MESSAGE_TOO_BIG: "message too big",
            CloseReason.INVALID_FRAME_PAYLOAD_DATA: "invalid frame payload data"}


class AppQueue(LazyLot):
    """The bounded FIFO from a WebSocket stream to its ASGI app, in place of a trio memory channel.

    ``send`` waits for room and ``receive`` for a message, each a checkpoint as the channel's
    are; ``take_nowait`` empties it without waiting. One ParkingLot, made on first wait
    (``LazyLot``), serves both directions.
    """

    __slots__ = ("_items", "_max", "_lot")

    def __init__(self, max_size: int):
        self._items: list[Any] = []
        self._max = max(1, max_size)
        self._lot: trio.lowlevel.ParkingLot | None = None

    async def send(self, message: Any) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        while len(self._items) >= self._max:
            await self._park()
        self._items.append(message)
        self._changed()
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def receive(self) -> Any:
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._items:
            await self._park()
        message = self._items.pop(0)
        self._changed()
        await trio.lowlevel.cancel_shielded_checkpoint()
        return message

    def take_nowait(self) -> list[Any]:
        """Every queued message, oldest first, leaving the queue empty."""
        items, self._items = self._items, []
        if items:
            self._changed()
        return items


class _LeanTaskGroup:
    """Hypercorn's trio TaskGroup for one WebSocket stream, spawning its app with an ``AppQueue``."""

    __slots__ = ("_group",)

    def __init__(self, group: Any):
        self._group = group

    async def spawn_app(self, app: Any, config: Any, scope: Any, send: Any) -> Any:
        queue = AppQueue(config.max_app_queue_size)
        self._group._nursery.start_soon(hypercorn_task_group._handle, app, config, scope, queue.receive, send,
                                        trio.to_thread.run_sync, trio.from_thread.run)
        return queue.send

    def spawn(self, func: Any, *args: Any) -> None:
        self._group.spawn(func, *args)


class _EventList(list):
    """wsproto's event queue as a list: it only ever holds the close event of a lost connection
    (the rest come from its frame parser), and an empty deque takes 0.7 KiB per socket."""

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)


class _Switched:
    """Stands in for the h11 connection of an upgraded HTTP/1.1 connection: sending an HTTP event
    fails as h11's own would in its SWITCHED_PROTOCOL state."""

    __slots__ = ()
    trailing_data = (b"", False)

    def send(self, event: Any) -> bytes:
        raise h11.LocalProtocolError("the connection has switched to the WebSocket protocol")


_SWITCHED = _Switched()


class RoostWSStream(WSStream):
    """Hypercorn's WebSocket stream, failing the connection on a protocol error and declining
    compression (see the module doc)."""

    _failed = False
    _partial = b""  # the start of a plain text frame cut by the end of a read (frames_in)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if isinstance(self.task_group, hypercorn_task_group.TaskGroup) and \
                getattr(self.task_group, "_nursery", None) is not None:
            self.task_group = _LeanTaskGroup(self.task_group)

    async def _accept(self, message: Any) -> None:
        await super()._accept(message)
        events = getattr(self.connection, "_events", None)
        if type(events) is deque:
            self.connection._events = _EventList(events)
        # The 101 is sent: the HTTP/1.1 protocol sends the connection's bytes raw from now on,
        # and its h11 connection (about 1 KiB) is not used again.
        protocol = getattr(self.send, "__self__", None)
        http = getattr(protocol, "connection", None)
        if isinstance(http, hypercorn_h11.H11WSConnection) and isinstance(http.h11_connection, h11.Connection):
            http.h11_connection = _SWITCHED

    async def app_send(self, message: dict[str, Any] | None) -> None:
        if message is not None and message["type"] == "websocket.accept":
            self.handshake.extensions = None  # the client's offers, unanswered: no compression
        await super().app_send(message)

    async def handle(self, event: Any) -> None:
        if self._failed and isinstance(event, Data):
            return  # after a failure nothing more is parsed (the linger discards it at the socket)
        if isinstance(event, Data) and self._at_frame_boundary():
            # Plain text frames (acks) are taken without wsproto; the rest goes to it as before.
            data = self._partial + event.data if self._partial else event.data
            texts, used, wait = take_text_frames(data, self.config.websocket_max_message_size)
            self._partial = data[used:] if wait else b""
            for text in texts:
                await self.app_put({"type": "websocket.receive", "bytes": None, "text": text})
                if self._failed or self.closed:
                    return
            if wait or used == len(data):
                return
            event = Data(stream_id=event.stream_id, data=data[used:])
        await super().handle(event)

    def _at_frame_boundary(self) -> bool:
        """The connection is open and wsproto holds nothing: no bytes, no header, no event, no part
        of a message (``roost.http.socket.frames_in``)."""
        if self.closed or not self.handshake.accepted or self.buffer.value is not None:
            return False
        conn = self.connection
        proto = getattr(conn, "_proto", None)
        decoder = getattr(proto, "_frame_decoder", None)
        return (decoder is not None and conn.state is ConnectionState.OPEN and not conn._events
                and not proto.extensions and decoder.header is None and not len(decoder.buffer)
                and proto._message_decoder.opcode is None)

    async def _handle_events(self) -> None:
        limit = self.config.websocket_max_message_size
        for event in self.connection.events():
            if isinstance(event, Message):
                try:
                    self.buffer.extend(event)
                except FrameTooLargeError:
                    await self._fail(CloseReason.MESSAGE_TOO_BIG)
                    return
                if event.message_finished:
                    await self.app_put(self.buffer.to_message())
                    self.buffer.clear()
            elif isinstance(event, Ping):
                await self._send_wsproto_event(event.response())
            elif isinstance(event, CloseConnection):
                if self.connection.state is ConnectionState.OPEN:
                    # wsproto reports a parse failure (1002, 1007) as a close it made up itself,
                    # leaving the connection open and sending nothing: send it, then fail.
                    await self._fail(event.code)
                    return
                if self.connection.state is ConnectionState.REMOTE_CLOSING:
                    await self._send_wsproto_event(event.response())
                await self.send(StreamClosed(stream_id=self.stream_id))
                return
            if self._failed or self.closed:
                return
        # wsproto wants more data. If it has parsed the header of a data frame whose payload would
        # take the message over the limit, refuse it now rather than after reading it.
        decoder = self.connection._proto._frame_decoder
        header = decoder.header
        if header is not None and not header.opcode.iscontrol():
            remaining = header.payload_len - decoder.payload_consumed
            if self.buffer.length + remaining > limit:
                await self._fail(CloseReason.MESSAGE_TOO_BIG)

    async def _fail(self, code: int) -> None:
        """Send the close frame, FIN, tell the app, discard what still comes briefly, close TCP."""
        self._failed = True
        self.buffer.clear()
        try:
            with trio.move_on_after(CLOSE_SEND_S):
                await self._send_wsproto_event(CloseConnection(code=code, reason=_REASONS.get(code, "protocol error")))
            tcp = tcp_server(self)
            stream = tcp.stream if tcp is not None else None
            if stream is not None:
                try:
                    stream.socket.shutdown(socket.SHUT_WR)  # FIN right after the close frame
                except OSError:
                    stream = None
            if not self.closed:
                self.closed = True
                if self.app_put is not None:
                    await self.app_put({"type": "websocket.disconnect", "code": code})
            if stream is not None:
                # Called from the connection's reading task, so nothing else is receiving on it.
                with trio.move_on_after(LINGER_S):
                    try:
                        while await stream.receive_some(READ_BYTES):
                            pass
                    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
                        pass
        finally:
            # Closed even when this task is being cancelled (the server stopping, or crashing):
            # Hypercorn's own close awaits a checkpoint before closing the socket, so a cancelled
            # close would leave it open, with a peer blocked writing into it for good.
            with trio.CancelScope(shield=True, deadline=trio.current_time() + CLOSE_SEND_S):
                await self.send(StreamClosed(stream_id=self.stream_id))


def tcp_server(ws: WSStream) -> Any:
    """Hypercorn's trio TCP server under an HTTP/1.1 WebSocket stream, if it serves plain TCP.

    None under TLS (an ``SSLStream``), or with a Hypercorn laid out otherwise than this was
    written against: then nothing may be written beneath it.
    """
    try:
        tcp = ws.send.__self__.send.__self__  # WSStream -> H11Protocol.stream_send -> TCPServer.protocol_send
    except AttributeError:
        return None
    if not isinstance(tcp, TCPServer) or not isinstance(getattr(tcp, "stream", None), trio.SocketStream) \
            or not isinstance(getattr(tcp, "send_lock", None), trio.Lock):
        return None
    return tcp


class RoostTCPServer(TCPServer):
    """Hypercorn's trio TCP server, reading without a cancel scope when no read timeout is set."""

    async def _read_data(self) -> None:
        if self.config.read_timeout:  # Hypercorn's own, with its fail_after
            await super()._read_data()
            return
        while True:
            try:
                data = await self.stream.receive_some(MAX_RECV)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                break
            await self.protocol.handle(RawData(bytes(data)))
            if data == b"":
                break
        await self.protocol.handle(Closed())


_serving = 0  # roost servers running in this process (tests run several)


@contextmanager
def serving() -> Iterator[None]:
    """Serve HTTP/1.1 WebSockets with ``RoostWSStream`` (and connections with ``RoostTCPServer``)
    while inside; Hypercorn's own after."""
    global _serving
    if _serving == 0:
        hypercorn_h11.WSStream = RoostWSStream  # type: ignore[misc]
        hypercorn_trio_run.TCPServer = RoostTCPServer  # type: ignore[misc]
    _serving += 1
    try:
        yield
    finally:
        _serving -= 1
        if _serving == 0:
            hypercorn_h11.WSStream = WSStream  # type: ignore[misc]
            hypercorn_trio_run.TCPServer = TCPServer  # type: ignore[misc]
