"""Run as a subprocess: claim one handoff's assessment, then die (SIGKILL) in the middle of assessing it,
or (``after-store``) right after the assessment's commit, before its mail is queued.

Usage: python -m tests.support.assess_crash DATABASE_URL [after-store]
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import trio

from roost.domain import handoffs
from roost.plugins.assessors import Assessor
from roost.storage.database import open_database
from tests.support.digest import make_services


class DieWhileAssessing(Assessor):
    name = "die_while_assessing"

    async def assess(self, handoff: dict[str, Any]) -> dict[str, Any] | None:
        os.kill(os.getpid(), signal.SIGKILL)  # the claim is committed: the row is left 'running'
        await trio.sleep(3600)
        return None


class Answers(Assessor):
    name = "answers"

    async def assess(self, handoff: dict[str, Any]) -> dict[str, Any] | None:
        return {"likely_cause": "a full disk"}


async def _die(services: Any, handoff_id: str) -> None:
    os.kill(os.getpid(), signal.SIGKILL)  # the assessment is committed; its mail is not queued


async def main(url: str, when: str) -> None:
    async with open_database(url) as db:
        services = make_services(db)
        if when == "after-store":
            handoffs._mail_assessment = _die  # type: ignore[assignment]
            await handoffs.assess_pending(services, Answers())
        else:
            await handoffs.assess_pending(services, DieWhileAssessing())


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "while-assessing")
