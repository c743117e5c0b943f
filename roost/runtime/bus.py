"""Wake-ups between producers and actors: "rows about these ids changed, go and read them".

Messages carry ids only; the receiver reads the rows, so a lost or coalesced message costs a
read, never data. Each subscriber has a bounded channel; when it overflows, the subscriber's
next receive reports ``overflowed`` and it catches up by reading everything pending.

Across processes (PostgreSQL): topics marked with ``share`` are also handed to a relay (the
``bus_relay`` actor), which sends them as NOTIFY payloads; the relay in every other process
``deliver``s them into its own bus. When a relay may have missed some (its listening
connection dropped), it calls ``overflow``: every subscriber of the shared topics catches up.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable

import trio

Relay = Callable[[str, tuple[str, ...]], None]


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

    def _overflow(self) -> None:
        """Make the next receive an ``overflowed`` message, waking a receiver that waits."""
        self._overflowed = True
        try:
            self._send.send_nowait(Message(self.topic, (), overflowed=True))
        except trio.WouldBlock:
            pass  # full: the flag alone reports it on the next receive

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
        message = await self._receive.receive()
        if message.overflowed:
            self._overflowed = False
        return message

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
        self._shared: set[str] = set()
        self._relay: Relay | None = None

    def subscribe(self, topic: str) -> Subscription:
        sub = Subscription(self, topic, self._size)
        self._subs[topic].add(sub)
        return sub

    def publish(self, topic: str, *ids: str) -> None:
        """Deliver to every subscriber of ``topic`` in this process without waiting, and hand a
        shared topic's message to the relay (other processes)."""
        self.deliver(topic, ids)
        if self._relay is not None and topic in self._shared:
            self._relay(topic, tuple(ids))

    def deliver(self, topic: str, ids: Iterable[str]) -> None:
        """Deliver to this process's subscribers only (the relay's way in, and process-local wake-ups)."""
        message = Message(topic, tuple(ids))
        for sub in list(self._subs.get(topic, ())):
            sub._offer(message)

    def overflow(self, *topics: str) -> None:
        """Tell every subscriber of ``topics`` to catch up by reading everything pending."""
        for topic in topics:
            for sub in list(self._subs.get(topic, ())):
                sub._overflow()

    def share(self, *topics: str) -> None:
        """Mark ``topics`` as cluster-wide: their messages also go to the other processes."""
        self._shared.update(topics)

    @property
    def shared(self) -> frozenset[str]:
        return frozenset(self._shared)

    def attach(self, relay: Relay | None) -> None:
        """Set (or with None, remove) the callable that takes shared messages to other processes.

        It is called synchronously from ``publish`` and must not block.
        """
        self._relay = relay
