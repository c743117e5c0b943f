"""Keepalive: pings every registered device socket and drops peers that stopped answering.

One task for all sockets instead of one per socket keeps the cost of an idle connection low.
A socket that has sent nothing (no pong, no frame) for 2.5 ping intervals is closed 1001.
"""

from __future__ import annotations

import trio

from roost.runtime.actor import Actor, ActorContext
from roost.runtime.sockets import CLOSE_GOING_AWAY


class Keepalive(Actor):
    name = "keepalive"

    async def run(self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        interval = ctx.services.settings.ws_ping_interval_s
        sockets = ctx.services.sockets
        task_status.started()
        while await ctx.pause(interval):
            now = trio.current_time()
            dead = 0
            ping = {"type": "ping"}
            for sock in sockets.all():
                if now - sock.last_heard > 2.5 * interval:
                    sock.close(CLOSE_GOING_AWAY, "no answer to ping")
                    dead += 1
                else:
                    sock.send(ping)
            if dead:
                ctx.log.info("dropped silent sockets", count=dead)
            ctx.tick()
