# ruff: noqa: ASYNC110  (tests poll state other tasks and processes own)
"""The process table: heartbeats, pruning, the status listing, on both backends."""

from __future__ import annotations

import datetime as dt
import os
import time

import trio
from trio.testing import MockClock

from roost.actors.heartbeat import Heartbeat
from roost.runtime.actor import ActorContext
from roost.runtime.clock import Clock
from roost.runtime.config import Settings
from roost.runtime.services import Services
from roost.storage import processes
from roost.storage.database import open_database
from tests.support.server import admin_client, running_server

T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


async def add_process(db, process_id: str, last_heartbeat: dt.datetime, leads: list[str] | None = None) -> None:
    await processes.beat(db, process_id=process_id, host="elsewhere", pid=4242, port=9999,
                         started_at=last_heartbeat - dt.timedelta(hours=1), now=last_heartbeat, sockets=7,
                         leads=leads or [])


async def test_status_lists_every_process_and_shows_a_silent_one_dead(database_url: str) -> None:
    async with running_server(database_url, heartbeat_s=1.0) as server, admin_client(server.url) as client:
        s = server.services
        now = s.clock.now()
        await add_process(s.db, "ghost:1:dead", now - dt.timedelta(seconds=5), ["digest"])  # > 3 beats ago
        await add_process(s.db, "peer:2:live", now - dt.timedelta(seconds=1))
        body = (await client.get("/api/admin/status")).json()
    assert body["process_id"] == s.process_id == body["process"]["id"]
    host, pid, _ = s.process_id.split(":")
    by_id = {p["id"]: p for p in body["processes"]}
    me = by_id[s.process_id]
    assert (me["host"], me["pid"], me["port"], me["alive"]) == (host, os.getpid(), server.http.port, True)
    assert {"digest", "pruner"} <= set(me["leads"])  # alone on the database: it leads every singleton
    assert me["sockets"] == 0 and me["started_at"].endswith("Z") and me["last_heartbeat"].endswith("Z")
    assert by_id["ghost:1:dead"]["alive"] is False and by_id["ghost:1:dead"]["leads"] == ["digest"]
    assert by_id["peer:2:live"]["alive"] is True and by_id["peer:2:live"]["sockets"] == 7


async def test_a_clean_stop_deletes_the_process_row(database_url: str) -> None:
    async with running_server(database_url) as server:
        s = server.services
        assert [r["id"] for r in await processes.list_all(s.db)] == [s.process_id]
    async with open_database(database_url) as db:
        assert await processes.list_all(db) == []


async def test_heartbeats_refresh_the_row_and_prune_processes_silent_for_ten_beats(
    autojump_clock: MockClock, sqlite_url: str
) -> None:
    beat = 5.0
    async with open_database(sqlite_url) as db:
        services = Services.build(Settings(database_url=sqlite_url, heartbeat_s=beat), db, Clock(wall_start=T0))
        services.leadership.want("digest")
        await add_process(db, "old:1:x", T0 - dt.timedelta(seconds=11 * beat))
        await add_process(db, "recent:2:y", T0 - dt.timedelta(seconds=5 * beat))
        services.health.add("heartbeat")
        async with trio.open_nursery() as nursery:
            await nursery.start(Heartbeat().run, ActorContext("heartbeat", services))
            rows = {r["id"]: r for r in await processes.list_all(db)}
            assert set(rows) == {services.process_id, "recent:2:y"}  # the first beat pruned the old one
            assert rows[services.process_id]["leads"] == ["digest"]
            # Wait for beats, not for time: the clock may jump while a beat is in a worker thread.
            # Bounded in real time, not in steps: the mock clock jumps while a beat waits on its database
            # thread, so on a loaded machine 100,000 steps once passed with only 6 beats done.
            patience = time.monotonic() + 60
            while services.health.get("heartbeat").ticks < 7 and time.monotonic() < patience:
                await trio.sleep(beat / 10)
            assert services.health.get("heartbeat").ticks >= 7
            rows = {r["id"]: r for r in await processes.list_all(db)}
            assert set(rows) == {services.process_id}  # now silent for 11 beats
            assert rows[services.process_id]["last_heartbeat"] >= T0 + dt.timedelta(seconds=5 * beat)
            assert rows[services.process_id]["started_at"] == T0
            services.stopping.set()
        assert await processes.list_all(db) == []
