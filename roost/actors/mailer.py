"""Mailer actor: drains the outbox through the configured transport.

It wakes on the bus topic ``roost.storage.outbox.TOPIC`` (published after a commit that queued
mail) and polls every few seconds for retries that have come due. Each claimed row is
``sending`` (committed) before the transport sees it, and ``sent`` is written right after the
transport returns; the one gap between them (the server accepted, the process died before the
commit) is closed by reclaiming rows left in ``sending``, which are sent again with the same
Message-ID. On SQLite, where one process serves the file, every row left in ``sending`` at start
is such a row; otherwise a row is reclaimed when its claim is older than
``ROOST_MAIL_SENDING_LEASE_S``.
"""

from __future__ import annotations

import datetime as dt
import random
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

import trio

from roost.plugins.transports import PermanentError, TransientError, Transport, load_transport
from roost.runtime.actor import Actor, ActorContext
from roost.runtime.services import Services
from roost.storage import outbox

POLL_S = 5.0
CLAIM_BATCH = 50
CONCURRENT_SENDS = 4


def build_message(row: dict[str, Any], *, sender: str) -> EmailMessage:
    """The RFC 5322 message for an outbox row: plain text, plus an HTML alternative when there is one."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = row["to_addr"]
    msg["Subject"] = row["subject"]
    msg["Date"] = format_datetime(row["created_at"])
    msg["Message-ID"] = row["message_id"]
    for name, value in (row.get("headers") or {}).items():
        msg[name] = value
    msg.set_content(row["text_body"])
    if row.get("html_body"):
        msg.add_alternative(row["html_body"], subtype="html")
    return msg


def retry_delay(settings: Any, attempts: int) -> float:
    """Exponential backoff with ±20 % jitter, capped."""
    base = min(settings.mail_retry_initial_s * 2 ** max(0, attempts - 1), settings.mail_retry_max_s)
    return base * random.uniform(0.8, 1.2)


class Mailer(Actor):
    name = "mailer"

    def __init__(self, transport: Transport | None = None):
        self.transport = transport

    async def send_one(self, services: Services, row: dict[str, Any], transport: Transport) -> str:
        """Send one claimed row and record the outcome; returns the new status."""
        settings, me = services.settings, services.process_id

        def build_and_send() -> None:
            # Building and serialising a message costs ~1 ms of CPU in the email package: off the event loop.
            transport.send(build_message(row, sender=settings.mail_from))

        try:
            await trio.to_thread.run_sync(build_and_send)
        except TransientError as exc:
            if row["attempts"] >= settings.mail_max_attempts:
                await outbox.mark_failed(services.db, row["id"], error=f"gave up after {row['attempts']} attempts: "
                                         f"{exc}", claimed_by=me)
                return "failed"
            retry_at = services.clock.now() + dt.timedelta(seconds=retry_delay(settings, row["attempts"]))
            await outbox.mark_retry(services.db, row["id"], retry_at=retry_at, error=str(exc), claimed_by=me)
            return "queued"
        except PermanentError as exc:
            await outbox.mark_failed(services.db, row["id"], error=str(exc), claimed_by=me)
            return "failed"
        with trio.CancelScope(shield=True):  # the server has it: record that even while draining
            await outbox.mark_sent(services.db, row["id"], now=services.clock.now(), claimed_by=me)
        return "sent"

    async def drain(self, services: Services, transport: Transport) -> dict[str, int]:
        """Send everything due now; returns counts by outcome."""
        done = {"sent": 0, "queued": 0, "failed": 0}
        limiter = trio.CapacityLimiter(CONCURRENT_SENDS)

        async def one(row: dict[str, Any]) -> None:
            async with limiter:
                done[await self.send_one(services, row, transport)] += 1

        while True:
            rows = await outbox.claim(services.db, now=services.clock.now(), limit=CLAIM_BATCH,
                                      claimed_by=services.process_id)
            if not rows:
                return done
            async with trio.open_nursery() as nursery:
                for row in rows:
                    nursery.start_soon(one, row)

    async def reclaim(self, services: Services, *, at_start: bool) -> int:
        now = services.clock.now()
        if at_start and services.db.dialect == "sqlite":
            before = now + dt.timedelta(microseconds=1)  # one process per file: every claim is a dead one
        else:
            before = now - dt.timedelta(seconds=services.settings.mail_sending_lease_s)
        return await outbox.reclaim_stale(services.db, claimed_before=before, now=now)

    async def run(self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        services = ctx.services
        transport = self.transport or load_transport(services.settings)
        with services.bus.subscribe(outbox.TOPIC) as wakeups:
            reclaimed = await self.reclaim(services, at_start=True)
            if reclaimed:
                ctx.log.warning("requeued mail left in sending by a stopped process", count=reclaimed)
            task_status.started()
            while not ctx.stopping.is_set():
                await self.reclaim(services, at_start=False)
                done = await self.drain(services, transport)
                if any(done.values()):
                    ctx.log.info("mail drained", transport=transport.name, **done)
                ctx.tick()
                with trio.move_on_after(POLL_S):  # a wake-up, a due retry or a drain, whichever first
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(_cancel_on, ctx.stopping, nursery.cancel_scope)
                        await wakeups.receive()
                        nursery.cancel_scope.cancel()


async def _cancel_on(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()
