"""Creating a notification: store it and, for an ``email: true`` notification in the
``personal-direct`` category, queue its own e-mail in the same transaction (quiet hours
respected). Everything else waits for the digest."""

from __future__ import annotations

import datetime as dt
from typing import Any, Sequence

import trio

from roost.domain.digest.render import Renderer, renderer_for
from roost.runtime.services import Services
from roost.storage import notifications, outbox, tenancy
from roost.storage.database import Connection, Row

RENDER_INLINE = 8  # more mails than this are rendered in a worker thread


def renderer(services: Services) -> Renderer:
    """The process's renderer (templates, links into the app, event labels), built once per settings."""
    return renderer_for(services.settings)


def mailed_at_once(payload: dict[str, Any], email: bool) -> bool:
    """Whether a notification gets its own e-mail now (else it waits for the digest)."""
    return email and payload.get("category") == notifications.PERSONAL_DIRECT


async def queue_mails(services: Services, tx: Connection, mails: Sequence[tuple[Row, Row]], *,
                      actor_name: str | None, now: dt.datetime) -> list[str]:
    """In the caller's transaction, queue the e-mail of each (recipient, notification) pair and mark
    the notifications e-mailed (quiet hours respected: such mail is held); returns the outbox ids
    to ``outbox.wake`` after the commit. Many mails (a topic event's) are rendered in a worker
    thread: 10,000 take about 2 s of CPU, which must not stall the event loop."""
    render = renderer(services).notification
    app_url = services.settings.public_url

    def compose() -> list[dict[str, Any]]:
        messages = []
        for recipient, row in mails:
            subject, text, html = render(user=recipient, notification=row, actor_name=actor_name, app_url=app_url)
            messages.append({"recipient_user_id": recipient["id"], "to": recipient["email"], "subject": subject,
                             "text": text, "html": html, "kind": "notification", "user": recipient})
        return messages

    messages = compose() if len(mails) <= RENDER_INLINE else await trio.to_thread.run_sync(compose)
    queued = await outbox.enqueue_many(tx, messages, now=now)
    await notifications.mark_emailed(tx, [(q, row["id"]) for q, (_, row) in zip(queued, mails, strict=True)], now)
    return queued


async def create(services: Services, *, recipient_user_id: str, event_kind: str, topic: str,
                 actor_user_id: str | None, payload: dict[str, Any], email: bool) -> Row:
    now = services.clock.now()
    queued: list[str] = []
    async with services.db.transaction() as tx:
        recipient = await tenancy.get_user(tx, recipient_user_id)
        actor = await tenancy.get_user(tx, actor_user_id) if actor_user_id else None
        notification_id = await notifications.insert(
            tx, recipient_user_id=recipient_user_id, event_kind=event_kind, topic=topic,
            actor_user_id=actor_user_id, payload=payload, email=email, now=now,
        )
        row = await notifications.get(tx, notification_id)
        if mailed_at_once(payload, email) and recipient["active"]:
            queued = await queue_mails(services, tx, [(recipient, row)],
                                       actor_name=actor["display_name"] if actor else None, now=now)
            row = await notifications.get(tx, notification_id)
    if queued:
        outbox.wake(services.bus, *queued)
    return row
