"""An assessment whose process died while it ran is assessed again once its lease has run out
(both backends; the death is a real subprocess killed with SIGKILL mid-assessment); the claimer's
briefing is held to the same lease and attempts."""

from __future__ import annotations

import datetime as dt
import sys
from typing import Any

import trio

from roost.domain import handoffs
from roost.plugins.assessors import Assessor
from roost.runtime.clock import Clock, utcnow
from roost.storage import handoff_briefings as briefings
from roost.storage import handoffs as repo
from roost.storage.database import Database
from tests.support.digest import make_account, make_services, make_user


class Recording(Assessor):
    name = "recording"

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def assess(self, handoff: dict[str, Any]) -> dict[str, Any] | None:
        self.seen.append(handoff["id"])
        return {"likely_cause": "a test"}


async def _handoff(db: Database) -> str:
    now = utcnow()
    account = await make_account(db, now)
    user = await make_user(db, account, now=now, email="ann@example.com", role="engineer")
    async with db.transaction() as tx:
        row = await repo.create(tx, account_id=account, subject_ref="ticket-1", intent="escalate", notes="",
                                priority="normal", snapshot={}, created_by=user["id"], assess=True, now=now)
    return row["id"]


async def _state(db: Database, handoff_id: str) -> dict[str, Any]:
    return await db.fetchrow("SELECT assessment_state, assessment_attempts, assessment, assessment_lease_until"
                             " FROM handoffs WHERE id = $1", handoff_id)


async def _assess(db: Database, assessor: Assessor, clock: Clock) -> None:
    services = make_services(db)
    services.clock = clock
    await handoffs.assess_pending(services, assessor)


async def test_an_assessment_left_running_by_a_killed_process_is_assessed_again_after_its_lease(
    db: Database, database_url: str
) -> None:
    handoff_id = await _handoff(db)
    with trio.fail_after(60):
        proc = await trio.run_process([sys.executable, "-m", "tests.support.assess_crash", database_url],
                                      capture_stdout=True, capture_stderr=True, check=False)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    left = await _state(db, handoff_id)
    assert (left["assessment_state"], left["assessment_attempts"]) == ("running", 1)

    # Within the lease nobody takes it over (the process might still be assessing).
    lease_s = make_services(db).settings.handoff_assessment_lease_s
    early = Recording()
    await _assess(db, early, Clock(wall_start=left["assessment_lease_until"] - dt.timedelta(seconds=1)))
    assert early.seen == [] and (await _state(db, handoff_id))["assessment_state"] == "running"

    # Once it has run out, the next poll of any process assesses it again.
    later = Recording()
    await _assess(db, later, Clock(wall_start=left["assessment_lease_until"] + dt.timedelta(seconds=1)))
    assert later.seen == [handoff_id]
    done = await _state(db, handoff_id)
    assert (done["assessment_state"], done["assessment_attempts"]) == ("done", 2)
    assert done["assessment"] == {"likely_cause": "a test"} and done["assessment_lease_until"] is None
    assert lease_s > make_services(db).settings.handoff_assessor_timeout_s


async def test_an_assessment_that_kills_its_process_every_time_ends_failed_after_max_attempts(db: Database) -> None:
    handoff_id = await _handoff(db)
    settings = make_services(db).settings
    now = utcnow()
    for attempt in range(1, settings.handoff_assessment_max_attempts + 1):
        row = await repo.claim_assessment(db, handoff_id, now=now, lease_s=settings.handoff_assessment_lease_s,
                                          max_attempts=settings.handoff_assessment_max_attempts)
        assert row is not None and row["assessment_attempts"] == attempt
        # a second claim while the lease holds gets nothing
        assert await repo.claim_assessment(db, handoff_id, now=now, lease_s=1.0, max_attempts=9) is None
        now += dt.timedelta(seconds=settings.handoff_assessment_lease_s)  # ... and the process died
    assert await repo.pending_assessments(db, now=now) == [handoff_id]
    failed = await repo.claim_assessment(db, handoff_id, now=now, lease_s=settings.handoff_assessment_lease_s,
                                         max_attempts=settings.handoff_assessment_max_attempts)
    assert failed is not None and failed["assessment_state"] == "failed"  # not to assess: to tell the sockets
    assert (await _state(db, handoff_id))["assessment_state"] == "failed"
    last = (await repo.events_after(db, failed["account_id"], 0))[-1]
    assert (last["kind"], last["handoff"]["assessment_state"]) == ("handoff_updated", "failed")
    assert await repo.pending_assessments(db, now=now + dt.timedelta(days=1)) == []


async def test_a_slow_assessor_that_outlived_its_lease_does_not_overwrite_the_result_stored_meanwhile(
    db: Database,
) -> None:
    handoff_id = await _handoff(db)
    now = utcnow()
    slow = await repo.claim_assessment(db, handoff_id, now=now, lease_s=120, max_attempts=3)
    later = now + dt.timedelta(seconds=121)
    fresh = await repo.claim_assessment(db, handoff_id, now=later, lease_s=120, max_attempts=3)
    assert slow is not None and fresh is not None
    assert await repo.store_assessment(db, handoff_id, {"by": "second"}, later) is not None
    assert await repo.store_assessment(db, handoff_id, {"by": "first, late"}, later) is None
    assert (await _state(db, handoff_id))["assessment"] == {"by": "second"}


async def test_a_briefing_has_the_assessments_lease_attempts_and_first_result_wins(db: Database) -> None:
    handoff_id = await _handoff(db)
    row = await repo.get(db, handoff_id)
    now = utcnow()
    claimed, _ = await repo.claim(db, handoff_id, row["created_by"], now, brief=True)
    assert claimed["briefing_state"] == "pending"
    assert await briefings.pending_briefings(db, now=now) == [handoff_id]
    first, claimer = await briefings.claim_briefing(db, handoff_id, now=now, lease_s=120, max_attempts=2)
    assert first is not None and claimer["id"] == row["created_by"] and first["briefing_attempts"] == 1
    assert await briefings.claim_briefing(db, handoff_id, now=now, lease_s=120, max_attempts=2) == (None, None)
    assert await briefings.pending_briefings(db, now=now) == []
    later = now + dt.timedelta(seconds=121)  # the first writer's process died, or is slow
    assert await briefings.pending_briefings(db, now=later) == [handoff_id]
    second, _ = await briefings.claim_briefing(db, handoff_id, now=later, lease_s=120, max_attempts=2)
    assert second is not None and second["briefing_attempts"] == 2
    assert (await briefings.store_briefing(db, handoff_id, True, "second", later))["briefing"] == "second"
    assert await briefings.store_briefing(db, handoff_id, True, "first, late", later) is None
    assert await briefings.store_briefing(db, handoff_id, False, None, later) is None
    done = await repo.get(db, handoff_id)
    assert (done["briefing_state"], done["briefing"], done["briefing_lease_until"]) == ("done", "second", None)
    kinds = [(e["kind"], e["handoff"]["briefing_state"]) for e in await repo.events_after(db, row["account_id"], 0)]
    assert kinds == [("handoff_created", "skipped"), ("handoff_claimed", "pending"), ("handoff_updated", "done")]


async def test_a_briefing_that_kills_its_process_every_time_ends_failed_with_an_event(db: Database) -> None:
    handoff_id = await _handoff(db)
    row = await repo.get(db, handoff_id)
    now = utcnow()
    await repo.claim(db, handoff_id, row["created_by"], now, brief=True)
    for _ in range(2):
        taken, _ = await briefings.claim_briefing(db, handoff_id, now=now, lease_s=10, max_attempts=2)
        assert taken is not None
        now += dt.timedelta(seconds=11)  # ... and the process died
    failed, claimer = await briefings.claim_briefing(db, handoff_id, now=now, lease_s=10, max_attempts=2)
    assert failed is not None and claimer is None  # the caller publishes the event's wake-up
    assert failed == await repo.get(db, handoff_id)
    assert (failed["briefing_state"], failed["briefing_lease_until"]) == ("failed", None)
    assert await briefings.pending_briefings(db, now=now + dt.timedelta(days=1)) == []
    last = (await repo.events_after(db, row["account_id"], 0))[-1]
    assert (last["kind"], last["handoff"]["briefing_state"]) == ("handoff_updated", "failed")
