"""One digest tick:

1. release e-mail held for quiet hours whose window has ended;
2. drop watches nobody took part in for ``ROOST_WATCH_DECAY_DAYS``;
3. assemble the digest of every user whose slot (``digest_schedule.next_at``, indexed) has come.

Step 3 (``roost.domain.digest.assemble``) works in batches of due users (``ROOST_DIGEST_BATCH_SIZE``),
reading and rendering the next batch while the last one is written, each written in one transaction
with a fixed set of statements: claim the users' slots (moving each next slot past now), queue the
mail, record the digests, mark what they included. So a slot missed while the process was down is
served once, a second tick in the same window finds nobody due, and a tick with nothing due costs
one indexed query. The tick runs under the ``digest`` job lock (an advisory lock on PostgreSQL), so
only one tick runs at a time across processes: the digest actor's (``roost.actors.digest``) or a
manual one (``POST /api/admin/digest/run``, from any process).
"""

from __future__ import annotations

import datetime as dt

from roost.domain.digest.assemble import assemble_due
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
