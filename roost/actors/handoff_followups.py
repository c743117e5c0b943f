"""Handoff follow-ups after the commit: escalation mail, assessment and the claimer's briefing.

``roost.domain.handoffs.create`` marks a handoff ``mail_state='pending'`` (escalations) and
``assessment_state='pending'`` (escalations, and parks where the account assesses parks, when an
assessor is configured) in its own transaction; ``claim`` marks ``briefing_state='pending'`` when
the assessor writes briefings. Each publishes the handoff id on ``HANDOFF_FOLLOWUPS`` after the
commit. This actor then runs the follow-ups of the domain layer, in transactions of their own
(assessments and briefings side by side, so a briefing never waits behind a slow assessment):
``queue_escalation_mail`` (one conditional
UPDATE decides which process queues a mail, so it is queued once), ``queue_assessment_mail``
(assessment mail a crash left marked), ``assess_pending`` and
``brief_pending`` (the assessor under its timeout). None can fail or delay the handoff or the
claim; a crash in between leaves the mark, and the slow poll (``POLL_S``, in any process) picks
it up again.

Assessments and briefings are claimed with a lease (``handoff_assessment_lease_s``, longer than
the assessor's timeout): a process that dies while assessing leaves the row ``running``, and
once the lease has run out the poll of any process claims it again, up to
``handoff_assessment_max_attempts`` claims. A database error is logged and retried on the next
pass; any other error is a bug and goes to the supervisor.
"""

from __future__ import annotations

from typing import Awaitable, Callable

import trio

from roost.domain import handoffs
from roost.errors import StorageError
from roost.plugins.assessors import Assessor, registry, writes_briefings
from roost.runtime.actor import Actor, ActorContext
from roost.runtime.topics import HANDOFF_FOLLOWUPS

POLL_S = 30.0  # safety read for marks left by a crash (here or in another process)


class HandoffFollowups(Actor):
    name = "handoff_followups"

    def __init__(self, assessor: Assessor | None = None):
        self.assessor = assessor

    async def run(self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        services = ctx.services
        assessor = self.assessor or registry.create(services.settings.handoff_assessor)
        with ctx.inbox(HANDOFF_FOLLOWUPS) as inbox:
            task_status.started()
            while True:
                inbox.take()  # wake-ups are hints: each pass reads everything marked pending
                await self._step(ctx, handoffs.queue_escalation_mail, services)
                await self._step(ctx, handoffs.queue_assessment_mail, services)
                async with trio.open_nursery() as nursery:
                    if assessor.enabled:
                        nursery.start_soon(self._step, ctx, handoffs.assess_pending, services, assessor)
                    if writes_briefings(assessor):
                        nursery.start_soon(self._step, ctx, handoffs.brief_pending, services, assessor)
                ctx.tick()
                if not await ctx.wait(inbox, at_most=POLL_S):
                    return

    @staticmethod
    async def _step(ctx: ActorContext, step: Callable[..., Awaitable[object]], *args: object) -> None:
        try:
            await step(*args)
        except StorageError as exc:
            ctx.log.error("handoff follow-ups failed; retrying on the next poll", step=step.__name__,
                          error=exc.message)
