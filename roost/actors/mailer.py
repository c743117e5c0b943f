"""Mailer actor: drains the outbox through the configured transport.

It wakes on the bus topic ``MAIL_QUEUED`` (``roost.runtime.topics``; published after a commit
that queued mail) and looks again every ``POLL_S`` seconds for retries that have come due. Each
claimed row is ``sending`` (committed) before the transport sees it, and ``sent`` is written right
after the transport returns; the one gap between them (the server accepted, the process died
before the commit) is closed by reclaiming rows left in ``sending``, which are sent again with the
same Message-ID. Where one process serves the database (SQLite; ``db.shared`` is False), every row
left in ``sending`` at start is such a row; otherwise a row is reclaimed when its claim is older
than ``ROOST_MAIL_SENDING_LEASE_S``. A row that fails for good is marked so in one transaction with
the notification it e-mailed, which is then no longer marked e-mailed and goes to the next digest
(``outbox.mark_failed``).

A drain claims up to ``CLAIM_BATCH`` rows and ``CONCURRENT_SENDS`` workers send them, each in a
worker thread that sends for up to ``SEND_SLICE_S`` (one SMTP message, or a hundred files) before
its outcomes are recorded. Outcomes are recorded by group commit: outcomes that come back while
another group is being written wait for it and are then written together, one statement for all
that were sent. So the gap above holds at most a slice's worth of messages per worker, and the
outbox costs a statement per group rather than per message.
"""

from __future__ import annotations

import datetime as dt
import random
import smtplib
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import trio

from roost.domain import webhooks
from roost.errors import PluginError, RoostError, StorageError
from roost.plugins.guard import TRANSPORT_ERRORS, plugin_call
from roost.plugins.transports import PermanentError, TransientError, Transport, load_transport
from roost.plugins.transports.message import Mail, compose
from roost.runtime import topics
from roost.runtime.actor import Actor, ActorContext
from roost.runtime.deadlines import shielded_deadline
from roost.runtime.logging import get_logger
from roost.runtime.services import Services
from roost.storage import outbox

log = get_logger()

POLL_S = 5.0
CLAIM_BATCH = 400
IDS_PUBLISHED = 20  # outbox ids named in one mail.changed (a hint: consoles re-read the rows)
CONCURRENT_SENDS = 4
SEND_SLICE_S = 0.02
# Recording send outcomes is shielded: at most this long, and at most RECORD_AFTER_CANCEL_S past
# a cancel (a drain's end), so a database that stopped answering cannot hold the drain.
RECORD_LIMIT_S = 30.0
RECORD_AFTER_CANCEL_S = 1.0


def build_message(row: dict[str, Any], *, sender: str) -> Mail:
    """The message for an outbox row: plain text, plus an HTML alternative when there is one."""
    return compose(sender=sender, to=row["to_addr"], subject=row["subject"], date=row["created_at"],
                   message_id=row["message_id"], text=row["text_body"], html=row.get("html_body") or None,
                   headers=row.get("headers") or {})


def retry_delay(settings: Any, attempts: int) -> float:
    """Exponential backoff with ±20 % jitter, capped."""
    base = min(settings.mail_retry_initial_s * 2 ** max(0, attempts - 1), settings.mail_retry_max_s)
    return base * random.uniform(0.8, 1.2)


@dataclass
class _Outcome:
    row: dict[str, Any]
    error: TransientError | PermanentError | None = None


# What a transport may raise besides its declared TransientError/PermanentError and not be buggy:
# socket and SMTP errors it did not map itself (retried like a TransientError).
_TRANSPORT_ERRORS = (TransientError, PermanentError, *TRANSPORT_ERRORS, smtplib.SMTPException)


def _send(transport: Transport, row: dict[str, Any], sender: str) -> _Outcome:
    try:
        mail = build_message(row, sender=sender)
    except ValueError as exc:  # a header that cannot be written
        return _Outcome(row, PermanentError(f"cannot compose the message: {exc}"))
    try:
        # The plugin boundary: a transport's bug is logged there with its traceback, then retried
        # like a transient error (and failed after ROOST_MAIL_MAX_ATTEMPTS) with its reason kept.
        with plugin_call("transport", getattr(transport, "name", type(transport).__name__), _TRANSPORT_ERRORS):
            transport.send(mail)
    except RoostError as exc:  # PluginError, or a RoostError the transport raised on purpose
        if isinstance(exc, PluginError) and isinstance(exc.error, TransientError | PermanentError):
            return _Outcome(row, exc.error)
        return _Outcome(row, TransientError(exc.message))
    return _Outcome(row)


class _Recorder:
    """Writes send outcomes to the outbox, every outcome waiting at the time in one go."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.pending: list[_Outcome] = []
        self.lock = trio.Lock()  # FIFO: whoever holds it writes everything pending
        self.done = {"sent": 0, "queued": 0, "failed": 0}

    async def record(self, outcomes: list[_Outcome]) -> None:
        self.pending.extend(outcomes)
        # The server has the message: record that even while the actor is being cancelled, but
        # not forever (a database that stopped answering must not hold a drain): past the deadline
        # the rows stay `sending` and are offered again once their lease expires.
        deadline = shielded_deadline(RECORD_LIMIT_S, RECORD_AFTER_CANCEL_S)
        with trio.CancelScope(shield=True, deadline=deadline) as scope:
            async with self.lock:
                outcomes, self.pending = self.pending, []
                if outcomes:
                    await self._write(outcomes)
        if scope.cancelled_caught:
            log.warning("send outcomes not recorded in time; they are retried after the sending lease")

    async def _write(self, outcomes: list[_Outcome]) -> None:
        services, me = self.services, self.services.process_id
        settings, db, now = services.settings, services.db, services.clock.now()
        sent = [o.row["id"] for o in outcomes if o.error is None]
        if sent:
            await outbox.mark_sent_many(db, sent, now=now, claimed_by=me)
            self.done["sent"] += len(sent)
            if any(o.row["kind"] == "digest" for o in outcomes if o.error is None):
                webhooks.wake(services.bus)  # digest.sent was queued with the mark
        for o in outcomes:  # failures are rare: one statement each
            row, exc = o.row, o.error
            if isinstance(exc, TransientError) and row["attempts"] < settings.mail_max_attempts:
                retry_at = now + dt.timedelta(seconds=retry_delay(settings, row["attempts"]))
                await outbox.mark_retry(db, row["id"], retry_at=retry_at, error=str(exc), claimed_by=me)
                self.done["queued"] += 1
            elif isinstance(exc, TransientError):
                await outbox.mark_failed(db, row["id"], error=f"gave up after {row['attempts']} attempts: {exc}",
                                         claimed_by=me)
                self.done["failed"] += 1
            elif exc is not None:
                await outbox.mark_failed(db, row["id"], error=str(exc), claimed_by=me)
                self.done["failed"] += 1
        services.bus.publish(topics.MAIL_CHANGED, *(o.row["id"] for o in outcomes[:IDS_PUBLISHED]))  # for consoles


class Mailer(Actor):
    name = "mailer"

    def __init__(self, transport: Transport | None = None):
        self.transport = transport

    async def drain(self, services: Services, transport: Transport) -> dict[str, int]:
        """Send everything due now; returns counts by outcome."""
        recorder = _Recorder(services)
        sender = services.settings.mail_from

        def send_slice(rows: deque[dict[str, Any]]) -> list[_Outcome]:
            # In a worker thread: composing (~50 µs of CPU) and the transport's blocking send.
            outcomes: list[_Outcome] = []
            deadline = time.monotonic() + SEND_SLICE_S
            while rows and (not outcomes or time.monotonic() < deadline):
                try:
                    row = rows.popleft()  # the workers share the deque: popleft is atomic
                except IndexError:
                    break
                outcomes.append(_send(transport, row, sender))
            return outcomes

        async def worker(rows: deque[dict[str, Any]]) -> None:
            while rows:
                await recorder.record(await trio.to_thread.run_sync(send_slice, rows))

        while True:
            rows = deque(await outbox.claim(services.db, now=services.clock.now(), limit=CLAIM_BATCH,
                                            claimed_by=services.process_id))
            if not rows:
                return recorder.done
            async with trio.open_nursery() as nursery:
                for _ in range(min(CONCURRENT_SENDS, len(rows))):
                    nursery.start_soon(worker, rows)

    async def reclaim(self, services: Services, *, at_start: bool) -> int:
        now = services.clock.now()
        if at_start and not services.db.shared:
            before = now + dt.timedelta(microseconds=1)  # one process per file: every claim is a dead one
        else:
            before = now - dt.timedelta(seconds=services.settings.mail_sending_lease_s)
        return await outbox.reclaim_stale(services.db, claimed_before=before, now=now)

    async def run(self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        services = ctx.services
        transport = self.transport or load_transport(services.settings)
        with ctx.inbox(topics.MAIL_QUEUED) as inbox:
            reclaimed = await self.reclaim(services, at_start=True)
            if reclaimed:
                ctx.log.warning("requeued mail left in sending by a stopped process", count=reclaimed)
            task_status.started()
            while True:
                inbox.take()  # wake-ups are hints: the drain reads everything due
                try:
                    await self.reclaim(services, at_start=False)
                    done = await self.drain(services, transport)
                except StorageError as exc:  # claimed rows stay 'sending' and are reclaimed after their lease
                    ctx.log.error("mail drain failed; retrying on the next poll", error=exc.message)
                    done = {}
                if any(done.values()):
                    ctx.log.info("mail drained", transport=transport.name, **done)
                ctx.tick()
                if not await ctx.wait(inbox, at_most=POLL_S):  # a wake-up, or a retry that may have come due
                    return
