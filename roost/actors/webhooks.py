"""Webhook sender: delivers the webhook outbox (``roost.domain.webhooks``), signed per Standard Webhooks.

Guarantees and choices:

- **At least once.** A delivery is claimed (``sending``, leased for ``webhook_lease_s``) in a
  committed UPDATE before it is sent, and its outcome is written after. A process that dies in
  between leaves it ``sending``; once the lease has run out any process claims it again (on
  SQLite, where one process serves the file, every ``sending`` row is released at start). So a
  receiver may see a delivery twice, always with the same ``webhook-id``: receivers dedupe on it.
- **In order per endpoint.** Only an endpoint's head (its lowest ``seq`` not yet delivered or
  given up) is claimed, so its next delivery waits until the one before it was delivered or
  given up. A failing endpoint holds its own queue back, nobody else's.
- **Retries.** Anything but a 2xx (a timeout, a refused connection, a destination the policy
  refuses, a 5xx, a 4xx) is retried after ``webhook_retry_initial_s`` doubling up to
  ``webhook_retry_max_s``, each delay ±20 % (jitter). A delivery still failing
  ``webhook_retry_window_s`` (24 h) after its first attempt is given up (``failed``) and the
  next one goes. Redirects are not followed.
- **Disabling.** An endpoint whose attempts have all failed for ``webhook_disable_after_s``
  (3 days, counted from the first failure since its last success) is disabled, and so is one
  answering 410 Gone, at once; the delivery in hand goes back to ``pending`` (nothing is lost:
  re-enabling the endpoint resumes its queue) and the account's active owners get a mail
  through the mail outbox.
- **Isolation.** Each attempt has ``webhook_timeout_s`` (10 s) for connecting, sending and
  the answer's status; up to ``webhook_concurrency`` endpoints are sent to at once, each in its
  own task, so a slow endpoint holds one slot for at most its timeout and never the others.
- **Destinations.** Connections go through ``roost.runtime.destinations``: the URL's host is
  resolved and vetted at every connection (a name that now resolves to a private address is
  refused and counted as a failed attempt).

Headers: ``webhook-id`` (the delivery's id, the same on every retry), ``webhook-timestamp``
(the attempt's unix time) and ``webhook-signature`` (``v1,<base64>``, one per signing secret,
space-separated; two during a rotation window).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import random
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import trio

from roost import __version__
from roost.domain import webhooks
from roost.errors import NotConfigured, NotFound, StorageError
from roost.runtime import destinations, topics
from roost.runtime.actor import Actor, ActorContext, Inbox
from roost.runtime.bus import Message
from roost.runtime.deadlines import shielded_deadline
from roost.runtime.services import Services
from roost.storage import outbox
from roost.storage import webhooks as repo

POLL_S = 30.0  # safety read: deliveries committed by a process that died before its wake-up
MIN_WAIT_S = 0.05  # between two claims, so a head that cannot be claimed is not polled in a busy loop
RECORD_LIMIT_S = 10.0  # writing an outcome is shielded: at most this long,
RECORD_AFTER_CANCEL_S = 1.0  # and this long past a drain's end (then the lease covers it)


@dataclass(frozen=True)
class Outcome:
    """One attempt's result: the answer's status (None when there was none) and, unless 2xx, why not."""

    status_code: int | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def retry_delay(settings: Any, attempts: int) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones: doubling, capped, ±20 % jitter."""
    base = min(settings.webhook_retry_initial_s * 2 ** min(max(0, attempts - 1), 60), settings.webhook_retry_max_s)
    return base * random.uniform(0.8, 1.2)


async def claim_due(services: Services, limit: int) -> list[dict[str, Any]]:
    """Claim up to ``limit`` due heads of enabled endpoints for this process."""
    now = services.clock.now()
    lease_until = now + dt.timedelta(seconds=services.settings.webhook_lease_s)
    return await repo.claim_heads(services.db, now=now, limit=limit, claimed_by=services.process_id,
                                  lease_until=lease_until)


async def attempt(services: Services, client: Any, row: dict[str, Any]) -> Outcome:
    """POST the delivery ``row`` (a claimed one) to its endpoint, signed; never raises for the remote side."""
    now = services.clock.now()
    try:
        keys = await webhooks.signing_secrets(services, row["endpoint_id"], now)
    except NotConfigured as exc:
        return Outcome(None, f"not_configured: {exc.message}")
    body = row["body"].encode()
    timestamp = int(now.timestamp())
    headers = {
        "content-type": "application/json",
        "user-agent": f"roost/{__version__} (webhooks)",
        "webhook-id": row["id"],
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(webhooks.sign(k, row["id"], timestamp, body) for k in keys),
    }
    parts = urlsplit(row["url"])
    where = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
    try:
        with trio.fail_after(services.settings.webhook_timeout_s):
            async with client.stream("POST", row["url"], content=body, headers=headers) as response:
                code = response.status_code
    except Exception as exc:  # noqa: BLE001 - every transport failure is a failed attempt, by kind
        return Outcome(None, destinations.describe_error(destinations.classify_error(exc, where)))
    if 200 <= code < 300:
        return Outcome(code)
    return Outcome(code, f"answered {code}")


async def record(services: Services, row: dict[str, Any], outcome: Outcome) -> list[str]:
    """Write an attempt's outcome (see the module docstring); returns mail queued to owners (to wake)."""
    s, now, me = services.settings, services.clock.now(), services.process_id
    endpoint_id = row["endpoint_id"]
    common: dict[str, Any] = {"claimed_by": me, "now": now, "status_code": outcome.status_code, "error": outcome.error}
    async with services.db.transaction() as tx:  # the endpoint row first, then the delivery
        if outcome.ok:
            await repo.note_success(tx, endpoint_id)
            await repo.finish_attempt(tx, row["id"], status="delivered", **common)
            return []
        streak = await repo.note_failure(tx, endpoint_id, now)
        if streak is None:  # deleted meanwhile, with its deliveries
            return []
        reason = None
        if outcome.status_code == 410:
            reason = "the endpoint answered 410 Gone"
        elif now - streak["failing_since"] >= dt.timedelta(seconds=s.webhook_disable_after_s):
            reason = f"every attempt failed since {streak['failing_since']:%Y-%m-%d %H:%M} UTC (last: {outcome.error})"
        if reason is not None:
            endpoint = await repo.disable_endpoint(tx, endpoint_id, reason=reason, now=now)
            await repo.finish_attempt(tx, row["id"], status="pending", retry_at=now, **common)
            return await _mail_owners(tx, endpoint, reason, now) if endpoint else []
        if now - (row["first_attempt_at"] or now) >= dt.timedelta(seconds=s.webhook_retry_window_s):
            await repo.finish_attempt(tx, row["id"], status="failed", **common)
        else:
            retry_at = now + dt.timedelta(seconds=retry_delay(s, row["attempts"]))
            await repo.finish_attempt(tx, row["id"], status="pending", retry_at=retry_at, **common)
        return []


async def _mail_owners(tx: Any, endpoint: dict[str, Any], reason: str, now: dt.datetime) -> list[str]:
    text = (f"roost stopped sending webhooks to {endpoint['url']} (endpoint {endpoint['id']}"
            f"{': ' + endpoint['description'] if endpoint['description'] else ''}).\n\n"
            f"Why: {reason}.\n\n"
            "Events that were not delivered are kept, in order. Once the endpoint answers again, enable it with\n"
            f"PATCH /api/v1/webhooks/{endpoint['id']} {{\"enabled\": true}} and they are sent.\n")
    return await repo.queue_owner_mail(tx, endpoint["account_id"], subject=f"Webhook disabled: {endpoint['url']}",
                                       text=text, now=now)


async def send_one(services: Services, client: Any, row: dict[str, Any]) -> Outcome:
    """Attempt one claimed delivery and record the outcome (shielded, bounded); wakes the mailer."""
    outcome = await attempt(services, client, row)
    # The receiver may have it: record that even while being cancelled, but not forever (past the
    # deadline the row stays `sending` and is sent again once its lease runs out).
    mail: list[str] = []
    with trio.CancelScope(shield=True, deadline=shielded_deadline(RECORD_LIMIT_S, RECORD_AFTER_CANCEL_S)):
        mail = await record(services, row, outcome)
    if mail:
        outbox.wake(services.bus, *mail)
    return outcome


class WebhookSender(Actor):
    name = "webhooks"

    def __init__(self) -> None:
        self.in_flight = 0  # attempts running in this actor's nursery (changed by its own tasks only)
        self.client: Any = None  # the HTTP client, made at the first delivery of a run

    async def run(self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        s = ctx.services
        s.queue_probes["webhook_deliveries_open"] = lambda: repo.open_count(s.db)
        self.client = None  # a restart makes its own
        with ctx.inbox(topics.WEBHOOKS_QUEUED) as inbox:
            if not s.db.shared:  # one process per file: every claim left is a dead one
                released = await repo.release_claims(s.db)
                if released:
                    ctx.log.warning("webhook deliveries left sending by a stopped process are due again",
                                    count=released)
            # The HTTP client is made at the first delivery (most processes never send one), and closed
            # after the attempts in flight end (the nursery exits first).
            async with contextlib.AsyncExitStack() as clients, trio.open_nursery() as nursery:
                task_status.started()
                while True:
                    inbox.take()
                    wait_s = await self._start_due(ctx, clients, nursery, inbox)
                    ctx.tick()
                    if not await ctx.wait(inbox, at_most=wait_s):
                        return  # the nursery lets attempts in flight finish (each within its timeout)

    async def _start_due(self, ctx: ActorContext, clients: contextlib.AsyncExitStack, nursery: trio.Nursery,
                         inbox: Inbox[Any]) -> float:
        """Start an attempt for each due head this process has room for; seconds until the next is due."""
        s = ctx.services
        free = s.settings.webhook_concurrency - self.in_flight
        if free <= 0:
            return POLL_S  # a finishing attempt posts to the inbox
        try:
            rows = await claim_due(s, free)
            if rows and self.client is None:
                # Made in a worker thread: loading the CA bundle for TLS holds the event loop ~50 ms.
                made = await trio.to_thread.run_sync(destinations.http_client, s.settings.webhook_timeout_s)
                self.client = await clients.enter_async_context(made)
            client = self.client
            for row in rows:
                self.in_flight += 1
                nursery.start_soon(self._send, ctx, client, row, inbox)
            due = await repo.next_due(s.db)
        except StorageError as exc:  # claimed rows stay `sending` and are claimed again after their lease
            ctx.log.error("webhook claim failed; retrying on the next poll", error=exc.message)
            return POLL_S
        if due is None:
            return POLL_S
        return min(POLL_S, max(MIN_WAIT_S, (due - s.clock.now()).total_seconds()))

    async def _send(self, ctx: ActorContext, client: Any, row: dict[str, Any], inbox: Inbox[Any]) -> None:
        try:
            outcome = await send_one(ctx.services, client, row)
            if not outcome.ok:
                ctx.log.info("webhook attempt failed", delivery_id=row["id"], endpoint_id=row["endpoint_id"],
                             attempts=row["attempts"], error=outcome.error)
        except (StorageError, NotFound) as exc:  # the lease runs out and it is sent again
            ctx.log.error("webhook outcome not recorded", delivery_id=row["id"], error=exc.message)
        finally:
            self.in_flight -= 1
            inbox.post(Message(topics.WEBHOOKS_QUEUED, ()))  # room again, and the endpoint's next may be due
