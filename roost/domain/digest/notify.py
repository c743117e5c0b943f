"""Creating a notification: store it and, for an ``email: true`` notification in the
``personal-direct`` category, queue its own e-mail in the same transaction (quiet hours
respected). Everything else waits for the digest."""

from __future__ import annotations

from typing import Any

from roost.domain.digest.render import Renderer
from roost.runtime.services import Services
from roost.storage import notifications, outbox, tenancy
from roost.storage.database import Row

_renderers: dict[str | None, Renderer] = {}


def renderer(services: Services) -> Renderer:
    directory = services.settings.templates_dir
    if directory not in _renderers:
        _renderers[directory] = Renderer(directory)
    return _renderers[directory]


async def create(services: Services, *, recipient_user_id: str, event_kind: str, topic: str,
                 actor_user_id: str | None, payload: dict[str, Any], email: bool) -> Row:
    now = services.clock.now()
    queued: str | None = None
    async with services.db.transaction() as tx:
        recipient = await tenancy.get_user(tx, recipient_user_id)
        actor = await tenancy.get_user(tx, actor_user_id) if actor_user_id else None
        notification_id = await notifications.insert(
            tx, recipient_user_id=recipient_user_id, event_kind=event_kind, topic=topic,
            actor_user_id=actor_user_id, payload=payload, email=email, now=now,
        )
        row = await notifications.get(tx, notification_id)
        if email and payload.get("category") == notifications.PERSONAL_DIRECT and recipient["active"]:
            subject, text, html = renderer(services).notification(
                user=recipient, notification=row, actor_name=actor["display_name"] if actor else None,
                app_url=services.settings.public_url,
            )
            queued = await outbox.enqueue(
                tx, recipient_user_id=recipient_user_id, to=recipient["email"], subject=subject, text=text,
                html=html, kind="notification", now=now,
            )
            await notifications.mark_emailed(tx, notification_id, now)
            row = await notifications.get(tx, notification_id)
    if queued:
        outbox.wake(services.bus, queued)
    return row
