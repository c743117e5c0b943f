"""Device activity: which devices were active, written to ``devices.last_seen_at`` at most once a
minute per device, never once per frame.

A device is active while it holds a socket, in any process, and whenever it sends a frame or
calls a device HTTP endpoint. The scout's inactivity pause (``device_inactivity_pause_days``)
reads ``last_seen_at``, so a device that stays connected for ten days keeps its user's scouts
running whichever process holds its socket. Writing per frame would be a database write per
frame; instead:

* ``seen(device_id)`` records activity noticed outside a socket (a device HTTP call): a set
  insert, no await;
* every heartbeat, ``flush`` adds the devices of the sockets this process holds now and of those
  it held at the previous beat (a frame on a socket that closed since still counts), and writes
  ``last_seen_at = now`` in one statement for every such device not written by this process in
  the last ``WRITE_EVERY_S``. A device not due yet stays marked until it is.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import TYPE_CHECKING, Iterable

from roost.errors import StorageError

if TYPE_CHECKING:
    from roost.storage.database import Database

WRITE_EVERY_S = 60.0
WRITE_CHUNK = 1000  # devices per UPDATE


class DeviceActivity:
    """This process's record of active devices, and when it last wrote each one's ``last_seen_at``."""

    def __init__(self, write_every_s: float = WRITE_EVERY_S):
        self.write_every_s = write_every_s
        self._marked: set[str] = set()
        self._held: set[str] = set()  # devices with a socket here at the last flush
        self._written: dict[str, float] = {}  # device -> trio time of our last write

    def seen(self, device_id: str) -> None:
        """Note that the device was active just now (written at the next flush that it is due)."""
        self._marked.add(device_id)

    def due(self, live: Iterable[str], now: float) -> list[str]:
        """The active devices (marked, held at the last flush, or ``live`` now) whose write is due;
        the others stay marked. ``now`` is trio time."""
        live = set(live)
        active = self._marked | self._held | live
        self._held = live
        due = sorted(d for d in active if now - self._written.get(d, -math.inf) >= self.write_every_s)
        self._marked = active - set(due) - live  # live ones come back with their socket anyway
        return due

    def written(self, device_ids: list[str], now: float) -> None:
        for device_id in device_ids:
            self._written[device_id] = now
        # Forget writes old enough not to hold anything back, so the dict stays as small as the active set.
        self._written = {d: t for d, t in self._written.items() if now - t < self.write_every_s}

    def failed(self, device_ids: list[str]) -> None:
        """The write failed: keep the devices marked for the next flush."""
        self._marked.update(device_ids)

    async def flush(self, db: Database, live: Iterable[str], *, now: float, wall: dt.datetime) -> int:
        """Write ``last_seen_at = wall`` for every active device due; returns how many were written.

        Raises:
            StorageError: the write failed (the devices stay marked and are tried at the next flush).
        """
        from roost.storage import tenancy

        due = self.due(live, now)
        for start in range(0, len(due), WRITE_CHUNK):
            chunk = due[start:start + WRITE_CHUNK]
            try:
                await tenancy.touch_devices(db, chunk, wall)
            except StorageError:
                self.failed(due[start:])
                raise
            self.written(chunk, now)
        return len(due)
