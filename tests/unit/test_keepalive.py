"""Keepalive: every socket pinged once per interval, the pings spread over it, silent peers dropped."""

from __future__ import annotations

import collections

import pytest
import structlog.testing
import trio
from trio.testing import MockClock

from roost.actors.keepalive import SLICE_S, Keepalive
from roost.runtime.actor import ActorContext
from roost.runtime.config import Settings
from roost.runtime.services import Services
from roost.runtime.sockets import CLOSE_GOING_AWAY


async def test_pings_are_spread_over_the_interval_and_each_socket_gets_one_per_interval(
    autojump_clock: MockClock,
):
    services = Services.build(Settings(ws_ping_interval_s=10.0), db=None)  # type: ignore[arg-type]
    services.health.add("keepalive")
    socks = [services.sockets.open(f"dev-{i}", "user", "acct") for i in range(1000)]
    pinged_at: dict[int, list[float]] = collections.defaultdict(list)

    async def answer() -> None:  # every peer answers at once: reads its ping and is heard from
        while True:
            await trio.sleep(SLICE_S / 10)
            for s in socks:
                for _ in s.outbox.take_all():
                    pinged_at[s.id].append(trio.current_time())
                    s.last_heard = trio.current_time()

    with structlog.testing.capture_logs():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(answer)
            t0 = trio.current_time()
            await nursery.start(Keepalive().run, ActorContext("keepalive", services))
            await trio.sleep(39.95)  # intervals begin at 10, 20 and 30 s; the last slice is at 39.9 s
            nursery.cancel_scope.cancel()

    assert all(len(pinged_at[s.id]) == 3 for s in socks)  # once in each of three intervals
    gaps = [b - a for times in pinged_at.values() for a, b in zip(times, times[1:], strict=False)]
    assert gaps and all(gap == pytest.approx(10.0, abs=0.2) for gap in gaps)
    assert min(times[0] for times in pinged_at.values()) - t0 >= 10.0  # the first pings come an interval in
    per_slice = collections.Counter(round((times[0] - t0) / SLICE_S) for times in pinged_at.values())
    assert len(per_slice) == 100 and max(per_slice.values()) == 10  # 100 slices of 10, not 1,000 at once
    assert all(s.close_code is None for s in socks)


async def test_a_silent_socket_is_dropped_1001_after_two_and_a_half_intervals(autojump_clock: MockClock):
    services = Services.build(Settings(ws_ping_interval_s=1.0), db=None)  # type: ignore[arg-type]
    services.health.add("keepalive")
    silent = services.sockets.open("dev", "user", "acct")
    with structlog.testing.capture_logs():
        async with trio.open_nursery() as nursery:
            await nursery.start(Keepalive().run, ActorContext("keepalive", services))
            t0 = trio.current_time()
            with silent.scope:  # close() cancels it, as it does a socket handler's nursery
                await trio.sleep_forever()
            nursery.cancel_scope.cancel()
    assert silent.close_code == CLOSE_GOING_AWAY
    assert 2.5 <= trio.current_time() - t0 <= 3.5
