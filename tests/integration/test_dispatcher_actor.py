"""The dispatcher actor under MockClock (SQLite; MockClock and PostgreSQL do not mix).

A fake device holds a registered socket, reads send_requests from it and answers through the
same frame handler the WebSocket uses. The clock (tests/conftest.py ``autojump_clock``) does not
leap while a database call is in a worker thread; each jump lands on the dispatcher's own
computed wake-up. So the tests never sleep on the clock themselves (a deadline of their own
could be jumped to while the dispatcher is in the middle of a database call): they wait for
what the device has received.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import structlog
import trio
from trio.testing import MockClock

from roost.actors.dispatcher import Dispatcher
from roost.actors.socket_events import SocketEvents
from roost.domain.dispatch.sending import wake
from roost.runtime.actor import ActorContext
from roost.runtime.clock import Clock
from roost.runtime.config import Settings
from roost.runtime.services import Services
from roost.runtime.sockets import DeviceSocket
from roost.storage import dispatch, dispatch_lists, send_queue
from roost.storage.database import open_database
from tests.integration.test_dispatch_claims import T0, make_batch, setup_account


class CountingDispatcher(Dispatcher):
    def __init__(self) -> None:
        super().__init__()
        self.passes: list[dt.datetime] = []
        self.finished = 0
        self._finished_event = trio.Event()

    async def dispatch_account(self, ctx: ActorContext, account_id: str) -> dt.datetime | None:
        self.passes.append(ctx.services.clock.now())
        try:
            return await super().dispatch_account(ctx, account_id)
        finally:
            self.finished += 1
            self._finished_event.set()
            self._finished_event = trio.Event()

    async def wait_finished(self, n: int) -> None:
        while self.finished < n:
            await self._finished_event.wait()


@asynccontextmanager
async def runtime(url: str, clock: Clock, **settings: Any) -> AsyncIterator[tuple[Services, CountingDispatcher]]:
    async with open_database(url) as db:
        services = Services.build(Settings(database_url=url, **settings), db, clock)
        dispatcher = CountingDispatcher()
        services.health.add(dispatcher.name)
        services.health.add(SocketEvents.name)
        async with trio.open_nursery() as nursery:
            await nursery.start(dispatcher.run, ActorContext("dispatcher", services))
            # batch_done reaches the creator's sockets through it (in whichever process holds them)
            await nursery.start(SocketEvents().run, ActorContext(SocketEvents.name, services))
            yield services, dispatcher
            nursery.cancel_scope.cancel()


class Received(list):
    """(time, frame) pairs the fake device got; ``wait_for(n)`` until it has ``n`` send_requests."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = trio.Event()

    def requests(self) -> list[tuple]:
        return [(at, f) for at, f in self if f["type"] == "send_request"]

    def add(self, entry: tuple) -> None:
        self.append(entry)
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, n: int, frame_type: str = "send_request") -> None:
        while sum(1 for _, f in self if f["type"] == frame_type) < n:
            await self.changed.wait()


async def device(services: Services, dispatcher: Dispatcher, sock: DeviceSocket, received: Received,
                 *, answer: bool = True) -> None:
    async for text in sock.outbox:
        frame = json.loads(text)
        at = services.clock.now()  # before answering: the answer's database call may let the clock jump
        if answer and frame["type"] == "send_request":
            await dispatcher._on_send_result(sock, {"type": "send_result", "id": frame["id"], "status": "sent"})
        received.add((at, frame))


async def test_1000_items_at_max_10_per_minute_go_out_exactly_10_each_minute_without_polling(
    autojump_clock: MockClock, sqlite_url: str
) -> None:
    clock = Clock(wall_start=T0)
    received = Received()
    async with runtime(sqlite_url, clock) as (services, dispatcher):
        env = await setup_account(services.db)
        await dispatch.put_settings(services.db, env["account"], {"max_per_minute": 10}, now=T0)
        sock = services.sockets.open(env["devices"][0], env["user"], env["account"])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(device, services, dispatcher, sock, received)
            batch = await make_batch(services.db, env, 1000)
            wake(services, env["account"])
            await received.wait_for(1, "batch_done")
            nursery.cancel_scope.cancel()
        assert (await dispatch.get_batch(services.db, batch["id"]))["status"] == "done"
        ledger = await send_queue.ledger(services.db, env["account"])

    per_minute = Counter(int((at - T0).total_seconds() // 60) for at in ledger)
    assert len(ledger) == 1000 and set(per_minute.values()) == {10} and sorted(per_minute) == list(range(100))
    ids = [f["id"] for _, f in received if f["type"] == "send_request"]
    assert len(ids) == 1000 == len(set(ids))
    # Event-driven: every pass happens on a minute boundary (a computed wake-up or a result's wake-up).
    offsets = {round((at - T0).total_seconds(), 3) % 60 for at in dispatcher.passes}
    assert offsets == {0.0}


async def test_restart_in_the_middle_keeps_the_windows(autojump_clock: MockClock, sqlite_url: str) -> None:
    clock = Clock(wall_start=T0)
    received = Received()
    async with runtime(sqlite_url, clock) as (services, dispatcher):
        env = await setup_account(services.db)
        await dispatch.put_settings(services.db, env["account"], {"max_per_minute": 10, "min_gap_seconds": 2},
                                    now=T0)
        await make_batch(services.db, env, 100)
        sock = services.sockets.open(env["devices"][0], env["user"], env["account"])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(device, services, dispatcher, sock, received)
            wake(services, env["account"])
            await received.wait_for(15)  # mid-way through the second minute
            nursery.cancel_scope.cancel()
    async with runtime(sqlite_url, clock) as (services, dispatcher):  # a new runtime on the same file
        sock = services.sockets.open(env["devices"][0], env["user"], env["account"])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(device, services, dispatcher, sock, received)
            wake(services, env["account"])
            await received.wait_for(50)
            nursery.cancel_scope.cancel()
        ledger = await send_queue.ledger(services.db, env["account"])

    per_minute = Counter(int((at - T0).total_seconds() // 60) for at in ledger)
    assert set(per_minute.values()) == {10} and sorted(per_minute) == [0, 1, 2, 3, 4]
    assert all(b - a >= dt.timedelta(seconds=2) for a, b in zip(ledger, ledger[1:], strict=False))


async def test_an_unanswered_item_is_offered_again_with_the_same_id_when_its_lease_runs_out(
    autojump_clock: MockClock, sqlite_url: str
) -> None:
    clock = Clock(wall_start=T0)
    received = Received()
    async with runtime(sqlite_url, clock, dispatch_lease_s=300.0) as (services, dispatcher):
        env = await setup_account(services.db)
        await make_batch(services.db, env, 1)
        sock = services.sockets.open(env["devices"][0], env["user"], env["account"])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: device(services, dispatcher, sock, received, answer=False))
            wake(services, env["account"])
            await received.wait_for(3)
            nursery.cancel_scope.cancel()
        count = await send_queue.dispatch_count(services.db, env["account"])

    offers = [(round((at - T0).total_seconds()), f["id"]) for at, f in received]
    assert [t for t, _ in offers] == [0, 300, 600]
    assert len({i for _, i in offers}) == 1
    assert count == 1  # a re-offer is not a new dispatch


async def test_a_settings_change_wakes_the_dispatcher_at_once(autojump_clock: MockClock, sqlite_url: str) -> None:
    clock = Clock(wall_start=T0)
    received = Received()
    async with runtime(sqlite_url, clock) as (services, dispatcher):
        env = await setup_account(services.db)
        await dispatch.put_settings(services.db, env["account"], {"paused": True}, now=T0)
        await make_batch(services.db, env, 3)
        sock = services.sockets.open(env["devices"][0], env["user"], env["account"])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(device, services, dispatcher, sock, received)
            wake(services, env["account"])
            await dispatcher.wait_finished(1)  # the paused look is over: the dispatcher now sleeps without a deadline
            await trio.sleep(3600)
            assert received == []
            await dispatch.put_settings(services.db, env["account"], {"paused": False}, now=clock.now())
            wake(services, env["account"])
            await received.wait_for(3)
            nursery.cancel_scope.cancel()

    assert len(received.requests()) == 3
    assert all(round((at - T0).total_seconds()) == 3600 for at, _ in received)
    # No polling: looks happen at the start and once unpaused, none in the paused hour between.
    assert {round((at - T0).total_seconds()) for at in dispatcher.passes} == {0, 3600}


async def test_a_connected_device_that_never_answers_gets_the_item_max_offers_times_then_it_fails_no_result(
    autojump_clock: MockClock, sqlite_url: str
) -> None:
    clock = Clock(wall_start=T0)
    received = Received()
    async with runtime(sqlite_url, clock, dispatch_lease_s=300.0) as (services, dispatcher):
        assert services.settings.dispatch_max_offers == 5  # the default
        env = await setup_account(services.db)
        batch = await make_batch(services.db, env, 1)
        sock = services.sockets.open(env["devices"][0], env["user"], env["account"])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: device(services, dispatcher, sock, received, answer=False))
            wake(services, env["account"])
            await received.wait_for(1, "batch_done")  # the creator's socket hears the batch ended
            nursery.cancel_scope.cancel()
        items = await dispatch_lists.list_items(services.db, batch["id"], limit=10, cursor=None)
        final = await dispatch.get_batch(services.db, batch["id"])

    offers = [(round((at - T0).total_seconds()), f["id"]) for at, f in received.requests()]
    assert [t for t, _ in offers] == [0, 300, 600, 900, 1200]
    assert len({i for _, i in offers}) == 1
    [done] = [(round((at - T0).total_seconds()), f) for at, f in received if f["type"] == "batch_done"]
    assert done[0] == 1500 and done[1]["batch"]["id"] == batch["id"]
    assert (items["items"][0]["status"], items["items"][0]["reason"]) == ("failed", "no_result")
    assert final["status"] == "done"


async def test_the_dispatcher_logs_why_an_account_waits_once_a_minute_per_reason_and_a_new_reason_at_once(
    autojump_clock: MockClock, sqlite_url: str
) -> None:
    clock = Clock(wall_start=T0)
    received = Received()
    with structlog.testing.capture_logs() as logs:
        async with runtime(sqlite_url, clock) as (services, dispatcher):
            env = await setup_account(services.db)
            await dispatch.put_settings(services.db, env["account"], {"min_gap_seconds": 1}, now=T0)
            await make_batch(services.db, env, 100)
            sock = services.sockets.open(env["devices"][0], env["user"], env["account"])
            async with trio.open_nursery() as nursery:
                nursery.start_soon(device, services, dispatcher, sock, received)
                wake(services, env["account"])
                await received.wait_for(90)  # ~89 s of one-a-second dispatches, each followed by a wait
                await dispatch.put_settings(services.db, env["account"], {"paused": True}, now=clock.now())
                wake(services, env["account"])
                while not any(e.get("reason") == "paused" for e in logs):
                    await dispatcher.wait_finished(dispatcher.finished + 1)
                nursery.cancel_scope.cancel()

    waits = [e for e in logs if e["event"] == "dispatch waiting"]
    assert [(w["account_id"], w["reason"]) for w in waits] == [
        (env["account"], "min_gap"), (env["account"], "min_gap"), (env["account"], "paused")]
    first, second = (dt.datetime.fromisoformat(w["until"]) for w in waits[:2])
    assert first - T0 < dt.timedelta(seconds=1.1)  # the gap after the first dispatch
    assert dt.timedelta(seconds=60) <= second - first < dt.timedelta(seconds=62)
    assert waits[2]["until"] is None and waits[2]["log_level"] == "info"
