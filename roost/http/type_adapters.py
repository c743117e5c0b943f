"""One pydantic ``TypeAdapter`` per type for quart-schema's request and response conversion.

quart-schema 0.25 builds a new ``TypeAdapter`` on every call of its ``model_load`` (each
validated request body and query string, each ``validate_response``) and ``model_dump`` (each
dict or list a view returns). Building one for ``dict`` or ``list`` costs ~25 µs and for a model
~5 µs on this project's machines, against ~0.5 µs to use one already built: some 30-60 µs of
event-loop CPU per request (keeping them cut ``GET /healthz`` from ~758 to ~685 µs of server CPU,
BENCHMARKS.md "Session 9"). A ``TypeAdapter`` is immutable once
built, so the adapters are kept, one per type (the app's models, ``dict`` and ``list``: a set
bounded by the code, not by the input).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import quart_schema.conversion
from pydantic import TypeAdapter

MAX_ADAPTERS = 1024  # far above the app's models: a bound all the same, for a cache kept for good


@lru_cache(maxsize=MAX_ADAPTERS)
def cached_adapter(kind: Any) -> TypeAdapter[Any]:
    """The ``TypeAdapter`` for ``kind``, built on first use."""
    return TypeAdapter(kind)


def adapter_for(kind: Any, *args: Any, **kwargs: Any) -> TypeAdapter[Any]:
    """What quart-schema calls in place of ``TypeAdapter(kind)``: the kept one when it can be kept."""
    if args or kwargs:  # a config or other options: not what quart-schema passes; built as asked
        return TypeAdapter(kind, *args, **kwargs)
    try:
        return cached_adapter(kind)
    except TypeError:  # an unhashable type expression: built each time, as before
        return TypeAdapter(kind)


def install() -> None:
    """Make quart-schema's conversion use the kept adapters (idempotent)."""
    quart_schema.conversion.TypeAdapter = adapter_for  # type: ignore[assignment]
