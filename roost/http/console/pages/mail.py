"""Digests and mail: each user's next digest in their local time with a preview, and the outbox by state
(queued, held until, sent, failed with its reason), paged, with retry and cancel of a message.

Retry and cancel are ``roost.domain.mail.retry`` / ``cancel``. The preview of a digest is the HTML the
user would get now (``roost.domain.mail.preview``), served on its own URL with a CSP that allows no
script, no request anywhere and sandboxes it, and shown in an ``<iframe sandbox>`` with no permission.
"""

from __future__ import annotations

import re
from functools import wraps
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from quart import Response, request, url_for

from roost.domain import mail
from roost.errors import InvalidInput, NotFound
from roost.http.console import console_bp
from roost.http.console.auth import action, bodies_visible, done, operator, page, safe_next
from roost.http.console.render import add_nav, error_page, html_response, page_html
from roost.http.context import services

add_nav("Mail", "console.mail_page", order=50)

PAGE_SIZE = 50
MessageView = Callable[[str], Awaitable[Any]]
_ID = re.compile(r"^[a-z]{2,8}_[0-9a-z]{1,40}$")  # roost's ids: a prefix and base32 (roost.storage.ids)
# The preview's own policy: nothing loads, nothing runs, and it is a sandbox even if opened on its own.
PREVIEW_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox; "
               "frame-ancestors 'self'; base-uri 'none'; form-action 'none'")
STATE_LABELS = {"queued": "Queued", "held": "Held", "sending": "Sending", "sent": "Sent", "failed": "Failed",
                "cancelled": "Cancelled"}


def _arg(name: str, limit: int) -> str | None:
    value = request.args.get(name) or None
    if value is not None and (len(value) > limit or "\x00" in value):
        raise InvalidInput(f"{name}: not a value from this page")
    return value


async def mail_context() -> dict[str, Any]:
    s = services()
    state = _arg("state", 20) or "failed"
    if state not in mail.STATES:
        raise InvalidInput(f"state: one of {', '.join(mail.STATES)}")
    cursor = _arg("cursor", 100)
    digests_cursor = _arg("digests", 400)
    box = await mail.outbox_page(s, state, limit=PAGE_SIZE, cursor=cursor)
    # A live refresh of the outbox reads no digests.
    upcoming = ({"items": [], "next_cursor": None} if request.args.get("fragment") == "outbox"
                else await mail.next_digests(s, limit=PAGE_SIZE, cursor=digests_cursor))
    keep = {"digests": digests_cursor} if digests_cursor else {}
    return {
        "state": state, "states": [(st, STATE_LABELS[st]) for st in mail.STATES], "box": box,
        "count_cap": box["count_cap"], "upcoming": upcoming["items"],
        "outbox_next": (url_for("console.mail_page", state=state, cursor=box["next_cursor"], **keep) + "#outbox"
                        if box["next_cursor"] else None),
        "outbox_first": url_for("console.mail_page", state=state, **keep) + "#outbox" if cursor else None,
        "digests_next": (url_for("console.mail_page", state=state, digests=upcoming["next_cursor"]) + "#digests"
                         if upcoming["next_cursor"] else None),
        "digests_first": url_for("console.mail_page", state=state) + "#digests" if digests_cursor else None,
    }


@console_bp.get("/mail")
@page()
async def mail_page() -> Response:
    return await page_html("console/mail.html", **await mail_context())


def _known_id(value: str) -> bool:
    return len(value) <= 60 and bool(_ID.match(value))


@console_bp.get("/mail/digests/<user_id>")
@page()
async def digest_preview(user_id: str) -> Response:
    """The page around a preview: subject, how many notifications, the slot, and the sandboxed frame."""
    if not _known_id(user_id):
        return await error_page(404, "no such user")
    shown = await mail.preview(services(), user_id) if bodies_visible() else None
    if shown is None:  # read role: the preview is a body, shown only when asked for
        await mail.preview(services(), user_id)  # still a 404 for a user without a digest
    return await page_html("console/mail_preview.html", user_id=user_id, shown=shown)


@console_bp.get("/mail/digests/<user_id>/preview.html")
@page()
async def digest_preview_html(user_id: str) -> Response:
    """The rendered HTML alone, for the frame: its own CSP (no script, no fetch, sandboxed)."""
    if not _known_id(user_id):
        return await error_page(404, "no such user")
    if not bodies_visible():
        return await error_page(403, "the read role sees previews only when it asks (show=bodies)")
    shown = await mail.preview(services(), user_id)
    body = shown["html"] or "<!doctype html><p>Nothing to report: no digest would go out now.</p>"
    response = html_response(body)
    response.headers["Content-Security-Policy"] = PREVIEW_CSP
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    return response


async def _back() -> str:
    """Where the form came from (a console path), else the mail page; never a ``?fragment=`` URL (a form
    in a live-swapped section carries the fragment's address)."""
    back = safe_next((await request.form).get("back"), url_for("console.mail_page"))
    parts = urlsplit(back)
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "fragment"])
    return urlunsplit(("", "", parts.path, query, "")) + "#outbox"


def message_action(verb: str, audited_as: str) -> Callable[[MessageView], Any]:
    """Route ``POST /mail/<outbox_id>/<verb>`` to the view, audited as ``audited_as``; an unknown
    ``outbox_id`` gets the 404 page before the view runs (retry and cancel share that check)."""

    def decorate(view: MessageView) -> Any:
        @wraps(view)
        async def known(outbox_id: str) -> Any:
            if not _known_id(outbox_id):
                return await error_page(404, "no such message")
            try:
                await mail.outbox_row(services(), outbox_id)
            except NotFound as exc:
                return await error_page(404, exc.message)
            return await view(outbox_id)

        return console_bp.post(f"/mail/<outbox_id>/{verb}")(action(audited_as)(known))

    return decorate


@message_action("retry", "mail_retry")
async def retry_mail(outbox_id: str) -> Any:
    """Queue a failed (or cancelled) message again; 409 (a message) when it is not failed."""
    row = await mail.retry(services(), outbox_id)
    held = f", held until {row['hold_until']:%Y-%m-%d %H:%M} UTC (quiet hours)" if row["status"] == "held" else ""
    return done(f"Message to {row['to_addr']} queued again{held}.", await _back(),
                target=("outbox", outbox_id), details={"status": row["status"]})


@message_action("cancel", "mail_cancel")
async def cancel_mail(outbox_id: str) -> Any:
    """Cancel a failed, queued or held message; 409 (a message) when it is being sent or sent."""
    op = operator()
    row = await mail.cancel(services(), outbox_id, by=f"console:{op.name if op else '?'}")
    return done(f"Message to {row['to_addr']} cancelled.", await _back(),
                target=("outbox", outbox_id))
