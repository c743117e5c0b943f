"""Assembling every due digest, batch by batch: step 3 of the digest tick (``roost.domain.digest.tick``).

Three stages overlap so that the database and Python work at the same time:

* *read* pages through the due users (``digest_schedule.next_at`` order, keyset-paged so it
  need not wait for the previous batch's commit, each with the count of everything unread in
  their inbox) and reads each batch's notifications and the topics its users watch;
* *render* groups them by topic (watched topics first) and renders each user's mail in a worker
  thread (Jinja2 is pure Python; the thread lets the event loop keep feeding the other stages'
  statements in between);
* *write* settles one prepared batch per transaction: claim the slots, queue the mail,
  record the digests, mark what they included.

The reads happen outside the writing transaction, so the first write of each batch claims
every user's slot only if it still stands where it was read (``digests.claim_slots``): a user
whose schedule changed in between, or who was served already, gets nothing from this batch.
A crash before a batch's commit leaves it wholly undone (served at the next tick); after it,
wholly done. At most one batch waits between two stages.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Sequence, TypeAlias

import trio

from roost.domain.digest import unsubscribe
from roost.domain.digest.render import DigestItem, group_items, renderer_for
from roost.domain.digest.slots import next_slot
from roost.runtime.services import Services
from roost.storage import digests, outbox
from roost.storage.database import Row

LIST_UNSUBSCRIBE_POST = "List-Unsubscribe=One-Click"
# One batch as read: its due users, their notifications, and the topics each watches.
Read: TypeAlias = tuple[list[Row], Sequence[Any], dict[str, set[str]]]


@dataclass
class Batch:
    """One batch of due users, read and rendered, ready to be written."""

    users: int
    # Per user: (user_id, slot_at, next_at), the digest record and its message (None: nothing to report).
    slots: list[tuple[str, dt.datetime, dt.datetime | None]] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any] | None] = field(default_factory=list)


async def assemble_due(services: Services, *, now: dt.datetime, counters: dict[str, int]) -> list[str]:
    """Assemble, queue and record the digest of every user whose slot has come by ``now``;
    adds to ``counters`` (due, digests, empty, batches, notifications) and returns the queued
    outbox ids. Each batch commits on its own and then wakes the mailer."""
    queued: list[str] = []
    lookback_start = now - dt.timedelta(days=services.settings.digest_lookback_days)
    read_send, read_receive = trio.open_memory_channel[Read](0)
    ready_send, ready_receive = trio.open_memory_channel[Batch](0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_read, services, now, lookback_start, read_send)
        nursery.start_soon(_render, services, now, lookback_start, read_receive, ready_send)
        async with ready_receive:
            async for batch in ready_receive:
                ids = await _write_batch(services, batch, now=now, counters=counters)
                if ids:  # committed: the mailer may start on this batch while the next is written
                    outbox.wake(services.bus, ids[0])
                queued.extend(ids)
    return queued


async def _read(services: Services, now: dt.datetime, lookback_start: dt.datetime,
                send: trio.MemorySendChannel[Read]) -> None:
    """Stage 1: each batch of due users, their notifications and watched topics."""
    db, limit = services.db, services.settings.digest_batch_size
    after: tuple[dt.datetime, str] | None = None
    async with send:
        while True:
            users = await digests.due_users(db, now=now, limit=limit, after=after)
            if not users:
                return
            after = (users[-1]["digest_next_at"], users[-1]["id"])
            user_ids = [u["id"] for u in users]
            rows = await digests.eligible_notifications(db, user_ids=user_ids, now=now, lookback_start=lookback_start)
            await send.send((users, rows, await digests.watched_topics(db, user_ids)))


async def _render(services: Services, now: dt.datetime, lookback_start: dt.datetime,
                  receive: trio.MemoryReceiveChannel[Read],
                  send: trio.MemorySendChannel[Batch]) -> None:
    """Stage 2: group and render each batch in a worker thread."""
    secret: bytes | None = None
    async with receive, send:
        async for users, rows, watched in receive:
            if secret is None:
                secret = (await unsubscribe.keys(services))[0]  # the first key signs
            batch = await trio.to_thread.run_sync(
                partial(prepare, services, users, rows, watched, now=now, lookback_start=lookback_start,
                        secret=secret))
            await send.send(batch)


def prepare(services: Services, users: list[dict[str, Any]], rows: Sequence[Any], watched: dict[str, set[str]],
             *, now: dt.datetime, lookback_start: dt.datetime, secret: bytes) -> Batch:
    """Per user of the batch: the next slot, the digest record and, when there is something to
    report, the rendered message (runs in a worker thread)."""
    settings = services.settings
    render = renderer_for(settings)
    nothing: frozenset[str] = frozenset()
    by_user: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        by_user[row["recipient_user_id"]].append(row)
    batch = Batch(users=len(users))
    for user in users:
        items = by_user.get(user["id"], []) if user["active"] else []
        last = user["digest_last_at"]
        period_start = max(last, lookback_start) if last else lookback_start
        upcoming = next_slot(now, cadence=user["digest_cadence"], digest_time=user["digest_time"],
                             weekday=user["digest_weekday"], timezone=user["timezone"])
        batch.slots.append((user["id"], user["digest_next_at"], upcoming))
        batch.records.append({
            "user_id": user["id"], "slot_at": user["digest_next_at"], "period_start": period_start,
            "notification_ids": [i["id"] for i in items], "outbox_id": None,
        })
        if not items:
            batch.messages.append(None)  # nothing to report: no mail, but the period is recorded
            continue
        link = unsubscribe.url(settings.public_url, unsubscribe.sign(secret, user["id"], user["unsubscribe_epoch"]))
        groups = group_items(items, sample=DigestItem, watched=watched.get(user["id"], nothing))
        subject, text, html = render.digest(
            user=user, cadence=user["digest_cadence"], groups=groups, total=len(items), period_start=period_start,
            period_end=now, unsubscribe_url=link, unread_total=user["unread_total"],
        )
        batch.messages.append({
            "recipient_user_id": user["id"], "user": user, "to": user["email"], "subject": subject, "text": text,
            "html": html, "kind": "digest",
            "headers": {"List-Unsubscribe": f"<{link}>", "List-Unsubscribe-Post": LIST_UNSUBSCRIBE_POST},
        })
    return batch


async def _write_batch(services: Services, batch: Batch, *, now: dt.datetime, counters: dict[str, int]) -> list[str]:
    db = services.db
    async with db.transaction() as tx:
        claimed = await digests.claim_slots(tx, slots=batch.slots, now=now)
        records, messages = [], []
        for (user_id, _, _), record, message in zip(batch.slots, batch.records, batch.messages, strict=True):
            if user_id in claimed:
                records.append(record)
                if message is not None:
                    messages.append((message, record))
        ids = await outbox.enqueue_many(tx, [m for m, _ in messages], now=now)
        for (_, record), outbox_id in zip(messages, ids, strict=True):
            record["outbox_id"] = outbox_id
        await digests.record_batch(tx, records=records, now=now)
    counters["batches"] += 1
    counters["due"] += batch.users
    counters["digests"] += len(messages)
    counters["empty"] += len(records) - len(messages)
    counters["notifications"] += sum(len(r["notification_ids"]) for r in records)
    return ids
