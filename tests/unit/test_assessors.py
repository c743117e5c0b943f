"""The assessor runner: a timeout or an error leaves no assessment and is logged; never raises."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from structlog.testing import capture_logs

from roost.errors import InvalidInput
from roost.plugins.assessors import Assessor, registry, run_assessor

HANDOFF = {"id": "hnd_1", "intent": "escalate", "priority": "high", "notes": "n", "snapshot": {}}


class Slow(Assessor):
    name = "slow"

    def __init__(self, seconds: float, answer: Any = None):
        self.seconds = seconds
        self.answer = answer if answer is not None else {"likely_cause": "dns"}

    async def assess(self, handoff: dict[str, Any]) -> Any:
        await trio.sleep(self.seconds)
        return self.answer


class Broken(Assessor):
    name = "broken"

    async def assess(self, handoff: dict[str, Any]) -> Any:
        raise RuntimeError("model exploded")


async def test_an_assessor_past_its_timeout_gives_none_and_is_logged(autojump_clock) -> None:
    start = trio.current_time()
    with capture_logs() as logs:
        assert await run_assessor(Slow(3600), HANDOFF, timeout_s=20) is None
    assert trio.current_time() - start == pytest.approx(20)
    assert [e["event"] for e in logs] == ["assessment timed out"]
    assert logs[0]["handoff_id"] == "hnd_1"


async def test_an_assessor_within_its_timeout_gives_its_answer(autojump_clock) -> None:
    assert await run_assessor(Slow(19), HANDOFF, timeout_s=20) == {"likely_cause": "dns"}


async def test_an_assessor_that_raises_or_answers_a_non_object_gives_none(autojump_clock) -> None:
    with capture_logs() as logs:
        assert await run_assessor(Broken(), HANDOFF, timeout_s=20) is None
        assert await run_assessor(Slow(0, answer=["not", "an", "object"]), HANDOFF, timeout_s=20) is None
    # A bug in the plugin is logged once with its traceback at the plugin boundary.
    assert [e["event"] for e in logs] == ["plugin raised an unexpected error", "assessment failed",
                                          "assessment is not a JSON object"]
    assert isinstance(logs[0]["exc_info"], RuntimeError) and logs[0]["plugin_kind"] == "assessor"
    assert logs[1]["error"] == "RuntimeError: model exploded"


def test_the_built_in_assessors_are_none_by_default_and_openai() -> None:
    assert {"none", "openai"} <= set(registry.names())
    assert registry.create("none").enabled is False
    assert registry.create("openai").enabled is True
    with pytest.raises(InvalidInput):
        registry.create("nope")
