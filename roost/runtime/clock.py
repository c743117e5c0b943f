"""One clock for the whole process.

Sleeps use trio's clock; ``now()`` is the wall time derived from it (the wall time when the
clock was anchored plus trio time elapsed since), so a test that runs under
``trio.testing.MockClock(autojump_threshold=0)`` sees a simulated week pass in milliseconds and
every actor agrees on what time it is.
"""

from __future__ import annotations

import datetime as dt
import time

import trio

UTC = dt.UTC


class Clock:
    """Trio time for sleeping, and a wall clock that moves with it."""

    def __init__(self, wall_start: dt.datetime | None = None):
        """``wall_start`` pins what ``now()`` reads when the clock is first used (a naive value is UTC)."""
        self._wall_start = as_utc(wall_start) if wall_start is not None else None
        self._trio_start: float | None = None

    def _anchor(self) -> tuple[dt.datetime, float]:
        if self._trio_start is None:
            self._trio_start = trio.current_time()
            if self._wall_start is None:
                self._wall_start = dt.datetime.fromtimestamp(time.time(), UTC)
        assert self._wall_start is not None
        return self._wall_start, self._trio_start

    def now(self) -> dt.datetime:
        """The current wall time, timezone-aware UTC."""
        wall, start = self._anchor()
        return wall + dt.timedelta(seconds=trio.current_time() - start)

    def monotonic(self) -> float:
        return trio.current_time()

    async def sleep(self, seconds: float) -> None:
        self._anchor()
        await trio.sleep(max(0.0, seconds))

    async def sleep_until_wall(self, when: dt.datetime) -> None:
        """Sleep until the wall clock reads ``when`` (at once if it already has); naive means UTC."""
        await self.sleep((as_utc(when) - self.now()).total_seconds())


def as_utc(value: dt.datetime) -> dt.datetime:
    """``value`` as an aware UTC datetime; a naive one is taken to be UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> dt.datetime:
    """Wall time outside trio (CLI commands, migrations)."""
    return dt.datetime.now(UTC)
