"""The ``rules`` classifier: sender lists and subject/body patterns, in a fixed order.

Config (every key optional)::

    {"allow_senders": ["boss@example.com", "@partner.example"],   # exact address or "@domain"
     "block_senders": ["@spam.example"],
     "relevant_patterns": ["(?i)invoice"],     # regexes over subject and body
     "spam_patterns": ["(?i)lottery|viagra"],
     "default": "relevant",                    # or "spam"
     "category": "inbox"}

First match wins: allow list, block list, relevant patterns, spam patterns, then the default.

Patterns are RE2 syntax (``google-re2``): matching is linear in the text, whatever the pattern,
so a pattern like ``^(a|aa)+$`` cannot stall anything; back-references and look-arounds are
refused when the scout is saved. At most ``MAX_PATTERNS`` patterns of ``MAX_PATTERN_CHARS``
each. The sender's address is found with ``str`` methods, not a regex, and the whole decision
runs in a worker thread under ``CLASSIFY_BUDGET_S`` (over it: retried, never spam); a triage
batch decides many items per thread hop (``classify_many``).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Sequence

import re2

from roost.errors import InvalidInput
from roost.plugins.classifiers import Classifier, Verdict, run_bounded, run_bounded_each
from roost.plugins.connectors import Content, bounded

_KEYS = {"allow_senders", "block_senders", "relevant_patterns", "spam_patterns", "default", "category"}
MAX_PATTERNS = 100  # relevant and spam patterns together
MAX_PATTERN_CHARS = 500
MAX_SENDERS = 1000  # allow and block lists together
_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a bad pattern is the caller's 400, not a line on stderr


def _address(sender: str) -> str:
    """The address in ``Name <addr>`` (the last ``<...>``), else the whole sender; linear, no regex."""
    start = sender.rfind("<")
    end = sender.find(">", start + 1) if start >= 0 else -1
    inner = sender[start + 1:end] if end > start + 1 else sender
    return inner.strip().lower()


def _sender_matches(address: str, entries: list[str]) -> str | None:
    for entry in entries:
        entry = entry.lower()
        if (entry.startswith("@") and address.endswith(entry)) or address == entry:
            return entry
    return None


@lru_cache(maxsize=512)
def _compile(pattern: str) -> Any:
    return re2.compile(pattern, options=_OPTIONS)


class RulesClassifier(Classifier):
    name = "rules"

    def check_config(self, config: dict[str, Any]) -> None:
        unknown = set(config) - _KEYS
        if unknown:
            raise InvalidInput(f"rules classifier: unknown keys {sorted(unknown)}; known: {sorted(_KEYS)}")
        for key in ("allow_senders", "block_senders", "relevant_patterns", "spam_patterns"):
            value = config.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise InvalidInput(f"rules classifier: {key} must be a list of non-empty strings")
        if len(config.get("allow_senders", [])) + len(config.get("block_senders", [])) > MAX_SENDERS:
            raise InvalidInput(f"rules classifier: at most {MAX_SENDERS} sender entries")
        if len(config.get("relevant_patterns", [])) + len(config.get("spam_patterns", [])) > MAX_PATTERNS:
            raise InvalidInput(f"rules classifier: at most {MAX_PATTERNS} patterns")
        for key in ("relevant_patterns", "spam_patterns"):
            for pattern in config.get(key, []):
                if len(pattern) > MAX_PATTERN_CHARS:
                    raise InvalidInput(f"rules classifier: a pattern in {key} is over {MAX_PATTERN_CHARS} characters")
                try:
                    _compile(pattern)
                except re2.error as exc:
                    why = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) \
                        else str(exc)
                    raise InvalidInput(f"rules classifier: bad pattern {pattern!r} in {key}: {why} "
                                       "(patterns are RE2 syntax: no back-references or look-arounds)") from exc
        if config.get("default", "relevant") not in ("relevant", "spam"):
            raise InvalidInput("rules classifier: default must be 'relevant' or 'spam'")
        if not isinstance(config.get("category", "inbox"), str):
            raise InvalidInput("rules classifier: category must be a string")

    async def classify(self, config: dict[str, Any], content: Content) -> Verdict:
        return await run_bounded(lambda: self.decide(config, content))

    async def classify_many(self, config: dict[str, Any], contents: Sequence[Content]) -> list[Verdict | Exception]:
        return await run_bounded_each(lambda content: self.decide(config, content), contents)

    @staticmethod
    def decide(config: dict[str, Any], content: Content) -> Verdict:
        category = config.get("category", "inbox")
        content = bounded(content)
        address = _address(content.sender)
        if hit := _sender_matches(address, config.get("allow_senders", [])):
            return Verdict("relevant", f"sender {address} is allowed ({hit})", category)
        if hit := _sender_matches(address, config.get("block_senders", [])):
            return Verdict("spam", f"sender {address} is blocked ({hit})", category)
        for kind in ("relevant", "spam"):
            for pattern in config.get(f"{kind}_patterns", []):
                rx = _compile(pattern)
                for part, text in (("subject", content.subject), ("body", content.body)):
                    if rx.search(text or ""):
                        return Verdict(kind, f"{part} matches {kind} pattern {pattern!r}", category)  # type: ignore[arg-type]
        default = config.get("default", "relevant")
        return Verdict(default, f"no rule matched; default is {default}", category)
