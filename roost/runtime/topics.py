"""Every bus topic, in one place and one style: ``<area>.<event>``, lower case.

A message on a topic carries ids only (``roost.runtime.bus``): "rows about these ids changed, go
and read them". ``CLUSTER`` lists the topics a process elsewhere must hear too; on PostgreSQL
the bus relay sends them over LISTEN/NOTIFY.
"""

from __future__ import annotations

# Scouts and delivery
SCOUT_ITEMS = "scout.items"  # ids: scout ids with items pushed (provider push) to triage
SCOUT_CHANGED = "scout.changed"  # ids: scout ids created, changed or deleted
SCOUT_RAN = "scout.ran"  # ids: scout ids whose run just ended (its items' counts, last run, last error changed)
PROPOSAL_QUEUED = "proposal.queued"  # ids: user ids with proposals queued for their devices

# Devices, users and their sockets
DEVICE_REGISTERED = "device.registered"  # ids: user ids whose device just registered a socket
DEVICE_REVOKED = "device.revoked"  # ids: device ids revoked (their sockets close with 1008)
USER_DEACTIVATED = "user.deactivated"  # ids: user ids deactivated (their sockets close)

# Handoffs
HANDOFF_EVENTS = "handoff.events"  # ids: account ids with new committed handoff events
HANDOFF_FOLLOWUPS = "handoff.followups"  # ids: handoff ids with mail or an assessment pending

# Mail
MAIL_QUEUED = "mail.queued"  # ids: outbox rows ready to send (none: read everything due)
MAIL_CHANGED = "mail.changed"  # ids: outbox rows sent, failed, retried or cancelled

# Session processors
PROCESSOR_RAN = "processor.ran"  # ids: processor names whose run just ended (recorded in processor_runs)

# Dispatch (the ``/outreach`` API)
DISPATCH_QUEUED = "dispatch.queued"  # ids: account ids with dispatch items to offer
DISPATCH_RESULT = "dispatch.result"  # ids: device ids, one per recorded send result
DISPATCH_BATCH_DONE = "dispatch.batch_done"  # ids: batch ids that finished
DISPATCH_CHANGED = "dispatch.changed"  # ids: account ids whose batches were sent, paused, resumed or cancelled

# Webhooks
WEBHOOKS_QUEUED = "webhooks.queued"  # ids: none (webhook deliveries are due: claim the endpoints' heads)

# The operator console
AUDIT_WRITTEN = "audit.written"  # ids: audit row ids a console action wrote

CLUSTER = (
    PROPOSAL_QUEUED, HANDOFF_EVENTS, DISPATCH_QUEUED, DEVICE_REVOKED, USER_DEACTIVATED, DISPATCH_BATCH_DONE,
    # heard by the consoles of every process (a change made in one shows on all)
    AUDIT_WRITTEN, SCOUT_RAN, PROCESSOR_RAN, MAIL_CHANGED, DISPATCH_CHANGED,
)
