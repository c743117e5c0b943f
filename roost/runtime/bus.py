"""Wake-ups between producers and actors: "rows about these ids changed, go and read them".

Messages carry ids only; the receiver reads the rows, so a lost or coalesced message costs a
read, never data. Each subscriber has a bounded channel; when it overflows, the subscriber's
next receive reports ``overflowed`` and it catches up by reading everything pending, the same
way a re-established PostgreSQL listener does. (Across processes the PostgreSQL backend
forwards NOTIFY payloads into this bus.)
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import trio


@dataclass(frozen=True)
class Message:
    topic: str
    ids: tuple[str, ...]
    overflowed: bool = False


class Subscription:
    def __init__(self, bus: Bus, topic: str, size: int):
        self._bus = bus
        self.topic = topic
        self._send, self._receive = trio.open_memory_channel[Message](size)
        self._overflowed = False

    def _offer(self, message: Message) -> None:
        try:
            self._send.send_nowait(message)
        except trio.WouldBlock:
            self._overflowed = True

    async def receive(self) -> Message:
        """The next message; one with ``overflowed=True`` means "some were dropped: read everything"."""
        if self._overflowed:
            self._overflowed = False
            while True:  # what is queued is covered by the catch-up read
                try:
                    self._receive.receive_nowait()
                except trio.WouldBlock:
                    break
            return Message(self.topic, (), overflowed=True)
        return await self._receive.receive()

    def close(self) -> None:
        self._bus._subs[self.topic].discard(self)
        self._send.close()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Bus:
    def __init__(self, size: int = 1024):
        self._size = size
        self._subs: dict[str, set[Subscription]] = defaultdict(set)

    def subscribe(self, topic: str) -> Subscription:
        sub = Subscription(self, topic, self._size)
        self._subs[topic].add(sub)
        return sub

    def publish(self, topic: str, *ids: str) -> None:
        """Deliver to every subscriber of ``topic`` in this process without waiting."""
        message = Message(topic, tuple(ids))
        for sub in list(self._subs.get(topic, ())):
            sub._offer(message)
