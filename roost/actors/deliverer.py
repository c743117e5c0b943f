"""Deliverer: proposals to the user's open sockets, and their acks back into the database.

- On ``register`` (a register hook) a socket gets its user's ``queued`` and ``delivered``-but-
  unacked proposals, oldest first, a page at a time with ``await sock.put`` (backpressure, never
  an overflow), and the queued ones of each page become ``delivered``.
- Live: the scout publishes the user's id on ``proposal.queued`` (a cluster topic: the bus relay
  carries it to the process holding the socket); a task per user reads the queued proposals and
  writes them to every open socket of that user, then marks them delivered. A catch-up message
  (``overflowed``) looks up in one query which of this process's users have queued proposals.
  A socket that cannot take a frame within ``SLOW_SOCKET_S`` is closed 1013 and catches up on
  reconnect.
- A per-user lock makes a page read + send + mark atomic against the live push, and each
  socket remembers what it was sent while its replay runs, so one socket never gets the same
  proposal twice (another registration does get every unacked one again: at-least-once).
- ``scout_proposal_ack`` frames go into a bounded channel; one writer applies them in batches
  (one transaction per batch) and answers ``error {code: "not_found"}`` to an ack for a
  proposal that is not the socket's user's, which changes nothing.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

import trio

from roost.errors import InvalidInput, StorageError
from roost.runtime.actor import Actor, ActorContext
from roost.runtime.deadlines import shielded_deadline
from roost.runtime.frames import error_frame
from roost.runtime.services import Services
from roost.runtime.sockets import CLOSE_TRY_AGAIN, DeviceSocket, encode
from roost.storage import scouts as repo

PAGE = 500
ACK_BATCH = 2000
ACK_BUFFER = 10_000
SLOW_SOCKET_S = 10.0
ACK_LINGER_S = 0.01
ACK_ATTEMPTS = 3
ACK_RETRY_S = 0.1  # then 0.2 s
ACK_FINAL_S = 5.0  # the last, shielded write of the acks taken or queued when the writer ends
FRAME_KIND = "scout_proposal"
TOPIC_QUEUED = "proposal.queued"
TOPIC_DEVICE = "device.registered"


def proposal_frame(row: dict[str, Any]) -> dict[str, Any]:
    return {"type": "scout_proposal", "proposal": {
        "id": row["id"], "scout_id": row["scout_id"], "source_type": row["source_type"],
        "source_msg_ref": row["source_msg_ref"], "raw_subject": row["raw_subject"],
        "raw_snippet": row["raw_snippet"], "category": row["category"], "payload": row["payload"],
    }}


class Deliverer(Actor):
    name = "deliverer"

    def __init__(self, services: Services):
        self.services = services
        self._acks_in, self._acks_out = trio.open_memory_channel[tuple[DeviceSocket, str]](ACK_BUFFER)
        self._replaying: dict[int, set[str]] = {}
        self._user_locks: dict[str, trio.Lock] = defaultdict(trio.Lock)
        self._busy: set[str] = set()
        self._again: set[str] = set()
        services.frames.add("scout_proposal_ack", self._on_ack)
        services.frames.on_register.append(self._on_register)
        services.queue_probes["scout_items_pending_or_queued"] = lambda: repo.queue_depth(services.db)

    # -- frames -------------------------------------------------------------------------------

    async def _on_ack(self, sock: DeviceSocket, frame: dict[str, Any]) -> None:
        pid = frame.get("proposal_id")
        if not isinstance(pid, str) or not 0 < len(pid) <= 64:
            raise InvalidInput("scout_proposal_ack needs a string proposal_id", code="bad_frame")
        try:
            self._acks_in.send_nowait((sock, pid))
        except trio.WouldBlock:
            await self._acks_in.send((sock, pid))  # the writer is behind: backpressure on the reader

    async def _on_register(self, sock: DeviceSocket, since: int | None) -> None:
        s = self.services
        s.bus.publish(TOPIC_DEVICE, sock.user_id)
        seen: set[str] = set()
        self._replaying[sock.id] = seen
        try:
            after = ""
            while sock.close_code is None:
                async with self._user_locks[sock.user_id]:
                    rows = await repo.backlog_page(s.db, sock.user_id, now=s.clock.now(), after=after, limit=PAGE)
                    for row in rows:
                        if row["id"] not in seen:
                            seen.add(row["id"])
                            await sock.put(proposal_frame(row))
                    await repo.mark_delivered(s.db, [r["id"] for r in rows if r["status"] == "queued"],
                                              now=s.clock.now())
                if len(rows) < PAGE:
                    break
                after = rows[-1]["id"]
        finally:
            del self._replaying[sock.id]

    # -- the actor ------------------------------------------------------------------------------

    async def run(self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with ctx.services.bus.subscribe(TOPIC_QUEUED) as sub:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_acks, ctx, nursery.cancel_scope)
                task_status.started()
                while True:
                    message = await sub.receive()
                    users: Iterable[str] = message.ids
                    if message.overflowed:  # catch up: one query finds who of ours has something queued
                        users = await self._users_with_queued(ctx)
                    for user_id in users:
                        if not ctx.services.sockets.for_user(user_id):
                            continue  # nobody here to push to; the backlog covers it on register
                        if user_id in self._busy:
                            self._again.add(user_id)
                        else:
                            self._busy.add(user_id)
                            nursery.start_soon(self._push_user, ctx, user_id)

    async def _users_with_queued(self, ctx: ActorContext) -> set[str]:
        s = ctx.services
        try:
            return await repo.users_with_queued(s.db, sorted({sock.user_id for sock in s.sockets.all()}),
                                                 now=s.clock.now())
        except StorageError as exc:  # the next wake-up or sweep tries again; a bug reaches the supervisor
            ctx.log.error("catch-up read failed", error=repr(exc))
            return set()

    async def _push_user(self, ctx: ActorContext, user_id: str) -> None:
        s = ctx.services
        try:
            while True:
                self._again.discard(user_id)
                while True:
                    socks = s.sockets.for_user(user_id)
                    if not socks:
                        break
                    async with self._user_locks[user_id]:
                        rows = await repo.queued_for_user(s.db, user_id, now=s.clock.now(), limit=PAGE)
                        for row in rows:
                            text = encode(proposal_frame(row))
                            for sock in socks:
                                await self._send_live(sock, row["id"], text)
                        await repo.mark_delivered(s.db, [r["id"] for r in rows], now=s.clock.now())
                    ctx.tick()
                    if len(rows) < PAGE:
                        break
                if user_id not in self._again:
                    return
        except StorageError as exc:  # the rows stay queued: the next wake-up or registration delivers them
            # Only the database is expected to fail here; anything else is a bug and ends the
            # actor's nursery, so the supervisor logs it with its traceback and counts the restart.
            ctx.log.error("live push failed", user_id=user_id, error=repr(exc))
        finally:
            self._busy.discard(user_id)
            if not s.sockets.for_user(user_id) and not self._user_locks[user_id].locked():
                self._user_locks.pop(user_id, None)

    async def _send_live(self, sock: DeviceSocket, proposal_id: str, text: str) -> None:
        seen = self._replaying.get(sock.id)
        if seen is not None:
            if proposal_id in seen:
                return
            seen.add(proposal_id)
        if sock.try_put(text, FRAME_KIND):  # the common case: room in the buffer, no timer needed
            return
        with trio.move_on_after(SLOW_SOCKET_S) as scope:
            await sock.put(text, FRAME_KIND)
        if scope.cancelled_caught:
            sock.close(CLOSE_TRY_AGAIN, "slow consumer")

    async def _write_acks(self, ctx: ActorContext, scope: trio.CancelScope) -> None:
        """Apply acks in batches; on a drain, write what has arrived and then stop the actor.

        A drain stops the writer only once no socket is registered: each socket's handler still
        handles the frames it had read after its socket closed (``roost.http.ws``), and those
        acks come here. Whatever was taken or is still queued when the writer ends (drained, or
        cancelled at the end of the grace period) is written in a last, shielded transaction
        with a deadline (``ACK_FINAL_S``): an ack the server has read reaches the database.
        """
        s = ctx.services
        pending: list[tuple[DeviceSocket, str]] = []  # taken from the channel, not yet written
        try:
            while True:
                with trio.move_on_after(0.2):
                    pending.append(await self._acks_out.receive())
                if pending:
                    # Let a stream of acks gather for a moment: one transaction per few hundred acks
                    # instead of per handful. Acks are only redelivery insurance, a few ms late is fine.
                    await trio.sleep(ACK_LINGER_S)
                self._take_queued(pending, ACK_BATCH)
                if pending:
                    await self._apply(ctx, pending)
                    pending = []  # only now: a batch cut short by a cancel is written below
                elif ctx.stopping.is_set() and not s.sockets.count:
                    scope.cancel()
                    return
        finally:
            # At most ACK_FINAL_S, and at most 1 s past a cancel (the end of a drain's grace period).
            with trio.CancelScope(shield=True, deadline=shielded_deadline(ACK_FINAL_S, 1.0)) as final:
                self._take_queued(pending, None)
                for start in range(0, len(pending), ACK_BATCH):
                    await self._apply(ctx, pending[start:start + ACK_BATCH])
            if final.cancelled_caught:
                ctx.log.error("acks left unwritten at shutdown", count=len(pending))

    def _take_queued(self, batch: list[tuple[DeviceSocket, str]], limit: int | None) -> None:
        """Move queued acks into ``batch`` without waiting, up to ``limit`` in all (None: every one)."""
        while limit is None or len(batch) < limit:
            try:
                batch.append(self._acks_out.receive_nowait())
            except trio.WouldBlock:
                break

    async def _apply(self, ctx: ActorContext, batch: list[tuple[DeviceSocket, str]]) -> None:
        s = ctx.services
        acks = [(sock.user_id, pid) for sock, pid in batch]
        for attempt in range(ACK_ATTEMPTS):
            try:
                unknown = await repo.ack(s.db, acks, now=s.clock.now())
                break
            except StorageError as exc:
                # A lost connection or a deadlock with another process's delivery: the same batch
                # again is safe (an ack changes only queued/delivered rows). Unpersisted after the
                # last attempt, the proposals are delivered again later (at-least-once).
                if attempt + 1 == ACK_ATTEMPTS:
                    ctx.log.error("writing acks failed", count=len(batch), attempts=ACK_ATTEMPTS, error=repr(exc))
                    return
                ctx.log.warning("writing acks failed, trying again", count=len(batch), error=repr(exc))
                await trio.sleep(ACK_RETRY_S * 2**attempt)
        ctx.tick()
        for sock, pid in batch:
            if (sock.user_id, pid) in unknown:
                sock.send(error_frame("not_found", f"no proposal {pid!r}", proposal_id=pid))
