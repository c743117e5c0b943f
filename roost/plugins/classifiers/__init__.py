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
from typing import Any, Callable, Literal, TypeVar

import trio

from roost.errors import TriageUnavailable
from roost.plugins.connectors import Content
from roost.plugins.registry import Registry

T = TypeVar("T")
VerdictKind = Literal["relevant", "spam"]


@dataclass(frozen=True)
class Verdict:
    verdict: VerdictKind
    reason: str
    category: str = "inbox"
    payload: dict[str, Any] | None = field(default=None)


# A classifier's CPU work runs in a worker thread under this budget; over it, the item is retried
# ("triage unavailable"), never taken for spam.
CLASSIFY_BUDGET_S = 2.0


async def run_bounded(fn: Callable[[], T], budget_s: float = CLASSIFY_BUDGET_S) -> T:
    """``fn()`` in a worker thread, off the event loop; TriageUnavailable when it takes over ``budget_s``.

    The thread cannot be stopped, only abandoned: callers keep ``fn`` bounded anyway (linear
    matching over capped text), the budget is the backstop that keeps the item from a verdict.
    """
    with trio.move_on_after(budget_s):
        return await trio.to_thread.run_sync(fn, abandon_on_cancel=True)
    raise TriageUnavailable(f"classifying took over its {budget_s:g} s budget; retried later")


class Classifier(abc.ABC):
    name: str = "classifier"

    def check_config(self, config: dict[str, Any]) -> None:
        """Raise InvalidInput for a config this classifier cannot use."""
        return None

    def destinations(self, config: dict[str, Any]) -> list[tuple[str, int]]:
        """The (host, port) pairs this config makes roost connect to (checked when the scout is saved)."""
        return []

    @abc.abstractmethod
    async def classify(self, config: dict[str, Any], content: Content) -> Verdict:
        """The verdict on ``content``; CPU-heavy work goes through ``run_bounded``."""


classifiers: Registry[Classifier] = Registry("roost.classifiers", "classifier")


def _register_builtins() -> None:
    from roost.plugins.classifiers.openai import OpenAIClassifier
    from roost.plugins.classifiers.rules import RulesClassifier

    classifiers.register("rules", RulesClassifier)
    classifiers.register("openai", OpenAIClassifier)


_register_builtins()
