# ruff: noqa: ASYNC110  (tests poll state other tasks and processes own)
"""Scout inactivity pause: a device that stays connected is active, in whichever process holds
its socket; frames and device HTTP calls count; ``last_seen_at`` is written at most once a minute.

The ten-day runs are under MockClock on SQLite (MockClock and PostgreSQL do not mix, STACK-NOTES
pitfall 4): two ``Services`` on one database file stand for two processes, and the test moves the
clock itself. The same rules on both backends use a clock the test sets.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from typing import Any

import pytest
import trio
from trio.testing import MockClock

from roost.actors.heartbeat import Heartbeat
from roost.domain.scouting import run_scout
from roost.runtime.activity import DeviceActivity
from roost.runtime.actor import ActorContext
from roost.runtime.clock import Clock
from roost.runtime.config import Settings
from roost.runtime.services import Services
from roost.storage import scouts as repo
from roost.storage import tenancy
from roost.storage.database import Database, open_database
from tests.support.fixed_clock import FixedClock
from tests.support.scouting import make_scouting_user
from tests.support.server import admin_client, make_device, running_server

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
DAY = 86400.0


async def _world(db: Database) -> dict[str, Any]:
    made = await make_scouting_user(db, now=T0, email="a@example.com", display_name="A", poll_interval_s=DAY,
                                    device_inactivity_pause_days=7)
    return {key: row["id"] for key, row in made.items()}


async def _ten_days(clock_: MockClock, url: str, *, socket_in: str | None
                    ) -> tuple[list[tuple[float, bool]], dict[str, Any]]:
    """Ten simulated days, an hour at a time: process B's heartbeat beats, and process A runs the
    scout whenever it is due; the device's socket is open the whole time in ``socket_in`` ("a",
    "b" or nowhere). Returns (day, paused) of every run, and the scout row at the end.

    The test moves the clock itself and nothing else sleeps on it, so no jump can land while a
    beat or a run waits on a database thread (with the actors left to run freely, the clock raced
    ahead by days during one slow read on a loaded machine). Hourly beats instead of every 5 s
    change nothing here but the number of writes.
    """
    # The test moves the clock itself: no autojump, whose idle check spins the event loop (holding
    # the GIL) while every database call waits on its worker thread, which made this test 5x slower.
    clock_.autojump_threshold = math.inf
    clock = Clock(wall_start=T0)
    runs: list[tuple[float, bool]] = []
    rng = random.Random(3)
    async with open_database(url) as db:
        world = await _world(db)
        a = Services.build(Settings(database_url=url, heartbeat_s=3600), db, clock)
        b = Services.build(Settings(database_url=url, heartbeat_s=3600), db, clock)
        if socket_in is not None:
            holder = {"a": a, "b": b}[socket_in]
            holder.sockets.open(world["device"], world["user"], world["account"])
        b.health.add("heartbeat")
        beat, ctx_b = Heartbeat(), ActorContext("heartbeat", b)
        for _hour in range(10 * 24 + 1):
            await beat.beat(ctx_b)
            if (await repo.get_scout(db, world["scout"]))["next_run_at"] <= clock.now():
                day = (clock.now() - T0).total_seconds() / DAY
                runs.append((day, (await run_scout(a, world["scout"], rng=rng)).paused))
            clock_.jump(3600)
        row = await repo.get_scout(db, world["scout"])
    return runs, row


async def test_a_socket_open_ten_days_in_another_process_keeps_a_seven_day_scout_running(
    autojump_clock: MockClock, sqlite_url: str
) -> None:
    runs, scout = await _ten_days(autojump_clock, sqlite_url, socket_in="b")
    assert 9 <= len(runs) <= 12 and max(day for day, _ in runs) >= 9  # about daily (±10 % jitter)
    assert not any(paused for _, paused in runs)
    assert scout["paused"] is False


async def test_a_socket_open_in_the_scouts_own_process_keeps_it_running(
    autojump_clock: MockClock, sqlite_url: str
) -> None:
    runs, scout = await _ten_days(autojump_clock, sqlite_url, socket_in="a")
    assert 9 <= len(runs) <= 12 and not any(paused for _, paused in runs)


async def test_without_a_socket_the_scout_pauses_after_seven_days(autojump_clock: MockClock, sqlite_url: str) -> None:
    runs, scout = await _ten_days(autojump_clock, sqlite_url, socket_in=None)
    assert 9 <= len(runs) <= 12
    assert [paused for _, paused in runs] == [day > 7 for day, _ in runs]
    assert scout["paused"] is True


async def test_last_seen_at_is_written_at_most_once_a_minute_however_busy_the_device_is(
    autojump_clock: MockClock, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    autojump_clock.autojump_threshold = math.inf  # the test moves the clock itself (see _ten_days)
    clock = Clock(wall_start=T0)
    writes: list[dt.datetime] = []
    async with open_database(sqlite_url) as db:
        world = await _world(db)
        s = Services.build(Settings(database_url=sqlite_url, heartbeat_s=5), db, clock)
        s.health.add("heartbeat")
        original = tenancy.touch_devices

        async def counting(db: Database, device_ids: list[str], now: dt.datetime) -> None:
            writes.append(now)
            await original(db, device_ids, now)

        monkeypatch.setattr(tenancy, "touch_devices", counting)
        s.sockets.open(world["device"], world["user"], world["account"])
        heartbeat, ctx = Heartbeat(), ActorContext("heartbeat", s)
        # Ten minutes of a device calling every second, its socket open, a beat every 5 s. The
        # test moves the clock itself (nothing else sleeps), so no jump lands inside a beat.
        for second in range(600):
            s.activity.seen(world["device"])
            if second % 5 == 0:
                await heartbeat.beat(ctx)
            autojump_clock.jump(1)
        seen = await db.fetchval("SELECT last_seen_at FROM devices WHERE id = $1", world["device"])
    assert writes == [T0 + dt.timedelta(minutes=m) for m in range(10)]  # 120 beats, 600 calls: 10 writes
    assert seen == T0 + dt.timedelta(minutes=9)


# -- both backends, with a clock the test sets ----------------------------------------------------


async def test_a_socket_held_by_another_process_counts_as_activity_on_both_backends(db: Database) -> None:
    world = await _world(db)
    clock = FixedClock(T0)
    a = Services.build(Settings(), db, clock)  # type: ignore[arg-type]
    b = Services.build(Settings(), db, clock)  # type: ignore[arg-type]
    b.sockets.open(world["device"], world["user"], world["account"])
    b.health.add("heartbeat")
    clock.at = T0 + dt.timedelta(days=8)
    # Before B's beat, A sees only the device's creation, 8 days ago: paused.
    assert (await run_scout(a, world["scout"])).paused is True
    # B's heartbeat writes last_seen_at for the socket it holds; then A runs it.
    await Heartbeat().beat(ActorContext("heartbeat", b))
    assert await db.fetchval("SELECT last_seen_at FROM devices WHERE id = $1", world["device"]) == clock.at
    report = await run_scout(a, world["scout"])
    assert report.paused is False and (await repo.get_scout(db, world["scout"]))["paused"] is False


async def test_flush_writes_a_device_once_per_minute_and_keeps_activity_it_could_not_write_yet(db: Database) -> None:
    world = await _world(db)
    activity = DeviceActivity()
    device = world["device"]

    async def seen_at() -> dt.datetime | None:
        return await db.fetchval("SELECT last_seen_at FROM devices WHERE id = $1", device)

    activity.seen(device)
    assert await activity.flush(db, [], now=0.0, wall=T0) == 1 and await seen_at() == T0
    activity.seen(device)  # 30 s later: not due, kept
    assert await activity.flush(db, [], now=30.0, wall=T0 + dt.timedelta(seconds=30)) == 0
    assert await seen_at() == T0
    # 60 s after the write, with no new call: the activity at 30 s is still written (now's time).
    assert await activity.flush(db, [], now=60.0, wall=T0 + dt.timedelta(seconds=60)) == 1
    assert await seen_at() == T0 + dt.timedelta(seconds=60)
    # Nothing active: nothing written. A socket held at one flush counts once more after it closed.
    assert await activity.flush(db, [], now=200.0, wall=T0 + dt.timedelta(seconds=200)) == 0
    assert await activity.flush(db, [device], now=300.0, wall=T0 + dt.timedelta(seconds=300)) == 1
    assert await activity.flush(db, [], now=400.0, wall=T0 + dt.timedelta(seconds=400)) == 1
    assert await activity.flush(db, [], now=500.0, wall=T0 + dt.timedelta(seconds=500)) == 0
    assert await seen_at() == T0 + dt.timedelta(seconds=400)


async def test_a_device_http_call_counts_as_activity(database_url: str) -> None:
    async with running_server(database_url, heartbeat_s=0.1) as server, admin_client(server.url) as client:
        env = await make_device(client)
        db = server.services.db
        assert await db.fetchval("SELECT last_seen_at FROM devices WHERE id = $1", env["device"]["id"]) is None
        async with admin_client(server.url, token=env["token"]) as device:
            assert (await device.get("/api/device/me")).status_code == 200
        with trio.fail_after(10):
            while await db.fetchval("SELECT last_seen_at FROM devices WHERE id = $1", env["device"]["id"]) is None:
                await trio.sleep(0.05)
