"""Handoff follow-ups after the commit: escalation mail and assessment.

``roost.domain.handoffs.create`` marks a handoff ``mail_state='pending'`` (escalations) and
``assessment_state='pending'`` (when an assessor is configured) in its own transaction, and
publishes the handoff id on ``HANDOFF_FOLLOWUPS`` after the commit. This actor then runs the
follow-ups of the domain layer, in transactions of their own: ``queue_escalation_mail`` (one
conditional UPDATE decides which process queues a mail, so it is queued once) and
``assess_pending`` (the assessor under its timeout). Neither can fail or delay the handoff; a
crash in between leaves the mark, and the slow poll (``POLL_S``, in any process) picks it up again.

An assessment is claimed with a lease (``handoff_assessment_lease_s``, longer than the
assessor's timeout): a process that dies while assessing leaves the row ``running``, and once
the lease has run out the poll of any process claims it again, up to
``handoff_assessment_max_attempts`` claims. A database error is logged and retried on the next
pass; any other error is a bug and goes to the supervisor.
"""

from __future__ import annotations

import trio

from roost.domain import handoffs
from roost.errors import StorageError
from roost.plugins.assessors import Assessor, registry
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
                try:
                    await handoffs.queue_escalation_mail(services)
                    if assessor.enabled:
                        await handoffs.assess_pending(services, assessor)
                except StorageError as exc:
                    ctx.log.error("handoff follow-ups failed; retrying on the next poll", error=exc.message)
                ctx.tick()
                if not await ctx.wait(inbox, at_most=POLL_S):
                    return
