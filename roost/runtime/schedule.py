"""When a job runs: every N seconds, or at the times of a cron expression.

``Schedule`` answers one question for the scheduler: given the wall time a run ended (or the
scheduler started), when is the next run? An interval counts from the end of the last run; a
cron schedule runs at the first matching minute strictly after it, so a run that overlaps
several matching times is followed by one run, not a burst of catch-ups.

Cron expressions are the standard five fields (minute hour day-of-month month day-of-week) or
one of ``@hourly @daily @weekly @monthly @yearly``, read by ``croniter``. They are interpreted
in UTC unless prefixed with ``CRON_TZ=<IANA zone>`` (cronie's notation), e.g.
``CRON_TZ=Europe/Paris 0 8 * * 1-5``: 08:00 Paris time on weekdays, across DST changes.
"""

from __future__ import annotations

import datetime as dt
import math
import zoneinfo
from dataclasses import dataclass, field

from croniter import CroniterError, croniter

from roost.errors import InvalidInput

UTC = dt.UTC
_MACROS = frozenset({"@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually"})


@dataclass(frozen=True)
class Schedule:
    """An interval in seconds or a cron expression (exactly one); build with ``every`` or ``cron``."""

    interval_s: float | None = None
    cron_expr: str | None = None  # as written, CRON_TZ prefix included
    zone: dt.tzinfo = field(default=UTC, compare=False)
    _fields: str = field(default="", compare=False, repr=False)

    @classmethod
    def every(cls, seconds: float) -> Schedule:
        """Raises: InvalidInput: not a positive, finite number of seconds."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not (
                math.isfinite(seconds) and seconds > 0):
            raise InvalidInput(f"interval {seconds!r} must be a positive number of seconds")
        return cls(interval_s=float(seconds))

    @classmethod
    def cron(cls, expression: str) -> Schedule:
        """Parse ``[CRON_TZ=<zone> ]<five fields | @macro>``.

        Raises:
            InvalidInput: naming what is wrong (field count, a value out of range, an unknown zone).
        """
        text = " ".join(str(expression).split())
        zone: dt.tzinfo = UTC
        fields = text
        if text.upper().startswith("CRON_TZ="):
            name, _, fields = text[len("CRON_TZ="):].partition(" ")
            try:
                zone = zoneinfo.ZoneInfo(name)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
                raise InvalidInput(f"cron expression {expression!r}: unknown time zone {name!r}") from exc
        parts = fields.split()
        if not (len(parts) == 5 or (len(parts) == 1 and parts[0].lower() in _MACROS)):
            raise InvalidInput(f"cron expression {expression!r}: want five fields (minute hour day-of-month month "
                               f"day-of-week) or one of {', '.join(sorted(_MACROS))}")
        try:
            croniter(fields, dt.datetime(2025, 1, 1, tzinfo=zone))
        except (CroniterError, ValueError, KeyError) as exc:
            raise InvalidInput(f"cron expression {expression!r}: {exc}") from exc
        return cls(cron_expr=text, zone=zone, _fields=fields)

    def next_after(self, when: dt.datetime) -> dt.datetime:
        """The next run after ``when`` (aware): ``when`` + interval, or the first cron time strictly after it."""
        if self.interval_s is not None:
            return when + dt.timedelta(seconds=self.interval_s)
        # Strictly after: a run of "0 8 * * *" ending at 08:00:30 next runs tomorrow, never at 08:00 again.
        local = when.astimezone(self.zone)
        return croniter(self._fields, local).get_next(dt.datetime).astimezone(UTC)
