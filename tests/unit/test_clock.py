"""The one clock: trio time for sleeps, and a wall clock derived from it."""

from __future__ import annotations

import datetime as dt
import itertools
import time
from collections.abc import Iterator

import pytest
import structlog.testing
import trio
from trio.testing import MockClock

from roost.runtime.actor import Actor, ActorContext
from roost.runtime.clock import UTC, Clock, as_utc, utcnow
from roost.runtime.config import Settings
from roost.runtime.health import ActorState
from roost.runtime.services import Services
from roost.runtime.supervisor import Supervisor

MONDAY = dt.datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
HOUR = 3600.0
WEEK = 7 * 24 * HOUR


@pytest.fixture(autouse=True)
def _quiet_logs() -> Iterator[None]:
    with structlog.testing.capture_logs():
        yield


async def test_now_moves_exactly_with_trio_time(autojump_clock: MockClock):
    clock = Clock(wall_start=MONDAY)
    assert clock.now() == MONDAY
    await trio.sleep(90.5)
    assert clock.now() == MONDAY + dt.timedelta(seconds=90.5)
    await clock.sleep(HOUR)
    assert clock.now() == MONDAY + dt.timedelta(seconds=90.5 + HOUR)
    assert clock.monotonic() == trio.current_time()


async def test_now_is_anchored_at_first_use_not_at_construction(autojump_clock: MockClock):
    clock = Clock(wall_start=MONDAY)
    await trio.sleep(500)
    assert clock.now() == MONDAY  # the anchor is the first reading
    await trio.sleep(10)
    assert clock.now() == MONDAY + dt.timedelta(seconds=10)


async def test_now_without_a_start_is_aware_utc_near_the_real_time(autojump_clock: MockClock):
    clock = Clock()
    before = dt.datetime.now(UTC)
    now = clock.now()
    assert now.tzinfo is not None and now.utcoffset() == dt.timedelta(0)
    assert before - dt.timedelta(seconds=1) <= now <= dt.datetime.now(UTC) + dt.timedelta(seconds=1)
    await trio.sleep(WEEK)  # simulated: the wall clock follows trio time, not the real one
    assert clock.now() - now == dt.timedelta(seconds=WEEK)


async def test_naive_and_non_utc_starts_are_read_as_utc(autojump_clock: MockClock):
    naive = Clock(wall_start=dt.datetime(2026, 3, 2, 8, 0))
    assert naive.now() == MONDAY and naive.now().utcoffset() == dt.timedelta(0)

    paris = dt.timezone(dt.timedelta(hours=1))
    local = Clock(wall_start=dt.datetime(2026, 3, 2, 9, 0, tzinfo=paris))
    assert local.now() == MONDAY
    assert local.now().tzinfo is UTC  # status and the API print it with a Z


async def test_sleep_until_wall_wakes_at_that_wall_time(autojump_clock: MockClock):
    clock = Clock(wall_start=MONDAY)
    await clock.sleep_until_wall(MONDAY + dt.timedelta(hours=24))
    assert clock.now() == MONDAY + dt.timedelta(hours=24)
    # A naive target is UTC, as everywhere in roost.
    await clock.sleep_until_wall(dt.datetime(2026, 3, 3, 9, 30))
    assert clock.now() == dt.datetime(2026, 3, 3, 9, 30, tzinfo=UTC)


async def test_sleep_until_a_past_wall_time_or_a_negative_sleep_returns_at_once(
    autojump_clock: MockClock,
):
    clock = Clock(wall_start=MONDAY)
    t0 = trio.current_time()
    await clock.sleep_until_wall(MONDAY - dt.timedelta(days=1))
    await clock.sleep(-5)
    assert trio.current_time() == t0


async def test_an_hourly_actor_runs_a_simulated_week_in_well_under_a_second(
    autojump_clock: MockClock,
):
    """The point of the injectable clock: cadence logic is tested in simulated time."""
    services = Services.build(Settings(), db=None, clock=Clock(wall_start=MONDAY))  # type: ignore[arg-type]
    ran_at: list[dt.datetime] = []

    class Hourly(Actor):
        name = "hourly"

        async def run(self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED):
            task_status.started()
            while await ctx.pause(HOUR):
                ran_at.append(ctx.services.clock.now())
                ctx.tick()

    real_start = time.perf_counter()
    sup = Supervisor(services, [Hourly()])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await services.clock.sleep_until_wall(MONDAY + dt.timedelta(days=7, minutes=30))
        sup.request_stop()
    real_elapsed = time.perf_counter() - real_start

    assert real_elapsed < 0.5
    assert len(ran_at) == 7 * 24
    assert ran_at[0] == MONDAY + dt.timedelta(hours=1)
    assert ran_at[-1] == MONDAY + dt.timedelta(days=7)
    assert all(b - a == dt.timedelta(hours=1) for a, b in itertools.pairwise(ran_at))
    entry = services.health.get("hourly")
    assert entry.ticks == 7 * 24
    assert entry.last_tick_at == MONDAY + dt.timedelta(days=7)
    assert entry.state is ActorState.STOPPED
    assert entry.as_dict()["last_tick_at"] == "2026-03-09T08:00:00Z"


def test_as_utc_converts_aware_and_labels_naive_values():
    assert as_utc(dt.datetime(2026, 1, 1, 12, 0)) == dt.datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    eastern = dt.timezone(dt.timedelta(hours=-5))
    converted = as_utc(dt.datetime(2026, 1, 1, 7, 0, tzinfo=eastern))
    assert converted == dt.datetime(2026, 1, 1, 12, 0, tzinfo=UTC) and converted.tzinfo is UTC


def test_utcnow_outside_trio_is_aware_utc():
    now = utcnow()
    assert now.tzinfo is UTC
    assert abs((dt.datetime.now(UTC) - now).total_seconds()) < 1
