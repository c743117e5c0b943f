"""The ``rules`` classifier: sender lists and subject/body patterns, in a fixed order.

Config (every key optional)::

    {"allow_senders": ["boss@example.com", "@partner.example"],   # exact address or "@domain"
     "block_senders": ["@spam.example"],
     "relevant_patterns": ["(?i)invoice"],     # regexes over subject and body
     "spam_patterns": ["(?i)lottery|viagra"],
     "default": "relevant",                    # or "spam"
     "category": "inbox"}

First match wins: allow list, block list, relevant patterns, spam patterns, then the default.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from roost.errors import InvalidInput
from roost.plugins.classifiers import Classifier, Verdict
from roost.plugins.connectors import Content

_KEYS = {"allow_senders", "block_senders", "relevant_patterns", "spam_patterns", "default", "category"}


def _address(sender: str) -> str:
    match = re.search(r"<([^>]+)>", sender)
    return (match[1] if match else sender).strip().lower()


def _sender_matches(address: str, entries: list[str]) -> str | None:
    for entry in entries:
        entry = entry.lower()
        if (entry.startswith("@") and address.endswith(entry)) or address == entry:
            return entry
    return None


@lru_cache(maxsize=512)
def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


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
        for key in ("relevant_patterns", "spam_patterns"):
            for pattern in config.get(key, []):
                try:
                    _compile(pattern)
                except re.error as exc:
                    raise InvalidInput(f"rules classifier: bad pattern {pattern!r} in {key}: {exc}") from exc
        if config.get("default", "relevant") not in ("relevant", "spam"):
            raise InvalidInput("rules classifier: default must be 'relevant' or 'spam'")
        if not isinstance(config.get("category", "inbox"), str):
            raise InvalidInput("rules classifier: category must be a string")

    async def classify(self, config: dict[str, Any], content: Content) -> Verdict:
        return self.decide(config, content)

    @staticmethod
    def decide(config: dict[str, Any], content: Content) -> Verdict:
        category = config.get("category", "inbox")
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
