"""The assessor runner: a timeout or an error leaves no assessment and is logged; never raises."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from structlog.testing import capture_logs

from roost.errors import InvalidInput
from roost.plugins.assessors import Assessor, registry, run_assessor, run_briefer, writes_briefings
from roost.runtime import destinations

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


# -- briefings ---------------------------------------------------------------------------------

CLAIMER = {"id": "usr_1", "display_name": "Bo", "role": "engineer", "team": "night", "timezone": "UTC"}


class Briefs(Slow):
    name = "briefs"

    async def brief(self, handoff: dict[str, Any], claimer: dict[str, Any]) -> Any:
        await trio.sleep(self.seconds)
        return self.answer


def test_only_an_enabled_assessor_with_its_own_brief_writes_briefings() -> None:
    assert writes_briefings(Briefs(0)) is True
    assert writes_briefings(Slow(0)) is False  # assesses, but has no brief of its own
    assert writes_briefings(registry.create("none")) is False  # it has one (answering None) but is disabled
    assert writes_briefings(registry.create("openai")) is True


async def test_a_briefer_past_its_timeout_erroring_or_answering_a_non_text_fails_and_is_logged(autojump_clock) -> None:
    with capture_logs() as logs:
        assert await run_briefer(Briefs(3600, "late"), HANDOFF, CLAIMER, timeout_s=20) == (False, None)
        assert await run_briefer(Briefs(0, {"not": "text"}), HANDOFF, CLAIMER, timeout_s=20) == (False, None)
    assert [e["event"] for e in logs] == ["briefing timed out", "briefing is not text"]
    assert await run_briefer(Briefs(19, "read the logs"), HANDOFF, CLAIMER, timeout_s=20) == (True, "read the logs")
    assert await run_briefer(Slow(0), HANDOFF, CLAIMER, timeout_s=20) == (True, None)  # the base: nothing to say


async def _fake_chat(answers: list[tuple[int, str]], seen: list[dict[str, Any]],
                     task_status=trio.TASK_STATUS_IGNORED) -> None:
    """A tiny chat-completions endpoint: each request gets the next (status, content)."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])

    async def handle(stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(next(ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")))
        while len(body) < length:
            body += await stream.receive_some(65536)
        seen.append(json.loads(body))
        status, content = answers.pop(0)
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        await stream.send_all(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                              b"Connection: close\r\n\r\n" % (status, len(payload)) + payload)
        await stream.aclose()

    await trio.serve_listeners(handle, listeners)


async def test_the_openai_assessor_briefs_the_claimer_from_the_same_endpoint_in_plain_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[dict[str, Any]] = []
    handoff = {**HANDOFF, "assessment": {"likely_cause": "dns"}, "snapshot": {"tried": ["reboot"]}}
    with destinations.installed(destinations.Policy.parse(["127.0.0.1"])):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(_fake_chat, [(200, "  Check DNS first.\n"), (200, "   "), (500, "")], seen)
            monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{port}/v1")
            assessor = registry.create("openai")
            assert await run_briefer(assessor, handoff, CLAIMER, timeout_s=10) == (True, "Check DNS first.")
            assert await run_briefer(assessor, handoff, CLAIMER, timeout_s=10) == (True, None)  # blank: nothing
            assert await run_briefer(assessor, handoff, CLAIMER, timeout_s=10) == (False, None)  # HTTP 500
            nursery.cancel_scope.cancel()
    prompt = seen[0]["messages"][1]["content"]
    assert "response_format" not in seen[0]  # plain text, unlike the assessment's JSON object
    assert '"likely_cause": "dns"' in prompt and "reboot" in prompt and "Bo (role engineer, team night)" in prompt
