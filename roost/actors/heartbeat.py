"""Heartbeat: this process's row in the process table, and the leadership of singletons.

Every ``ROOST_HEARTBEAT_S`` (5 s) one beat:

1. on PostgreSQL, tries to take the leadership of every wanted singleton it does not hold
   (``pg_try_advisory_lock`` on a dedicated connection, kept for the life of the process), or,
   when it holds them all, checks that connection is alive. When the connection is lost every
   leadership is dropped at once (the server released the locks) and the next beat reconnects;
2. upserts the row (host, pid, port, started, sockets connected here, singletons led);
3. deletes the rows of processes silent for ten heartbeats;
4. writes ``devices.last_seen_at`` for the devices active here (a socket held, a frame, a device
   HTTP call), at most once a minute each (``roost.runtime.activity``): so a device connected to
   any process counts as active for the scouts' inactivity pause;
5. on PostgreSQL, writes which devices hold a socket here (``process_devices``: what changed since
   the last beat, and all of it every ``DEVICES_RESYNC_BEATS``), so the console of any process can
   say where a device is connected.

A database error is logged and the next beat tries again; any other error is a bug and goes to
the supervisor.

A clean stop deletes the row and closes the connection, so leadership moves at the others' next
beat; a killed process's session ends with it, and its row is shown dead after three heartbeats
and pruned after ten.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from functools import partial
from typing import TYPE_CHECKING, Callable

import trio

from roost.errors import StorageError
from roost.runtime.actor import Actor, ActorContext
from roost.storage import cluster, processes

if TYPE_CHECKING:
    from roost.storage.dedicated import DedicatedConnection

PRUNE_AFTER_BEATS = 10
DEVICES_RESYNC_BEATS = 12  # every so many beats the whole set of device sockets is written again
STOP_CLEANUP_S = 3.0  # closing the leadership connection and removing the process row, at most


class Heartbeat(Actor):
    name = "heartbeat"

    def __init__(self, port: Callable[[], int | None] = lambda: None):
        self._port = port
        self._conn: DedicatedConnection | None = None  # holds the leadership locks (PostgreSQL)
        self._nursery: trio.Nursery | None = None
        self.started_at: dt.datetime | None = None
        self._devices_written: dict[str, int] = {}  # device -> sockets, as process_devices holds them
        self._beats_since_resync = DEVICES_RESYNC_BEATS  # the first beat writes everything

    @property
    def leadership_pid(self) -> int | None:
        """The server pid of the connection holding the leadership locks (PostgreSQL, once connected)."""
        return None if self._conn is None else self._conn.pid

    async def beat(self, ctx: ActorContext) -> None:
        """One heartbeat (steps 1 to 4 of the module docstring); database errors are logged, not raised."""
        s = ctx.services
        if s.leadership.clustered:
            await self._lead(ctx)
        now = s.clock.now()
        try:
            await processes.beat(s.db, process_id=s.process_id, host=socket.gethostname(), pid=os.getpid(),
                                 port=self._port(), started_at=self.started_at or now, now=now,
                                 sockets=s.sockets.count, leads=s.leadership.led())
            await processes.prune(s.db, silent_since=now - dt.timedelta(
                seconds=PRUNE_AFTER_BEATS * s.settings.heartbeat_s))
        except StorageError as exc:  # a missed beat is shown as such; the next one tries again
            ctx.log.error("heartbeat not written", error=exc.message)
        try:
            await s.activity.flush(s.db, (sock.device_id for sock in s.sockets.all()),
                                   now=trio.current_time(), wall=s.clock.now())
        except StorageError as exc:  # the devices stay marked: the next beat writes them
            ctx.log.error("device activity not written", error=exc.message)
        if s.db.shared:
            try:
                await self.write_devices(ctx)
            except StorageError as exc:  # kept as it was: the next beat writes the difference again
                ctx.log.error("device sockets not written", error=exc.message)

    async def write_devices(self, ctx: ActorContext) -> None:
        """Step 5: write what changed in this process's device sockets since the last beat.

        Raises:
            StorageError: the write failed (nothing is taken as written).
        """
        s = ctx.services
        now: dict[str, int] = {}
        for sock in s.sockets.all():
            if sock.close_code is None:
                now[sock.device_id] = now.get(sock.device_id, 0) + 1
        self._beats_since_resync += 1
        if self._beats_since_resync >= DEVICES_RESYNC_BEATS:
            await processes.write_devices(s.db, s.process_id, changed=now, gone=(), everything=True)
            self._beats_since_resync = 0
        else:
            old = self._devices_written
            changed = {d: n for d, n in now.items() if old.get(d) != n}
            gone = [d for d in old if d not in now]
            if not changed and not gone:
                return
            await processes.write_devices(s.db, s.process_id, changed=changed, gone=gone)
        self._devices_written = now

    async def _lead(self, ctx: ActorContext) -> None:
        from roost.storage.dedicated import connect_dedicated

        leadership = ctx.services.leadership
        try:
            if self._conn is None or self._conn.lost.is_set():
                await self._drop(ctx)
                self._conn = await connect_dedicated(ctx.services.db)
                if self._nursery is not None:
                    self._nursery.start_soon(self._watch, ctx, self._conn)
            missing = sorted(leadership.wanted - set(leadership.led()))
            for name in missing:
                if await cluster.try_lead(self._conn, name):
                    leadership.took(name)
                    ctx.log.info("leading", singleton=name)
            if not missing:
                await cluster.ping(self._conn)  # still connected, so still holding them
        except StorageError as exc:  # connect or query failed (asyncpg and socket errors arrive as StorageError)
            ctx.log.error("leadership connection failed; leading nothing until it is back", error=exc.message)
            await self._drop(ctx)

    async def _drop(self, ctx: ActorContext) -> None:
        from roost.storage.dedicated import close_dedicated

        leadership = ctx.services.leadership
        if leadership.led() and leadership.clustered:
            ctx.log.warning("leadership lost", singletons=leadership.led())
        leadership.lose_all()
        conn, self._conn = self._conn, None
        if conn is not None:
            await close_dedicated(conn)

    async def _watch(self, ctx: ActorContext, conn: DedicatedConnection) -> None:
        """Drop leadership the moment the server ends the connection, not at the next beat."""
        await conn.lost.wait()
        if self._conn is conn:
            ctx.services.leadership.lose_all()
            ctx.log.warning("leadership connection lost; the next beat reconnects")

    async def run(self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        s = ctx.services
        self.started_at = self.started_at or s.clock.now()
        if s.db.shared:
            s.leadership.engage()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await self.beat(ctx)  # the row exists (and leadership is tried) before we report ready
                ctx.tick()
                task_status.started()
                await ctx.every(lambda: s.settings.heartbeat_s, partial(self.beat, ctx),
                                first_delay_s=s.settings.heartbeat_s)
                nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            # Bounded as a whole: a database that stopped answering cannot hold the drain here.
            with trio.CancelScope(shield=True, deadline=trio.current_time() + STOP_CLEANUP_S):
                await self._drop(ctx)  # leads nothing until a beat takes it again (still clustered)
                if ctx.stopping.is_set():
                    with trio.move_on_after(2):
                        try:
                            await processes.remove(s.db, s.process_id)
                        except StorageError as exc:
                            ctx.log.warning("process row not removed", error=exc.message)
