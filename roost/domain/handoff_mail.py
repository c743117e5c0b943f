"""A handoff's mail: the escalation to the account's owners, admins and engineers, and then the
assessor's read of it to the same people.

Rendered here (``roost.domain.digest.render``: the ``escalation`` and ``assessment`` templates,
overridable with ``ROOST_TEMPLATES_DIR``), stored by ``roost.storage.handoff_mail``. Every link
goes to the app: "Claim it" is ``ROOST_LINK_HANDOFF`` (roost's own handoff API answers a person
with 401). Times are in each recipient's zone.

The escalation mail carries the assessment when it is done by the time the mail is queued; when
it comes later, ``queue_assessment`` mails it to those the escalation went to (each once).
"""

from __future__ import annotations

from typing import Any

from roost.domain.digest.render import Renderer, renderer_for
from roost.runtime.services import Services
from roost.storage import handoff_mail as repo
from roost.storage.database import Row

SUBJECT_MAX_CHARS = 300


def _messages(render: Any, kind: str, handoff: Row, creator: str | None, recipients: list[Row]) -> list[dict[str, Any]]:
    messages = []
    for user in recipients:
        subject, text, html = render(user=user, handoff=handoff, creator_name=creator,
                                     assessment=handoff["assessment"])
        messages.append({"recipient_user_id": user["id"], "user": user, "to": user["email"],
                         "subject": subject[:SUBJECT_MAX_CHARS], "text": text, "html": html, "kind": kind,
                         "headers": {"X-Roost-Handoff": handoff["id"]}})
    return messages


async def queue_escalation(services: Services, handoff_id: str) -> list[str]:
    """Render and queue the mail of one escalation whose mail is pending (once, whichever process
    gets there first); returns the outbox ids to wake the mailer with."""
    found = await repo.escalation_recipients(services.db, handoff_id)
    if found is None:
        return []
    handoff, creator, recipients = found
    render: Renderer = renderer_for(services.settings)
    messages = _messages(render.escalation, "handoff_escalation", handoff, creator, recipients)
    return await repo.queue_escalation(services.db, handoff_id, messages, services.clock.now(),
                                       carries_assessment=isinstance(handoff["assessment"], dict))


async def queue_assessment(services: Services, handoff_id: str) -> list[str]:
    """Render and queue the assessment mail of an escalation to those its mail went to and who have
    not had this one; nothing for a park, or before the assessment is done."""
    found = await repo.assessment_recipients(services.db, handoff_id)
    if found is None:
        return []
    handoff, creator, recipients = found
    if handoff["intent"] != "escalate" or not isinstance(handoff["assessment"], dict):
        return []
    render = renderer_for(services.settings)
    messages = _messages(render.assessment, "handoff_assessment", handoff, creator, recipients)
    # With no one left to mail, this still clears the handoff's mark.
    return await repo.queue_assessment(services.db, handoff_id, messages, services.clock.now())
