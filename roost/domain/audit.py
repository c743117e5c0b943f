"""The audit log's retention: rows older than ``audit_retention_days`` are deleted (a pruner step)."""

from __future__ import annotations

import datetime as dt

from roost.runtime.services import Services
from roost.storage import audit


async def prune(services: Services, now: dt.datetime) -> int:
    """Delete audit rows older than the retention window; how many went."""
    cutoff = now - dt.timedelta(days=services.settings.audit_retention_days)
    return await audit.prune(services.db, older_than=cutoff)
