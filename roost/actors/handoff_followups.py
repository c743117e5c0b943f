"""Handoff follow-ups after the commit: escalation mail and assessment.

``create`` marks a handoff ``mail_state='pending'`` (escalations) and
``assessment_state='pending'`` (when an assessor is configured) in its own transaction; the HTTP
handler publishes the handoff id on ``TOPIC`` after the commit. This actor then, in transactions
of its own, queues the mail through the mailer's outbox (one conditional UPDATE decides which
process does it, so it is queued once) and runs the assessor under its timeout. Neither can fail
or delay the handoff; a crash in between leaves the mark, and the slow poll (``POLL_S``, in any
process) picks it up again.

An assessment is claimed with a lease (``handoff_assessment_lease_s``, longer than the
assessor's timeout): a process that dies while assessing leaves the row ``running``, and once
the lease has run out the poll of any process claims it again, up to
``handoff_assessment_max_attempts`` claims. A database error is logged and retried on the next
poll; any other error is a bug and goes to the supervisor.
"""

from __future__ import annotations

import trio

from roost.errors import StorageError
from roost.plugins.assessors import Assessor, registry, run_assessor
from roost.runtime.actor import Actor, ActorContext
from roost.runtime.services import Services
from roost.storage import handoffs as repo
from roost.storage import outbox

TOPIC = "handoff.followups"
POLL_S = 30.0  # safety read for marks left by a crash (here or in another process)
CONCURRENT_ASSESSMENTS = 4


class HandoffFollowups(Actor):
    name = "handoff_followups"

    def __init__(self, assessor: Assessor | None = None):
        self.assessor = assessor

    async def mail_pending(self, services: Services, ctx: ActorContext) -> int:
        queued = 0
        for handoff_id in await repo.pending_mail(services.db):
            try:
                ids = await repo.queue_mail(services.db, handoff_id, public_url=services.settings.public_url,
                                            now=services.clock.now())
            except StorageError as exc:  # logged; the mark stays and the next poll tries again
                ctx.log.error("escalation mail not queued", handoff_id=handoff_id, error=exc.message)
                continue
            if ids:
                outbox.wake(services.bus, *ids)
                queued += len(ids)
        return queued

    async def assess_pending(self, services: Services, ctx: ActorContext, assessor: Assessor) -> None:
        limiter = trio.CapacityLimiter(CONCURRENT_ASSESSMENTS)
        settings = services.settings

        async def one(handoff_id: str) -> None:
            async with limiter:
                row = await repo.claim_assessment(services.db, handoff_id, now=services.clock.now(),
                                                  lease_s=settings.handoff_assessment_lease_s,
                                                  max_attempts=settings.handoff_assessment_max_attempts)
                if row is None:
                    return
                result = await run_assessor(assessor, row, services.settings.handoff_assessor_timeout_s)
                await repo.store_assessment(services.db, handoff_id, result, services.clock.now())
                if result is not None:
                    services.bus.publish(repo.TOPIC, row["account_id"])

        async with trio.open_nursery() as nursery:
            for handoff_id in await repo.pending_assessments(services.db, now=services.clock.now()):
                nursery.start_soon(one, handoff_id)

    async def run(self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        services = ctx.services
        assessor = self.assessor or registry.create(services.settings.handoff_assessor)
        with services.bus.subscribe(TOPIC) as wakeups:
            task_status.started()
            while not ctx.stopping.is_set():
                try:
                    await self.mail_pending(services, ctx)
                    if assessor.enabled:
                        await self.assess_pending(services, ctx, assessor)
                except StorageError as exc:
                    ctx.log.error("handoff follow-ups failed; retrying on the next poll", error=exc.message)
                ctx.tick()
                with trio.move_on_after(POLL_S):
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(_cancel_on, ctx.stopping, nursery.cancel_scope)
                        await wakeups.receive()
                        nursery.cancel_scope.cancel()


async def _cancel_on(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()
