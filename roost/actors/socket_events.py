"""What happens to device sockets because of a decision made in any process.

A device's socket lives in one process; the admin request that revokes it, the deactivation of
its user, or the result that finishes a batch may be handled by another. Those publish the ids on
shared bus topics (relayed by LISTEN/NOTIFY on PostgreSQL), and this actor, in every process,
applies them to the sockets it holds:

* ``TOPIC_REVOKED`` (device ids): close that device's sockets 1008;
* ``TOPIC_DEACTIVATED`` (user ids): close every socket of that user 1008;
* ``TOPIC_BATCH_DONE`` (batch ids): send ``batch_done`` to the sockets of the batch's creator.

A missed notification (the listener was down) is healed by reading: every socket held here whose
device is revoked or whose user is inactive is closed. A missed ``batch_done`` is not replayed
(the batch's status says it is done).
"""

from __future__ import annotations

from typing import Any

import trio

from roost.errors import NotFound, StorageError
from roost.runtime.actor import Actor, ActorContext
from roost.runtime.bus import Subscription
from roost.runtime.sockets import CLOSE_POLICY
from roost.runtime.topics import DISPATCH_BATCH_DONE
from roost.storage import dispatch
from roost.storage.database import in_list

TOPIC_REVOKED = "device.revoked"
TOPIC_DEACTIVATED = "user.deactivated"
TOPIC_BATCH_DONE = DISPATCH_BATCH_DONE
TOPICS = (TOPIC_REVOKED, TOPIC_DEACTIVATED, TOPIC_BATCH_DONE)


class SocketEvents(Actor):
    name = "socket_events"

    async def run(self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        bus = ctx.services.bus
        with bus.subscribe(TOPIC_REVOKED) as revoked, bus.subscribe(TOPIC_DEACTIVATED) as deactivated, \
                bus.subscribe(TOPIC_BATCH_DONE) as done:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._closing, ctx, revoked, "device revoked")
                nursery.start_soon(self._closing, ctx, deactivated, "user deactivated")
                nursery.start_soon(self._batches_done, ctx, done)
                task_status.started()
                await ctx.stopping.wait()
                nursery.cancel_scope.cancel()

    async def _closing(self, ctx: ActorContext, sub: Subscription, reason: str) -> None:
        sockets = ctx.services.sockets
        while True:
            message = await sub.receive()
            if message.overflowed:
                try:
                    await close_dead_here(ctx)
                except StorageError as exc:  # the ids below still apply; the next catch-up reads again
                    ctx.log.error("dead sockets not checked", error=exc.message)
            for some_id in message.ids:
                socks = sockets.for_device(some_id) if sub.topic == TOPIC_REVOKED else sockets.for_user(some_id)
                for sock in socks:
                    sock.close(CLOSE_POLICY, reason)
            ctx.tick()

    async def _batches_done(self, ctx: ActorContext, sub: Subscription) -> None:
        s = ctx.services
        while True:
            message = await sub.receive()
            for batch_id in message.ids:
                try:
                    batch = await dispatch.get_batch(s.db, batch_id)
                except NotFound:
                    continue
                except StorageError as exc:  # not replayed (the batch's status says it is done)
                    ctx.log.error("batch_done not sent", batch_id=batch_id, error=exc.message)
                    continue
                if batch["created_by"] and s.sockets.for_user(batch["created_by"]):
                    s.sockets.send_to_user(batch["created_by"], {"type": "batch_done", "batch": batch})
            ctx.tick()


async def close_dead_here(ctx: ActorContext) -> int:
    """Close the sockets held here whose device is revoked or whose user is inactive."""
    s = ctx.services
    held = {sock.device_id for sock in s.sockets.all()}
    if not held:
        return 0
    rows: list[Any] = await s.db.fetch(
        "SELECT d.id FROM devices d JOIN users u ON u.id = d.user_id"
        f" WHERE (d.revoked_at IS NOT NULL OR NOT u.active) AND d.id {in_list(s.db.dialect, '$1')}",
        sorted(held),
    )
    for row in rows:
        s.sockets.close_device(row["id"], CLOSE_POLICY, "device revoked or user deactivated")
    return len(rows)
