"""Services whose clock stands still: a test below HTTP reads one known time, and moves it by hand."""

from __future__ import annotations

import datetime as dt

from roost.runtime.config import Settings
from roost.runtime.services import Services
from roost.storage.database import Database


class FixedClock:
    """A clock that reads ``at`` until a test sets ``clock.at`` (no trio time, no wall time)."""

    def __init__(self, at: dt.datetime) -> None:
        self.at = at

    def now(self) -> dt.datetime:
        return self.at


def services_at(db: Database, at: dt.datetime) -> Services:
    """Default settings over ``db``, with a ``FixedClock`` at ``at`` (``services.clock.at`` moves it)."""
    return Services.build(Settings(), db, FixedClock(at))  # type: ignore[arg-type]
