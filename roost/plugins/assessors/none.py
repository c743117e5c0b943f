"""The default assessor: none. Handoffs are not marked for assessment, nor claims for a briefing."""

from __future__ import annotations

from typing import Any

from roost.plugins.assessors import Assessor


class NoAssessor(Assessor):
    name = "none"
    enabled = False

    async def assess(self, handoff: dict[str, Any]) -> dict[str, Any] | None:
        return None

    async def brief(self, handoff: dict[str, Any], claimer: dict[str, Any]) -> str | None:
        return None
