"""An escalation's assessment is mailed to those its mail went to, once, even when the process that
stored it died before queuing the mail (a real subprocess killed with SIGKILL right after the
assessment's commit), and not at all when the escalation mail carried it already (both backends)."""

from __future__ import annotations

import sys
from typing import Any

import trio

from roost.domain import handoffs
from roost.plugins.assessors import Assessor
from roost.runtime.clock import utcnow
from roost.storage import handoffs as repo
from roost.storage.database import Database
from tests.support.digest import make_account, make_services, make_user


class Answers(Assessor):
    name = "answers"

    async def assess(self, handoff: dict[str, Any]) -> dict[str, Any] | None:
        return {"likely_cause": "a full disk"}


async def _escalation(db: Database) -> str:
    now = utcnow()
    account = await make_account(db, now)
    creator = await make_user(db, account, now=now, email="cat@example.com", role="member")
    for name in ("ann", "bob"):
        await make_user(db, account, now=now, email=f"{name}@example.com", role="engineer")
    async with db.transaction() as tx:
        row = await repo.create(tx, account_id=account, subject_ref="ticket-1", intent="escalate", notes="",
                                priority="normal", snapshot={}, created_by=creator["id"], assess=True, now=now)
    return row["id"]


async def _mails(db: Database, kind: str) -> list[str]:
    return sorted(r["to_addr"] for r in await db.fetch("SELECT to_addr FROM outbox WHERE kind = $1", kind))


async def _mark(db: Database, handoff_id: str) -> str:
    return await db.fetchval("SELECT assessment_mail_state FROM handoffs WHERE id = $1", handoff_id)


async def test_an_assessment_stored_by_a_process_killed_before_its_mail_is_mailed_by_the_next_pass(
    db: Database, database_url: str
) -> None:
    services = make_services(db)
    handoff_id = await _escalation(db)
    await handoffs.queue_escalation_mail(services)  # the escalation goes out first, without an assessment
    assert await _mails(db, "handoff_escalation") == ["ann@example.com", "bob@example.com"]

    with trio.fail_after(60):
        proc = await trio.run_process([sys.executable, "-m", "tests.support.assess_crash", database_url, "after-store"],
                                      capture_stdout=True, capture_stderr=True, check=False)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert (await db.fetchval("SELECT assessment_state FROM handoffs WHERE id = $1", handoff_id)) == "done"
    assert await _mails(db, "handoff_assessment") == []  # killed before the mail: only the mark is left
    assert await _mark(db, handoff_id) == "pending"

    assert await handoffs.queue_assessment_mail(services) == 2  # the follow-ups pass of any process
    assert await _mails(db, "handoff_assessment") == ["ann@example.com", "bob@example.com"]
    assert await _mark(db, handoff_id) == "done"
    assert await handoffs.queue_assessment_mail(services) == 0  # once


async def test_an_assessment_done_before_the_escalation_mail_rides_in_it_and_is_not_mailed_again(
    db: Database
) -> None:
    services = make_services(db)
    handoff_id = await _escalation(db)
    await handoffs.assess_pending(services, Answers())  # before the escalation mail: nobody to mail yet
    assert await _mark(db, handoff_id) == "pending"
    await handoffs.queue_escalation_mail(services)  # rendered with the assessment
    assert await _mails(db, "handoff_escalation") == ["ann@example.com", "bob@example.com"]
    assert await _mark(db, handoff_id) == "done"
    assert await handoffs.queue_assessment_mail(services) == 0
    assert await _mails(db, "handoff_assessment") == []


async def test_an_assessment_stored_after_the_escalation_went_is_mailed_at_once_and_only_once(db: Database) -> None:
    services = make_services(db)
    handoff_id = await _escalation(db)
    await handoffs.queue_escalation_mail(services)
    await handoffs.assess_pending(services, Answers())  # mails it right after its commit
    assert await _mails(db, "handoff_assessment") == ["ann@example.com", "bob@example.com"]
    assert await _mark(db, handoff_id) == "done"
    assert await handoffs.queue_assessment_mail(services) == 0
