"""Keepalive: pings every registered device socket and drops peers that stopped answering.

One task for all sockets instead of one per socket keeps the cost of an idle connection low.
A socket that has sent nothing (no pong, no frame) for 2.5 ping intervals is closed 1001.

The pings of an interval go out in slices ``SLICE_S`` apart rather than all at once: 2,000
sockets answering within the same few milliseconds kept the event loop reading pongs for about
a second on a loaded 2-core machine, delaying every handoff fan-out in that window
(``bench/fanout.py``); spread over the interval, each slice is a few milliseconds of work.
"""

from __future__ import annotations

import itertools
import math

import trio

from roost.runtime.actor import Actor, ActorContext
from roost.runtime.sockets import CLOSE_GOING_AWAY, DeviceSocket

SLICE_S = 0.1  # at most this long between two slices of pings


class Keepalive(Actor):
    name = "keepalive"

    async def run(self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        interval = ctx.services.settings.ws_ping_interval_s
        sockets = ctx.services.sockets
        slices = max(1, math.ceil(interval / SLICE_S))
        ping = {"type": "ping"}
        due: list[DeviceSocket] = []  # this interval's sockets not pinged yet
        per_slice = 0
        steps = itertools.count(1)

        async def ping_slice() -> None:
            nonlocal due, per_slice
            if next(steps) % slices == 0:  # a new interval (the first one interval in): every socket open now, once
                due = sockets.all()
                due.reverse()
                per_slice = math.ceil(len(due) / slices)
            now = trio.current_time()
            dead = 0
            for _ in range(min(per_slice, len(due))):
                sock = due.pop()
                if sock.close_code is not None:
                    continue
                if now - sock.last_heard > 2.5 * interval:
                    sock.close(CLOSE_GOING_AWAY, "no answer to ping")
                    dead += 1
                else:
                    sock.send_nowait(ping)
            if dead:
                ctx.log.info("dropped silent sockets", count=dead)

        task_status.started()
        await ctx.every(interval / slices, ping_slice, first_delay_s=interval / slices)
