"""A device socket's outbox: the bounded queue of encoded frames its writer task empties.

``roost.runtime.sockets.DeviceSocket`` fills it (``send_nowait`` never waits; ``send`` waits for
room) and its writer ``take_all``s it. A list rather than a trio memory channel: about 150 bytes
for an idle socket instead of 1.8 KiB (the 10,000-socket bar, BENCHMARKS.md).
"""

from __future__ import annotations

import trio

from roost.runtime.parking import LazyLot


class Outbox(LazyLot):
    """A bounded FIFO of encoded frames: the part of a trio memory channel a socket needs.

    ``send_nowait`` raises ``trio.WouldBlock`` when full and ``trio.ClosedResourceError`` once
    closed; ``send``/``receive`` wait for room/a frame (``receive`` raises ``trio.EndOfChannel``
    once closed and drained), and ``async for`` reads until closed; the writer ``take_all``s.
    Waiting uses one ParkingLot made on first use (``LazyLot``; only replays wait).
    """

    __slots__ = ("_items", "_max", "_closed", "_lot")

    def __init__(self, max_size: int):
        self._items: list[str | bytes] = []  # bytes: the rest of a frame written in part
        self._max = max_size
        self._closed = False
        self._lot: trio.lowlevel.ParkingLot | None = None

    def __len__(self) -> int:
        return len(self._items)

    def send_nowait(self, text: str | bytes) -> None:
        if self._closed:
            raise trio.ClosedResourceError("outbox closed")
        if len(self._items) >= self._max:
            raise trio.WouldBlock
        self._items.append(text)
        self._changed()

    async def send(self, text: str) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                self.send_nowait(text)
                break
            except trio.WouldBlock:
                await self._park()
        await trio.lowlevel.cancel_shielded_checkpoint()

    def take_all(self) -> list[str | bytes]:
        """Every queued frame, oldest first, leaving the outbox empty (open or closed)."""
        items, self._items = self._items, []
        if items:
            self._changed()
        return items

    async def receive(self) -> str | bytes:
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._items:
            if self._closed:
                raise trio.EndOfChannel
            await self._park()
        text = self._items.pop(0)
        self._changed()
        await trio.lowlevel.cancel_shielded_checkpoint()
        return text

    def close(self) -> None:
        self._closed = True
        self._changed()

    def __aiter__(self) -> Outbox:
        return self

    async def __anext__(self) -> str | bytes:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
