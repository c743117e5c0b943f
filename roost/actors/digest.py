"""Digest actor: every ``ROOST_DIGEST_TICK_SECONDS`` (and once at start) one tick that

1. releases e-mail held for quiet hours whose window has ended;
2. drops watches nobody took part in for ``ROOST_WATCH_DECAY_DAYS``;
3. assembles the digest of every user whose slot (``digest_schedule.next_at``, indexed) has come.

Step 3 works in batches of due users (``ROOST_DIGEST_BATCH_SIZE``), each in one transaction
with a fixed set of statements: read the batch, read its notifications, queue its mail, record
its digests, mark what they included, move each user's next slot past now. So a slot missed
while the process was down is served once, a second tick in the same window finds nobody due,
and a tick with nothing due costs one indexed query. The tick runs under the ``digest`` job lock
(an advisory lock on PostgreSQL), so only one process assembles digests at a time; and with
several processes only the leader of ``digest`` ticks (``roost.runtime.leadership``), while a
manual run (``POST /api/admin/digest/run``) works from any process.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

import trio

from roost.digest import unsubscribe
from roost.digest.notify import renderer
from roost.digest.render import group_items
from roost.digest.slots import next_slot
from roost.errors import AlreadyRunning
from roost.runtime.actor import Actor, ActorContext
from roost.runtime.services import Services
from roost.storage import digests, notifications, outbox

LOCK = "digest"
LIST_UNSUBSCRIBE_POST = "List-Unsubscribe=One-Click"


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
    lookback_start = now - dt.timedelta(days=settings.digest_lookback_days)
    secret: bytes | None = None
    queued: list[str] = []
    while True:
        async with db.transaction() as tx:
            users = await digests.due_users(tx, now=now, limit=settings.digest_batch_size)
            if not users:
                break
            if secret is None:
                secret = await unsubscribe.key(services)
            rows = await digests.eligible_notifications(
                tx, db.dialect, user_ids=[u["id"] for u in users], now=now, lookback_start=lookback_start)
            by_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for row in rows:
                by_user[row["recipient_user_id"]].append(row)
            messages, records = _assemble(services, users, by_user, now=now, lookback_start=lookback_start,
                                          secret=secret)
            ids = await outbox.enqueue_many(tx, [m for m, _ in messages], now=now)
            for (_, record), outbox_id in zip(messages, ids, strict=True):
                record["outbox_id"] = outbox_id
            await digests.settle_batch(tx, db.dialect, records=records, now=now)
        queued.extend(ids)
        counters["batches"] += 1
        counters["due"] += len(users)
        counters["digests"] += len(messages)
        counters["empty"] += len(users) - len(messages)
        counters["notifications"] += sum(len(r["notification_ids"]) for r in records)
        await trio.lowlevel.checkpoint()
    if queued or counters["released"]:
        outbox.wake(services.bus, *queued[:1000])
    return counters


def _assemble(services: Services, users: list[dict[str, Any]], by_user: dict[str, list[dict[str, Any]]], *,
              now: dt.datetime, lookback_start: dt.datetime,
              secret: bytes) -> tuple[list[tuple[dict[str, Any], dict[str, Any]]], list[dict[str, Any]]]:
    """Per user of the batch: the digest record and, when there is something to report, the message."""
    settings = services.settings
    render = renderer(services)
    messages: list[tuple[dict[str, Any], dict[str, Any]]] = []
    records: list[dict[str, Any]] = []
    for user in users:
        items = by_user.get(user["id"], []) if user["active"] else []
        last = user["digest_last_at"]
        period_start = max(last, lookback_start) if last else lookback_start
        record = {
            "user_id": user["id"], "slot_at": user["digest_next_at"], "period_start": period_start,
            "notification_ids": [i["id"] for i in items], "outbox_id": None,
            "next_at": next_slot(now, cadence=user["digest_cadence"], digest_time=user["digest_time"],
                                 weekday=user["digest_weekday"], timezone=user["timezone"]),
        }
        records.append(record)
        if not items:
            continue  # nothing to report: no mail, but the period is recorded
        link = unsubscribe.url(settings.public_url, unsubscribe.sign(secret, user["id"]))
        subject, text, html = render.digest(
            user=user, cadence=user["digest_cadence"], groups=group_items(items), total=len(items),
            period_start=period_start, period_end=now, unsubscribe_url=link, app_url=settings.public_url,
        )
        messages.append(({
            "recipient_user_id": user["id"], "user": user, "to": user["email"], "subject": subject, "text": text,
            "html": html, "kind": "digest",
            "headers": {"List-Unsubscribe": f"<{link}>", "List-Unsubscribe-Post": LIST_UNSUBSCRIBE_POST},
        }, record))
    return messages, records


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
            ctx.tick()
            if not await ctx.pause(services.settings.digest_tick_seconds):
                return
