"""Digest actor: every ``ROOST_DIGEST_TICK_SECONDS`` (and once at start) one digest tick
(``roost.domain.digest.tick``), in the one process that leads ``digest``
(``roost.runtime.leadership``); the others keep the cadence and skip, so a process that takes
over ticks within one period. A tick that finds another running (a manual one) is skipped; one
that fails on the database is logged and the next goes on from the last committed batch.
"""

from __future__ import annotations

import trio

from roost.domain.digest.tick import run_tick
from roost.errors import AlreadyRunning, StorageError
from roost.runtime.actor import Actor, ActorContext
from roost.storage import outbox


class DigestActor(Actor):
    name = "digest"

    async def run(self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        services = ctx.services
        services.queue_probes.setdefault("outbox", lambda: outbox.pending_count(services.db))
        task_status.started()

        async def tick() -> None:
            try:
                counters = await run_tick(services)
                if counters["due"] or counters["released"] or counters["decayed"]:
                    ctx.log.info("digest tick", **counters)
            except AlreadyRunning:
                ctx.log.info("digest tick skipped: another tick is running")
            except StorageError as exc:  # each batch commits on its own: the next tick goes on from here
                ctx.log.error("digest tick failed; retrying on the next tick", error=exc.message)

        await ctx.every(lambda: services.settings.digest_tick_seconds, tick, leader=self.name)
