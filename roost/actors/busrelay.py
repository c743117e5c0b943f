"""Bus relay: the cluster half of the bus, on PostgreSQL (one LISTEN connection per process).

- Out: ``Bus.publish`` on a shared topic hands (topic, ids) to ``enqueue``, which never waits.
  A sender task takes everything queued at once, merges it by topic and sends it as few
  ``pg_notify(CHANNEL, payload)`` calls as fit (payload: ``[[topic, [ids...]], ...]``, each
  under PostgreSQL's 8000-byte limit; an id that cannot fit becomes ``[topic, null]``, "catch
  up"). It sends on the listening connection itself, so its own notifications come back with
  its own backend pid and are skipped: the origin's subscribers already had them.
- In: every other process's payloads are ``deliver``ed into the local bus.
- Lost connection: reconnect with exponential backoff (jitter), and once listening again
  ``overflow`` every shared topic, so each actor reads what is pending: notifications sent
  while nobody listened are healed by one catch-up read, never by polling. What this process
  queued meanwhile is sent after the reconnect (beyond ``OUTGOING_LIMIT`` messages it sends
  ``[topic, null]`` instead).
- Errors: a lost or refused connection (``StorageError``; asyncpg and socket errors arrive as
  one) means reconnect; any other error is a bug and goes to the supervisor.
- The NOTIFY goes out after the producer's commit (coalesced, off the producer's path), so a
  producer killed between its COMMIT and the NOTIFY loses that wake-up. For that case only the
  relay overflows the shared topics every ``ROOST_BUS_SWEEP_S`` (30 s): a slow safety read,
  not the delivery path.
"""

from __future__ import annotations

import json
import random
from typing import TYPE_CHECKING, Iterable

import trio

from roost.errors import StorageError
from roost.runtime.actor import Actor, ActorContext, Inbox, Readiness
from roost.runtime.logging import get_logger
from roost.runtime.services import Services
from roost.storage import cluster

if TYPE_CHECKING:
    from roost.storage.dedicated import DedicatedConnection

CHANNEL = "roost_bus"
MAX_PAYLOAD_BYTES = 7900  # PostgreSQL refuses payloads of 8000 bytes or more
OUTGOING_LIMIT = 10_000
RECONNECT_INITIAL_S = 0.1
RECONNECT_MAX_S = 5.0

log = get_logger()


def encode_payloads(messages: Iterable[tuple[str, tuple[str, ...]]], overflowed: Iterable[str] = (),
                    limit: int = MAX_PAYLOAD_BYTES) -> list[str]:
    """Messages merged by topic (ids deduplicated, in order) into JSON payloads of at most ``limit`` bytes."""
    caught_up = set(overflowed)
    merged: dict[str, dict[str, None]] = {}
    for topic, ids in messages:
        if topic not in caught_up:
            merged.setdefault(topic, {}).update(dict.fromkeys(ids))
    entries = [_dump([topic, None]) for topic in sorted(caught_up)]
    for topic, ids in merged.items():
        entries.extend(_entries(topic, list(ids), limit))
    payloads: list[str] = []
    current: list[str] = []
    size = 2
    for entry in entries:
        cost = len(entry.encode()) + 1
        if current and size + cost > limit:
            payloads.append("[" + ",".join(current) + "]")
            current, size = [], 2
        current.append(entry)
        size += cost
    if current:
        payloads.append("[" + ",".join(current) + "]")
    return payloads


def _dump(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def _entries(topic: str, ids: list[str], limit: int) -> list[str]:
    text = _dump([topic, ids])
    if len(text.encode()) + 2 <= limit:
        return [text]
    if len(ids) <= 1:
        return [_dump([topic, None])]  # cannot be carried: the receivers catch up instead
    mid = len(ids) // 2
    return _entries(topic, ids[:mid], limit) + _entries(topic, ids[mid:], limit)


def decode_payload(payload: str) -> list[tuple[str, tuple[str, ...] | None]]:
    """``[(topic, ids or None for "catch up")]``.

    Raises:
        ValueError: not a payload of ours.
    """
    parsed = json.loads(payload)
    if not isinstance(parsed, list):
        raise ValueError("payload is not a list")
    out: list[tuple[str, tuple[str, ...] | None]] = []
    for entry in parsed:
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
            raise ValueError(f"bad entry {entry!r}")
        topic, ids = entry
        if ids is None:
            out.append((topic, None))
        elif isinstance(ids, list) and all(isinstance(i, str) for i in ids):
            out.append((topic, tuple(ids)))
        else:
            raise ValueError(f"bad ids in {entry!r}")
    return out


class BusRelay(Actor):
    name = "bus_relay"

    def __init__(self, services: Services):
        self.services = services
        # Out: the sender task's inbox (``enqueue`` posts, never waits); past OUTGOING_LIMIT a
        # message's topic goes to ``_dropped`` instead, sent as "catch up on this topic".
        self._outgoing: Inbox[tuple[str, tuple[str, ...]]] = Inbox(OUTGOING_LIMIT)
        self._dropped: set[str] = set()  # topics whose outgoing messages could not be kept or sent
        self._pid: int | None = None
        self._idle = trio.Event()  # set while the sender has nothing queued or in flight
        self._idle.set()
        self.connected = False
        self.reconnects = 0

    @property
    def listener_pid(self) -> int | None:
        """The server pid of the listening connection (None before the first connect)."""
        return self._pid

    # -- out -----------------------------------------------------------------------------------

    def enqueue(self, topic: str, ids: tuple[str, ...]) -> None:
        if not self._outgoing.post((topic, ids)):
            self._dropped.add(topic)  # the inbox is full (and marked overflowed, so the sender wakes)
        if self._idle.is_set():
            self._idle = trio.Event()

    async def _send(self, conn: DedicatedConnection) -> None:
        while True:
            await self._outgoing.wait_ready()
            batch, _ = self._outgoing.take()  # an overflow is in ``_dropped``, by topic
            dropped, self._dropped = self._dropped, set()
            try:
                for payload in encode_payloads(batch, dropped):
                    await cluster.notify(conn, CHANNEL, payload)
            except BaseException:
                # Unknown which went out: the others catch up on these topics once we are back.
                self._dropped |= dropped | {topic for topic, _ in batch}
                self._outgoing.overflow()  # so the next sender (after the reconnect) sends them
                raise
            if not (self._outgoing.ready or self._dropped):
                self._idle.set()

    # -- in ------------------------------------------------------------------------------------

    def _received(self, pid: int, payload: str) -> None:
        if pid == self._pid:
            return  # our own: delivered locally when it was published
        bus = self.services.bus
        try:
            entries = decode_payload(payload)
        except ValueError as exc:
            log.warning("unreadable bus payload; catching up on every shared topic", error=str(exc))
            bus.overflow(*bus.shared)
            return
        for topic, ids in entries:
            if ids is None:
                bus.overflow(topic)
            else:
                bus.deliver(topic, ids)

    # -- the loop ------------------------------------------------------------------------------

    async def run(self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        s = ctx.services
        s.bus.attach(self.enqueue)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._sweep, ctx)
                status = Readiness(task_status)
                try:
                    await self._connected(ctx, status)
                except* StorageError as group:  # also from the sender task (a group): the connection is lost
                    if not status.reported:
                        raise  # no first connection: a crash (the supervisor retries with its backoff)
                    ctx.log.warning("bus listener failed; reconnecting", error=str(group.exceptions[0]))
                backoff = RECONNECT_INITIAL_S
                while not ctx.stopping.is_set():
                    delay = backoff * random.uniform(0.5, 1.0)
                    if not await ctx.wait(at_most=delay):
                        break
                    try:
                        await self._connected(ctx, None)
                        backoff = RECONNECT_INITIAL_S
                    except* StorageError as group:
                        backoff = min(RECONNECT_MAX_S, backoff * 2)
                        ctx.log.warning("bus listener down; reconnecting", error=str(group.exceptions[0]),
                                        retry_in_s=backoff)
                nursery.cancel_scope.cancel()
        finally:
            s.bus.attach(None)
            self.connected = False

    async def _connected(self, ctx: ActorContext, first: Readiness | None) -> None:
        """Listen (and send) until the connection is lost or the process drains; ``first`` is
        the actor's readiness on the first connection, None on a reconnect."""
        from roost.storage.dedicated import open_dedicated  # asyncpg: imported on PostgreSQL only

        bus = ctx.services.bus
        async with open_dedicated(ctx.services.db) as conn:
            self._pid = conn.pid
            await conn.listen(CHANNEL, self._received)
            self.connected = True
            if first is not None:
                first.started()
            else:
                self.reconnects += 1
                ctx.log.info("bus listener reconnected; catching up", topics=sorted(bus.shared))
            # Also on the first connect: whatever was published before we listened is read now.
            bus.overflow(*bus.shared)
            lost: Inbox[None] = Inbox(1)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_post_when_set, conn.lost, lost)
                    nursery.start_soon(self._send, conn)  # first, what was queued while we were away
                    if not await ctx.wait(lost):  # False: the process drains
                        with trio.move_on_after(1):  # a last flush of what the drain published
                            await self._idle.wait()
                    nursery.cancel_scope.cancel()
            finally:
                self.connected = False
            if conn.lost.is_set():
                ctx.log.warning("bus listener connection lost")

    async def _sweep(self, ctx: ActorContext) -> None:
        """Every ``bus_sweep_s``, tell every shared topic's subscribers to catch up (see the module docstring)."""
        bus, every = ctx.services.bus, ctx.services.settings.bus_sweep_s

        async def sweep() -> None:
            bus.overflow(*bus.shared)

        await ctx.every(every, sweep, first_delay_s=every)


async def _post_when_set(event: trio.Event, inbox: Inbox[None]) -> None:
    """Post to ``inbox`` once ``event`` is set (a lost connection, as something ``ctx.wait`` wakes on)."""
    await event.wait()
    inbox.post(None)
