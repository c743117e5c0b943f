"""What happens to device sockets because of a decision made in any process.

A device's socket lives in one process; the admin request that revokes it, the deactivation of
its user, or the result that finishes a batch may be handled by another. Those publish the ids on
shared bus topics (relayed by LISTEN/NOTIFY on PostgreSQL), and this actor, in every process,
applies them to the sockets it holds:

* ``DEVICE_REVOKED`` (device ids): close that device's sockets 1008;
* ``USER_DEACTIVATED`` (user ids): close every socket of that user 1008;
* ``DISPATCH_BATCH_DONE`` (batch ids): send ``batch_done`` to the sockets of the batch's creator.

A missed notification (the listener was down, or the inbox overflowed) is healed by reading:
every socket held here whose device is revoked or whose user is inactive is closed. A missed
``batch_done`` is not replayed (the batch's status says it is done).
"""

from __future__ import annotations

import trio

from roost.errors import NotFound, StorageError
from roost.runtime.actor import Actor, ActorContext
from roost.runtime.bus import Message
from roost.runtime.sockets import CLOSE_POLICY
from roost.runtime.topics import DEVICE_REVOKED, DISPATCH_BATCH_DONE, USER_DEACTIVATED
from roost.storage import devices, dispatch


class SocketEvents(Actor):
    name = "socket_events"

    async def run(self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with ctx.inbox(DEVICE_REVOKED, USER_DEACTIVATED, DISPATCH_BATCH_DONE) as inbox:
            task_status.started()
            while await ctx.wait(inbox):
                messages, overflowed = inbox.take()
                if overflowed:
                    try:
                        await close_dead_here(ctx)
                    except StorageError as exc:  # the ids below still apply; the next catch-up reads again
                        ctx.log.error("dead sockets not checked", error=exc.message)
                for message in messages:
                    if message.topic == DISPATCH_BATCH_DONE:
                        await self._batches_done(ctx, message)
                    else:
                        self._close(ctx, message)
                ctx.tick()

    def _close(self, ctx: ActorContext, message: Message) -> None:
        sockets = ctx.services.sockets
        revoked = message.topic == DEVICE_REVOKED
        reason = "device revoked" if revoked else "user deactivated"
        for some_id in message.ids:
            for sock in sockets.for_device(some_id) if revoked else sockets.for_user(some_id):
                sock.close(CLOSE_POLICY, reason)

    async def _batches_done(self, ctx: ActorContext, message: Message) -> None:
        s = ctx.services
        for batch_id in message.ids:
            try:
                batch = await dispatch.get_batch(s.db, batch_id)
            except NotFound:
                continue
            except StorageError as exc:  # not replayed (the batch's status says it is done)
                ctx.log.error("batch_done not sent", batch_id=batch_id, error=exc.message)
                continue
            if batch["created_by"] and s.sockets.for_user(batch["created_by"]):
                s.sockets.send_to_user(batch["created_by"], {"type": "batch_done", "batch": dispatch.done_view(batch)})


async def close_dead_here(ctx: ActorContext) -> int:
    """Close the sockets held here whose device is revoked or whose user is inactive."""
    s = ctx.services
    dead = await devices.dead_among(s.db, (sock.device_id for sock in s.sockets.all()))
    for device_id in dead:
        s.sockets.close_device(device_id, CLOSE_POLICY, "device revoked or user deactivated")
    return len(dead)
