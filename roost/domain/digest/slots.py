"""When digests fire and when held mail is released: pure functions over ``zoneinfo``.

A *slot* is a local wall-clock time ("08:00") on every day (daily) or on one weekday (weekly),
in the user's IANA time zone, turned into a UTC instant:

* a local time that does not exist (the hour skipped when clocks go forward) fires at the
  first instant after it, i.e. the moment the clocks jump;
* a local time that happens twice (the hour repeated when clocks go back) fires once, at its
  first occurrence.

``next_slot(after, ...)`` is the first slot strictly after ``after``: a user who subscribes at
08:30 gets tomorrow's 08:00, one who subscribes at 03:00 gets today's; after a digest at
``now`` the next slot is the first after ``now``, so slots missed while the process was down
are served once, not once each.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from zoneinfo import ZoneInfo

UTC = dt.UTC
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def parse_hhmm(value: str) -> dt.time:
    hours, minutes = value.split(":")
    return dt.time(int(hours), int(minutes))


def resolve_local(day: dt.date, at: dt.time, tz: ZoneInfo) -> dt.datetime:
    """The UTC instant of local ``day`` + ``at`` in ``tz``: gaps move forward to the jump, folds take the first."""
    naive = dt.datetime.combine(day, at)
    first = naive.replace(tzinfo=tz, fold=0)
    instant = first.astimezone(UTC)
    if instant.astimezone(tz).replace(tzinfo=None) == naive:
        return instant  # exists (for an ambiguous time fold=0 is the earlier occurrence)
    # Nonexistent: fold=1 reads it with the offset after the jump (an earlier instant), fold=0 with
    # the one before (a later instant). The jump lies between; find it to the second.
    lo = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    hi = instant
    if lo > hi:
        lo, hi = hi, lo
    while (hi - lo) > dt.timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(tz).replace(tzinfo=None) >= naive:
            hi = mid
        else:
            lo = mid
    # lo < jump <= hi < lo + 1 s and zone transitions fall on whole seconds: flooring hi is the jump.
    return hi.replace(microsecond=0)


def next_slot(
    after: dt.datetime, *, cadence: str, digest_time: str, weekday: str, timezone: str
) -> dt.datetime | None:
    """The first digest slot strictly after ``after`` (UTC), or None when the cadence is off."""
    if cadence not in ("daily", "weekly"):
        return None
    tz = zone(timezone)
    at = parse_hhmm(digest_time)
    wanted = WEEKDAYS.index(weekday) if cadence == "weekly" else None
    start = after.astimezone(tz).date() - dt.timedelta(days=1)
    for offset in range(0, 16):
        day = start + dt.timedelta(days=offset)
        if wanted is not None and day.weekday() != wanted:
            continue
        instant = resolve_local(day, at, tz)
        if instant > after:
            return instant
    raise AssertionError("no slot within 16 days")  # unreachable: every week has each weekday


def quiet_until(now: dt.datetime, quiet_hours: dict[str, str] | None, timezone: str) -> dt.datetime | None:
    """When a quiet-hours window that contains ``now`` ends (UTC), or None if ``now`` is not quiet.

    The window is [start, end) in local time; start > end crosses midnight ("22:00"–"07:00");
    start == end is no window.
    """
    if not quiet_hours:
        return None
    start, end = parse_hhmm(quiet_hours["start"]), parse_hhmm(quiet_hours["end"])
    if start == end:
        return None
    tz = zone(timezone)
    local = now.astimezone(tz)
    tod = local.time().replace(tzinfo=None)
    today = local.date()
    if start < end:
        if not (start <= tod < end):
            return None
        release_day = today
    elif tod >= start:
        release_day = today + dt.timedelta(days=1)
    elif tod < end:
        release_day = today
    else:
        return None
    release = resolve_local(release_day, end, tz)
    return release if release > now else None
