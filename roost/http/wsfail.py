"""WebSocket protocol errors fail the connection at once (RFC 6455 section 7.1.7).

Hypercorn 0.18 (over wsproto) handles an oversize message, invalid UTF-8 or another protocol
error in ways that leave a standard client hanging:

- Oversize: it sends close 1009, then keeps reading the rest of the frame into its message buffer
  (which grows past the limit, up to whatever the peer sends) and waits for the peer's close. A
  client such as ``websockets`` cannot send that close until its whole frame is written, and the
  close, arriving with the frame's last bytes, is left unparsed behind the error (Hypercorn stops
  reading events at the error): the client sits in CLOSING with no close code until its own
  timeout (seen: no close within 10 s for 200 KB to 16 MiB frames).
- Invalid UTF-8 (1007) or a malformed frame (1002): it closes TCP without sending any close frame.

``FailFastWSStream`` replaces Hypercorn's stream for HTTP/1.1 WebSockets (``install``). It checks
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
"""

from __future__ import annotations

import socket
from typing import Any

import trio
from hypercorn.protocol import h11 as hypercorn_h11
from hypercorn.protocol.events import Data, StreamClosed
from hypercorn.protocol.ws_stream import FrameTooLargeError, WSStream
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Message, Ping
from wsproto.frame_protocol import CloseReason

LINGER_S = 0.5  # discard what the peer still sends after a failure for at most this long
CLOSE_SEND_S = 0.5  # time for the close frame to get Hypercorn's send lock (a stuck writer holds it)
READ_BYTES = 1 << 16
_REASONS = {CloseReason.MESSAGE_TOO_BIG: "message too big",
            CloseReason.INVALID_FRAME_PAYLOAD_DATA: "invalid frame payload data"}


class FailFastWSStream(WSStream):
    """Hypercorn's WebSocket stream, failing the connection on a protocol error (see the module doc)."""

    _failed = False

    async def handle(self, event: Any) -> None:
        if self._failed and isinstance(event, Data):
            return  # after a failure nothing more is parsed (the linger discards it at the socket)
        await super().handle(event)

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
            stream = _socket_stream(self)
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


def _socket_stream(ws: WSStream) -> trio.SocketStream | None:
    """The trio TCP stream under a Hypercorn HTTP/1.1 WebSocket stream, or None (TLS, another layout)."""
    try:
        tcp = ws.send.__self__.send.__self__  # WSStream -> H11Protocol.stream_send -> TCPServer.protocol_send
    except AttributeError:
        return None
    stream = getattr(tcp, "stream", None)
    return stream if isinstance(stream, trio.SocketStream) else None


def install() -> None:
    """Serve HTTP/1.1 WebSockets with ``FailFastWSStream`` (Hypercorn has no setting for this)."""
    hypercorn_h11.WSStream = FailFastWSStream  # type: ignore[misc]
