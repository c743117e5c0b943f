"""The rules classifier's order of rules, and the openai classifier against a local fake endpoint."""

from __future__ import annotations

import json

import pytest
import trio

from roost.plugins.classifiers import TriageUnavailable
from roost.plugins.classifiers.openai import OpenAIClassifier
from roost.plugins.classifiers.rules import RulesClassifier
from roost.plugins.connectors import Content

MAIL = Content("r1", "Ann <ann@partner.example>", "You won the lottery", "claim now", "claim now")


async def test_rules_allow_list_beats_spam_patterns_and_default_applies():
    rules = {"allow_senders": ["@partner.example"], "spam_patterns": ["(?i)lottery"]}
    assert (await RulesClassifier().classify(rules, MAIL)).verdict == "relevant"
    verdict = await RulesClassifier().classify({"spam_patterns": ["(?i)lottery"]}, MAIL)
    assert verdict.verdict == "spam" and "subject" in verdict.reason
    assert (await RulesClassifier().classify({}, MAIL)).verdict == "relevant"


async def _fake_openai(answers: list[tuple[int, str, float]], task_status=trio.TASK_STATUS_IGNORED):
    """A tiny HTTP/1.1 server speaking chat-completions: each answer is (status, content, delay)."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])

    async def handle(stream):
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int([ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")][0])
        while len(body) < length:
            body += await stream.receive_some(65536)
        assert json.loads(body)["messages"][1]["content"].startswith("From:")
        status, content, delay = answers.pop(0)
        await trio.sleep(delay)
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        await stream.send_all(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                              b"Connection: close\r\n\r\n" % (status, len(payload)) + payload)
        await stream.aclose()

    await trio.serve_listeners(handle, listeners)


@pytest.mark.parametrize("status, content, delay, expect", [
    (200, '{"verdict": "spam", "reason": "prize scam", "category": "junk"}', 0, "spam"),
    (200, '{"verdict": "relevant", "reason": "from a partner"}', 0, "relevant"),
    (200, "I think it is spam", 0, None),
    (200, '{"verdict": "maybe", "reason": "?"}', 0, None),
    (500, "{}", 0, None),
    (200, '{"verdict": "spam", "reason": "late"}', 3, None),
])
async def test_openai_classifier_strict_verdict_and_errors_mean_retry(status, content, delay, expect):
    async with trio.open_nursery() as nursery:
        port = await nursery.start(_fake_openai, [(status, content, delay)])
        config = {"base_url": f"http://127.0.0.1:{port}/v1", "model": "m", "api_key": "k", "timeout_s": 1}
        if expect is None:
            with pytest.raises(TriageUnavailable):
                await OpenAIClassifier().classify(config, MAIL)
        else:
            assert (await OpenAIClassifier().classify(config, MAIL)).verdict == expect
        nursery.cancel_scope.cancel()
