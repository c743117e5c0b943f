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

from roost.runtime.actor import Inbox

Relay = Callable[[str, tuple[str, ...]], None]


@dataclass(frozen=True)
class Message:
    topic: str
    ids: tuple[str, ...]
    overflowed: bool = False


class Subscription(Inbox[Message]):
    """An inbox of ``Message`` subscribed to one or more topics; ``close`` (or leaving the
    ``with`` block) unsubscribes it."""

    def __init__(self, bus: Bus, topics: tuple[str, ...], size: int):
        super().__init__(size)
        self._bus = bus
        self.topics = topics

    @property
    def topic(self) -> str:
        return self.topics[0]

    async def receive(self) -> Message:
        """The next message; one with ``overflowed=True`` means "some were dropped: read everything".

        For readers that take one message at a time (``take`` hands over everything queued).
        """
        await self.wait_ready()
        if self._overflowed:
            self._overflowed = False
            self._items.clear()  # what is queued is covered by the catch-up read
            return Message(self.topic, (), overflowed=True)
        return self._items.popleft()

    def close(self) -> None:
        for topic in self.topics:
            self._bus._subs[topic].discard(self)

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

    def subscribe(self, *topics: str, size: int | None = None) -> Subscription:
        """A new inbox that receives every message published on any of ``topics``."""
        sub = Subscription(self, topics, size or self._size)
        for topic in topics:
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
            sub.post(message)

    def overflow(self, *topics: str) -> None:
        """Tell every subscriber of ``topics`` to catch up by reading everything pending."""
        for topic in topics:
            for sub in list(self._subs.get(topic, ())):
                sub.overflow()

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
