"""Direct frame writes for device sockets served by Hypercorn's trio worker.

Through ASGI, every frame to every socket costs a task and five layers (Quart's send, Hypercorn's
WebSocket stream, wsproto, the HTTP/1 protocol, the TCP server's lock and ``send_all``, each with
its checkpoints): a fan-out of one event to 2,000 sockets spent about half a second of CPU
there (``bench/fanout.py``). Beneath ASGI, a text frame the server sends uncompressed is a 2-10
byte header and the UTF-8 text, the same bytes for every socket, so here a frame is built once
per text and written with one non-blocking ``os.write`` per socket, from the sender's own task.

This reaches beneath ASGI into Hypercorn's objects, so ``direct_writer`` checks each step and
returns None if anything is not as expected (another server, TLS, HTTP/2, another Hypercorn):
that socket keeps the ASGI path. A write goes direct only when Hypercorn is not mid-write on the
connection (its send lock is free), the WebSocket is open, the frame is at most
``DIRECT_MAX_BYTES`` and the kernel has nothing of this socket's still unsent (``TIOCOUTQ``): a
small write to an empty TCP send queue goes in whole. Anything else takes Hypercorn's send (its
lock), which is what keeps frames whole: the rest of a partial direct write, queued for a writer
task, could have had a pong or a close frame written into its middle before that task got the
lock. A partial write is still handled (the rest is returned for ``write_rest``) but should not
occur. A connection with an extension (compression, which ``roost.http.server`` declines anyway)
keeps the ASGI path.
"""

from __future__ import annotations

import fcntl
import os
import struct
import termios
from typing import Any

import trio

try:  # Hypercorn's trio worker: the only stack the direct path knows
    from hypercorn.events import RawData
    from hypercorn.protocol.h11 import H11Protocol
    from hypercorn.protocol.ws_stream import WSStream
    from hypercorn.trio.tcp_server import TCPServer
    from wsproto.connection import ConnectionState
except ImportError:  # pragma: no cover - another server
    WSStream = H11Protocol = TCPServer = None  # type: ignore[assignment,misc]

DIRECT_MAX_BYTES = 16 * 1024
_OUTQ = bytearray(4)

_last_text: str | None = None
_last_frame = b""


def text_frame(text: str) -> bytes:
    """``text`` as one unmasked, uncompressed, final WebSocket text frame (RFC 6455 section 5.2).

    Remembers the last text by identity: a broadcast passes the same ``str`` to every socket,
    so it is encoded once.
    """
    global _last_text, _last_frame
    if text is _last_text:
        return _last_frame
    data = text.encode()
    n = len(data)
    if n < 126:
        head = bytes((0x81, n))
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x81, 126, n)
    else:
        head = struct.pack("!BBQ", 0x81, 127, n)
    _last_text, _last_frame = text, head + data
    return _last_frame


class DirectWriter:
    """Writes one WebSocket connection's frames straight to its TCP socket when it can."""

    __slots__ = ("_tcp", "_ws")

    def __init__(self, tcp: Any, ws: Any):
        self._tcp = tcp
        self._ws = ws

    def write_nowait(self, text: str) -> bytes | None:
        """Write ``text`` as a frame without waiting.

        Returns ``b""`` when all of it was written, the unwritten rest of the frame (pass it to
        ``write_rest`` before anything else), or None when nothing was written and the frame
        should take the ASGI path (Hypercorn busy on this connection, socket closing or gone).
        """
        tcp, ws = self._tcp, self._ws
        if tcp.send_lock.locked() or ws.connection is None or ws.connection.state is not ConnectionState.OPEN:
            return None
        fd = tcp.stream.socket.fileno()
        if fd < 0:  # closed; checked right before the write, with no await between
            return None
        data = text_frame(text)
        if len(data) > DIRECT_MAX_BYTES or _unsent_bytes(fd):
            return None
        try:
            n = os.write(fd, data)
        except BlockingIOError:
            n = 0
        except OSError:
            return None  # a broken connection: Hypercorn's own send finds out and closes it
        return data[n:]

    async def write_rest(self, data: bytes) -> None:
        """Write the rest of a frame, waiting for room, under Hypercorn's send lock."""
        await self._tcp.protocol_send(RawData(data=data))


def _unsent_bytes(fd: int) -> int:
    """Bytes in the socket's kernel send queue (not yet acknowledged); -1 if it cannot tell."""
    try:
        fcntl.ioctl(fd, termios.TIOCOUTQ, _OUTQ)
    except OSError:
        return -1
    return int.from_bytes(_OUTQ, "little", signed=True)


def direct_writer(send: Any) -> DirectWriter | None:
    """A direct writer for the connection under Quart's websocket ``send``, or None if unknown.

    ``send`` is ``websocket._get_current_object()._send``: a partial of Quart's ``send_data``
    over the ASGI send, which under Hypercorn is a WebSocket stream's ``app_send``.
    """
    if WSStream is None:
        return None
    try:
        ws = send.args[0].__self__
        http = ws.send.__self__
        tcp = http.send.__self__
    except (AttributeError, IndexError):
        return None
    if not isinstance(ws, WSStream) or not isinstance(http, H11Protocol) or not isinstance(tcp, TCPServer):
        return None  # HTTP/2 frames its own streams: raw bytes there would corrupt it
    if not isinstance(getattr(tcp, "stream", None), trio.SocketStream) or not isinstance(
        getattr(tcp, "send_lock", None), trio.Lock
    ):
        return None  # TLS (an SSLStream), or a Hypercorn whose TCP server is laid out otherwise
    connection = getattr(ws, "connection", None)
    if connection is None or getattr(getattr(connection, "_proto", None), "extensions", None) != []:
        return None  # an extension was negotiated (frames differ per socket), or wsproto changed
    return DirectWriter(tcp, ws)
