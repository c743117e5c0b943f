"""A simulated week of ticks for users in several zones, checked against an independent computation.

The tick runs every 30 simulated minutes (a slot between ticks fires at the next tick; time is
injected, see test_digest_tick.py). The expected
schedule is computed by walking the week minute by minute in each user's local wall time: a
digest is due the first minute the local clock has reached ``digest_time`` on a local date (of
the right weekday) not yet served, and a date whose slot had already passed at subscription
does not count. That handles the spring gap (the clock jumps past the slot) and the autumn fold
(the slot's second occurrence falls on a date already served) without any of the slot code.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from roost.domain.digest.slots import WEEKDAYS
from roost.domain.digest.tick import run_tick
from roost.storage import digests
from roost.storage.database import Database
from tests.support.digest import make_account, make_services, make_user, notify

UTC = dt.UTC
TICK = dt.timedelta(minutes=30)

USERS = [  # email, zone, cadence, time, weekday, subscribed minutes after the start
    ("berlin-daily", "Europe/Berlin", "daily", "08:00", "monday", 0),
    ("berlin-gap", "Europe/Berlin", "daily", "02:30", "monday", 0),
    ("kathmandu-daily", "Asia/Kathmandu", "daily", "08:00", "monday", 0),
    ("kathmandu-weekly", "Asia/Kathmandu", "weekly", "09:00", "friday", 0),
    ("newyork-weekly", "America/New_York", "weekly", "07:30", "sunday", 0),
    ("utc-late", "UTC", "daily", "07:30", "monday", 7 * 60 + 31),  # just after its first slot
]


def expected_fires(zone: str, cadence: str, time: str, weekday: str, subscribed: dt.datetime,
                   end: dt.datetime) -> list[dt.datetime]:
    tz = ZoneInfo(zone)
    hh, mm = map(int, time.split(":"))
    served: set[dt.date] = set()
    local0 = subscribed.astimezone(tz)
    if (local0.hour, local0.minute) >= (hh, mm):
        served.add(local0.date())
    fires = []
    t = subscribed + dt.timedelta(minutes=1)
    while t < end:
        local = t.astimezone(tz)
        day = local.date()
        if day not in served and (local.hour, local.minute) >= (hh, mm) and (
                cadence == "daily" or WEEKDAYS[day.weekday()] == weekday):
            served.add(day)
            fires.append(t)
        t += dt.timedelta(minutes=1)
    return fires


def first_tick_at_or_after(start: dt.datetime, instant: dt.datetime) -> dt.datetime:
    steps = -(-(instant - start) // TICK)
    return start + steps * TICK


@pytest.mark.parametrize("start", [
    pytest.param(dt.datetime(2024, 3, 27, 0, 0, tzinfo=UTC), id="spring-forward"),
    pytest.param(dt.datetime(2024, 10, 23, 0, 0, tzinfo=UTC), id="fall-back"),
])
async def test_a_simulated_week_matches_an_independent_schedule(db: Database, start: dt.datetime) -> None:
    services = make_services(db)
    end = start + dt.timedelta(days=7)
    acc = await make_account(db, start)
    users = {}
    for email, zone, cadence, time, weekday, after in USERS:
        subscribed = start + dt.timedelta(minutes=after)
        users[email] = (await make_user(db, acc, now=subscribed, email=f"{email}@example.com", timezone=zone,
                                        digest_cadence=cadence, digest_time=time, digest_weekday=weekday),
                        subscribed)
    now = start
    while now < end:
        if now.minute == 0 and now.hour % 3 == 0:  # a notification per user every 3 hours: no digest is empty
            for user, subscribed in users.values():
                if subscribed <= now:
                    await notify(services.db, user["id"], now=now, topic=f"t{now.hour % 3}")
        await run_tick(services, now=now)
        now += TICK

    for email, zone, cadence, time, weekday, _ in USERS:
        user, subscribed = users[email]
        want = [first_tick_at_or_after(start, f)
                for f in expected_fires(zone, cadence, time, weekday, subscribed, end)]
        got = [r["period_end"] for r in await digests.list_for_user(db, user["id"])]
        assert got == want, email
        mails = await db.fetch("SELECT COUNT(*) AS n FROM outbox WHERE recipient_user_id = $1", user["id"])
        assert mails[0]["n"] == len(want)
        if cadence == "weekly":
            assert len(got) == 1, email
        elif email != "utc-late":
            assert len(got) == 7, email
    assert len(await digests.list_for_user(db, users["utc-late"][0]["id"])) == 6  # waited for the next day
