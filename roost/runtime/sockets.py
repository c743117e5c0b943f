"""Socket registry: which device sockets are open in this process, and a way to send to them.

Each open socket has one bounded outbox, filled by ``DeviceSocket.send_nowait`` (never waits: a
frame that does not fit closes that socket 1013, "slow consumer", instead of letting memory grow,
and the device catches up on reconnect from what the database still holds) or ``send`` (waits
for room). Frames are encoded once per send, however many sockets they go to; under Hypercorn a
``send_nowait`` frame is written by the sender itself, beneath ASGI, whenever nothing is queued
ahead of it (``roost.http.socket.transport``).

An idle socket should cost little memory (the bar is 10,000 of them at no more than 30 KiB each,
most of which Hypercorn and Quart take; see ``roost.http.socket.asgi`` and ``.stream``): the
outbox (``roost.runtime.socket_outbox``) is a list rather than a trio memory channel, and the
task that writes it out runs only while frames are queued (in the nursery the handler
``attach``es), so an idle socket has no writer task.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
from collections import defaultdict
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Protocol

import trio

from roost.runtime.clock import as_utc
from roost.runtime.logging import get_logger
from roost.runtime.metrics import Metrics
from roost.runtime.socket_outbox import Outbox

log = get_logger()

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_TRY_AGAIN = 1013

_ids = itertools.count(1)


class Transport(Protocol):
    """How a socket's frames reach the wire (``roost.http.socket.transport``).

    ``write_nowait`` writes one frame at once from the sender's task when it can: ``b""`` when
    all of it went, the unwritten rest (bytes), or None when nothing was written (queue it).
    ``write`` writes queued frames in order; a ``bytes`` item, the rest of a frame
    ``write_nowait`` began, only ever comes first.
    """

    writes_directly: bool

    def write_nowait(self, text: str) -> bytes | None: ...

    async def write(self, items: list[str | bytes]) -> None: ...


class DeviceSocket:
    """One open, registered device socket; the WebSocket handler owns its lifetime.

    Frames are queued the way trio's channels take them, in two ways only:

    - ``send_nowait(frame)`` never waits. True when the frame was queued (or written at once);
      False when it was not: the socket is closing (the device catches up on reconnect), or its
      buffer was full, and then the socket has been closed 1013 "slow consumer" (a sender never
      waits on one peer, and memory never grows). Used for one frame to many sockets and for
      answers; when the socket is idle and the server allows it, the frame is written by the
      sender itself (no task, no queue).
    - ``await send(frame)`` waits for room, for a stream of frames from one task (replays, the
      live proposals): they are queued, so a burst goes out in one write. ``patience_s`` bounds
      the wait: a socket that has had no room for that long is closed 1013. A frame for a
      closing socket is dropped at once.

    ``frame`` is a dict, or a frame encoded already (one encoding for many sockets) with its
    ``kind`` (the frame type, for the sent-frames metric).
    """

    __slots__ = (
        "id", "device_id", "user_id", "account_id", "outbox", "scope", "close_code", "close_reason",
        "last_heard", "_registry", "_nursery", "_io", "_writing",
    )

    def __init__(self, registry: SocketRegistry, device_id: str, user_id: str, account_id: str, buffer: int):
        self.id = next(_ids)
        self.device_id = device_id
        self.user_id = user_id
        self.account_id = account_id
        self.outbox = Outbox(buffer)
        self.scope = trio.CancelScope()
        self.close_code: int | None = None
        self.close_reason = ""
        self.last_heard = trio.current_time()
        self._registry = registry
        self._nursery: trio.Nursery | None = None
        self._io: Transport | None = None
        self._writing = False

    def attach(self, nursery: trio.Nursery, io: Transport) -> None:
        """Hand the socket to its handler's nursery and transport.

        From now on ``close()`` cancels the nursery (at once if the socket was closed already),
        and whenever frames are queued and no writer is running, a writer task that passes
        everything queued to ``io.write`` is started in it; it ends when the outbox is empty.
        """
        self.scope = nursery.cancel_scope
        if self.close_code is not None:
            self.scope.cancel()
        self._nursery = nursery
        self._io = io
        self._kick()

    @property
    def writes_directly(self) -> bool:
        """Whether frames to this socket are written beneath the ASGI layer (see ``Transport``)."""
        return self._io is not None and self._io.writes_directly

    def detach(self) -> None:
        """The handler's nursery is done: start no more writer tasks, write nothing more directly."""
        self._nursery = None
        self._io = None

    def send_nowait(self, frame: dict[str, Any] | str, kind: str | None = None) -> bool:
        """Queue a frame without waiting; False if it was not (closing, or full: then closed 1013)."""
        if self.close_code is not None:
            return False
        if isinstance(frame, dict):
            kind = kind or str(frame.get("type", "frame"))
            frame = encode(frame)
        io = self._io
        try:
            if io is not None and not self._writing and not self.outbox:
                rest = io.write_nowait(frame)  # nothing ahead of it: straight to the wire if it can
                if rest is None:
                    self.outbox.send_nowait(frame)
                elif rest:  # the rest of that frame: first in the (empty) outbox, for the writer
                    self.outbox.send_nowait(rest)
            else:
                self.outbox.send_nowait(frame)
        except trio.WouldBlock:
            self._registry.metrics.ws_closed_slow.inc()
            log.warning("closing slow consumer", device_id=self.device_id, socket=self.id)
            self.close(CLOSE_TRY_AGAIN, "slow consumer")
            return False
        except trio.ClosedResourceError:
            return False
        self._registry.frames_out(kind or "frame").inc()
        self._kick()
        return True

    async def send(self, frame: dict[str, Any] | str, kind: str | None = None, *,
                   patience_s: float = math.inf) -> None:
        """Queue a frame, waiting for room; close the socket 1013 if none comes within ``patience_s``.

        Queued, never written directly: a stream of these goes out in one write per burst from
        the writer task. With room, it returns without a checkpoint (no scheduling round trip
        per frame).
        """
        if self.close_code is not None:
            return
        if isinstance(frame, dict):
            kind = kind or str(frame.get("type", "frame"))
            frame = encode(frame)
        try:
            try:
                self.outbox.send_nowait(frame)
            except trio.WouldBlock:
                with trio.move_on_after(patience_s) as waited:
                    await self.outbox.send(frame)
                if waited.cancelled_caught:
                    self.close(CLOSE_TRY_AGAIN, "slow consumer")
                    return
        except trio.ClosedResourceError:
            return
        self._registry.frames_out(kind or "frame").inc()
        self._kick()

    def _kick(self) -> None:
        if self._nursery is not None and not self._writing and self.outbox:
            self._writing = True
            try:
                self._nursery.start_soon(self._write_queued, self._io)
            except RuntimeError:  # the nursery has closed: nothing more will be written
                self.detach()
                self._writing = False

    async def _write_queued(self, io: Transport) -> None:
        try:
            while items := self.outbox.take_all():
                await io.write(items)
        finally:
            self._writing = False

    def close(self, code: int, reason: str) -> None:
        """Ask the handler to close with ``code``; the first reason given wins."""
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
        self.scope.cancel()


def _json_default(value: object) -> str:
    if isinstance(value, dt.datetime):
        return as_utc(value).isoformat().replace("+00:00", "Z")
    return str(value)


# One encoder for every frame: ``json.dumps`` with options builds a new one per call, which cost
# more than encoding a proposal frame (issue 21).
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=_json_default)


def encode(frame: dict[str, Any]) -> str:
    """A frame as compact JSON text; datetimes as ISO-8601 UTC with a ``Z``, like the HTTP API."""
    return _ENCODER.encode(frame)


class SocketRegistry:
    def __init__(self, buffer: int, metrics: Metrics):
        self.buffer = buffer
        self.metrics = metrics
        self._by_device: dict[str, set[DeviceSocket]] = defaultdict(set)
        self._by_user: dict[str, set[DeviceSocket]] = defaultdict(set)
        self._by_account: dict[str, set[DeviceSocket]] = defaultdict(set)
        self._handshakes: set[trio.CancelScope] = set()
        self._emptied = trio.lowlevel.ParkingLot()
        self._frames_out: dict[str, Any] = {}  # frame type -> its counter (``labels`` is slow per frame)

    def frames_out(self, kind: str) -> Any:
        """The sent-frames counter for one frame type."""
        counter = self._frames_out.get(kind)
        if counter is None:
            counter = self._frames_out[kind] = self.metrics.ws_frames_out.labels(kind)
        return counter

    @contextmanager
    def handshaking(self) -> Iterator[trio.CancelScope]:
        """A cancel scope around a socket's handshake, which ``close_all`` cancels.

        A socket that has not registered yet is in no index, so without this a drain would
        leave it open until its hello timeout (and then close it 1008, not 1001).
        """
        scope = trio.CancelScope()
        self._handshakes.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._handshakes.discard(scope)

    def open(self, device_id: str, user_id: str, account_id: str) -> DeviceSocket:
        sock = DeviceSocket(self, device_id, user_id, account_id, self.buffer)
        self._by_device[device_id].add(sock)
        self._by_user[user_id].add(sock)
        self._by_account[account_id].add(sock)
        self.metrics.connected_devices.set(self.count)
        return sock

    def remove(self, sock: DeviceSocket) -> None:
        for index, key in (
            (self._by_device, sock.device_id),
            (self._by_user, sock.user_id),
            (self._by_account, sock.account_id),
        ):
            group = index.get(key)
            if group is not None:
                group.discard(sock)
                if not group:
                    del index[key]
        sock.outbox.close()
        self.metrics.connected_devices.set(self.count)
        if not self._by_device:
            self._emptied.unpark_all()

    async def wait_empty(self) -> None:
        """Wait until no socket is registered (in a drain: every handler has ended)."""
        while self._by_device:
            await self._emptied.park()

    @property
    def count(self) -> int:
        return sum(len(g) for g in self._by_device.values())

    def pending_frames(self) -> int:
        """Frames queued to sockets and not yet written (a queue depth for status)."""
        return sum(len(s.outbox) for s in self.all())

    def all(self) -> list[DeviceSocket]:
        return [s for group in self._by_device.values() for s in group]

    def for_device(self, device_id: str) -> list[DeviceSocket]:
        return list(self._by_device.get(device_id, ()))

    def for_user(self, user_id: str) -> list[DeviceSocket]:
        return list(self._by_user.get(user_id, ()))

    def for_account(self, account_id: str) -> list[DeviceSocket]:
        return list(self._by_account.get(account_id, ()))

    def broadcast(self, sockets: Iterable[DeviceSocket], frame: dict[str, Any]) -> int:
        """Send one frame to many sockets, encoding it once; returns how many took it."""
        text = encode(frame)
        kind = str(frame.get("type", "frame"))
        return sum(1 for s in sockets if s.send_nowait(text, kind))

    def send_to_device(self, device_id: str, frame: dict[str, Any]) -> int:
        return self.broadcast(self.for_device(device_id), frame)

    def send_to_user(self, user_id: str, frame: dict[str, Any]) -> int:
        return self.broadcast(self.for_user(user_id), frame)

    def send_to_account(self, account_id: str, frame: dict[str, Any]) -> int:
        return self.broadcast(self.for_account(account_id), frame)

    def close_device(self, device_id: str, code: int, reason: str) -> int:
        socks = self.for_device(device_id)
        for s in socks:
            s.close(code, reason)
        return len(socks)

    def close_all(self, code: int, reason: str) -> None:
        """Close every registered socket, and cut short every handshake in progress."""
        for scope in self._handshakes:
            scope.cancel()
        for s in self.all():
            s.close(code, reason)
