"""Deliverer: proposals to the user's open sockets, and their acks back into the database.

- One task at a time per user (``_push_user``) does everything that user's sockets get, so
  nothing is sent twice to one socket and no lock is needed. First it replays each socket of the
  user that registered since its last run: the ``queued`` and ``delivered``-but-unacked
  proposals, oldest first, a page at a time with ``await sock.send`` (backpressure, never an
  overflow), the queued ones of each page becoming ``delivered``. Then it pushes the user's
  queued proposals to every replayed socket and marks them delivered; a socket that cannot take
  a frame within ``SLOW_SOCKET_S`` is closed 1013 and catches up on reconnect. Another
  registration gets every unacked proposal again: at-least-once.
- Wake-ups come to the actor's inbox: ``PROPOSAL_QUEUED`` (a cluster topic: the scout publishes
  the user's id, the bus relay carries it to the process holding the socket) and
  ``DEVICE_REGISTERED`` (published by the register hook, which runs in the socket's task and
  changes nothing here). A catch-up (the inbox overflowed, or the actor restarted) wakes every
  user of this process with a queued proposal (one query) or a socket not replayed yet.
- ``scout_proposal_ack`` frames go into a bounded channel (the socket's reader waits when it is
  full); one writer applies them in batches (one transaction per batch, with the
  ``proposal.acked`` webhooks of the proposals it acked: one query when no account wants them)
  and answers ``error {code: "not_found"}`` to an ack for a proposal that is not the socket's user's, which
  changes nothing. The channel and the frame hooks outlive a restart: an ack read meanwhile waits
  there for the next run.
- On a drain the actor stops taking wake-ups, waits until every socket is gone (each handler
  still handles the frames it had read, ``roost.http.socket.endpoint``), then the writer applies
  what came and ends.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any, Iterable

import trio

from roost.domain import webhooks
from roost.errors import InvalidInput, StorageError
from roost.runtime.actor import Actor, ActorContext
from roost.runtime.deadlines import shielded_deadline
from roost.runtime.frames import error_frame
from roost.runtime.services import Services
from roost.runtime.sockets import CLOSE_TRY_AGAIN, DeviceSocket, encode
from roost.runtime.topics import DEVICE_REGISTERED, PROPOSAL_QUEUED
from roost.storage import proposals as repo
from roost.storage.database import Connection, Row

PAGE = 500
ACK_BATCH = 2000
ACK_BUFFER = 10_000
SLOW_SOCKET_S = 10.0
ACK_LINGER_S = 0.01
ACK_ATTEMPTS = 3
ACK_RETRY_S = 0.1  # then 0.2 s
ACK_FINAL_S = 5.0  # the last, shielded write of the acks taken or queued when the writer ends
FRAME_KIND = "scout_proposal"


def proposal_frame(row: dict[str, Any]) -> dict[str, Any]:
    return {"type": "scout_proposal", "proposal": {
        "id": row["id"], "scout_id": row["scout_id"], "source_type": row["source_type"],
        "source_msg_ref": row["source_msg_ref"], "raw_subject": row["raw_subject"],
        "raw_snippet": row["raw_snippet"], "category": row["category"], "payload": row["payload"],
    }}


class Deliverer(Actor):
    name = "deliverer"

    def __init__(self) -> None:
        self._acks_in, self._acks_out = trio.open_memory_channel[tuple[DeviceSocket, str]](ACK_BUFFER)
        self._services: Services | None = None
        self._busy: set[str] = set()  # users whose push task is running
        self._again: set[str] = set()  # users woken while it runs: it goes round once more
        # Sockets are numbered in the order they open; per user, the highest number replayed.
        self._replayed: dict[str, int] = {}

    # -- frame hooks (run in the socket's task) -----------------------------------------------

    async def _on_ack(self, sock: DeviceSocket, frame: dict[str, Any]) -> None:
        pid = frame.get("proposal_id")
        if not isinstance(pid, str) or not 0 < len(pid) <= 64:
            raise InvalidInput("scout_proposal_ack needs a string proposal_id", code="bad_frame")
        try:
            self._acks_in.send_nowait((sock, pid))
        except trio.WouldBlock:
            await self._acks_in.send((sock, pid))  # the writer is behind: backpressure on the reader

    async def _on_register(self, sock: DeviceSocket, since: int | None) -> None:
        assert self._services is not None
        self._services.bus.publish(DEVICE_REGISTERED, sock.user_id)  # the replay is the actor's

    # -- the actor ------------------------------------------------------------------------------

    async def run(self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        s = self._services = ctx.services
        with ctx.inbox(PROPOSAL_QUEUED, DEVICE_REGISTERED) as inbox:
            s.frames.add("scout_proposal_ack", self._on_ack)  # the same hooks again after a restart
            s.frames.add_register_hook(self._on_register)
            s.queue_probes["scout_items_pending_or_queued"] = lambda: repo.queue_depth(s.db)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_acks, ctx)
                task_status.started()
                if s.sockets.count:  # registrations while the actor was down (a restart)
                    self._wake(ctx, nursery, await self._catch_up(ctx))
                while await ctx.wait(inbox):
                    messages, overflowed = inbox.take()
                    users: Iterable[str] = {user_id for m in messages for user_id in m.ids}
                    if overflowed:
                        users = {*users, *await self._catch_up(ctx)}
                    self._wake(ctx, nursery, users)
                await s.sockets.wait_empty()  # the drain closed them; their last acks are queued
                self._acks_in.close()  # the writer applies everything queued, then ends

    def _wake(self, ctx: ActorContext, nursery: trio.Nursery, users: Iterable[str]) -> None:
        for user_id in users:
            if not ctx.services.sockets.for_user(user_id):
                continue  # nobody here to push to; the backlog covers it on register
            if user_id in self._busy:
                self._again.add(user_id)
            else:
                self._busy.add(user_id)
                nursery.start_soon(self._push_user, ctx, user_id)

    async def _catch_up(self, ctx: ActorContext) -> set[str]:
        """The users of this process with a socket not replayed yet or a queued proposal."""
        s = ctx.services
        socks = s.sockets.all()
        users = {sock.user_id for sock in socks if sock.id > self._replayed.get(sock.user_id, 0)}
        try:
            return users | await repo.users_with_queued(s.db, sorted({sock.user_id for sock in socks}),
                                                        now=s.clock.now())
        except StorageError as exc:  # the next wake-up or sweep tries again; a bug reaches the supervisor
            ctx.log.error("catch-up read failed", error=repr(exc))
            return users

    async def _push_user(self, ctx: ActorContext, user_id: str) -> None:
        s = ctx.services
        try:
            while True:
                self._again.discard(user_id)
                replayed = self._replayed.get(user_id, 0)
                for sock in sorted((x for x in s.sockets.for_user(user_id) if x.id > replayed), key=attrgetter("id")):
                    self._replayed[user_id] = sock.id
                    await self._replay(ctx, sock)
                await self._push_queued(ctx, user_id)
                if user_id not in self._again:
                    return
        except StorageError as exc:  # the rows stay queued: the next wake-up or registration delivers them
            # Only the database is expected to fail here; anything else is a bug and ends the
            # actor's nursery, so the supervisor logs it with its traceback and counts the restart.
            ctx.log.error("live push failed", user_id=user_id, error=repr(exc))
        finally:
            self._busy.discard(user_id)
            if not s.sockets.for_user(user_id):
                self._replayed.pop(user_id, None)

    async def _replay(self, ctx: ActorContext, sock: DeviceSocket) -> None:
        """Send one socket its user's queued and delivered-but-unacked proposals, oldest first.

        If the database fails, the socket is closed so that the device registers again and gets
        its replay then.
        """
        s = ctx.services
        after = ""
        try:
            while sock.close_code is None:
                rows = await repo.backlog_page(s.db, sock.user_id, now=s.clock.now(), after=after, limit=PAGE)
                for row in rows:
                    await sock.send(proposal_frame(row))
                await repo.mark_delivered(s.db, [r["id"] for r in rows if r["status"] == "queued"],
                                          now=s.clock.now())
                if len(rows) < PAGE:
                    return
                after = rows[-1]["id"]
        except StorageError:
            sock.close(CLOSE_TRY_AGAIN, "replay failed")
            raise

    async def _push_queued(self, ctx: ActorContext, user_id: str) -> None:
        """Send the user's queued proposals to every replayed socket of the user, a page at a time."""
        s = ctx.services
        while True:
            replayed = self._replayed.get(user_id, 0)
            socks = [sock for sock in s.sockets.for_user(user_id) if sock.id <= replayed]
            if not socks:
                return
            rows = await repo.queued_for_user(s.db, user_id, now=s.clock.now(), limit=PAGE)
            for row in rows:
                text = encode(proposal_frame(row))
                for sock in socks:
                    await sock.send(text, FRAME_KIND, patience_s=SLOW_SOCKET_S)
            await repo.mark_delivered(s.db, [r["id"] for r in rows], now=s.clock.now())
            ctx.tick()
            if len(rows) < PAGE:
                return

    async def _write_acks(self, ctx: ActorContext) -> None:
        """Apply acks in batches until the channel is closed (the drain: ``run``).

        Whatever was taken or is still queued when the writer ends (drained, crashed, or
        cancelled at the end of the grace period) is written in a last, shielded transaction
        with a deadline (``ACK_FINAL_S``): an ack the server has read reaches the database.
        """
        pending: list[tuple[DeviceSocket, str]] = []  # taken from the channel, not yet written
        try:
            async for ack in self._acks_out:
                pending.append(ack)
                # Let a stream of acks gather for a moment: one transaction per few hundred acks
                # instead of per handful. Acks are only redelivery insurance, a few ms late is fine.
                await trio.sleep(ACK_LINGER_S)
                self._take_queued(pending, ACK_BATCH)
                await self._apply(ctx, pending)
                pending = []  # only now: a batch cut short by a cancel is written below
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
            except (trio.WouldBlock, trio.EndOfChannel):
                break

    async def _apply(self, ctx: ActorContext, batch: list[tuple[DeviceSocket, str]]) -> None:
        s = ctx.services
        acks = [(sock.user_id, pid) for sock, pid in batch]
        devices = {pid: sock.device_id for sock, pid in batch}
        emitted: list[int] = []

        def payload(r: Row) -> dict[str, Any]:
            return {"proposal": proposal_frame(r)["proposal"], "user_id": r["user_id"],
                    "device_id": devices.get(r["id"]), "acked_at": r["acked_at"]}

        async def acked(tx: Connection, rows: list[Row]) -> None:  # in the ack batch's transaction
            emitted[:] = [await webhooks.emit_for_users(tx, "proposal.acked", rows, payload)]

        for attempt in range(ACK_ATTEMPTS):
            try:
                unknown = await repo.ack(s.db, acks, now=s.clock.now(), acked=acked)
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
        if emitted and emitted[0]:
            webhooks.wake(s.bus)
        for sock, pid in batch:
            if (sock.user_id, pid) in unknown:
                sock.send_nowait(error_frame("not_found", f"no proposal {pid!r}", proposal_id=pid))
