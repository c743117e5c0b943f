"""Digest actor: every ``ROOST_DIGEST_TICK_SECONDS`` (and once at start) one tick that

1. releases e-mail held for quiet hours whose window has ended;
2. drops watches nobody took part in for ``ROOST_WATCH_DECAY_DAYS``;
3. assembles the digest of every user whose slot (``digest_schedule.next_at``, indexed) has come.

Step 3 (``roost.digest.assemble``) works in batches of due users (``ROOST_DIGEST_BATCH_SIZE``),
reading and rendering the next batch while the last one is written, each written in one transaction
with a fixed set of statements: claim the users' slots (moving each next slot past now), queue the
mail, record the digests, mark what they included. So a slot missed
while the process was down is served once, a second tick in the same window finds nobody due,
and a tick with nothing due costs one indexed query. The tick runs under the ``digest`` job lock
(an advisory lock on PostgreSQL), so only one process assembles digests at a time; and with
several processes only the leader of ``digest`` ticks (``roost.runtime.leadership``), while a
manual run (``POST /api/admin/digest/run``) works from any process.
"""

from __future__ import annotations

import datetime as dt

import trio

from roost.digest.assemble import assemble_due
from roost.errors import AlreadyRunning, StorageError
from roost.runtime.actor import Actor, ActorContext
from roost.runtime.services import Services
from roost.storage import notifications, outbox

LOCK = "digest"


async def run_tick(services: Services, *, now: dt.datetime | None = None) -> dict[str, int]:
    """One tick (see the module docstring); returns its counters.

    Raises:
        AlreadyRunning: another tick holds the digest lock (in this or another process).
    """
    async with services.locks.hold(LOCK):
        return await _tick(services, now or services.clock.now())


async def _tick(services: Services, now: dt.datetime) -> dict[str, int]:
    settings, db = services.settings, services.db
    counters = {"released": 0, "decayed": 0, "due": 0, "digests": 0, "empty": 0, "batches": 0, "notifications": 0}
    counters["released"] = await outbox.release_held(db, now)
    counters["decayed"] = await notifications.decay_watches(
        db, older_than=now - dt.timedelta(days=settings.watch_decay_days))
    if counters["released"]:
        outbox.wake(services.bus)
    await assemble_due(services, now=now, counters=counters)  # wakes the mailer after each batch
    return counters


class DigestActor(Actor):
    name = "digest"

    async def run(self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        services = ctx.services
        services.queue_probes.setdefault("outbox", lambda: outbox.pending_count(services.db))
        task_status.started()
        while True:
            if services.leadership.leads(self.name):  # a singleton: another process may lead it
                try:
                    counters = await run_tick(services)
                    if counters["due"] or counters["released"] or counters["decayed"]:
                        ctx.log.info("digest tick", **counters)
                except AlreadyRunning:
                    ctx.log.info("digest tick skipped: another tick is running")
                except StorageError as exc:  # each batch commits on its own: the next tick goes on from here
                    ctx.log.error("digest tick failed; retrying on the next tick", error=exc.message)
            ctx.tick()
            if not await ctx.pause(services.settings.digest_tick_seconds):
                return
