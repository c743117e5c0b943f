"""Classifiers: decide whether an item is relevant (queued for the device) or spam (discarded).

A classifier checks its config once, when the scout is saved, and classifies ``Content``
into a ``Verdict`` with a reason a person can read. Raising ``TriageUnavailable`` (a timeout,
an HTTP error, an answer that is not the expected JSON) means "try this item again later";
it never counts as a verdict.

Built in: ``rules`` (the default) and ``openai``; more come from ``roost.classifiers`` entry points.
"""

from __future__ import annotations

import abc
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Literal, Sequence, TypeVar

import trio

from roost.errors import TriageUnavailable
from roost.plugins.connectors import Content
from roost.plugins.registry import Registry

T = TypeVar("T")
X = TypeVar("X")
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


# How long one worker-thread hop of ``run_bounded_each`` works through items before it hands back.
HOP_SLICE_S = 0.02


async def run_bounded_each(fn: Callable[[X], T], items: Sequence[X],
                           budget_s: float = CLASSIFY_BUDGET_S) -> list[T | Exception]:
    """``fn(item)`` for every item, in order: its result, or the Exception it raised.

    As ``run_bounded`` for each item, but many items to a worker-thread hop (a hop works for
    ``HOP_SLICE_S``, then hands back): a thread hop costs more CPU than a rules classifier's
    verdict (issue 21). An item that takes over ``budget_s`` (counted from when its hop was
    queued, for the first item of a hop, as ``run_bounded`` counts) gets ``TriageUnavailable``;
    its thread is abandoned and the items after it go on in another.
    """
    results: list[T | Exception] = []
    while len(results) < len(items):
        hop = _Hop(fn, items, len(results))
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_watch, hop, budget_s, nursery.cancel_scope)
                await trio.to_thread.run_sync(hop.run, abandon_on_cancel=True)
                nursery.cancel_scope.cancel()
        finally:
            hop.stop()  # an abandoned thread ends after its item; a cancel stops it the same way
        results += hop.results
        if hop.gave_up:
            results.append(TriageUnavailable(f"classifying took over its {budget_s:g} s budget; retried later"))
    return results


class _Hop(Generic[X, T]):
    """One worker-thread hop of ``run_bounded_each``: ``fn`` over ``items[start:]`` until the slice is used."""

    def __init__(self, fn: Callable[[X], T], items: Sequence[X], start: int):
        self.fn, self.items, self.start = fn, items, start
        self.results: list[T | Exception] = []
        self.lock = threading.Lock()
        self.running = True  # an item is being classified (or the hop waits for its thread)
        self.item_started = time.monotonic()
        self.stopped = False
        self.gave_up = False

    def run(self) -> None:  # in the worker thread
        began = time.monotonic()
        for item in self.items[self.start:]:
            with self.lock:
                if self.stopped:
                    return
                self.running, self.item_started = True, time.monotonic()
            try:
                result: T | Exception = self.fn(item)
            except Exception as exc:
                result = exc
            with self.lock:
                if self.stopped:
                    return
                self.results.append(result)
                self.running = False
            if time.monotonic() - began >= HOP_SLICE_S:
                return

    def overdue_in(self, budget_s: float) -> float:
        """Seconds until the running item is over budget (``budget_s`` if none runs); at 0 the hop
        gives up: the thread is abandoned and appends nothing more."""
        with self.lock:
            if self.stopped or not self.running:
                return budget_s
            left = self.item_started + budget_s - time.monotonic()
            if left <= 0:
                self.stopped = self.gave_up = True
            return max(0.0, left)

    def stop(self) -> None:
        with self.lock:
            self.stopped = True


async def _watch(hop: _Hop[Any, Any], budget_s: float, scope: trio.CancelScope) -> None:
    # Polls at the running item's deadline: a trio.Event set from the thread per item would cost
    # a thread-to-loop hand-off per item, the very thing the batch saves.
    while (left := hop.overdue_in(budget_s)) > 0:  # noqa: ASYNC110
        await trio.sleep(left)
    scope.cancel()


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

    async def classify_many(self, config: dict[str, Any], contents: Sequence[Content]) -> list[Verdict | Exception]:
        """The verdict on each of ``contents`` in order, or the Exception classifying it raised.

        A triage batch calls this. The default classifies one at a time; a classifier whose
        decision is CPU work in a worker thread classifies many per thread hop (``run_bounded_each``).
        """
        out: list[Verdict | Exception] = []
        for content in contents:
            try:
                out.append(await self.classify(config, content))
            except Exception as exc:
                out.append(exc)
        return out


classifiers: Registry[Classifier] = Registry("roost.classifiers", "classifier")


def _register_builtins() -> None:
    from roost.plugins.classifiers.openai import OpenAIClassifier
    from roost.plugins.classifiers.rules import RulesClassifier

    classifiers.register("rules", RulesClassifier)
    classifiers.register("openai", OpenAIClassifier)


_register_builtins()
