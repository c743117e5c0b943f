"""The actor shape's primitives: the inbox, ``ctx.wait`` and ``ctx.every``."""

from __future__ import annotations

from functools import partial

import trio
from trio.testing import MockClock

from roost.runtime.actor import ActorContext, Inbox, Stopping
from roost.runtime.bus import Bus
from roost.runtime.schedule import Schedule


class FakeServices:
    """Just what ActorContext reads: the stop flag, the clock, health and leadership."""

    def __init__(self, leads: bool = True):
        self.stopping = Stopping()
        self.ticks = 0
        self.bus = Bus()
        outer = self

        class Health:
            def tick(self, name: str) -> None:
                outer.ticks += 1

        class Leadership:
            def leads(self, name: str) -> bool:
                return leads

        class Clock:
            def now(self):
                import datetime as dt
                return dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=trio.current_time())

        self.health, self.leadership, self.clock = Health(), Leadership(), Clock()


def test_a_full_inbox_drops_the_post_and_reports_the_overflow_once() -> None:
    inbox: Inbox[int] = Inbox(size=2)
    assert inbox.post(1) and inbox.post(2)
    assert not inbox.post(3)
    assert inbox.take() == ([1, 2], True)
    assert inbox.take() == ([], False)
    assert not inbox.ready


def test_take_with_a_limit_leaves_the_rest_queued() -> None:
    inbox: Inbox[int] = Inbox()
    for i in range(5):
        inbox.post(i)
    assert inbox.take(limit=2) == ([0, 1], False)
    assert inbox.take() == ([2, 3, 4], False)


async def test_wait_returns_true_on_a_post_and_false_once_draining(autojump_clock: MockClock) -> None:
    services = FakeServices()
    ctx = ActorContext("t", services)  # type: ignore[arg-type]
    inbox: Inbox[str] = Inbox()
    results = []

    async def waiter() -> None:
        results.append((await ctx.wait(inbox), trio.current_time()))
        inbox.take()
        results.append((await ctx.wait(inbox), trio.current_time()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.sleep(3)
        inbox.post("x")
        await trio.sleep(7)
        services.stopping.set()
    assert results == [(True, 3.0), (False, 10.0)]
    assert await ctx.wait(inbox) is False  # at once once draining


async def test_wait_returns_true_when_at_most_passes(autojump_clock: MockClock) -> None:
    ctx = ActorContext("t", FakeServices())  # type: ignore[arg-type]
    assert await ctx.wait(at_most=5) is True
    assert trio.current_time() == 5


async def test_a_bus_subscription_is_an_inbox_over_several_topics(autojump_clock: MockClock) -> None:
    services = FakeServices()
    ctx = ActorContext("t", services)  # type: ignore[arg-type]
    with ctx.inbox("a.one", "b.two") as inbox:
        services.bus.publish("a.one", "1")
        services.bus.publish("b.two", "2")
        services.bus.publish("c.three", "3")
        assert await ctx.wait(inbox) is True
        messages, overflowed = inbox.take()
    assert [(m.topic, m.ids) for m in messages] == [("a.one", ("1",)), ("b.two", ("2",))] and not overflowed
    services.bus.publish("a.one", "4")
    assert not inbox.ready  # unsubscribed on leaving the block


async def test_every_runs_on_its_interval_only_when_leading_and_stops_on_drain(autojump_clock: MockClock) -> None:
    for leads, expected in ((True, [0.0, 10.0, 20.0]), (False, [])):
        services = FakeServices(leads=leads)
        ctx = ActorContext("t", services)  # type: ignore[arg-type]
        runs: list[float] = []

        start = trio.current_time()

        async def work(runs: list[float] = runs, start: float = start) -> None:
            runs.append(trio.current_time() - start)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(ctx.every, 10.0, work, leader="digest"))
            await trio.sleep(25)
            services.stopping.set()
        assert runs == expected
        assert services.ticks == 3  # ticks whether or not it leads


async def test_every_follows_a_cron_schedule_on_the_wall_clock(autojump_clock: MockClock) -> None:
    services = FakeServices()
    ctx = ActorContext("t", services)  # type: ignore[arg-type]
    runs: list[float] = []

    async def work() -> None:
        runs.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ctx.every, Schedule.cron("0 * * * *"), work)
        await trio.sleep(2 * 3600 + 1)
        services.stopping.set()
    assert runs == [0.0, 3600.0, 7200.0]
