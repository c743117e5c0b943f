"""The rules classifier's order of rules, and the openai classifier against a local fake endpoint."""

from __future__ import annotations

import json
import time
from typing import Iterator

import pytest
import trio

from roost.errors import InvalidInput
from roost.plugins.classifiers import Classifier, TriageUnavailable, Verdict, run_bounded, run_bounded_each
from roost.plugins.classifiers.openai import OpenAIClassifier
from roost.plugins.classifiers.rules import MAX_PATTERNS, RulesClassifier, _address
from roost.plugins.connectors import MAX_BODY_CHARS, Content
from roost.runtime import destinations

MAIL = Content("r1", "Ann <ann@partner.example>", "You won the lottery", "claim now", "claim now")


async def test_rules_allow_list_beats_spam_patterns_and_default_applies():
    rules = {"allow_senders": ["@partner.example"], "spam_patterns": ["(?i)lottery"]}
    assert (await RulesClassifier().classify(rules, MAIL)).verdict == "relevant"
    verdict = await RulesClassifier().classify({"spam_patterns": ["(?i)lottery"]}, MAIL)
    assert verdict.verdict == "spam" and "subject" in verdict.reason
    assert (await RulesClassifier().classify({}, MAIL)).verdict == "relevant"


@pytest.fixture
def allow_loopback() -> Iterator[None]:
    """The fake endpoints below listen on 127.0.0.1, which roost refuses unless allowed."""
    with destinations.installed(destinations.Policy.parse(["127.0.0.1"])):
        yield


@pytest.fixture
def strict() -> Iterator[None]:
    with destinations.installed(destinations.Policy()):
        yield


def test_sender_address_is_found_without_a_regex():
    assert _address("Ann <Ann@Example.com>") == "ann@example.com"
    assert _address("ann@example.com") == "ann@example.com"
    assert _address('"a <b>" <c@d.example>') == "c@d.example"
    assert _address("<" * 100_000) == "<" * 100_000  # no address: the whole (bounded later) sender


async def test_rules_patterns_are_re2_so_nested_repetition_cannot_backtrack():
    rules = {"spam_patterns": ["^(a|aa)+$"], "default": "relevant"}
    RulesClassifier().check_config(rules)
    item = Content("r", "x@y.example", "", "a" * 40 + "!", "")
    assert (await RulesClassifier().classify(rules, item)).verdict == "relevant"
    assert (await RulesClassifier().classify(rules, Content("r", "", "", "a" * 41, ""))).verdict == "spam"


@pytest.mark.parametrize("config, words", [
    ({"spam_patterns": ["(a)\\1"]}, "RE2"),
    ({"spam_patterns": ["(?=x)y"]}, "RE2"),
    ({"spam_patterns": ["x" * 501]}, "over 500"),
    ({"spam_patterns": ["a"] * (MAX_PATTERNS + 1)}, f"at most {MAX_PATTERNS}"),
])
def test_rules_refuse_patterns_re2_cannot_run_and_too_many_or_too_long(config, words):
    with pytest.raises(InvalidInput, match=words):
        RulesClassifier().check_config(config)


async def test_rules_match_only_the_bounded_body():
    body = "x" * MAX_BODY_CHARS + "lottery"
    verdict = await RulesClassifier().classify({"spam_patterns": ["lottery"]}, Content("r", "", "", body, ""))
    assert verdict.verdict == "relevant"


async def test_a_classifier_over_its_budget_is_unavailable_not_spam():
    with pytest.raises(TriageUnavailable, match="budget"):
        await run_bounded(lambda: time.sleep(0.5), budget_s=0.05)


def _slow_on(slow: set[int], seconds: float):
    def fn(i: int) -> int:
        if i in slow:
            time.sleep(seconds)
        if i == 7:
            raise ZeroDivisionError("bug on 7")
        return i * 2
    return fn


@pytest.mark.timeout(10)
async def test_a_batch_gives_each_item_its_result_or_its_own_error_in_order():
    results = await run_bounded_each(_slow_on(set(), 0), list(range(300)))
    assert [r for i, r in enumerate(results) if i != 7] == [i * 2 for i in range(300) if i != 7]
    assert isinstance(results[7], ZeroDivisionError)


@pytest.mark.timeout(10)
async def test_an_item_over_its_budget_in_a_batch_is_unavailable_and_the_items_after_it_are_decided():
    results = await run_bounded_each(_slow_on({3}, 0.5), list(range(10)), budget_s=0.1)
    assert isinstance(results[3], TriageUnavailable) and "budget" in str(results[3])
    assert [results[i] for i in (0, 1, 2, 4, 5, 6, 8, 9)] == [0, 2, 4, 8, 10, 12, 16, 18]
    # many items, each well under the budget, whose sum is over it: all decided
    results = await run_bounded_each(_slow_on(set(range(40)), 0.005), list(range(40)), budget_s=0.1)
    assert sum(isinstance(r, TriageUnavailable) for r in results) == 0


async def test_rules_decide_a_batch_as_they_decide_each_item():
    rules = {"allow_senders": ["@partner.example"], "spam_patterns": ["(?i)lottery"], "default": "relevant"}
    items = [MAIL, Content("r2", "x@y.example", "hello", "lottery inside", ""), Content("r3", "", "hi", "", ""),
             Content("r4", "z@partner.example", "lottery", "", "")]
    one_by_one = [await RulesClassifier().classify(rules, c) for c in items]
    assert await RulesClassifier().classify_many(rules, items) == one_by_one
    assert [v.verdict for v in one_by_one] == ["relevant", "spam", "relevant", "relevant"]


async def test_a_classifier_without_its_own_batch_is_called_per_item_and_errors_stay_per_item():
    class Picky(Classifier):
        async def classify(self, config, content):
            if content.subject == "bad":
                raise ValueError("no")
            return Verdict("relevant", "ok")

    items = [Content("a", "", "ok", "", ""), Content("b", "", "bad", "", ""), Content("c", "", "ok", "", "")]
    verdicts = await Picky().classify_many({}, items)
    assert verdicts[0] == verdicts[2] == Verdict("relevant", "ok") and isinstance(verdicts[1], ValueError)


async def _fake_openai(answers: list[tuple[int, str, float]], seen: list[dict[str, str]] | None = None,
                       task_status=trio.TASK_STATUS_IGNORED):
    """A tiny HTTP/1.1 server speaking chat-completions: each answer is (status, content, delay)."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])

    async def handle(stream):
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        if seen is not None:
            seen.append({k.strip().lower(): v.strip() for k, _, v in
                         (ln.decode().partition(":") for ln in head.split(b"\r\n")[1:])})
        length = int([ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")][0])
        while len(body) < length:
            body += await stream.receive_some(65536)
        assert json.loads(body)["messages"][1]["content"].startswith("From:")
        status, content, delay = answers.pop(0)
        await trio.sleep(delay)
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        if status != 200:
            payload = content.encode()
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
async def test_openai_classifier_strict_verdict_and_errors_mean_retry(status, content, delay, expect,
                                                                     allow_loopback):
    async with trio.open_nursery() as nursery:
        port = await nursery.start(_fake_openai, [(status, content, delay)])
        config = {"base_url": f"http://127.0.0.1:{port}/v1", "model": "m", "api_key": "k", "timeout_s": 1}
        if expect is None:
            with pytest.raises(TriageUnavailable):
                await OpenAIClassifier().classify(config, MAIL)
        else:
            assert (await OpenAIClassifier().classify(config, MAIL)).verdict == expect
        nursery.cancel_scope.cancel()


async def test_openai_classifier_refuses_loopback_unless_allowed(strict):
    seen: list[dict[str, str]] = []
    async with trio.open_nursery() as nursery:
        port = await nursery.start(_fake_openai, [(200, '{"verdict": "spam", "reason": "x"}', 0)], seen)
        config = {"base_url": f"http://127.0.0.1:{port}/v1", "api_key": "k", "timeout_s": 1}
        with pytest.raises(TriageUnavailable, match="blocked: .*loopback.*ROOST_ALLOWED_DESTINATIONS"):
            await OpenAIClassifier().classify(config, MAIL)
        nursery.cancel_scope.cancel()
    assert seen == []


async def test_openai_errors_name_their_kind_and_never_echo_the_answer(allow_loopback):
    async with trio.open_nursery() as nursery:
        port = await nursery.start(_fake_openai, [(500, "db at 10.1.2.3:5432 is down", 0)])
        config = {"base_url": f"http://127.0.0.1:{port}/v1", "api_key": "k", "timeout_s": 1}
        with pytest.raises(TriageUnavailable) as info:
            await OpenAIClassifier().classify(config, MAIL)
        nursery.cancel_scope.cancel()
    assert str(info.value).startswith("bad_answer:") and "10.1.2.3" not in str(info.value)
    with trio.socket.socket() as s:  # a port nobody listens on
        await s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TriageUnavailable, match="^refused:"):
        await OpenAIClassifier().classify({"base_url": f"http://127.0.0.1:{port}/v1", "timeout_s": 1}, MAIL)


async def test_the_servers_api_key_goes_only_to_its_own_endpoint(allow_loopback, monkeypatch):
    answer = '{"verdict": "relevant", "reason": "ok"}'
    seen: list[dict[str, str]] = []
    async with trio.open_nursery() as nursery:
        own = await nursery.start(_fake_openai, [(200, answer, 0)] * 2, seen)
        other = await nursery.start(_fake_openai, [(200, answer, 0)] * 2, seen)
        monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{own}/v1")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-server")
        await OpenAIClassifier().classify({"timeout_s": 1}, MAIL)
        await OpenAIClassifier().classify({"base_url": f"http://127.0.0.1:{other}/v1", "timeout_s": 1}, MAIL)
        await OpenAIClassifier().classify({"base_url": f"http://127.0.0.1:{other}/v1", "api_key": "sk-own",
                                           "timeout_s": 1}, MAIL)
        nursery.cancel_scope.cancel()
    assert [h.get("authorization") for h in seen] == ["Bearer sk-server", None, "Bearer sk-own"]
