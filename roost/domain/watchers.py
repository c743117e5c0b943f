"""Topics and watchers: a topic event notifies the topic's watchers; watches listed and dropped.

A watch is (user, topic) with ``last_participation_at``; the digest tick drops watches nobody took
part in for ``ROOST_WATCH_DECAY_DAYS`` (``notifications.decay_watches``). A topic event
(``publish_event``) makes, in one transaction:

- one notification for every active watcher of the topic in the actor's account except the actor,
  in one statement (``roost.storage.watchers.fan_out``); these go the way of any notification: a
  personal-direct one with ``email`` gets its own mail now (``notify.queue_mails``), the rest wait
  for the digest;
- the actor's participation: the actor's watch on the topic is renewed, or made. Taking part in a
  topic makes you one of its watchers, as the seed's decay implies (a watch lives as long as its
  owner takes part: "watching rows whose last_participation_at is >90 days" are decayed), so the
  actor hears of the replies to what they did;
- with an ``idempotency_key``, the key's record (unique per account): a repeat of the same request
  answers the first answer and notifies nobody again; the same key with another request is a
  ``Conflict`` (409 ``idempotency_key_reused``), since answering the first answer would hide that
  the second event was never published.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from roost.domain.digest import notify
from roost.errors import Conflict, NotFound, TooLarge
from roost.runtime.services import Services
from roost.storage import notifications, outbox, tenancy
from roost.storage import watchers as store

# Each watcher gets its own copy of the payload: 16 KiB to 10,000 watchers is 160 MB already.
MAX_PAYLOAD_BYTES = 16 * 1024
KEY_RETENTION = dt.timedelta(days=7)  # how long a repeat of an idempotency key is recognised


def _fingerprint(**request: Any) -> str:
    text = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


async def publish_event(services: Services, *, topic: str, event_kind: str, actor_user_id: str,
                        payload: dict[str, Any], email: bool, idempotency_key: str | None = None) -> dict[str, int]:
    """Notify the topic's watchers of an event by ``actor_user_id`` (see the module docstring);
    returns ``{"notified": N}``.

    Raises:
        NotFound: no user ``actor_user_id``.
        TooLarge: a payload over ``MAX_PAYLOAD_BYTES`` as JSON.
        Conflict: ``idempotency_key`` was used in the account for another request.
    """
    size = len(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"))
    if size > MAX_PAYLOAD_BYTES:
        raise TooLarge(f"payload is {size} bytes as JSON; a topic event's payload may be at most "
                       f"{MAX_PAYLOAD_BYTES} (every watcher gets a copy)", code="payload_too_large")
    now = services.clock.now()
    category = payload.get("category")
    mail_now = notify.mailed_at_once(payload, email)
    queued: list[str] = []
    async with services.db.transaction() as tx:
        actor = await tenancy.get_user(tx, actor_user_id)
        key_id = None
        if idempotency_key is not None:
            fingerprint = _fingerprint(topic=topic, event_kind=event_kind, actor_user_id=actor_user_id,
                                       payload=payload, email=email)
            key_id, first = await store.claim_key(tx, account_id=actor["account_id"], key=idempotency_key,
                                                   topic=topic, fingerprint=fingerprint, now=now)
            if first is not None:
                if first["fingerprint"] != fingerprint:
                    raise Conflict("this idempotency_key was used for another event in this account; use a new key "
                                   "for a new event", code="idempotency_key_reused")
                return {"notified": int(first["notified"])}
        made = await store.fan_out(
            tx, account_id=actor["account_id"], topic=topic, event_kind=event_kind, actor_user_id=actor_user_id,
            payload=payload, category=category if isinstance(category, str) else None, email=email, now=now,
            active_since=now - dt.timedelta(days=services.settings.watch_decay_days), returning=mail_now,
        )
        if isinstance(made, list):
            notified = len(made)
            if made:
                mails = await notifications.with_recipients(tx, [r["id"] for r in made])
                queued = await notify.queue_mails(services, tx, mails, actor_name=actor["display_name"], now=now)
        else:
            notified = made
        await notifications.watch(tx, user_id=actor_user_id, topic=topic, now=now)
        if key_id is not None:
            await store.settle_key(tx, key_id, notified)
    if queued:
        outbox.wake(services.bus, *queued)
    return {"notified": notified}


async def list_watches(services: Services, user_id: str, *, limit: int, cursor: str | None) -> dict[str, Any]:
    """The user's watches in topic order, a page at a time.

    Raises:
        NotFound: no user ``user_id``.
        InvalidInput: ``bad_cursor``.
    """
    db = services.db
    await tenancy.get_user(db, user_id)
    return await store.list_watches(db, user_id, limit=limit, cursor=cursor)


async def unwatch(services: Services, *, user_id: str, topic: str) -> dict[str, Any]:
    """Stop ``user_id`` watching ``topic``; returns the watch as it was.

    Raises:
        NotFound: no user ``user_id``, or the user does not watch ``topic``.
    """
    async with services.db.transaction() as tx:
        await tenancy.get_user(tx, user_id)
        row = await store.delete_watch(tx, user_id, topic)
    if row is None:
        raise NotFound(f"user {user_id!r} does not watch this topic", code="no_such_watch")
    return row


async def prune_keys(services: Services, now: dt.datetime) -> int:
    """Forget idempotency keys older than ``KEY_RETENTION`` (the pruner's step)."""
    return await store.prune_keys(services.db, older_than=now - KEY_RETENTION)
