"""Socket registry: which device sockets are open in this process, and a way to send to them.

Each open socket has one bounded outgoing channel. Senders never wait: a frame that does not
fit closes that socket (code 1013, "slow consumer") instead of letting memory grow, and the
device catches up on reconnect from what the database still holds. Frames are encoded once per
send, however many sockets they go to.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections import defaultdict
from typing import Any, Iterable

import trio

from roost.runtime.clock import as_utc
from roost.runtime.logging import get_logger
from roost.runtime.metrics import Metrics

log = get_logger()

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_TRY_AGAIN = 1013

_ids = itertools.count(1)


class DeviceSocket:
    """One open, registered device socket; the WebSocket handler owns its lifetime."""

    __slots__ = (
        "id", "device_id", "user_id", "account_id", "send_channel", "receive_channel",
        "scope", "close_code", "close_reason", "last_heard", "_registry",
    )

    def __init__(self, registry: SocketRegistry, device_id: str, user_id: str, account_id: str, buffer: int):
        self.id = next(_ids)
        self.device_id = device_id
        self.user_id = user_id
        self.account_id = account_id
        self.send_channel, self.receive_channel = trio.open_memory_channel[str](buffer)
        self.scope = trio.CancelScope()
        self.close_code: int | None = None
        self.close_reason = ""
        self.last_heard = trio.current_time()
        self._registry = registry

    def offer(self, text: str, kind: str = "frame") -> bool:
        """Queue an encoded frame without waiting; close the socket if its buffer is full."""
        if self.close_code is not None:
            return False
        try:
            self.send_channel.send_nowait(text)
        except trio.WouldBlock:
            self._registry.metrics.ws_closed_slow.inc()
            log.warning("closing slow consumer", device_id=self.device_id, socket=self.id)
            self.close(CLOSE_TRY_AGAIN, "slow consumer")
            return False
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        self._registry.metrics.ws_frames_out.labels(kind).inc()
        return True

    async def put(self, frame: dict[str, Any]) -> None:
        """Queue a frame, waiting for room: for replays, which must not overflow the buffer."""
        if self.close_code is not None:
            return
        try:
            await self.send_channel.send(encode(frame))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return
        self._registry.metrics.ws_frames_out.labels(str(frame.get("type", "frame"))).inc()

    def send(self, frame: dict[str, Any]) -> bool:
        return self.offer(encode(frame), str(frame.get("type", "frame")))

    def close(self, code: int, reason: str) -> None:
        """Ask the handler to close with ``code``; the first reason given wins."""
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
        self.scope.cancel()


def encode(frame: dict[str, Any]) -> str:
    """A frame as compact JSON text; datetimes as ISO-8601 UTC with a ``Z``, like the HTTP API."""
    return json.dumps(frame, separators=(",", ":"), default=_json_default)


def _json_default(value: object) -> str:
    if isinstance(value, dt.datetime):
        return as_utc(value).isoformat().replace("+00:00", "Z")
    return str(value)


class SocketRegistry:
    def __init__(self, buffer: int, metrics: Metrics):
        self.buffer = buffer
        self.metrics = metrics
        self._by_device: dict[str, set[DeviceSocket]] = defaultdict(set)
        self._by_user: dict[str, set[DeviceSocket]] = defaultdict(set)
        self._by_account: dict[str, set[DeviceSocket]] = defaultdict(set)

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
        sock.send_channel.close()
        self.metrics.connected_devices.set(self.count)

    @property
    def count(self) -> int:
        return sum(len(g) for g in self._by_device.values())

    def pending_frames(self) -> int:
        """Frames queued to sockets and not yet written (a queue depth for status)."""
        return sum(s.receive_channel.statistics().current_buffer_used for s in self.all())

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
        return sum(1 for s in sockets if s.offer(text, kind))

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
        for s in self.all():
            s.close(code, reason)
