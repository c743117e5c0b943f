"""Classifiers: decide whether an item is relevant (queued for the device) or spam (discarded).

A classifier checks its config once, when the scout is saved, and classifies ``Content``
into a ``Verdict`` with a reason a person can read. Raising ``TriageUnavailable`` (a timeout,
an HTTP error, an answer that is not the expected JSON) means "try this item again later";
it never counts as a verdict.

Built in: ``rules`` (the default) and ``openai``; more come from ``roost.classifiers`` entry points.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Literal

from roost.plugins.connectors import Content
from roost.plugins.registry import Registry

VerdictKind = Literal["relevant", "spam"]


@dataclass(frozen=True)
class Verdict:
    verdict: VerdictKind
    reason: str
    category: str = "inbox"
    payload: dict[str, Any] | None = field(default=None)


class TriageUnavailable(Exception):
    """The classifier could not decide now; the item is retried later."""


class Classifier(abc.ABC):
    name: str = "classifier"

    def check_config(self, config: dict[str, Any]) -> None:
        """Raise InvalidInput for a config this classifier cannot use."""
        return None

    @abc.abstractmethod
    async def classify(self, config: dict[str, Any], content: Content) -> Verdict: ...


classifiers: Registry[Classifier] = Registry("roost.classifiers", "classifier")


def _register_builtins() -> None:
    from roost.plugins.classifiers.openai import OpenAIClassifier
    from roost.plugins.classifiers.rules import RulesClassifier

    classifiers.register("rules", RulesClassifier)
    classifiers.register("openai", OpenAIClassifier)


_register_builtins()
