"""Handoffs: park or escalate, claim, cancel, list, and what follows the commit (socket events, mail,
assessment, the claimer's briefing).

Each write commits the handoff change and its event together (``roost.storage.handoffs``); only
after the commit does it publish the wake-ups: the account id on ``HANDOFF_EVENTS`` (the fan-out
pushes the new events to the account's sockets, in every process) and, for a handoff with mail,
an assessment or a briefing to do, the handoff id on ``HANDOFF_FOLLOWUPS``. So an answer never
waits on a socket, a mail server or a model, and a rollback publishes nothing.

An escalation is assessed when an assessor is configured; a park only when its account's
``assess_parks`` is set (else its ``assessment_state`` is ``skipped``). A claim is briefed when
the assessor writes briefings (``writes_briefings``).

The follow-ups (``queue_escalation_mail``, ``assess_pending``, ``brief_pending``) are run by the
follow-up actor, in transactions of their own: each reads what is marked pending, so a lost
wake-up or a crash in between is picked up by the next pass.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Awaitable, Callable

import trio

from roost.domain import handoff_mail, webhooks
from roost.errors import MissingReference, NotFound, StorageError, TooLarge
from roost.plugins.assessors import Assessor, run_assessor, run_briefer, writes_briefings
from roost.plugins.assessors import registry as assessors
from roost.runtime.logging import get_logger
from roost.runtime.services import Services
from roost.runtime.topics import HANDOFF_EVENTS, HANDOFF_FOLLOWUPS
from roost.storage import handoff_briefings as briefings
from roost.storage import handoff_lists as lists
from roost.storage import handoffs as repo
from roost.storage import outbox, tenancy
from roost.storage.database import Connection, Row

CONCURRENT_ASSESSMENTS = 4
log = get_logger()


def _publish(services: Services, row: Row, *, followups: bool = False) -> None:
    services.bus.publish(HANDOFF_EVENTS, row["account_id"])
    webhooks.wake(services.bus)  # its handoff.* webhooks were queued with the event
    if followups:
        services.bus.publish(HANDOFF_FOLLOWUPS, row["id"])


async def create(services: Services, *, account_id: str, subject_ref: str, intent: str, notes: str,
                 priority: str, snapshot: Any, created_by: str, team: Any = repo.KEEP_TEAM) -> Row:
    """Park or escalate: the handoff and its ``handoff_created`` event, then the wake-ups.

    An escalation is marked for mail and, when an assessor is configured, for an assessment; a
    park for an assessment only when the account's ``assess_parks`` is set. Both are done after
    the commit by the follow-up actor. ``team`` left out is the creator's team; None is none.

    Raises:
        TooLarge: the snapshot is over ``SNAPSHOT_MAX_BYTES`` as JSON (code ``snapshot_too_large``).
        MissingReference: no such account, or ``created_by`` is not one of its users.
        InvalidInput: ``created_by`` is deactivated (code ``user_inactive``).
    """
    if repo.snapshot_size(snapshot) > repo.SNAPSHOT_MAX_BYTES:
        raise TooLarge(f"the snapshot is over {repo.SNAPSHOT_MAX_BYTES} bytes as JSON", code="snapshot_too_large")
    assess = assessors.create(services.settings.handoff_assessor).enabled
    try:
        async with services.db.transaction() as tx:
            row = await repo.create(tx, account_id=account_id, subject_ref=subject_ref, intent=intent, notes=notes,
                                    priority=priority, snapshot=snapshot, created_by=created_by, assess=assess,
                                    now=services.clock.now(), team=team)
    except NotFound as exc:
        raise MissingReference(exc.message) from exc
    _publish(services, row, followups=row["mail_state"] == "pending" or row["assessment_state"] == "pending")
    return row


async def claim(services: Services, handoff_id: str, user_id: str, *, account_id: str | None = None) -> Row:
    """Claim an open handoff for ``user_id`` (exactly one claim wins); see ``roost.storage.handoffs.claim``.

    When the assessor writes briefings, the claimer's is marked pending with the claim and written
    after the commit by the follow-up actor (``brief_pending``); the claim never waits for it.
    ``account_id`` (the console's page) makes a handoff of another account not found.

    Raises:
        NotFound: no such handoff (in ``account_id``), or ``user_id`` is of another account.
        Conflict: someone else holds it, or it was cancelled.
    """
    brief = writes_briefings(assessors.create(services.settings.handoff_assessor))
    row, changed = await repo.claim(services.db, handoff_id, user_id, services.clock.now(), brief=brief,
                                    account_id=account_id)
    if changed:
        _publish(services, row, followups=row["briefing_state"] == "pending")
    return row


async def cancel(services: Services, handoff_id: str, user_id: str, *, account_id: str | None = None) -> Row:
    """Cancel an open handoff for ``user_id``; cancelling a cancelled one changes nothing.
    ``account_id`` (the console's page) makes a handoff of another account not found.

    Raises:
        NotFound: no such handoff (in ``account_id``), or ``user_id`` is of another account.
        Conflict: it is claimed.
    """
    row, changed = await repo.cancel(services.db, handoff_id, user_id, services.clock.now(), account_id=account_id)
    if changed:
        _publish(services, row)
    return row


async def queue(services: Services, account_id: str, *, limit: int, cursor: str | None, team: str | None = None,
                intent: str | None = None) -> dict[str, Any]:
    """The account's open handoffs (of a team, of an intent), urgent first then oldest.

    Raises:
        NotFound: no such account.
        InvalidInput: a cursor this list did not hand out (code ``bad_cursor``).
    """
    await tenancy.get_account(services.db, account_id)
    return await lists.queue(services.db, account_id, limit=limit, cursor=cursor, team=team, intent=intent)


async def list_handoffs(services: Services, account_id: str, *, limit: int, cursor: str | None,
                        state: str | None = None, team: str | None = None, intent: str | None = None) -> dict[str, Any]:
    """Every handoff of the account (in a state, of a team, of an intent), newest first.

    Raises:
        NotFound: no such account.
        InvalidInput: a cursor this list did not hand out (code ``bad_cursor``).
    """
    await tenancy.get_account(services.db, account_id)
    return await lists.list_for_account(services.db, account_id, limit=limit, cursor=cursor, state=state,
                                        team=team, intent=intent)


async def get(services: Services, handoff_id: str, account_id: str | None = None) -> dict[str, Any]:
    """The handoff with its snapshot and each e-mail recipient's delivery state (``notifications``).

    Raises:
        NotFound: no such handoff (in ``account_id``, when given).
    """
    row = await repo.get(services.db, handoff_id, account_id)
    return {**row, "notifications": await repo.notifications(services.db, row["id"])}


async def event_log(services: Services, account_id: str, *, limit: int, before: int | None = None) -> dict[str, Any]:
    """The account's handoff events, newest first, as far back as the replay window keeps them.

    Raises:
        NotFound: no such account.
    """
    await tenancy.get_account(services.db, account_id)
    return await repo.event_log(services.db, account_id, limit=limit, before=before)


async def claimable_users(services: Services, account_id: str, *, limit: int = 500) -> list[Row]:
    """The account's active users: who a handoff may be claimed or cancelled for.

    Raises:
        NotFound: no such account.
    """
    await tenancy.get_account(services.db, account_id)
    return await repo.claimable_users(services.db, account_id, limit=limit)


async def record_assessment(services: Services, row: Row, assessment: dict[str, Any] | None) -> None:
    """Store an assessor's answer (None: failed) for a claimed assessment, with ``handoff_updated``."""
    stored = await repo.store_assessment(services.db, row["id"], assessment, services.clock.now())
    if stored is not None:
        _publish(services, stored)
        await _mail_assessment(services, stored["id"])


async def _mail_assessment(services: Services, handoff_id: str) -> None:
    """Mail a stored assessment of an escalation to those its mail went to (``roost.domain.handoff_mail``)."""
    try:
        ids = await handoff_mail.queue_assessment(services, handoff_id)
    except StorageError as exc:  # the mark stays: the follow-ups pass queues it
        log.error("assessment mail not queued; the follow-ups pass tries again", handoff_id=handoff_id,
                  error=exc.message)
        return
    if ids:
        outbox.wake(services.bus, *ids)


# -- follow-ups after the commit (the follow-up actor runs these) -------------------------------


async def _queue_marked_mail(services: Services, marked: Callable[[Connection], Awaitable[list[str]]],
                             queue: Callable[[Services, str], Awaitable[list[str]]], failure: str) -> int:
    """Queue the mail of each handoff ``marked`` lists with ``queue`` (which clears the mark, each
    recipient once) and wake the mailer. A database error on one handoff is logged as ``failure``
    and leaves its mark for the next pass. Returns the mails queued."""
    queued = 0
    for handoff_id in await marked(services.db):
        try:
            ids = await queue(services, handoff_id)
        except StorageError as exc:  # logged; the mark stays and the next pass tries again
            log.error(failure, handoff_id=handoff_id, error=exc.message)
            continue
        if ids:
            outbox.wake(services.bus, *ids)
            queued += len(ids)
    return queued


async def queue_assessment_mail(services: Services) -> int:
    """Queue the assessment mail of every escalation still marked for it (a crash after the
    assessment's commit left the mark; each recipient gets it once). Returns the mails queued."""
    return await _queue_marked_mail(services, repo.pending_assessment_mail, handoff_mail.queue_assessment,
                                    "assessment mail not queued")


async def queue_escalation_mail(services: Services) -> int:
    """Queue the mail of every escalation marked pending (each once, whichever process gets there first).

    A database error on one handoff is logged and leaves its mark for the next pass. Returns the
    number of mails queued.
    """
    return await _queue_marked_mail(services, repo.pending_mail, handoff_mail.queue_escalation,
                                    "escalation mail not queued")


async def assess_pending(services: Services, assessor: Assessor) -> None:
    """Assess every handoff pending (or whose lease ran out), ``CONCURRENT_ASSESSMENTS`` at a time.

    Each is claimed with a lease first (``handoff_assessment_lease_s``, at most
    ``handoff_assessment_max_attempts`` claims), so a handoff is assessed by one process at a time
    and again only once a dead one's lease ran out.
    """
    limiter = trio.CapacityLimiter(CONCURRENT_ASSESSMENTS)
    settings = services.settings

    async def one(handoff_id: str) -> None:
        async with limiter:
            row = await repo.claim_assessment(services.db, handoff_id, now=services.clock.now(),
                                              lease_s=settings.handoff_assessment_lease_s,
                                              max_attempts=settings.handoff_assessment_max_attempts)
            if row is None:
                return
            if row["assessment_state"] == "failed":  # attempts spent: marked failed, with an event
                _publish(services, row)
                return
            result = await run_assessor(assessor, row, settings.handoff_assessor_timeout_s)
            await record_assessment(services, row, result)

    async with trio.open_nursery() as nursery:
        for handoff_id in await repo.pending_assessments(services.db, now=services.clock.now()):
            nursery.start_soon(one, handoff_id)


async def brief_pending(services: Services, assessor: Assessor) -> None:
    """Write every briefing pending (or whose lease ran out), ``CONCURRENT_ASSESSMENTS`` at a time,
    with the assessments' timeout (``handoff_assessor_timeout_s``), lease and attempts."""
    limiter = trio.CapacityLimiter(CONCURRENT_ASSESSMENTS)
    settings = services.settings

    async def one(handoff_id: str) -> None:
        async with limiter:
            row, claimer = await briefings.claim_briefing(
                services.db, handoff_id, now=services.clock.now(), lease_s=settings.handoff_assessment_lease_s,
                max_attempts=settings.handoff_assessment_max_attempts)
            if row is None:
                return
            if claimer is None:  # attempts spent: marked failed, with an event for the sockets
                _publish(services, row)
                return
            ok, text = await run_briefer(assessor, row, claimer, settings.handoff_assessor_timeout_s)
            stored = await briefings.store_briefing(services.db, handoff_id, ok, text, services.clock.now())
            if stored is not None:
                _publish(services, stored)

    async with trio.open_nursery() as nursery:
        for handoff_id in await briefings.pending_briefings(services.db, now=services.clock.now()):
            nursery.start_soon(one, handoff_id)


async def prune_events(services: Services, now: dt.datetime) -> int:
    """The pruner step: events older than the replay window (``handoff_event_retention_s``)."""
    return await repo.prune_events(services.db, now - dt.timedelta(seconds=services.settings.handoff_event_retention_s))
