"""Mail as an operator sees it: the outbox by state, retrying or cancelling a message, each user's
next digest, and a preview of it (the console's "Digests and mail" page).

Retry and cancel change one outbox row in one transaction (``roost.storage.outbox``), with the
notification the message e-mails kept in step: a retried mail takes its notification back out of
the next digest, a cancelled one sends it there (as a failure does). A retry wakes the mailer after
the commit. A preview renders the digest the user would get if their slot came now, as the tick
does (``roost.domain.digest.assemble.prepare``), and queues or marks nothing.
"""

from __future__ import annotations

import datetime as dt
import secrets
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

import trio

from roost.domain.digest.assemble import prepare
from roost.errors import Conflict, InvalidInput, NotFound
from roost.runtime import topics
from roost.runtime.services import Services
from roost.storage import digests, outbox
from roost.storage.database import Row

STATES = outbox.STATES
MAX_ID_LENGTH = 100  # ids are ~30 characters; anything much longer is not one


def _check_id(value: str, what: str) -> str:
    if not value or len(value) > MAX_ID_LENGTH or "\x00" in value:
        raise NotFound(f"no {what} {value[:MAX_ID_LENGTH]!r}")
    return value


async def outbox_page(services: Services, state: str, *, limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
    """One page of the messages in ``state``, newest first, and every state's (capped) count.

    Raises:
        InvalidInput: an unknown state, a limit out of 1..1000 or a malformed cursor.
    """
    if state not in STATES:
        raise InvalidInput(f"state: one of {', '.join(STATES)}")
    if not 1 <= limit <= 1000:
        raise InvalidInput("limit: 1 to 1000")
    if cursor is not None and (len(cursor) > MAX_ID_LENGTH or not cursor.isascii() or not cursor.isprintable()):
        raise InvalidInput("cursor: not a cursor from a previous page of this list")
    page = await outbox.list_by_state(services.db, state, limit=limit, cursor=cursor)
    page["counts"] = await outbox.state_counts(services.db)
    page["count_cap"] = outbox.COUNT_CAP
    return page


async def outbox_row(services: Services, outbox_id: str) -> Row:
    """One message (its body too).

    Raises:
        NotFound: no such message.
    """
    return await outbox.get(services.db, _check_id(outbox_id, "outbox message"))


async def retry(services: Services, outbox_id: str) -> Row:
    """Queue a failed (or cancelled) message again (held while its recipient's quiet hours last).

    Raises:
        NotFound: no such message.
        Conflict: the message is not failed (queued, held, being sent or sent).
    """
    await outbox_row(services, outbox_id)
    async with services.db.transaction() as tx:
        row = await outbox.retry(tx, outbox_id, now=services.clock.now())
    if row is None:
        current = await outbox_row(services, outbox_id)
        raise Conflict(f"message {outbox_id} is {current['status']}: only a failed message can be retried")
    if row["status"] == "queued":
        outbox.wake(services.bus, outbox_id)
    services.bus.publish(topics.MAIL_CHANGED, outbox_id)
    return row


async def cancel(services: Services, outbox_id: str, *, by: str) -> Row:
    """Cancel a failed, queued or held message: it is never sent (``by``: who, kept on the row).

    Raises:
        NotFound: no such message.
        Conflict: the message is being sent, sent, or cancelled already.
    """
    await outbox_row(services, outbox_id)
    async with services.db.transaction() as tx:
        row = await outbox.cancel(tx, outbox_id, now=services.clock.now(), by=by)
    if row is None:
        current = await outbox_row(services, outbox_id)
        state = "cancelled" if current.get("cancelled_at") else current["status"]
        raise Conflict(f"message {outbox_id} is {state}: it cannot be cancelled")
    services.bus.publish(topics.MAIL_CHANGED, outbox_id)
    return row


def local_time(at: dt.datetime, timezone: str) -> str:
    """``at`` in ``timezone`` as the console shows it ("Mon 2026-12-07 08:00 Europe/Paris")."""
    try:
        zone = ZoneInfo(timezone)
    except (KeyError, ValueError):  # a zone this machine does not know: UTC rather than nothing
        zone, timezone = ZoneInfo("UTC"), "UTC"
    return at.astimezone(zone).strftime("%a %Y-%m-%d %H:%M ") + timezone


async def next_digests(services: Services, *, limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
    """One page of scheduled digests, soonest first, each with ``local_next`` (the slot in the user's zone).

    Raises:
        InvalidInput: a limit out of 1..1000 or a cursor this list did not hand out.
    """
    if not 1 <= limit <= 1000:
        raise InvalidInput("limit: 1 to 1000")
    if cursor is not None and len(cursor) > 400:
        raise InvalidInput("cursor: not a cursor from a previous page of this list")
    page = await digests.upcoming(services.db, limit=limit, cursor=cursor)
    for row in page["items"]:
        row["local_next"] = local_time(row["next_at"], row["timezone"])
    return page


async def preview(services: Services, user_id: str) -> dict[str, Any]:
    """The digest ``user_id`` would get if their slot came now: ``subject``, ``text``, ``html`` (None
    when there is nothing to report), ``notifications`` (how many), ``next_at`` and ``local_next``.
    Its unsubscribe link is signed with a throwaway key, so a preview's link unsubscribes nobody.

    Raises:
        NotFound: no such user, or the user has no digest scheduled.
    """
    db = services.db
    user = await digests.scheduled_user(db, _check_id(user_id, "user"))
    if user is None:
        raise NotFound(f"no scheduled digest for user {user_id!r}")
    now = services.clock.now()
    lookback_start = now - dt.timedelta(days=services.settings.digest_lookback_days)
    rows = await digests.eligible_notifications(db, user_ids=[user_id], now=now, lookback_start=lookback_start)
    watched = await digests.watched_topics(db, [user_id])
    batch = await trio.to_thread.run_sync(partial(
        prepare, services, [user], rows, watched, now=now, lookback_start=lookback_start,
        secret=secrets.token_bytes(32)))
    message = batch.messages[0]
    return {
        "user": user, "next_at": user["digest_next_at"],
        "local_next": local_time(user["digest_next_at"], user["timezone"]),
        "notifications": len(batch.records[0]["notification_ids"]),
        "subject": message["subject"] if message else None,
        "text": message["text"] if message else None,
        "html": message["html"] if message else None,
    }
