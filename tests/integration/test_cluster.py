# ruff: noqa: ASYNC110  (tests poll state other tasks and processes own)
"""Scale-out pieces on one PostgreSQL database, two "processes" (Services) in one test process:
the bus relay (LISTEN/NOTIFY), its reconnect and catch-up, and the leadership of singletons."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

import pytest
import trio

from roost.actors.busrelay import BusRelay
from roost.actors.heartbeat import Heartbeat
from roost.runtime.actor import Actor, ActorContext
from roost.runtime.bus import Message, Subscription
from roost.runtime.config import Settings
from roost.runtime.services import Services
from roost.storage import processes
from roost.storage.database import open_database

pytestmark = pytest.mark.postgres

TOPIC = "proposal.queued"
BEAT_S = 0.2


@asynccontextmanager
async def process(url: str, **settings: object) -> AsyncIterator[Services]:
    """One "process": its own pool (and trio-asyncio loop) and services on the shared database."""
    async with open_database(url, pool_size=3) as db:
        services = Services.build(Settings(database_url=url, **settings), db)  # type: ignore[arg-type]
        services.bus.share(TOPIC)
        yield services


@asynccontextmanager
async def running(actor: Actor, services: Services) -> AsyncIterator[Actor]:
    """Run ``actor`` until the block ends (then cancel it, as a dead process would stop)."""
    services.health.add(actor.name)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run, ActorContext(actor.name, services))
        yield actor
        nursery.cancel_scope.cancel()


async def next_message(sub: Subscription, *, skip_overflow: bool, timeout_s: float = 5) -> Message:
    with trio.fail_after(timeout_s):
        while True:
            message = await sub.receive()
            if not (skip_overflow and message.overflowed):
                return message


async def nothing_within(sub: Subscription, seconds: float) -> bool:
    with trio.move_on_after(seconds):
        await sub.receive()
        return False
    return True


# -- the bus relay --------------------------------------------------------------------------------


async def test_a_publish_in_one_process_reaches_a_subscriber_in_another_once(pg_url: str) -> None:
    async with process(pg_url) as a, process(pg_url) as b:
        async with running(BusRelay(a), a), running(BusRelay(b), b):
            with a.bus.subscribe(TOPIC) as sub_a, b.bus.subscribe(TOPIC) as sub_b, \
                    b.bus.subscribe("scout.items") as local_b:
                a.bus.publish(TOPIC, "usr_1", "usr_2")
                a.bus.publish("scout.items", "sct_1")  # not shared: stays in a
                assert (await next_message(sub_b, skip_overflow=True)).ids == ("usr_1", "usr_2")
                assert (await next_message(sub_a, skip_overflow=True)).ids == ("usr_1", "usr_2")
                # a's own notification comes back from the server and is skipped: no second copy
                assert await nothing_within(sub_a, 0.5)
                assert await nothing_within(local_b, 0.1)


async def test_many_ids_published_at_once_all_arrive(pg_url: str) -> None:
    ids = [f"usr_{i:026d}" for i in range(3000)]  # far more than one 8000-byte payload holds
    async with process(pg_url) as a, process(pg_url) as b:
        async with running(BusRelay(a), a), running(BusRelay(b), b):
            with b.bus.subscribe(TOPIC) as sub_b:
                for i in range(0, len(ids), 100):
                    a.bus.publish(TOPIC, *ids[i:i + 100])
                got: list[str] = []
                while len(got) < len(ids):
                    got.extend((await next_message(sub_b, skip_overflow=False)).ids)
                assert sorted(got) == ids


async def test_a_dropped_listener_reconnects_and_tells_every_subscriber_to_catch_up(pg_url: str) -> None:
    async with process(pg_url) as a, process(pg_url) as b:
        async with running(BusRelay(a), a), running(BusRelay(b), b) as relay_b:
            assert isinstance(relay_b, BusRelay)
            with b.bus.subscribe(TOPIC) as sub_b:
                killed = await a.db.fetchval("SELECT pg_terminate_backend($1)", relay_b.listener_pid)
                assert killed is True
                message = await next_message(sub_b, skip_overflow=False)
                assert message.overflowed  # read everything pending: what was sent meanwhile is not lost
                assert relay_b.reconnects == 1 and relay_b.connected
                a.bus.publish(TOPIC, "usr_after")
                assert (await next_message(sub_b, skip_overflow=True)).ids == ("usr_after",)


# -- leadership ----------------------------------------------------------------------------------


async def leaders(services: list[Services], name: str) -> list[int]:
    return [i for i, s in enumerate(services) if s.leadership.leads(name)]


async def test_of_two_contenders_exactly_one_leads_each_singleton(pg_url: str) -> None:
    async with process(pg_url, heartbeat_s=BEAT_S) as a, process(pg_url, heartbeat_s=BEAT_S) as b:
        for s in (a, b):
            s.leadership.want("digest", "pruner")
        async with running(Heartbeat(), a), running(Heartbeat(), b):
            for _ in range(8):  # b retries every beat and never gets them while a holds them
                assert await leaders([a, b], "digest") == [0] and await leaders([a, b], "pruner") == [0]
                await trio.sleep(BEAT_S / 2)
            rows = {r["id"]: r for r in await processes.list_all(a.db)}
            assert rows[a.process_id]["leads"] == ["digest", "pruner"] and rows[b.process_id]["leads"] == []


async def start(nursery: trio.Nursery, actor: Actor, services: Services) -> trio.CancelScope:
    """Start ``actor``; cancelling the returned scope stops it (like a process going away)."""
    services.health.add(actor.name)
    scope = trio.CancelScope()

    async def run(task_status: trio.TaskStatus[None]) -> None:
        with scope:
            await actor.run(ActorContext(actor.name, services), task_status=task_status)

    await nursery.start(run)
    return scope


async def test_the_leader_stopping_hands_leadership_to_the_other_within_a_beat(pg_url: str) -> None:
    async with process(pg_url, heartbeat_s=BEAT_S) as a, process(pg_url, heartbeat_s=BEAT_S) as b:
        for s in (a, b):
            s.leadership.want("digest", "pruner")
        async with trio.open_nursery() as nursery:
            stop_a = await start(nursery, Heartbeat(), a)
            stop_b = await start(nursery, Heartbeat(), b)
            await trio.sleep(2 * BEAT_S)
            assert await leaders([a, b], "digest") == [0] and b.leadership.led() == []
            stop_a.cancel()
            with trio.fail_after(5):  # a bound for "lost", not a timing: that is one beat by design
                # both singletons, not just the first: b takes them one lock at a time
                while b.leadership.led() != ["digest", "pruner"]:
                    await trio.sleep(0.02)
            assert b.leadership.led() == ["digest", "pruner"] and a.leadership.led() == []
            stop_b.cancel()


async def test_a_lost_leadership_connection_drops_leadership_and_exactly_one_retakes_it(pg_url: str) -> None:
    async with process(pg_url, heartbeat_s=BEAT_S) as a, process(pg_url, heartbeat_s=BEAT_S) as b:
        for s in (a, b):
            s.leadership.want("digest")
        async with running(Heartbeat(), a) as beat_a, running(Heartbeat(), b):
            assert isinstance(beat_a, Heartbeat) and a.leadership.leads("digest")
            await b.db.execute("SELECT pg_terminate_backend($1)", beat_a.leadership_pid)
            with trio.fail_after(2):
                while a.leadership.leads("digest"):
                    await trio.sleep(0.01)
            with trio.fail_after(5):
                while not await leaders([a, b], "digest"):
                    await trio.sleep(0.01)
            counts = []
            for _ in range(40):  # every 20 ms over four beats: never two at once
                counts.append(len(await leaders([a, b], "digest")))
                await trio.sleep(0.02)
            assert set(counts) == {1}


async def test_what_a_process_publishes_while_its_listener_is_down_still_reaches_the_others(pg_url: str) -> None:
    async with process(pg_url) as a, process(pg_url) as b:
        async with running(BusRelay(a), a) as relay_a, running(BusRelay(b), b):
            assert isinstance(relay_a, BusRelay)
            with b.bus.subscribe(TOPIC) as sub_b:
                await b.db.fetchval("SELECT pg_terminate_backend($1)", relay_a.listener_pid)
                a.bus.publish(TOPIC, "usr_while_down")
                message = await next_message(sub_b, skip_overflow=False)
                # sent after a's reconnect; or, when the send raced the dying connection, a catch-up
                assert message.ids == ("usr_while_down",) or message.overflowed
