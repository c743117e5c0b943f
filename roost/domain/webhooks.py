"""Signed webhooks (Standard Webhooks): an account's endpoints, the events they get, and emitting them.

Emitting is a transactional outbox, as mail is: inside the transaction that makes the change,
``emit`` writes one delivery per enabled endpoint of the account subscribed to the event; after
the commit, ``wake(bus)`` tells the delivery actor (``roost.actors.webhooks``). A rollback
leaves no delivery, and a process killed between the commit and the wake-up loses nothing (the
actor reads every due delivery when it starts, and polls)::

    async with services.db.transaction() as tx:
        row = await handoffs.create(tx, ...)
        await webhooks.emit(tx, account_id=row["account_id"], event="handoff.created",
                            payload={"seq": seq, "handoff": handoffs.card(row)})
    webhooks.wake(services.bus)

Events and their payloads (the ``data`` of the body; the same object the socket or the API shows),
and where each is queued, in the transaction of the write (``roost.storage.webhook_events``):

- ``handoff.created``, ``handoff.claimed``, ``handoff.cancelled``, ``handoff.updated``:
  ``{"seq": <the account's event seq>, "handoff": <the card of the socket's handoff_* frame:
  the handoff without its snapshot>}``; with the socket's event (``roost.storage.handoffs.add_event``).
- ``batch.done``: ``{"batch": <GET /api/v1/outreach/batches/{id}: the batch with its counts>}``; when
  its last open item ends or a send finds none open (``roost.storage.dispatch``).
- ``proposal.acked``: ``{"proposal": <the scout_proposal frame's proposal>, "user_id": ...,
  "device_id": <the acking socket's device>, "acked_at": ...}``; once per proposal an ack batch
  changed (``roost.actors.deliverer`` through ``emit_for_users``: one query when nobody wants it).
- ``digest.sent``: ``{"user_id": ..., "digest_id": ..., "outbox_id": ..., "notifications": <how
  many>, "subject": ..., "sent_at": ...}``; when the digest's mail is marked sent
  (``roost.storage.outbox.mark_sent_many``).
- ``scout.failed_item``: ``{"scout_id": ..., "item": <the item as GET
  /api/admin/scouts/{id}/items shows it>}``; when a triage failure at ``max_failures`` marks it
  ``failed`` (``roost.storage.scouts.record_outcomes``).

Datetimes in a payload are written as ISO-8601 UTC (``...Z``). The body is
``{"type": <event>, "timestamp": <when emitted, ISO-8601>, "data": <payload>}``, serialised once
when emitted, so every retry sends the same bytes.

Secrets are ``whsec_`` + base64 of 32 random bytes, shown once (create, rotate-secret). They are
stored sealed (Fernet under an HKDF sub-key of ``ROOST_SECRET_KEYS``, purpose ``PURPOSE``) when a
secret key is set, else as given (the start-up log and ``/api/admin/status`` say secrets are
unsealed). ``reseal`` re-encrypts them under the first key (and seals plain ones), for ``roost
reseal`` before an old key is dropped.
After a rotation the previous secret also signs for ``webhook_rotation_overlap_s`` (both
signatures, space-separated in ``webhook-signature``, as the specification allows), so a receiver
can switch without dropping a delivery.

Endpoint URLs obey the destinations policy (``roost.runtime.destinations``): checked when saved
(400 ``destination_not_allowed``) and again at every connection, on the resolved address.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets as random_secrets
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

from roost.errors import InvalidInput, MissingReference, NotConfigured, NotFound
from roost.runtime import topics
from roost.runtime.bus import Bus
from roost.runtime.clock import utcnow
from roost.runtime.destinations import DestinationNotAllowed, check_destination
from roost.runtime.services import Services
from roost.storage import webhook_events
from roost.storage import webhooks as repo
from roost.storage.database import Connection, Database, Row
from roost.storage.scout_config import subkey
from roost.storage.webhook_events import EVENTS as EVENTS  # re-exported: the HTTP layer names them from here
from roost.storage.webhook_events import body_for

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
PURPOSE = b"roost/webhook-secrets/fernet/v1"
MAX_URL_CHARS = 2000


# -- emitting --------------------------------------------------------------------------------------


async def emit(conn: Connection, *, account_id: str, event: str, payload: Any, now: dt.datetime | None = None) -> int:
    """Queue ``event`` for every enabled endpoint of the account subscribed to it, in the caller's
    transaction ``conn``; returns how many deliveries were queued. Call ``wake`` after the commit.

    Raises:
        InvalidInput: an unknown event, or a payload that is not JSON.
        TooLarge: the body is over ``MAX_BODY_BYTES``.
    """
    now = now or utcnow()
    return await repo.add_deliveries(conn, account_id=account_id, event=event, body=body_for(event, payload, now),
                                     now=now)


async def emit_for_users(conn: Connection, event: str, rows: Sequence[Row], payload: Callable[[Row], Any], *,
                         now: dt.datetime | None = None) -> int:
    """``emit`` ``event`` once per row (each with a ``user_id``) to the endpoints of that user's
    account, the payload ``payload(row)``, in the caller's transaction; returns how many
    deliveries were queued. For a hot path (a batch of acks): one indexed query when no account of
    these users wants the event, and no payload is built (``roost.storage.webhook_events.enqueue_for_users``).

    Raises:
        InvalidInput: as ``emit`` (a body too large is logged and not queued: the write goes on).
    """
    return await webhook_events.enqueue_for_users(conn, event, rows, payload, now=now or utcnow())


def wake(bus: Bus) -> None:
    """Tell the delivery actor that deliveries were committed (call after the commit)."""
    bus.publish(topics.WEBHOOKS_QUEUED)


# -- secrets and signatures ------------------------------------------------------------------------


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(random_secrets.token_bytes(SECRET_BYTES)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks signature ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class SecretBox:
    """Seals endpoint secrets for storage and opens them to sign (``keys``: the settings' sealing keys)."""

    def __init__(self, keys: Sequence[str]):
        self._first = self._all = None
        if keys:
            from cryptography.fernet import Fernet, MultiFernet

            fernets = [Fernet(base64.urlsafe_b64encode(subkey(k, PURPOSE))) for k in keys]
            self._first, self._all = fernets[0], MultiFernet(fernets)

    def seal(self, secret: str) -> str:
        if self._first is None:
            return "plain:" + secret
        return "fernet:" + self._first.encrypt(secret.encode()).decode()

    def open(self, stored: str) -> str:
        """The secret of a stored value.

        Raises:
            NotConfigured: it is sealed and no configured key opens it.
        """
        kind, _, value = stored.partition(":")
        if kind == "plain":
            return value
        if self._all is None:
            raise NotConfigured("a webhook secret is sealed but neither ROOST_SECRET_KEYS nor ROOST_SECRET_KEY is set")
        from cryptography.fernet import InvalidToken

        try:
            return self._all.decrypt(value.encode()).decode()
        except InvalidToken as exc:
            raise NotConfigured("a webhook secret was sealed with a key that is not in ROOST_SECRET_KEYS") from exc


async def signing_secrets(services: Services, endpoint_id: str, now: dt.datetime) -> list[str]:
    """The secrets that sign a delivery of the endpoint now: its secret, and the previous one
    during a rotation window.

    Raises:
        NotFound: the endpoint is gone.
        NotConfigured: a secret cannot be opened (see ``SecretBox.open``).
    """
    row = await repo.stored_secrets(services.db, endpoint_id)
    box = SecretBox(services.settings.sealing_keys)
    found = [box.open(row["secret"])]
    if row["previous_secret"] and row["previous_secret_until"] and row["previous_secret_until"] > now:
        found.append(box.open(row["previous_secret"]))
    return found


async def reseal(db: Database, keys: Sequence[str]) -> tuple[int, list[str]]:
    """Re-encrypt every endpoint's secrets under the first of ``keys`` (sealing plain ones).

    Returns how many endpoints were rewritten, and the ids of those with a secret no key opens
    (left as they were: rotate their secret).

    Raises:
        NotConfigured: no key is given.
    """
    if not keys:
        raise NotConfigured("nothing to seal with: set ROOST_SECRET_KEYS (or ROOST_SECRET_KEY) first")
    box, changed, failed = SecretBox(keys), 0, []
    for row in await repo.secrets_to_reseal(db):
        try:
            secret = box.seal(box.open(row["secret"]))
            previous = box.seal(box.open(row["previous_secret"])) if row["previous_secret"] else None
        except NotConfigured:
            failed.append(row["id"])
            continue
        changed += await repo.store_resealed(db, row["id"], secret=secret, previous=previous, was=row["secret"])
    return changed, failed


# -- endpoints (what the HTTP API calls) -----------------------------------------------------------


async def check_url(url: str) -> str:
    """``url`` if it may be an endpoint: http(s), a host, no credentials, an allowed destination.

    Raises:
        InvalidInput: ``invalid_url``, or ``destination_not_allowed`` (the policy refuses the host).
    """
    if len(url) > MAX_URL_CHARS or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise InvalidInput(f"url must be at most {MAX_URL_CHARS} characters without spaces or control characters",
                           code="invalid_url")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidInput(f"url is not a valid URL: {exc}", code="invalid_url") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("url must be an http:// or https:// URL with a host", code="invalid_url")
    if parts.username is not None or parts.password is not None:
        raise InvalidInput("url must not carry credentials (user:password@); endpoints verify the signature",
                           code="invalid_url")
    try:
        await check_destination(parts.hostname, port or (443 if parts.scheme == "https" else 80))
    except DestinationNotAllowed as exc:
        raise InvalidInput(str(exc), code="destination_not_allowed") from exc
    return url


def check_events(events: Sequence[str]) -> list[str]:
    """The events without repeats, in the order given.

    Raises:
        InvalidInput: none, or one that is not in ``EVENTS``.
    """
    unknown = [e for e in events if e not in EVENTS]
    if unknown or not events:
        raise InvalidInput(f"events must be one or more of {', '.join(EVENTS)}"
                           + (f"; unknown: {', '.join(map(repr, unknown[:5]))}" if unknown else ""),
                           code="unknown_event")
    return list(dict.fromkeys(events))


def view(row: Row) -> dict[str, Any]:
    """An endpoint as the API shows it (never its secret)."""
    public = {k: row[k] for k in ("id", "account_id", "url", "events", "description", "enabled", "disabled_reason",
                                  "failing_since", "created_at", "updated_at")}
    return {**public, "enabled": bool(row["enabled"]), "previous_secret_expires_at": row["previous_secret_until"]}


async def create_endpoint(services: Services, *, account_id: str, url: str, events: Sequence[str], description: str,
                          enabled: bool) -> tuple[dict[str, Any], str]:
    """Create an endpoint; returns it and its secret (shown this once).

    Raises:
        InvalidInput: a bad URL or event; MissingReference: no such account.
        AlreadyExists: the account has an endpoint with this URL; Conflict: it has too many.
    """
    url, events = await check_url(url), check_events(events)
    secret = new_secret()
    stored = SecretBox(services.settings.sealing_keys).seal(secret)
    try:
        async with services.db.transaction() as tx:
            row = await repo.create_endpoint(tx, account_id=account_id, url=url, events=events,
                                             description=description, enabled=enabled, secret=stored,
                                             now=services.clock.now())
    except NotFound as exc:
        raise MissingReference(exc.message) from exc
    return view(row), secret


async def get_endpoint(services: Services, endpoint_id: str, account_id: str | None = None) -> dict[str, Any]:
    return view(await repo.get_endpoint(services.db, endpoint_id, account_id))


async def list_endpoints(services: Services, *, account_id: str | None, limit: int,
                         cursor: str | None) -> dict[str, Any]:
    result = await repo.list_endpoints(services.db, account_id=account_id, limit=limit, cursor=cursor)
    return {**result, "items": [view(r) for r in result["items"]]}


async def update_endpoint(services: Services, endpoint_id: str, account_id: str | None,
                          changes: dict[str, Any]) -> dict[str, Any]:
    """Change url, events, description or enabled (see ``roost.storage.webhooks.update_endpoint``).

    Raises:
        InvalidInput: a bad URL or event; NotFound; AlreadyExists: the new URL is taken.
    """
    if "url" in changes:
        changes["url"] = await check_url(changes["url"])
    if "events" in changes:
        changes["events"] = check_events(changes["events"])
    async with services.db.transaction() as tx:
        row = await repo.update_endpoint(tx, endpoint_id, account_id, changes, services.clock.now())
    if row["enabled"]:
        wake(services.bus)  # re-enabled: its pending deliveries are due now
    return view(row)


async def delete_endpoint(services: Services, endpoint_id: str, account_id: str | None) -> dict[str, Any]:
    """Delete the endpoint with its deliveries (pending ones are never sent); returns it as it was."""
    async with services.db.transaction() as tx:
        return view(await repo.delete_endpoint(tx, endpoint_id, account_id))


async def rotate_secret(services: Services, endpoint_id: str, account_id: str | None) -> tuple[dict[str, Any], str]:
    """A new secret (returned, shown this once); the old one signs too until the overlap ends.

    Raises:
        NotFound: no such endpoint (in that account).
    """
    s = services
    now, secret = s.clock.now(), new_secret()
    box = SecretBox(s.settings.sealing_keys)
    overlap = dt.timedelta(seconds=s.settings.webhook_rotation_overlap_s)
    async with s.db.transaction() as tx:
        await repo.get_endpoint(tx, endpoint_id, account_id, lock=True)
        old = (await repo.stored_secrets(tx, endpoint_id))["secret"]
        row = await repo.set_secret(tx, endpoint_id, account_id, secret=box.seal(secret),
                                    previous=old if overlap else None,
                                    previous_until=now + overlap if overlap else None, now=now)
    return view(row), secret


def delivery_view(row: Row) -> dict[str, Any]:
    """A delivery as the API shows it: its state, and what it sends (``payload``, the body's data)."""
    out = {k: row[k] for k in ("id", "endpoint_id", "event", "status", "attempts", "created_at", "last_attempt_at",
                               "last_status_code", "last_error", "delivered_at")}
    out["seq"] = int(row["seq"])
    out["next_attempt_at"] = row["next_attempt_at"] if row["status"] == "pending" else None
    out["payload"] = json.loads(row["body"])["data"]
    return out


async def list_deliveries(services: Services, endpoint_id: str, account_id: str | None, *, status: str | None,
                          limit: int, cursor: str | None) -> dict[str, Any]:
    """The endpoint's deliveries, newest first.

    Raises:
        NotFound: no such endpoint (in that account); InvalidInput: a cursor not handed out here.
    """
    await repo.get_endpoint(services.db, endpoint_id, account_id)
    result = await repo.list_deliveries(services.db, endpoint_id, status=status, limit=limit, cursor=cursor)
    return {**result, "items": [delivery_view(r) for r in result["items"]]}


async def prune_deliveries(services: Services, now: dt.datetime) -> int:
    """Delete delivered and given-up deliveries older than ``webhook_retention_days`` (a pruner step)."""
    cutoff = now - dt.timedelta(days=services.settings.webhook_retention_days)
    return await repo.prune(services.db, older_than=cutoff)
