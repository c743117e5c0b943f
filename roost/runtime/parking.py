"""``LazyLot``: waiting for a change in the small queues every device socket holds, with a
``trio.lowlevel.ParkingLot`` made only once a task first waits.

A socket's outbox (``roost.runtime.socket_outbox``), its inbox on the Hypercorn path
(``roost.http.socket.transport``) and its stream's app queue (``roost.http.socket.stream``) each
wait for "something changed" (room, a frame). Most never wait, and an idle socket's memory counts
(the 10,000-socket bar, BENCHMARKS.md), so none of them makes its lot up front.
"""

from __future__ import annotations

import trio


class LazyLot:
    """A mixin: ``_park`` waits until the next ``_changed``. The class using it declares a ``_lot``
    slot and sets it to None; the mixin has no slots of its own, so it goes beside any base."""

    __slots__ = ()
    _lot: trio.lowlevel.ParkingLot | None

    def _changed(self) -> None:
        """Wake every task parked here."""
        if self._lot is not None:
            self._lot.unpark_all()

    async def _park(self) -> None:
        """Wait for the next ``_changed``."""
        if self._lot is None:
            self._lot = trio.lowlevel.ParkingLot()
        await self._lot.park()
