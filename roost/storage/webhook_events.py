"""Webhook events into the delivery outbox: their bodies, and queueing them in the caller's transaction.

The body of a delivery is serialised here (``body_for``), once, when it is written: every retry
sends the same bytes. ``enqueue`` and ``enqueue_for_users`` are the emit of the storage modules
whose writes are events (handoffs, dispatch batches, the mail outbox, scout items); they build and
serialise nothing when no enabled endpoint of the account wants the event, so an account without
webhooks pays one indexed read per event, or per batch of events (``enqueue_for_users``).

Neither lets a webhook fail the write it rides on: an event whose body would be over
``MAX_BODY_BYTES`` (a plugin's huge assessment or classifier payload) is logged and not queued.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Callable, Iterable, Sequence

from roost.errors import InvalidInput, TooLarge
from roost.runtime.logging import get_logger
from roost.storage import webhooks  # a module: webhooks -> outbox -> webhook_events is a cycle
from roost.storage.database import Connection, Row

EVENTS = (
    "handoff.created", "handoff.claimed", "handoff.cancelled", "handoff.updated",
    "batch.done", "proposal.acked", "digest.sent", "scout.failed_item",
)
MAX_BODY_BYTES = 256 * 1024
log = get_logger()


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def body_for(event: str, payload: Any, now: dt.datetime) -> str:
    """The body a delivery of ``event`` sends: ``{"type", "timestamp", "data": payload}``, datetimes
    as ISO-8601 UTC (``...Z``).

    Raises:
        InvalidInput: an unknown event, or a payload that is not JSON.
        TooLarge: the body is over ``MAX_BODY_BYTES``.
    """
    if event not in EVENTS:
        raise InvalidInput(f"unknown webhook event {event!r}", code="unknown_event")
    envelope = {"type": event, "timestamp": _json_default(now), "data": payload}
    try:
        body = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"the {event} payload is not JSON: {exc}") from exc
    if len(body.encode()) > MAX_BODY_BYTES:
        raise TooLarge(f"the {event} body is over {MAX_BODY_BYTES} bytes")
    return body


async def enqueue(conn: Connection, *, account_id: str, event: str, payload: Any, now: dt.datetime) -> int:
    """``add_deliveries`` of ``payload``'s body, serialised only when an enabled endpoint of the
    account is subscribed to ``event`` (in the caller's transaction); returns how many were written.

    Raises:
        InvalidInput: as ``body_for`` (only when some endpoint wants the event; too large: logged, not queued).
    """
    rows = await conn.fetch("SELECT events FROM webhook_endpoints WHERE account_id = $1 AND enabled", account_id)
    if not any(event in (r["events"] or []) for r in rows):
        return 0
    body = _body(event, payload, now, account_id)
    return 0 if body is None else await webhooks.add_deliveries(conn, account_id=account_id, event=event, body=body,
                                                                now=now)


def _body(event: str, payload: Any, now: dt.datetime, account_id: str) -> str | None:
    """``body_for``, or None (logged) when it is too large: the write goes on without its webhook."""
    try:
        return body_for(event, payload, now)
    except TooLarge as exc:
        log.error("webhook event not queued", webhook_event=event, account_id=account_id, error=exc.message)
        return None


async def enqueue_for_users(conn: Connection, event: str, rows: Sequence[Row], payload: Callable[[Row], Any], *,
                            now: dt.datetime) -> int:
    """``enqueue`` ``event`` once per row (each with a ``user_id``) to the endpoints of that user's
    account, with the body of ``payload(row)``; returns how many deliveries were written.

    One indexed query (``subscribed_users``) when no account of these users wants the event: no
    payload is built or serialised then.

    Raises:
        InvalidInput: as ``body_for`` (too large: logged, not queued).
    """
    accounts = await subscribed_users(conn, event, (r["user_id"] for r in rows))
    written = 0
    for row in rows:
        account_id = accounts.get(row["user_id"])
        body = None if account_id is None else _body(event, payload(row), now, account_id)
        if account_id is not None and body is not None:
            written += await webhooks.add_deliveries(conn, account_id=account_id, event=event, body=body, now=now)
    return written


async def subscribed_users(conn: Connection, event: str, user_ids: Iterable[str]) -> dict[str, str]:
    """Which of ``user_ids`` belong to an account with an enabled endpoint subscribed to ``event``:
    user id -> account id (one indexed query, however many users)."""
    wanted = list(dict.fromkeys(user_ids))
    if not wanted:
        return {}
    rows = await conn.fetch(
        "SELECT u.id AS user_id, u.account_id, e.events FROM users u"
        " JOIN webhook_endpoints e ON e.account_id = u.account_id AND e.enabled"
        f" WHERE u.id {conn.dialect.in_list('$1')}", wanted)
    return {r["user_id"]: r["account_id"] for r in rows if event in (r["events"] or [])}
