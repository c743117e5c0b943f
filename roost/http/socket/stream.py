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
"""

from __future__ import annotations

import socket
from contextlib import contextmanager
from typing import Any, Iterator

import trio
from hypercorn.protocol import h11 as hypercorn_h11
from hypercorn.protocol.events import Data, StreamClosed
from hypercorn.protocol.ws_stream import FrameTooLargeError, WSStream
from hypercorn.trio.tcp_server import TCPServer
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Message, Ping
from wsproto.frame_protocol import CloseReason

from roost.http.socket.frames_in import take_text_frames

LINGER_S = 0.5  # discard what the peer still sends after a failure for at most this long
CLOSE_SEND_S = 0.5  # time for the close frame to get Hypercorn's send lock (a stuck writer holds it)
READ_BYTES = 1 << 16
_REASONS = {CloseReason.MESSAGE_TOO_BIG: "message too big",
            CloseReason.INVALID_FRAME_PAYLOAD_DATA: "invalid frame payload data"}


class RoostWSStream(WSStream):
    """Hypercorn's WebSocket stream, failing the connection on a protocol error and declining
    compression (see the module doc)."""

    _failed = False
    _partial = b""  # the start of a plain text frame cut by the end of a read (frames_in)

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


_serving = 0  # roost servers running in this process (tests run several)


@contextmanager
def serving() -> Iterator[None]:
    """Serve HTTP/1.1 WebSockets with ``RoostWSStream`` while inside; Hypercorn's own after."""
    global _serving
    if _serving == 0:
        hypercorn_h11.WSStream = RoostWSStream  # type: ignore[misc]
    _serving += 1
    try:
        yield
    finally:
        _serving -= 1
        if _serving == 0:
            hypercorn_h11.WSStream = WSStream  # type: ignore[misc]
