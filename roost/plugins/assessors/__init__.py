"""Assessors: an optional look at a new handoff (likely cause, next steps), done after the commit.

An assessor gets the handoff (with its snapshot) and answers a JSON object, or None for nothing
to say. It never runs on the click path: the follow-up actor runs it after the handoff is
committed, under ``run_assessor``'s timeout; a timeout or an error is logged and leaves the
handoff as it is.

An assessor may also write a briefing for whoever claims a handoff: the optional method
``brief(handoff, claimer) -> str | None``. ``writes_briefings`` tells whether it does (it is
enabled and defines its own ``brief``); the follow-up actor runs it after the claim commits,
under ``run_briefer``'s timeout.

Built in: ``none`` (the default: no assessment at all) and ``openai``; more come from
``roost.assessors`` entry points.
"""

from __future__ import annotations

import abc
from typing import Any

import trio

from roost.errors import RoostError
from roost.plugins.guard import declared_errors, plugin_call
from roost.plugins.registry import Registry
from roost.runtime.logging import get_logger

log = get_logger()


class Assessor(abc.ABC):
    name: str = "assessor"
    enabled: bool = True  # False: handoffs are not even marked for assessment

    @abc.abstractmethod
    async def assess(self, handoff: dict[str, Any]) -> dict[str, Any] | None:
        """The assessment of ``handoff``; raise on failure."""

    async def brief(self, handoff: dict[str, Any], claimer: dict[str, Any]) -> str | None:
        """Optional: a briefing for ``claimer`` (id, display_name, role, team, timezone) picking up
        ``handoff`` (with its snapshot and assessment); None for nothing to say; raise on failure.
        An assessor that does not override it writes no briefings."""
        return None


def writes_briefings(assessor: Assessor) -> bool:
    """Whether claims get a briefing from ``assessor``: it is enabled and defines its own ``brief``."""
    brief = getattr(type(assessor), "brief", None)
    return assessor.enabled and brief is not None and brief is not Assessor.brief


async def run_assessor(assessor: Assessor, handoff: dict[str, Any], timeout_s: float) -> dict[str, Any] | None:
    """Run ``assessor`` within ``timeout_s`` (on trio's clock); None on timeout, error or a non-object answer.

    The call goes through the plugin boundary (``roost.plugins.guard``): whatever the assessor
    raises is a ``RoostError`` here (a bug in it is logged there with its traceback).
    """
    try:
        with trio.fail_after(timeout_s), plugin_call("assessor", assessor.name, declared_errors(assessor)):
            result = await assessor.assess(handoff)
    except trio.TooSlowError:
        log.warning("assessment timed out", assessor=assessor.name, handoff_id=handoff.get("id"), timeout_s=timeout_s)
        return None
    except RoostError as exc:
        log.error("assessment failed", assessor=assessor.name, handoff_id=handoff.get("id"), error=exc.message)
        return None
    if result is not None and not isinstance(result, dict):
        log.error("assessment is not a JSON object", assessor=assessor.name, handoff_id=handoff.get("id"))
        return None
    return result


async def run_briefer(assessor: Assessor, handoff: dict[str, Any], claimer: dict[str, Any],
                      timeout_s: float) -> tuple[bool, str | None]:
    """Run ``assessor.brief`` within ``timeout_s``, through the plugin boundary like ``run_assessor``.

    Returns (True, text or None) when it answered, (False, None) on a timeout, an error or an
    answer that is not text; each failure is logged.
    """
    try:
        with trio.fail_after(timeout_s), plugin_call("assessor", assessor.name, declared_errors(assessor)):
            result = await assessor.brief(handoff, claimer)
    except trio.TooSlowError:
        log.warning("briefing timed out", assessor=assessor.name, handoff_id=handoff.get("id"), timeout_s=timeout_s)
        return False, None
    except RoostError as exc:
        log.error("briefing failed", assessor=assessor.name, handoff_id=handoff.get("id"), error=exc.message)
        return False, None
    if result is not None and not isinstance(result, str):
        log.error("briefing is not text", assessor=assessor.name, handoff_id=handoff.get("id"))
        return False, None
    return True, result


def _none() -> Assessor:
    from roost.plugins.assessors.none import NoAssessor

    return NoAssessor()


def _openai() -> Assessor:
    from roost.plugins.assessors.openai import OpenAIAssessor

    return OpenAIAssessor()


registry: Registry[Assessor] = Registry("roost.assessors", "assessor")
registry.register("none", _none)
registry.register("openai", _openai)
